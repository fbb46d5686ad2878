package pubsub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

// each is a publisher's start that starts every publish of a batch with
// one's.
func each(one func(pubKey, pubValue) func(context.Context) error) func([]pubEntry) []func(context.Context) error {
	return func(batch []pubEntry) []func(context.Context) error {
		out := make([]func(context.Context) error, len(batch))
		for i, e := range batch {
			out[i] = one(e.k, e.v)
		}
		return out
	}
}

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
	go func() { defer wg.Done(); p.run(ctx, each(send)) }()
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
	// push has put both among the held events (run never takes those).
	q.mu.Lock()
	held, queued := len(q.held), len(q.q)
	q.mu.Unlock()
	if held != 2 || queued != 0 || len(out) != 0 {
		t.Fatalf("while holding: %d held, %d queued, %d delivered; want 2, 0, 0", held, queued, len(out))
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

// fakeClock is the publisher's retry clock in tests: timers fire when the
// test says so, and each one started is announced on started.
type fakeClock struct {
	mu      sync.Mutex
	timers  []*fakeTimer
	started chan *fakeTimer
}

type fakeTimer struct {
	clk     *fakeClock
	d       time.Duration
	f       func()
	stopped bool
	fired   bool
}

func newFakeClock() *fakeClock { return &fakeClock{started: make(chan *fakeTimer, 64)} }

func (c *fakeClock) after(d time.Duration, f func()) func() bool {
	t := &fakeTimer{clk: c, d: d, f: f}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	c.started <- t
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		live := !t.stopped && !t.fired
		t.stopped = true
		return live
	}
}

// fire runs t's function unless it was stopped; it reports whether it ran.
func (t *fakeTimer) fire() bool {
	t.clk.mu.Lock()
	run := !t.stopped && !t.fired
	t.fired = true
	t.clk.mu.Unlock()
	if run {
		t.f()
	}
	return run
}

// live counts the timers neither fired nor stopped.
func (c *fakeClock) live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

func (c *fakeClock) next(t *testing.T) *fakeTimer {
	t.Helper()
	select {
	case tm := <-c.started:
		return tm
	case <-time.After(10 * time.Second):
		t.Fatal("no retry timer started")
		return nil
	}
}

// A transient failure (the server was busy) is tried again until it goes
// through; a permanent one is not; a newer value supersedes a retry.
func TestPublisherRetriesTransientFailures(t *testing.T) {
	p := newPublisher(4)
	clk := newFakeClock()
	p.after = clk.after
	var mu sync.Mutex
	attempts := map[string]int{}
	var sent []string
	answered := make(chan string, 64) // every attempt, once answered: "name=ok" or "name=err"
	start := func(k pubKey, v pubValue) func(context.Context) error {
		return func(context.Context) error {
			err := func() error {
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
			}()
			if err != nil {
				answered <- k.name + "=err"
			} else {
				answered <- k.name + "=ok"
			}
			return err
		}
	}
	wait := func(want ...string) {
		t.Helper()
		got := map[string]int{}
		for _, w := range want {
			got[w]++
		}
		for n := len(want); n > 0; n-- {
			select {
			case a := <-answered:
				if got[a] == 0 {
					t.Fatalf("attempt %s, want one of %v", a, want)
				}
				got[a]--
			case <-time.After(10 * time.Second):
				t.Fatalf("attempts %v not all answered", want)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx, each(start)); close(done) }()
	p.put(devValue("busy", devstate.InUse))
	p.put(devValue("denied", devstate.InUse))
	p.put(devValue("slow", devstate.Ringing))
	wait("busy=err", "denied=err", "slow=err")
	// Two retry timers, busy's and slow's in either order (denied is not
	// transient).
	t1, t2 := clk.next(t), clk.next(t)
	if t1.d != retryDelay || t2.d != retryDelay {
		t.Fatalf("first retries after %v and %v, want %v", t1.d, t2.d, retryDelay)
	}
	// A newer value of slow stops its retry and goes out at once.
	p.put(devValue("slow", devstate.Busy))
	wait("slow=ok")
	if clk.live() != 1 {
		t.Fatalf("%d retry timers live, want 1 (busy's; slow's stopped by the newer value)", clk.live())
	}
	// Firing both runs one retry: busy's (slow's was stopped).
	ran := 0
	for _, tm := range []*fakeTimer{t1, t2} {
		if tm.fire() {
			ran++
		}
	}
	if ran != 1 {
		t.Fatalf("%d timers ran, want 1", ran)
	}
	wait("busy=err")
	second := clk.next(t)
	if second.d != 2*retryDelay {
		t.Fatalf("second retry after %v, want %v", second.d, 2*retryDelay)
	}
	second.fire()
	wait("busy=ok")
	if n := clk.live(); n != 0 {
		t.Fatalf("%d retry timers left after every publish went through", n)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sent) != "[slow=BUSY busy=INUSE]" {
		t.Fatalf("sent %v (attempts %v)", sent, attempts)
	}
	if attempts["denied"] != 1 || attempts["busy"] != 3 || attempts["slow"] != 2 {
		t.Fatalf("attempts %v", attempts)
	}
	select {
	case a := <-answered:
		t.Fatalf("extra attempt %s", a)
	default:
	}
}

// When the session ends, the retry timers are stopped (nothing of the
// session goes on running) and the values they waited with stay pending
// for the next session.
func TestPublisherStopsRetriesOnShutdown(t *testing.T) {
	p := newPublisher(4)
	clk := newFakeClock()
	p.after = clk.after
	answered := make(chan struct{}, 4)
	start := func(pubKey, pubValue) func(context.Context) error {
		return func(context.Context) error {
			answered <- struct{}{}
			return &StanzaError{Type: "wait", Condition: "resource-constraint"}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx, each(start)); close(done) }()
	p.put(devValue("busy", devstate.InUse))
	<-answered
	tm := clk.next(t)
	cancel()
	<-done
	if clk.live() != 0 {
		t.Fatal("retry timer still live after run returned")
	}
	if tm.fire() {
		t.Fatal("the stopped timer ran")
	}
	if st := p.stats(); st.Pending != 1 || st.InFlight != 0 {
		t.Fatalf("stats %+v, want the value pending", st)
	}
	k, v, ok := p.take()
	if !ok || k.name != "busy" || v.tries != 1 {
		t.Fatalf("next session takes %v %+v %v", k, v, ok)
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

// A republish waits behind live changes: a change made while many states
// are being republished is the next to go out, and a live value of a key
// waiting to be republished takes the live lane.
func TestRepublishWaitsBehindLiveChanges(t *testing.T) {
	p := newPublisher(4) // republished values: one slot of the four
	for i := range 1000 {
		p.putBulk(pubKey{name: fmt.Sprint("bulk", i)}, pubValue{})
	}
	k1, _, _ := p.take()
	if k1.name != "bulk0" {
		t.Fatalf("took %v", k1)
	}
	if k, _, ok := p.take(); ok {
		t.Fatalf("took %v past the republish share", k)
	}
	p.put(pubKey{name: "live"}, pubValue{})
	p.put(pubKey{name: "bulk500"}, pubValue{dev: DeviceItem{Device: "bulk500"}})
	p.putBulk(pubKey{name: "live"}, pubValue{}) // stays in the live lane
	if k, v, _ := p.take(); k.name != "live" || v.bulk {
		t.Fatalf("next %v %+v, want the live change", k, v)
	}
	if k, v, _ := p.take(); k.name != "bulk500" || v.dev.Device != "bulk500" || v.bulk {
		t.Fatalf("then %v, want bulk500 (live now)", k)
	}
	if k, _, ok := p.take(); ok {
		t.Fatalf("took %v past the republish share", k)
	}
	p.done(k1, false)
	if k, v, _ := p.take(); k.name != "bulk1" || !v.bulk {
		t.Fatalf("after the republished value's answer: %v, want bulk1", k)
	}
	if st := p.stats(); st.Pending != 997 || st.InFlight != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// Republished values hold at most a quarter of the window, so a live
// change made while 100,000 wait is written at once, behind no more than
// that quarter, even before any answer came.
func TestLiveChangeFindsASlotDuringRepublish(t *testing.T) {
	const window = 32
	p := newPublisher(window)
	for i := range 100000 {
		p.putBulk(pubKey{name: fmt.Sprint("bulk", i)}, pubValue{})
	}
	written := make(chan []pubEntry, 16)
	start := func(batch []pubEntry) []func(context.Context) error {
		written <- slices.Clone(batch)
		out := make([]func(context.Context) error, len(batch))
		for i := range out {
			out[i] = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() } // never answered
		}
		return out
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.run(ctx, start); close(done) }()
	next := func() []pubEntry {
		t.Helper()
		select {
		case b := <-written:
			return b
		case <-time.After(10 * time.Second):
			t.Fatal("nothing written")
			return nil
		}
	}
	first := next()
	if len(first) != window/4 || first[0].k.name != "bulk0" || first[len(first)-1].k.name != fmt.Sprint("bulk", window/4-1) {
		t.Fatalf("first write: %d publishes %v..., want the first %d republished values in one batch", len(first), first[0].k, window/4)
	}
	p.put(pubKey{name: "live"}, pubValue{dev: DeviceItem{Device: "live", State: devstate.InUse}})
	if b := next(); len(b) != 1 || b[0].k.name != "live" || b[0].v.bulk {
		t.Fatalf("after the live put: %v, want the live change alone", b)
	}
	if st := p.stats(); st.InFlight != window/4+1 || st.Pending != 100000-window/4 {
		t.Fatalf("stats %+v", st)
	}
	cancel()
	<-done
	// Cut off by the end of the session: back in their lanes, first.
	if k, v, _ := p.take(); k.name != "live" || v.bulk {
		t.Fatalf("next session starts with %v, want the live change", k)
	}
	if k, v, _ := p.take(); !v.bulk || !strings.HasPrefix(k.name, "bulk") {
		t.Fatalf("then %v, want a republished value", k)
	}
}
