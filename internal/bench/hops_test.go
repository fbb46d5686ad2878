package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFlushAfter(t *testing.T) {
	r := newHopRecorder()
	r.on.Store(true)
	t0 := time.Now()
	for _, d := range []time.Duration{1, 5, 3, 9} {
		r.record(hop.Flushed, "", t0.Add(d*time.Millisecond))
	}
	for _, c := range []struct {
		at   time.Duration
		want time.Duration
		ok   bool
	}{{0, 1, true}, {2, 3, true}, {3, 3, true}, {6, 9, true}, {10, 0, false}} {
		got, ok := r.flushAfter(t0.Add(c.at * time.Millisecond))
		if ok != c.ok || (ok && !got.Equal(t0.Add(c.want*time.Millisecond))) {
			t.Errorf("flushAfter(+%dms) = %v %v, want +%dms %v", c.at, got.Sub(t0), ok, c.want, c.ok)
		}
	}
	r.on.Store(false)
	r.record(hop.Read, "x", t0)
	if _, ok := r.stage(hop.Read, "x"); ok {
		t.Error("recorded while off")
	}
}

// TestHopBreakdown runs the latency measurement through two real agents
// on a real Prosody and checks that every change is broken down into its
// hops, that they follow each other, and that they add up to the whole.
func TestHopBreakdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prosody")
	}
	srv, err := xmpptest.Start(xmpptest.Prosody, xmpptest.Options{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := &options{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	busy, err := startBusy(ctx, srv, 2, o)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.close()
	p := newPool("Custom:H", 100)
	stop := busy.traceHops(ctx)
	res, err := measureLatency(ctx, busy, p, clock{base: time.Now()}, 100, 500*time.Millisecond)
	h := stop()
	if err != nil {
		t.Fatal(err)
	}
	if res.n != 50 || res.lost != 0 {
		t.Fatalf("latency run: %d changes, %d lost", res.n, res.lost)
	}
	// A change whose stages could not all be matched is allowed to be
	// rare (a flush of the AMI socket can be taken for another's), not
	// common.
	if len(h.total) < 45 || h.incomplete > 5 {
		t.Fatalf("breakdown of %d changes: %d complete, %d incomplete", res.n, len(h.total), h.incomplete)
	}
	for i := range h.total {
		var sum time.Duration
		for s := range segments {
			if h.seg[s][i] < 0 {
				t.Fatalf("change %d: segment %q negative: %v", i, segments[s], h.seg[s][i])
			}
			sum += h.seg[s][i]
		}
		if sum != h.total[i] {
			t.Fatalf("change %d: segments add up to %v, total %v", i, sum, h.total[i])
		}
	}
	var out strings.Builder
	h.print(&out, "test")
	for _, s := range segments {
		if !strings.Contains(out.String(), s) {
			t.Errorf("breakdown lacks %q:\n%s", s, out.String())
		}
	}
	if h.changes != 50 {
		t.Errorf("breakdown counted %d changes sent, want 50", h.changes)
	}
}

// The p999 tail is the changes at or past the total's p999, and its
// attribution the mean of each segment over them.
func TestTailRows(t *testing.T) {
	var rows [][]time.Duration
	for i := 1; i <= 1000; i++ {
		server := time.Duration(i) * time.Microsecond
		if i > 998 {
			server = 40 * time.Millisecond // the spikes are the server's
		}
		rows = append(rows, []time.Duration{100 * time.Microsecond, server, 100*time.Microsecond + server})
	}
	tail := tailRows(rows, 0.999)
	if len(tail) != 2 {
		t.Fatalf("tail of %d rows, want the 2 at or past p999", len(tail))
	}
	if m := mean(column(tail, 1)); m != 40*time.Millisecond {
		t.Fatalf("tail's server segment %v, want 40 ms", m)
	}
	if tailRows(nil, 0.999) != nil {
		t.Fatal("tail of nothing")
	}
}
