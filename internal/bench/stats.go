package main

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// clock is the one time base of a run: every timestamp is time.Since(base),
// which reads Go's monotonic clock, in this one process.
type clock struct{ base time.Time }

func (c clock) now() int64 { return int64(time.Since(c.base)) }

// latencies collects samples from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
	at []int64 // when each was sent (clock.now)
	r  []int32 // which receiver saw it
}

func (l *latencies) add(at int64, d time.Duration, r int) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.at = append(l.at, at)
	l.r = append(l.r, int32(r))
	l.mu.Unlock()
}

// percentiles of the samples: p in [0,1], nearest rank.
func percentiles(d []time.Duration, ps ...float64) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	out := make([]time.Duration, len(ps))
	if len(s) == 0 {
		return out
	}
	for i, p := range ps {
		k := int(p*float64(len(s))+0.5) - 1
		out[i] = s[min(max(k, 0), len(s)-1)]
	}
	return out
}

// tracker follows numbered changes from the sender to every receiver.
// Senders store the send time of sequence i before sending it; receivers
// look it up when the change arrives.
type tracker struct {
	clk     clock
	sendAt  []atomic.Int64
	recv    []receiverTrack
	lat     latencies
	measure atomic.Bool // record latencies
	// progress gets a token whenever a receiver counts a new change, for a
	// sender that waits for its window to open.
	progress chan struct{}
}

type receiverTrack struct {
	mu   sync.Mutex
	seen []bool
	n    atomic.Int64 // distinct sequences seen
	dup  int
}

func newTracker(clk clock, max, receivers int) *tracker {
	t := &tracker{clk: clk, sendAt: make([]atomic.Int64, max), recv: make([]receiverTrack, receivers),
		progress: make(chan struct{}, 1)}
	for i := range t.recv {
		t.recv[i].seen = make([]bool, max)
	}
	return t
}

func (t *tracker) sent(seq int) { t.sendAt[seq].Store(t.clk.now()) }

// got records that receiver r saw sequence seq.
func (t *tracker) got(r, seq int) {
	at := t.clk.now()
	if seq < 0 || seq >= len(t.sendAt) {
		return
	}
	rt := &t.recv[r]
	rt.mu.Lock()
	if rt.seen[seq] {
		rt.dup++
		rt.mu.Unlock()
		return
	}
	rt.seen[seq] = true
	rt.mu.Unlock()
	rt.n.Add(1)
	if t.measure.Load() {
		sent := t.sendAt[seq].Load()
		t.lat.add(sent, time.Duration(at-sent), r)
	}
	select {
	case t.progress <- struct{}{}:
	default:
	}
}

// slowest is the count of the receiver that has seen the fewest changes.
func (t *tracker) slowest() int64 {
	m := int64(-1)
	for i := range t.recv {
		if n := t.recv[i].n.Load(); m < 0 || n < m {
			m = n
		}
	}
	return m
}

// parseSeq reads the sequence number after prefix in a device name.
func parseSeq(device, prefix string) (int, bool) {
	if len(device) <= len(prefix) || device[:len(prefix)] != prefix {
		return 0, false
	}
	n, err := strconv.Atoi(device[len(prefix):])
	return n, err == nil
}

func ms(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d < 10*time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// usDiff is a - b in whole microseconds, signed.
func usDiff(a, b time.Duration) string {
	return fmt.Sprintf("%+d µs", (a - b).Round(time.Microsecond).Microseconds())
}
