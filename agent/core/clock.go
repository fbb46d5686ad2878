package core

import (
	"sort"
	"sync"
	"time"
)

// Clock is where the core (and the agent around it) reads the time and
// starts timers, so that tests drive grace periods and timeouts by hand
// instead of sleeping through them.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// the timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer started by a Clock.
type Timer interface {
	// Stop prevents the call if it has not happened; it reports whether
	// it did.
	Stop() bool
}

// SystemClock is the real clock. Its Now is the wall time at the call to
// SystemClock plus the monotonic time since: a step of the system clock
// (NTP, an operator) moves neither the order of updates nor the grace
// periods.
func SystemClock() Clock { return systemClock{start: time.Now()} }

type systemClock struct{ start time.Time }

func (c systemClock) Now() time.Time { return c.start.Add(time.Since(c.start)).Round(0) }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return time.AfterFunc(d, f)
}

// After returns a channel closed once d has passed on c, and a stop
// function that releases the timer early.
func After(c Clock, d time.Duration) (<-chan struct{}, func() bool) {
	ch := make(chan struct{})
	t := c.AfterFunc(d, func() { close(ch) })
	return ch, t.Stop
}

// ManualClock is a Clock for tests: time stands still until Advance moves
// it, and Advance runs the calls of the timers that came due, in order, in
// the caller's goroutine. It starts at a fixed instant.
type ManualClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*manualTimer
	started chan struct{} // signalled whenever a timer is started
}

type manualTimer struct {
	c    *ManualClock
	when time.Time
	f    func()
	seq  int
	done bool
}

// NewManualClock makes a ManualClock at 2026-01-01T00:00:00Z.
func NewManualClock() *ManualClock {
	return &ManualClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), started: make(chan struct{}, 1)}
}

// Now is the clock's time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc starts a timer that fires when Advance passes now+d.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, when: c.now.Add(d), f: f, seq: len(c.timers)}
	c.timers = append(c.timers, t)
	select {
	case c.started <- struct{}{}:
	default:
	}
	return t
}

// Started is signalled (at most one signal pending) whenever a timer is
// started, so a test can wait until the code under test armed one.
func (c *ManualClock) Started() <-chan struct{} { return c.started }

// Pending is how many timers are armed and not yet due.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.done {
			n++
		}
	}
	return n
}

// Step sets the clock's time back or forth by d, as an operator or NTP
// steps a system clock: no timer fires.
func (c *ManualClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Advance moves the clock by d and runs every timer that came due, in
// order of their due time, each to completion, before it returns.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*manualTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.done:
		case !t.when.After(c.now):
			t.done = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].when.Before(due[j].when) })
	for _, t := range due {
		t.f()
	}
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	return true
}
