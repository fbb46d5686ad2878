package pubsub

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

func devValue(dev string, s devstate.State) (pubKey, pubValue) {
	return pubKey{name: dev}, pubValue{dev: DeviceItem{Device: dev, State: s}}
}

func TestPublisherCoalescesPastTheWindow(t *testing.T) {
	p := newPublisher(2)
	for i := 0; i < 10; i++ {
		p.put(devValue(fmt.Sprintf("dev%d", i%3), devstate.State(i%9)))
	}
	// Three devices pending, the newest value of each, in first-put order.
	var taken []string
	for {
		k, v, ok := p.take()
		if !ok {
			break
		}
		taken = append(taken, fmt.Sprintf("%s=%v", k.name, v.dev.State))
	}
	if fmt.Sprint(taken) != "[dev0=UNKNOWN dev1=RINGINUSE]" {
		t.Fatalf("taken %v (window 2)", taken)
	}
	p.done(pubKey{name: "dev0"}, false)
	k, v, ok := p.take()
	if !ok || k.name != "dev2" || v.dev.State != devstate.OnHold {
		t.Fatalf("after a slot freed: %v %v %v", k, v.dev.State, ok)
	}
	st := p.stats()
	if st.Published != 3 || st.Coalesced != 7 || st.InFlight != 2 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A value cut off by a disconnect goes back (first in line) unless a
	// newer one waits.
	p.put(devValue("dev2", devstate.Busy))
	p.requeue(devValue("dev2", devstate.InUse))
	p.requeue(devValue("dev1", devstate.InUse))
	p.done(pubKey{name: "dev1"}, true)
	p.done(pubKey{name: "dev2"}, true)
	var rest []string
	for {
		k, v, ok := p.take()
		if !ok {
			break
		}
		rest = append(rest, fmt.Sprintf("%s=%v", k.name, v.dev.State))
	}
	if fmt.Sprint(rest) != "[dev1=INUSE dev2=BUSY]" {
		t.Fatalf("after requeue: %v", rest)
	}
	if p.stats().Errors != 2 {
		t.Fatalf("errors %d", p.stats().Errors)
	}
}

// A device is never in flight twice: its newer value waits for the answer
// to the older one, so the server sees a device's states in order.
func TestPublisherOneInFlightPerKey(t *testing.T) {
	p := newPublisher(8)
	p.put(devValue("a", devstate.InUse))
	if k, _, ok := p.take(); !ok || k.name != "a" {
		t.Fatal("first take")
	}
	p.put(devValue("a", devstate.Busy))
	p.put(devValue("b", devstate.Busy))
	if k, _, ok := p.take(); !ok || k.name != "b" {
		t.Fatalf("took %v, want b (a is in flight)", k)
	}
	if k, _, ok := p.take(); ok {
		t.Fatalf("took %v while a is in flight", k)
	}
	p.done(pubKey{name: "a"}, false)
	if k, v, ok := p.take(); !ok || k.name != "a" || v.dev.State != devstate.Busy {
		t.Fatalf("after the answer: %v %v", k, v.dev.State)
	}
}

// put never blocks, whatever the state of the sender.
func TestPublisherPutNeverBlocks(t *testing.T) {
	p := newPublisher(1)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100000; i++ {
			p.put(devValue(fmt.Sprintf("d%d", i%50), devstate.InUse))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("put blocked")
	}
	if st := p.stats(); st.Pending != 50 || st.Coalesced != 100000-50 {
		t.Fatalf("stats %+v", st)
	}
}

// run keeps at most window publishes unanswered and ends with its context.
func TestPublisherRunWindow(t *testing.T) {
	p := newPublisher(4)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	inflight, maxInflight, sent := 0, 0, 0
	final := map[string]devstate.State{}
	release := make(chan struct{})
	send := func(k pubKey, v pubValue) func(context.Context) error {
		mu.Lock()
		inflight++
		sent++
		maxInflight = max(maxInflight, inflight)
		final[k.name] = v.dev.State
		mu.Unlock()
		return func(ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			mu.Lock()
			inflight--
			mu.Unlock()
			return nil
		}
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.run(ctx, &wg, send) }()
	for i := 0; i < 1000; i++ {
		p.put(devValue(fmt.Sprintf("d%d", i%10), devstate.State(i%9)))
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := p.stats()
		if st.Pending == 0 && st.InFlight == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if maxInflight > 4 {
		t.Errorf("%d publishes unanswered at once, window 4", maxInflight)
	}
	if sent >= 1000 {
		t.Errorf("sent %d of 1000: nothing coalesced", sent)
	}
	for i := 990; i < 1000; i++ {
		if got, want := final[fmt.Sprintf("d%d", i%10)], devstate.State(i%9); got != want {
			t.Errorf("d%d ended %v, want %v", i%10, got, want)
		}
	}
}

func TestEventQueueHoldRelease(t *testing.T) {
	q := newEventQueue()
	out := make(chan Event, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { q.run(ctx, out); close(done) }()
	q.hold()
	q.push(ctx.Done(), Presence{JID: "a@b/1"})
	q.push(ctx.Done(), Presence{JID: "a@b/2"})
	select {
	case ev := <-out:
		t.Fatalf("held event delivered: %#v", ev)
	case <-time.After(20 * time.Millisecond):
	}
	q.release(Connected{JID: "me"})
	want := []Event{Connected{JID: "me"}, Presence{JID: "a@b/1"}, Presence{JID: "a@b/2"}}
	for i, w := range want {
		select {
		case ev := <-out:
			if fmt.Sprint(ev) != fmt.Sprint(w) {
				t.Fatalf("event %d: %#v, want %#v", i, ev, w)
			}
		case <-time.After(time.Second):
			t.Fatalf("event %d missing", i)
		}
	}
	q.hold()
	q.push(ctx.Done(), Presence{JID: "dropped"})
	q.dropHeld()
	q.push(ctx.Done(), Presence{JID: "after"})
	if ev := <-out; ev.(Presence).JID != "after" {
		t.Fatalf("got %#v", ev)
	}
	cancel()
	<-done
}

// A full queue makes the producer wait, and the wait ends with the session.
func TestEventQueueBackPressure(t *testing.T) {
	q := newEventQueue()
	for i := 0; i < maxQueued; i++ {
		q.push(nil, Presence{})
	}
	stop := make(chan struct{})
	res := make(chan bool)
	go func() { res <- q.push(stop, Presence{JID: "late"}) }()
	select {
	case <-res:
		t.Fatal("push into a full queue returned at once")
	case <-time.After(20 * time.Millisecond):
	}
	close(stop)
	if <-res {
		t.Fatal("push reported success after the session ended")
	}
}

// A transient failure (the server was busy) is tried again until it goes
// through; a permanent one is not; a newer value supersedes a retry.
func TestPublisherRetriesTransientFailures(t *testing.T) {
	p := newPublisher(4)
	var mu sync.Mutex
	attempts := map[string]int{}
	var sent []string
	start := func(k pubKey, v pubValue) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			attempts[k.name]++
			switch {
			case k.name == "busy" && attempts[k.name] < 3:
				return &StanzaError{Type: "wait", Condition: "internal-server-error"}
			case k.name == "denied":
				return &StanzaError{Type: "auth", Condition: "forbidden"}
			case k.name == "slow" && attempts[k.name] == 1:
				return fmt.Errorf("publish: %w", ErrTimeout)
			}
			sent = append(sent, fmt.Sprintf("%s=%v", k.name, v.dev.State))
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { p.run(ctx, &wg, start); close(done) }()
	p.put(devValue("busy", devstate.InUse))
	p.put(devValue("denied", devstate.InUse))
	p.put(devValue("slow", devstate.Ringing))
	time.Sleep(50 * time.Millisecond) // the first attempt of slow fails
	p.put(devValue("slow", devstate.Busy))
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(sent)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrong extra retry
	cancel()
	<-done
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sent) != "[slow=BUSY busy=INUSE]" {
		t.Fatalf("sent %v (attempts %v)", sent, attempts)
	}
	if attempts["denied"] != 1 || attempts["busy"] != 3 || attempts["slow"] != 2 {
		t.Fatalf("attempts %v", attempts)
	}
}

// Events reach the consumer in the order pushed, whether push hands them
// over itself (nothing queued) or they wait in the queue for run.
func TestEventQueueOrder(t *testing.T) {
	q := newEventQueue()
	out := make(chan Event, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { q.run(ctx, out); close(done) }()
	const n = 20000
	go func() {
		for i := range n {
			q.push(ctx.Done(), Presence{Priority: i})
			if i%1000 == 0 {
				time.Sleep(time.Millisecond) // let the queue drain: the fast path again
			}
		}
	}()
	for i := range n {
		ev := <-out
		if got := ev.(Presence).Priority; got != i {
			t.Fatalf("event %d arrived as number %d", got, i)
		}
		if i%777 == 0 {
			time.Sleep(100 * time.Microsecond) // a slow consumer: events queue up
		}
	}
	cancel()
	<-done
}
