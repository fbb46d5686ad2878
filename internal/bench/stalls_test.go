package main

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// A tail sample is laid beside the stalls that overlap it, and only those.
func TestTailOf(t *testing.T) {
	ms := int64(time.Millisecond)
	l := latencyResult{
		samples: []time.Duration{1 * time.Millisecond, 30 * time.Millisecond, 25 * time.Millisecond, 2 * time.Millisecond},
		at:      []int64{0, 100 * ms, 500 * ms, 900 * ms},
	}
	st := &stalls{
		pings: []span{
			{90 * ms, 125 * ms, 35 * ms},  // during the 30 ms sample: the server stalled
			{505 * ms, 506 * ms, 1 * ms},  // during the 25 ms sample: the server answered at once
			{901 * ms, 950 * ms, 49 * ms}, // during a sample below the cut
			{0, 1, 1},
		},
		sleeps: []span{{510 * ms, 520 * ms, 9 * ms}},
		steal:  []span{{0, 200 * ms, 3}},
		failed: 1,
	}
	r := tailOf(l, 20*time.Millisecond, st)
	if r.samples != 2 {
		t.Fatalf("samples %d, want 2", r.samples)
	}
	if r.slowPing != 1 {
		t.Errorf("tail samples during a slow ping: %d, want 1 (only the 30 ms one)", r.slowPing)
	}
	if r.worstPing != 35*time.Millisecond {
		t.Errorf("slowest ping during the tail %v, want 35ms (not the 49 ms one outside it)", r.worstPing)
	}
	if r.oversleep != 9*time.Millisecond {
		t.Errorf("oversleep %v, want 9ms", r.oversleep)
	}
	if r.steal != 3 {
		t.Errorf("steal %d, want 3", r.steal)
	}
	if r.pingMax != 49*time.Millisecond || r.pingsFailed != 1 {
		t.Errorf("over the runs: max ping %v, unanswered %d; want 49ms, 1", r.pingMax, r.pingsFailed)
	}
}

// The watch times each ping on the run's clock, counts the failed ones,
// and its goroutines end with stop.
func TestWatchStalls(t *testing.T) {
	clk := clock{base: time.Now()}
	var n atomic.Int32
	six := make(chan struct{})
	stop := watchStalls(context.Background(), clk, func(ctx context.Context) error {
		k := n.Add(1)
		if k == 6 {
			close(six)
		}
		if k%2 == 0 {
			return errors.New("no answer")
		}
		time.Sleep(3 * time.Millisecond) // the server's answer, simulated
		return nil
	})
	select {
	case <-six:
	case <-time.After(30 * time.Second):
		t.Fatal("six pings not tried in 30 s")
	}
	st := stop()
	if len(st.pings) < 2 || st.failed < 2 {
		t.Fatalf("pings %d, failed %d: want both at least 2", len(st.pings), st.failed)
	}
	for _, p := range st.pings {
		if p.v < int64(3*time.Millisecond) || p.to-p.from != p.v {
			t.Errorf("ping %+v: want its round trip of at least 3 ms as its span", p)
		}
	}
}

// The server's socket work is read from /proc/PID/io: reading a file
// shows in this process's counters.
func TestReadProcIO(t *testing.T) {
	before := readProcIO(os.Getpid())
	if _, err := os.ReadFile("/proc/self/status"); err != nil {
		t.Fatal(err)
	}
	after := readProcIO(os.Getpid())
	if d := after.sub(before); d.syscr < 1 || d.rchar < 1 {
		t.Errorf("after a read: %+v more, want at least one read syscall and one byte", d)
	}
}

func TestReceiverP50s(t *testing.T) {
	ms := time.Millisecond
	l := latencyResult{
		samples: []time.Duration{3 * ms, 1 * ms, 5 * ms, 2 * ms, 1 * ms, 9 * ms, 4 * ms},
		rcv:     []int32{1, 0, 1, 0, 0, 1, 2},
	}
	// receiver 0: 1, 2, 1 → 1 ms; receiver 1: 3, 5, 9 → 5 ms; receiver 2: 4 ms.
	got := receiverP50s(l)
	want := []time.Duration{1 * ms, 4 * ms, 5 * ms}
	if !slices.Equal(got, want) {
		t.Errorf("receiverP50s = %v, want %v", got, want)
	}
	if got := receiverP50s(latencyResult{samples: l.samples}); got != nil {
		t.Errorf("without receivers: %v, want nil", got)
	}
}
