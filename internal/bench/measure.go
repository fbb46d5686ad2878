package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// system is what a measurement drives: the baseline's bare clients or a
// busylamp cluster behind its AMI sockets.
type system interface {
	receivers() int
	// onChange is called for every change a receiver sees, on one
	// goroutine per receiver.
	onChange(func(r int, device, state string))
	send(device, state string) error
	flush() error
	// sentAll returns once the system has taken every change sent.
	sentAll(ctx context.Context) error
}

// devicePool is the fixed set of devices a system's changes go to, as on
// a PBX: change g (counted over the whole run) sets device g mod size to
// the state that is not its current one, so every change is a change and
// a node never holds more than size items. A device is set again only
// once its last change has reached every receiver (fewer than size
// changes are ever outstanding), so what a receiver sees of device d is
// the last change sent to d: nothing can be coalesced away.
type devicePool struct {
	prefix   string
	size     int
	states   []string
	lookBack int            // how many of a device's last changes a received state may be
	next     int            // changes sent so far
	last     []atomic.Int64 // per device: the last change sent to it
	wrong    atomic.Int64   // changes seen in a state that was not sent
}

var poolStates = [2]string{"INUSE", "NOT_INUSE"}

func newPool(prefix string, size int) *devicePool {
	return &devicePool{prefix: prefix, size: size, states: poolStates[:], lookBack: 1, last: make([]atomic.Int64, size)}
}

// oneDeviceStates are what the one-device pool cycles through: every
// change is a change, and seven in a row are told apart.
var oneDeviceStates = []string{"INUSE", "NOT_INUSE", "BUSY", "RINGING", "ONHOLD", "RINGINUSE", "UNAVAILABLE"}

// newOneDevicePool is the latency run over one device: every change is to
// the same device, as when one phone's lamp flickers.
func newOneDevicePool(prefix string) *devicePool {
	p := newPool(prefix, 1)
	p.states, p.lookBack = oneDeviceStates, len(oneDeviceStates)
	return p
}

func (p *devicePool) device(d int) string { return p.prefix + strconv.Itoa(d) }

// take is change g, to be sent now.
func (p *devicePool) take(g int) (device, state string) {
	d := g % p.size
	p.last[d].Store(int64(g))
	p.next = g + 1
	return p.device(d), p.state(g)
}

func (p *devicePool) state(g int) string { return p.states[(g/p.size)%len(p.states)] }

// received maps what a receiver saw to the change number; false for
// anything that is not a pool change. A pool of one device cycles
// through several states, so a change that arrives after the next one
// was sent is still told apart (as long as fewer than len(states)
// changes overtake it).
func (p *devicePool) received(device, state string) (int, bool) {
	d, ok := parseSeq(device, p.prefix)
	if !ok || d >= p.size {
		return 0, false
	}
	last := int(p.last[d].Load())
	for k := range p.lookBack {
		if g := last - k*p.size; g >= 0 && p.state(g) == state {
			return g, true
		}
	}
	p.wrong.Add(1)
	return 0, false
}

// want is the state every device of the pool must show now.
func (p *devicePool) want() map[string]string {
	m := make(map[string]string, p.size)
	for g := max(0, p.next-p.size); g < p.next; g++ {
		m[p.device(g%p.size)] = p.state(g)
	}
	return m
}

// latencyResult is publish→notify (or Setvar→event) latency over every
// receiver.
type latencyResult struct {
	n, lost        int
	p50, p99, p999 time.Duration
	samples        []time.Duration
	at             []int64 // when each sample's change was sent (clock.now)
	rcv            []int32 // which receiver saw it (when known)
}

// pool merges runs into one result.
func pool(rs ...latencyResult) latencyResult {
	var out latencyResult
	for _, r := range rs {
		out.n += r.n
		out.lost += r.lost
		out.samples = append(out.samples, r.samples...)
		out.at = append(out.at, r.at...)
		out.rcv = append(out.rcv, r.rcv...)
	}
	ps := percentiles(out.samples, 0.50, 0.99, 0.999)
	out.p50, out.p99, out.p999 = ps[0], ps[1], ps[2]
	return out
}

// receiverP50s is the p50 of each receiver's samples, fastest first
// (nil when the samples do not say who saw them): how far apart the
// receivers of one change are. Pinned, the agents that receive share
// the CPU the server leaves the bench, and take turns.
func receiverP50s(l latencyResult) []time.Duration {
	if len(l.rcv) != len(l.samples) {
		return nil
	}
	by := map[int32][]time.Duration{}
	for i, d := range l.samples {
		by[l.rcv[i]] = append(by[l.rcv[i]], d)
	}
	out := make([]time.Duration, 0, len(by))
	for _, d := range by {
		out = append(out, percentiles(d, 0.50)[0])
	}
	slices.Sort(out)
	return out
}

// track routes what the receivers see to tr, for the changes [g0, g0+n).
func track(sys system, p *devicePool, tr *tracker, g0, n int) {
	sys.onChange(func(r int, device, state string) {
		if g, ok := p.received(device, state); ok && g >= g0 && g < g0+n {
			tr.got(r, g-g0)
		}
	})
}

// measureLatency sends rate changes per second for dur.
func measureLatency(ctx context.Context, sys system, p *devicePool, clk clock, rate int, dur time.Duration) (latencyResult, error) {
	n := int(float64(rate) * dur.Seconds())
	tr := newTracker(clk, n, sys.receivers())
	tr.measure.Store(true)
	g0 := p.next
	track(sys, p, tr, g0, n)
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		tr.sent(i)
		if err := sys.send(p.take(g0 + i)); err != nil {
			return latencyResult{}, err
		}
		if err := sys.flush(); err != nil {
			return latencyResult{}, err
		}
	}
	waitFor(ctx, 10*time.Second, func() bool { return tr.slowest() >= int64(n) })
	tr.lat.mu.Lock()
	samples, at, rcv := slices.Clone(tr.lat.d), slices.Clone(tr.lat.at), slices.Clone(tr.lat.r)
	tr.lat.mu.Unlock()
	return pool(latencyResult{n: n, lost: n - int(tr.slowest()), samples: samples, at: at, rcv: rcv}), nil
}

// throughputResult is the rate the slowest receiver sustained with at most
// window changes outstanding (sent, not yet seen by every receiver).
type throughputResult struct {
	perSec float64
	sent   int
	lost   int
	runs   []float64
	cpu    cpuUse // over the measured part (after warm-up); summed over runs by median
}

// median of several runs; lost and sent add up.
func median(rs ...throughputResult) throughputResult {
	var out throughputResult
	for _, r := range rs {
		out.sent += r.sent
		out.lost += r.lost
		out.cpu = out.cpu.add(r.cpu)
		out.runs = append(out.runs, r.perSec)
	}
	s := slices.Clone(out.runs)
	slices.Sort(s)
	if len(s) > 0 {
		out.perSec = s[len(s)/2]
	}
	return out
}

// measureThroughput runs closed-loop for dur: a change is sent whenever
// fewer than window are outstanding. The rate is what the slowest receiver
// saw after warm, and every change must arrive in the end.
func measureThroughput(ctx context.Context, sys system, p *devicePool, clk clock, window int, dur, warm time.Duration, cpu cpuMeter) (throughputResult, error) {
	if window >= p.size {
		return throughputResult{}, fmt.Errorf("window %d must be below the %d devices", window, p.size)
	}
	const maxChanges = 1 << 20
	tr := newTracker(clk, maxChanges, sys.receivers())
	g0 := p.next
	track(sys, p, tr, g0, maxChanges)
	start := time.Now()
	var c0, c1 int64
	var t0, t1 time.Time
	var s0, s1 cpuSample
	i := 0
	for i < maxChanges {
		now := time.Now()
		el := now.Sub(start)
		if t0.IsZero() && el >= warm {
			c0, t0 = tr.slowest(), now
			if cpu != nil {
				s0 = cpu()
			}
		}
		if el >= dur {
			c1, t1 = tr.slowest(), now
			if cpu != nil {
				s1 = cpu()
			}
			break
		}
		if int64(i)-tr.slowest() >= int64(window) {
			if err := sys.flush(); err != nil {
				return throughputResult{}, err
			}
			select {
			case <-tr.progress:
			case <-time.After(100 * time.Millisecond):
			case <-ctx.Done():
				return throughputResult{}, ctx.Err()
			}
			continue
		}
		tr.sent(i)
		if err := sys.send(p.take(g0 + i)); err != nil {
			return throughputResult{}, err
		}
		i++
		if i%16 == 0 {
			if err := sys.flush(); err != nil {
				return throughputResult{}, err
			}
		}
	}
	if err := sys.flush(); err != nil {
		return throughputResult{}, err
	}
	if t1.IsZero() {
		return throughputResult{}, fmt.Errorf("sent the maximum of %d changes before %v", maxChanges, dur)
	}
	waitFor(ctx, 30*time.Second, func() bool { return tr.slowest() >= int64(i) })
	res := throughputResult{perSec: float64(c1-c0) / t1.Sub(t0).Seconds(), sent: i, lost: i - int(tr.slowest())}
	if cpu != nil {
		res.cpu = usedBetween(s0, s1, c1-c0)
	}
	return res, nil
}

// burstStates is what each device cycles through in a burst; consecutive
// states differ, so every change is a change.
var burstStates = []string{"RINGING", "BUSY", "ONHOLD", "UNAVAILABLE"}

func burstState(i, devices int) string { return burstStates[(i/devices)%len(burstStates)] }

// burstResult: changes went into the system in send; every receiver
// showed the final state of every device lag after that (zero when it
// already did).
type burstResult struct {
	changes, devices int
	send             time.Duration
	lag              time.Duration
	seen             []int // changes each receiver saw
	pendingAtEnd     int   // busylamp: devices agent A had not published yet when the burst ended
}

type burstReceiver struct {
	mu      sync.Mutex
	cur     []string
	matched int
	count   int
	doneAt  int64 // when matched last reached devices (or count reached every change)
}

// measureBurst sends changes over the pool's first devices as fast as the
// system takes them. With every, a receiver is done when it has seen
// every change (a system that sends everything); otherwise when each
// device shows its final state (a system that may coalesce). The pool
// cannot be used for latency or throughput afterwards.
func measureBurst(ctx context.Context, sys system, p *devicePool, clk clock, changes, devices int, every bool, timeout time.Duration) (burstResult, error) {
	if devices > p.size {
		return burstResult{}, fmt.Errorf("burst over %d devices, the pool has %d", devices, p.size)
	}
	final := make([]string, devices)
	for i := max(0, changes-devices); i < changes; i++ {
		final[i%devices] = burstState(i, devices)
	}
	rs := make([]burstReceiver, sys.receivers())
	for i := range rs {
		rs[i].cur = make([]string, devices)
	}
	done := make(chan struct{}, 1)
	sys.onChange(func(r int, device, state string) {
		d, ok := parseSeq(device, p.prefix)
		if !ok || d >= devices {
			return
		}
		br := &rs[r]
		br.mu.Lock()
		br.count++
		was := br.cur[d] == final[d]
		br.cur[d] = state
		is := state == final[d]
		switch {
		case is && !was:
			br.matched++
		case was && !is:
			br.matched--
		}
		if (!every && is && !was && br.matched == devices) || (every && br.count == changes) {
			br.doneAt = clk.now()
			select {
			case done <- struct{}{}:
			default:
			}
		}
		br.mu.Unlock()
	})
	defer sys.onChange(func(int, string, string) {})
	t0 := clk.now()
	for i := range changes {
		if err := sys.send(p.device(i%devices), burstState(i, devices)); err != nil {
			return burstResult{}, err
		}
	}
	if err := sys.flush(); err != nil {
		return burstResult{}, err
	}
	if err := sys.sentAll(ctx); err != nil {
		return burstResult{}, err
	}
	end := clk.now()
	pending := 0
	if bs, ok := sys.(*busySystem); ok {
		pending = bs.pendingPublishes(ctx)
	}
	finished := func() bool {
		for i := range rs {
			br := &rs[i]
			br.mu.Lock()
			ok := (every && br.count == changes) || (!every && br.matched == devices)
			br.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	}
	deadline := time.After(timeout)
	for !finished() {
		select {
		case <-done:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return burstResult{}, fmt.Errorf("burst: receivers not at the final state %v after the burst", timeout)
		case <-ctx.Done():
			return burstResult{}, ctx.Err()
		}
	}
	res := burstResult{changes: changes, devices: devices, send: time.Duration(end - t0), pendingAtEnd: pending}
	for i := range rs {
		br := &rs[i]
		br.mu.Lock()
		if lag := time.Duration(br.doneAt - end); lag > res.lag {
			res.lag = lag
		}
		res.seen = append(res.seen, br.count)
		br.mu.Unlock()
	}
	return res, nil
}

// burstWant is the final state of every device of a burst.
func burstWant(p *devicePool, changes, devices int) map[string]string {
	want := make(map[string]string, devices)
	for i := max(0, changes-devices); i < changes; i++ {
		want[p.device(i%devices)] = burstState(i, devices)
	}
	return want
}

// waitFor polls cond until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
