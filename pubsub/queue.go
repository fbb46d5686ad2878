package pubsub

import (
	"context"
	"sync"
)

// maxQueued bounds the events waiting for the consumer. When it is reached
// the read loop waits (TCP back-pressure) instead of dropping state.
const maxQueued = 1 << 16

// eventQueue carries events from the read loop to the owner's channel in
// order, so the read loop never waits on the consumer while the consumer
// may itself be waiting on an IQ answer that the read loop must deliver.
//
// While a session is being set up the queue holds its events back: they go
// out after the Connected event that carries the fetched items, so nothing
// newer than the snapshot is overwritten by it.
type eventQueue struct {
	mu      sync.Mutex
	q       []Event
	held    []Event
	holding bool
	ready   chan struct{} // an event was queued
	space   chan struct{} // an event was taken

	// While run runs: its channel, and whether it is sending an event.
	// With nothing queued and nothing being sent, push hands an event to
	// out itself when out has room: every earlier event is in out
	// already, so order holds, and the consumer is woken without a hop
	// through run's goroutine (a wake-up off the latency path).
	out     chan<- Event
	sending bool
}

func newEventQueue() *eventQueue {
	return &eventQueue{ready: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// push queues ev, waiting for room while the queue is full, until done.
func (q *eventQueue) push(done <-chan struct{}, ev Event) bool {
	for {
		q.mu.Lock()
		if !q.holding && !q.sending && len(q.q) == 0 && q.out != nil {
			select {
			case q.out <- ev:
				q.mu.Unlock()
				return true
			default:
			}
		}
		if len(q.q)+len(q.held) < maxQueued {
			if q.holding {
				q.held = append(q.held, ev)
			} else {
				q.q = append(q.q, ev)
				signal(q.ready)
			}
			q.mu.Unlock()
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-done:
			return false
		}
	}
}

// hold starts holding events back (a session is being set up).
func (q *eventQueue) hold() {
	q.mu.Lock()
	q.holding, q.held = true, nil
	q.mu.Unlock()
}

// release queues first, then the events held back, and stops holding.
func (q *eventQueue) release(first Event) {
	q.mu.Lock()
	q.q = append(q.q, first)
	q.q = append(q.q, q.held...)
	q.holding, q.held = false, nil
	signal(q.ready)
	q.mu.Unlock()
}

// dropHeld forgets what a failed setup held back.
func (q *eventQueue) dropHeld() {
	q.mu.Lock()
	q.holding, q.held = false, nil
	signal(q.space)
	q.mu.Unlock()
}

// run delivers queued events to out until ctx is done.
func (q *eventQueue) run(ctx context.Context, out chan<- Event) {
	q.mu.Lock()
	q.out = out
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		q.out, q.sending = nil, false
		q.mu.Unlock()
	}()
	for {
		q.mu.Lock()
		if len(q.q) == 0 {
			q.mu.Unlock()
			select {
			case <-q.ready:
				continue
			case <-ctx.Done():
				return
			}
		}
		ev := q.q[0]
		q.q[0] = nil
		q.q = q.q[1:]
		if len(q.q) == 0 {
			q.q = nil // let the backing array go
		}
		q.sending = true
		q.mu.Unlock()
		signal(q.space)
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		}
		q.mu.Lock()
		q.sending = false
		q.mu.Unlock()
	}
}
