package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/internal/hop"
)

// The per-hop breakdown of busylamp's latency: every agent of the bench
// reports the stages of internal/hop to a recorder of its own, and for
// every change a receiver sees the bench puts the stages of the sender
// (agent A) and of that receiver (agent B) side by side, all read from
// this process's one monotonic clock.

// hopRecorder keeps, per device, the time of each stage last seen on one
// agent, and the start times of its last AMI writes. It records only
// while on (the latency runs): the burst and throughput runs pay nothing
// but the branch.
type hopRecorder struct {
	on      atomic.Bool
	mu      sync.Mutex
	at      [hop.Stages]map[string]time.Time
	flushes []time.Time // ring of the last len(flushes) writes' start
	next    int
}

// maxHopDevices bounds each stage's map; past it the map starts over (a
// latency run reaches each device once per pool cycle).
const maxHopDevices = 1 << 16

func newHopRecorder() *hopRecorder {
	r := &hopRecorder{flushes: make([]time.Time, 256)}
	for i := range r.at {
		r.at[i] = map[string]time.Time{}
	}
	return r
}

func (r *hopRecorder) record(s hop.Stage, name string, t time.Time) {
	if !r.on.Load() || s >= hop.Stages {
		return
	}
	r.mu.Lock()
	if s == hop.Flushed {
		r.flushes[r.next%len(r.flushes)] = t
		r.next++
	} else {
		m := r.at[s]
		if len(m) >= maxHopDevices {
			clear(m)
		}
		m[name] = t
	}
	r.mu.Unlock()
}

// stage is the time of s for name.
func (r *hopRecorder) stage(s hop.Stage, name string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[s][name]
	return t, ok
}

// flushAfter is the first recorded write start at or after t: the write
// that carried an event handed over at t.
func (r *hopRecorder) flushAfter(t time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best time.Time
	n := min(r.next, len(r.flushes))
	for i := range n {
		f := r.flushes[i]
		if !f.Before(t) && (best.IsZero() || f.Before(best)) {
			best = f
		}
	}
	return best, !best.IsZero()
}

// The segments of the breakdown, in the order a change passes them.
var segments = []string{
	"AMI in: Setvar sent → read by A",
	"agent A: read → publish written",
	"XMPP server: written → notification read by B",
	"agent B: read → table and merge done",
	"agent B: merged → AMI write starts",
	"AMI out: write starts → event read by client",
}

// hopBreakdown collects the segments' samples of one latency run.
type hopBreakdown struct {
	mu         sync.Mutex
	sentAt     map[string]time.Time
	seg        [][]time.Duration
	total      []time.Duration
	rows       [][]time.Duration // per change: its segments, then its total (the tail's attribution)
	incomplete int               // changes a stage was missing for, or out of order
	waited     uint64
	changes    int
}

func newHopBreakdown() *hopBreakdown {
	return &hopBreakdown{sentAt: map[string]time.Time{}, seg: make([][]time.Duration, len(segments))}
}

func (h *hopBreakdown) sent(device string, t time.Time) {
	h.mu.Lock()
	if len(h.sentAt) >= maxHopDevices {
		clear(h.sentAt)
	}
	h.sentAt[device] = t
	h.changes++
	h.mu.Unlock()
}

// received puts one change's stages on A and on B side by side.
func (h *hopBreakdown) received(a, b *hopRecorder, device string, got time.Time) {
	h.mu.Lock()
	sent, ok := h.sentAt[device]
	h.mu.Unlock()
	ts := []time.Time{sent}
	for _, st := range []struct {
		r *hopRecorder
		s hop.Stage
	}{{a, hop.AMIRead}, {a, hop.Written}, {b, hop.Read}, {b, hop.Merged}} {
		t, found := st.r.stage(st.s, device)
		ok = ok && found
		ts = append(ts, t)
	}
	if ok {
		f, found := b.flushAfter(ts[len(ts)-1])
		ok = found
		ts = append(ts, f)
	}
	ts = append(ts, got)
	for i := 1; ok && i < len(ts); i++ {
		ok = !ts[i].Before(ts[i-1])
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !ok {
		h.incomplete++
		return
	}
	row := make([]time.Duration, len(segments)+1)
	for i := range segments {
		row[i] = ts[i+1].Sub(ts[i])
		h.seg[i] = append(h.seg[i], row[i])
	}
	row[len(segments)] = got.Sub(sent)
	h.rows = append(h.rows, row)
	h.total = append(h.total, got.Sub(sent))
}

// merge pools several runs' samples.
func mergeBreakdowns(hs ...*hopBreakdown) *hopBreakdown {
	out := newHopBreakdown()
	for _, h := range hs {
		if h == nil {
			continue
		}
		for i := range h.seg {
			out.seg[i] = append(out.seg[i], h.seg[i]...)
		}
		out.total = append(out.total, h.total...)
		out.rows = append(out.rows, h.rows...)
		out.incomplete += h.incomplete
		out.waited += h.waited
		out.changes += h.changes
	}
	return out
}

// print writes the breakdown as a table: p50, p99 and mean per segment.
func (h *hopBreakdown) print(w io.Writer, title string) {
	if h == nil || len(h.total) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s: %d changes × receivers measured, %d incomplete; %d of %d changes waited in A's publish window\n\n",
		title, len(h.total), h.incomplete, h.waited, h.changes)
	// The tail: the changes at or past the p999 of the total, and where
	// their time went (the mean of each segment over them): a spike the
	// XMPP server made shows in "A wrote → B read".
	tail := tailRows(h.rows, 0.999)
	fmt.Fprintln(w, "| segment | p50 | p99 | mean | share of the mean | p999 tail: mean | share of the tail |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	tm := mean(h.total)
	tailTotal := column(tail, len(segments))
	for i, name := range segments {
		ps := percentiles(h.seg[i], 0.5, 0.99)
		m := mean(h.seg[i])
		tmi := mean(column(tail, i))
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.0f%% | %s | %.0f%% |\n", name, fmtDur(ps[0]), fmtDur(ps[1]), fmtDur(m),
			100*float64(m)/float64(max(tm, 1)), fmtDur(tmi), 100*float64(tmi)/float64(max(mean(tailTotal), 1)))
	}
	ps := percentiles(h.total, 0.5, 0.99)
	fmt.Fprintf(w, "| **total** (Setvar sent → event read) | %s | %s | %s | | %s (%d changes) | |\n",
		fmtDur(ps[0]), fmtDur(ps[1]), fmtDur(tm), fmtDur(mean(tailTotal)), len(tail))
}

// tailRows are the rows whose total (the last column) is at or past the
// q quantile of the totals.
func tailRows(rows [][]time.Duration, q float64) [][]time.Duration {
	if len(rows) == 0 {
		return nil
	}
	totals := column(rows, len(rows[0])-1)
	cut := percentiles(totals, q)[0]
	var out [][]time.Duration
	for _, r := range rows {
		if r[len(r)-1] >= cut {
			out = append(out, r)
		}
	}
	return out
}

func column(rows [][]time.Duration, i int) []time.Duration {
	out := make([]time.Duration, len(rows))
	for j, r := range rows {
		out[j] = r[i]
	}
	return out
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s / time.Duration(len(d))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}
