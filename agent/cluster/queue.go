package cluster

import "sync"

// queue holds the events memberlist has produced and the owner has not yet
// taken. memberlist calls its event delegate from its own goroutines,
// maybe under its locks, so the delegate must not wait for the owner; and join and dead events must not be dropped,
// since the owner acts on each. So the queue never blocks and never drops,
// and stays bounded by coalescing per member: at most one "gone" event
// (Leave or Dead) followed by at most one "present" event (Join or Update),
// the newest of each. That is at most two events per member.
//
// Order is kept per member; across members, events leave in the order their
// member first got a pending event.
type queue struct {
	mu      sync.Mutex
	pending map[string][]Event
	order   []string
	wake    chan struct{} // one token: there may be something to pop
}

func newQueue() *queue {
	return &queue{pending: make(map[string][]Event), wake: make(chan struct{}, 1)}
}

func (q *queue) push(ev Event) {
	name := ev.Member.Name
	q.mu.Lock()
	s, ok := q.pending[name]
	if !ok {
		q.order = append(q.order, name)
	}
	q.pending[name] = coalesce(s, ev)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// coalesce appends ev to a member's pending events, keeping the shape
// [gone] [present].
func coalesce(s []Event, ev Event) []Event {
	if len(s) == 0 {
		return append(s, ev)
	}
	last := &s[len(s)-1]
	switch ev.Kind {
	case EventUpdate:
		if !last.Kind.gone() {
			// A join not yet taken carries the newest meta; an update
			// replaces an older update.
			last.Member = ev.Member
			return s
		}
		return append(s, ev)
	case EventJoin:
		if !last.Kind.gone() {
			*last = ev
			return s
		}
		return append(s, ev)
	default: // Leave, Dead
		if !last.Kind.gone() {
			// The owner never saw this presence: only its end matters.
			s = s[:len(s)-1]
			if len(s) == 0 {
				return append(s, ev)
			}
			last = &s[len(s)-1]
		}
		*last = ev
		return s
	}
}

// pop takes the oldest pending event.
func (q *queue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		return Event{}, false
	}
	name := q.order[0]
	s := q.pending[name]
	ev := s[0]
	if len(s) > 1 {
		q.pending[name] = s[1:]
		return ev, true
	}
	delete(q.pending, name)
	q.order[0] = ""
	q.order = q.order[1:]
	if len(q.order) == 0 {
		q.order = nil // let the backing array go after a burst
	}
	return ev, true
}

// len is the number of pending events, for tests.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, s := range q.pending {
		n += len(s)
	}
	return n
}
