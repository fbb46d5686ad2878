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

// TestLiveChangeWrittenByCaller: while a session runs, a live change that
// finds nothing pending, its device idle and the window less than half
// full is written before put returns (no hand-over to the publishing
// goroutine); past half the window, or with its device in flight, it
// waits for that goroutine as before.
func TestLiveChangeWrittenByCaller(t *testing.T) {
	p := newPublisher(4)
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var started []string
	release := make(chan struct{})
	start := each(func(k pubKey, v pubValue) func(context.Context) error {
		mu.Lock()
		started = append(started, k.name)
		mu.Unlock()
		return func(ctx context.Context) error {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}
	})
	done := startRun(ctx, p, start)
	nStarted := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(started)
	}
	p.put(devValue("a", devstate.InUse))
	if n := nStarted(); n != 1 {
		t.Fatalf("after put(a): %d publishes written, want 1 (by the caller)", n)
	}
	p.put(devValue("b", devstate.InUse))
	if n := nStarted(); n != 2 {
		t.Fatalf("after put(b): %d publishes written, want 2", n)
	}
	p.put(devValue("c", devstate.InUse)) // half the window (2 of 4) is in flight
	p.put(devValue("a", devstate.Busy))  // a is in flight
	if st := p.stats(); st.Direct != 2 || st.Waited != 2 {
		t.Fatalf("stats %+v: want Direct 2, Waited 2", st)
	}
	p.putBulk(devValue("d", devstate.InUse))
	if st := p.stats(); st.Waited != 2 {
		t.Fatalf("stats %+v: a republish is not a live change that waited", st)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for st := p.stats(); st.Pending > 0 || st.InFlight > 0; st = p.stats() {
		if time.Now().After(deadline) {
			t.Fatalf("not drained: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(started[:3], ","); got != "a,b,c" {
		t.Errorf("written first %s, want a,b,c", got)
	}
	rest := slices.Sorted(slices.Values(started[3:]))
	if got := strings.Join(rest, ","); got != "a,d" {
		t.Errorf("written then %s, want a and d", got)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live != nil {
		t.Error("the run's writer is still set after run returned")
	}
}

// With a window of 256, republished values still hold at most 8 slots
// and the caller writes while fewer than 16 are unanswered, as with the
// default window of 32: a larger window does not make a live change wait
// behind a quarter of it.
func TestLargeWindowBounds(t *testing.T) {
	if w := DefaultConfig().PublishWindow; w != 32 || bulkShareOf(w) != maxBulkInFlight || directMaxOf(w) != maxDirectInFlight {
		t.Fatalf("default window %d: republish share %d, direct below %d", w, bulkShareOf(w), directMaxOf(w))
	}
	const window = 256
	p := newPublisher(window)
	for i := range 1000 {
		p.putBulk(pubKey{name: fmt.Sprint("bulk", i)}, pubValue{})
	}
	if b := p.takeBatch(nil); len(b) != maxBulkInFlight {
		t.Fatalf("took %d republished values at once, want %d", len(b), maxBulkInFlight)
	}
	for i := range 300 {
		p.put(pubKey{name: fmt.Sprint("live", i)}, pubValue{})
	}
	b := p.takeBatch(nil)
	if len(b) != window-maxBulkInFlight {
		t.Fatalf("took %d live values, want the rest of the window, %d", len(b), window-maxBulkInFlight)
	}
	for _, e := range b {
		if e.v.bulk || !strings.HasPrefix(e.k.name, "live") {
			t.Fatalf("took %v among the live values", e.k)
		}
	}
	if st := p.stats(); st.InFlight != window || st.Pending != 1000-maxBulkInFlight+300-len(b) {
		t.Fatalf("stats %+v", st)
	}

	// Written by the caller: the first maxDirectInFlight changes, then
	// by the publishing goroutine.
	p = newPublisher(window)
	ctx, cancel := context.WithCancel(context.Background())
	const n = maxDirectInFlight + 20
	started := make(chan struct{}, n)
	start := each(func(k pubKey, v pubValue) func(context.Context) error {
		started <- struct{}{}
		return func(ctx context.Context) error { <-ctx.Done(); return nil } // never answered
	})
	done := startRun(ctx, p, start)
	for i := range n {
		p.put(devValue(fmt.Sprint("d", i), devstate.InUse))
	}
	deadline := time.After(10 * time.Second)
	for i := range n {
		select {
		case <-started:
		case <-deadline:
			t.Fatalf("%d of %d written", i, n)
		}
	}
	if st := p.stats(); st.Direct != maxDirectInFlight || st.Waited != n-maxDirectInFlight || st.InFlight != n {
		t.Fatalf("stats %+v: want Direct %d, Waited %d, InFlight %d", st, maxDirectInFlight, n-maxDirectInFlight, n)
	}
	cancel()
	<-done
}

// startRun runs p with start on a goroutine of its own, returns once the
// session's run is set (a put may then write directly), and gives what
// is closed when the run has ended.
func startRun(ctx context.Context, p *publisher, start func([]pubEntry) []func(context.Context) error) chan struct{} {
	done := make(chan struct{})
	go func() { p.run(ctx, start); close(done) }()
	for running := false; !running; {
		p.mu.Lock()
		running = p.live != nil
		p.mu.Unlock()
	}
	return done
}
