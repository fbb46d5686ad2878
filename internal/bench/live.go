package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/busylamp/busylamp/agent"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Live changes during a republish (issue 12, item 7): agent A holds many
// own states and republishes them, as it does after every reconnect
// (resync) and after a purge; meanwhile changes on other devices go into
// A's socket at the light-load rate, and their latency to B's socket is
// compared with the latency when nothing is republished, measured in the
// same run before and after.
//
// Prosody's memory store loses replaced items from its index now and then
// (PROTOCOL.md), and busylamp's purge probe then reads an own item as
// gone and republishes again, so a republish of many states there may be
// followed by more. What is measured is the first pass: from the call
// until A has sent as many publishes as it has states, plus the live
// changes sent meanwhile; the republishes the probe added are counted.

var liveDevices = flag.Int("live-devices", 100000, "live: own states agent A republishes")

// livePool is the number of devices the live changes go to.
const livePool = 1000

// targetLiveP99Ratio bounds p99 during a republish against idle p99.
const targetLiveP99Ratio = 2.0

type liveResult struct {
	devices   int
	load      time.Duration // A's first publish of its states: Setvar on its socket until every publish is answered
	republish time.Duration // Republish called → the first pass sent
	drained   bool          // nothing pending or in flight after the first pass (else: the probe's republishes)
	reprobed  int64         // republishes the purge probe started ("an own item is gone")
	pubErrors uint64        // publishes the server refused, over the run
	idle      [2]latencyResult
	during    latencyResult
	chunks    int // one-second runs wholly inside the first pass
}

// reprobeCounter passes records on and counts the purge probe's
// republishes.
type reprobeCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (c reprobeCounter) Enabled(context.Context, slog.Level) bool { return true }

func (c reprobeCounter) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "an own item is gone from the node") {
		c.n.Add(1)
	}
	if c.Handler.Enabled(ctx, r.Level) {
		return c.Handler.Handle(ctx, r)
	}
	return nil
}

func (c reprobeCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return reprobeCounter{c.Handler.WithAttrs(as), c.n}
}

func (c reprobeCounter) WithGroup(name string) slog.Handler {
	return reprobeCounter{c.Handler.WithGroup(name), c.n}
}

// pubCounters are a node's publish counters ('show stats').
type pubCounters struct {
	Published, Errors, Waited uint64
	Pending, InFlight         int
}

// publishStats reads the node's publish counters from 'show stats'.
func publishStats(ctx context.Context, n *agent.Agent) (pubCounters, error) {
	var st pubCounters
	out, err := n.Command(ctx, "show stats")
	if err != nil {
		return st, err
	}
	_, rest, ok := strings.Cut(out, "Publishes: ")
	if !ok {
		return st, fmt.Errorf("show stats: no publish counters in %q", out)
	}
	rest, _, _ = strings.Cut(rest, "\n")
	for _, f := range strings.Fields(strings.Trim(strings.TrimSpace(rest), "{}")) {
		k, v, _ := strings.Cut(f, ":")
		switch k {
		case "Published":
			fmt.Sscan(v, &st.Published)
		case "Errors":
			fmt.Sscan(v, &st.Errors)
		case "Waited":
			fmt.Sscan(v, &st.Waited)
		case "Pending":
			fmt.Sscan(v, &st.Pending)
		case "InFlight":
			fmt.Sscan(v, &st.InFlight)
		}
	}
	return st, nil
}

// measureLiveDuringRepublish runs two agents on srv and prints its table.
func measureLiveDuringRepublish(ctx context.Context, srv *xmpptest.Server, o *options) error {
	res := liveResult{devices: *liveDevices}
	clk := clock{base: time.Now()}
	logf("%s: live during republish: 2 agents, A publishes %d own states", srv.Kind, res.devices)
	var reprobed atomic.Int64
	lo := *o
	lo.log = slog.New(reprobeCounter{o.log.Handler(), &reprobed})
	// B holds A's own states and the live pool's: an account's share
	// (half of max_devices) must take both, or the live changes are
	// refused as a flood once A's states fill it (at 100,000 they do).
	lo.maxDevices = max(devstate.DefaultMaxDevices, 2*(res.devices+livePool))
	busy, err := startBusy(ctx, srv, 2, &lo)
	if err != nil {
		return err
	}
	defer busy.close()
	a := busy.cl.nodes[0]

	// A's own states, published once: the items the republish overwrites.
	// Their events would overflow the listeners' sessions (this process
	// is busy loading): events are off meanwhile.
	for _, l := range busy.listeners {
		if err := l.stopEvents(); err != nil {
			return err
		}
	}
	t0 := time.Now()
	loader, err := dialSender(ctx, a.ManagerAddr())
	if err != nil {
		return err
	}
	for i := range res.devices {
		if err := loader.setvar(fmt.Sprintf("Custom:R%d", i), scaleStates[i%len(scaleStates)]); err != nil {
			loader.close()
			return err
		}
	}
	err = loader.waitAnswered(ctx)
	loader.close()
	if err != nil {
		return err
	}
	if err := waitDrained(ctx, a, 15*time.Minute); err != nil {
		return fmt.Errorf("first publish: %w", err)
	}
	res.load = time.Since(t0)
	for _, l := range busy.listeners {
		if err := l.startEvents(); err != nil {
			return err
		}
	}
	logf("%s: A published %d states in %v", srv.Kind, res.devices, res.load.Round(time.Millisecond))

	p := newPool("Custom:L", livePool)
	if _, err := measureLatency(ctx, busy, p, clk, 50, time.Second); err != nil { // warm-up
		return err
	}
	if res.idle[0], err = measureLatency(ctx, busy, p, clk, o.rate, o.latDur); err != nil {
		return err
	}

	// The republish, as the agent starts it after a resync, on a
	// goroutine of its own; its first pass ends when A has sent as many
	// publishes as it has states, plus the live changes sent meanwhile
	// (polled every 10 ms; the last few may still be unanswered).
	logf("%s: A republishes; live changes at %d/s meanwhile", srv.Kind, o.rate)
	st0, err := publishStats(ctx, a)
	if err != nil {
		return err
	}
	reprobed0 := reprobed.Load()
	var passedAt atomic.Int64
	live0 := p.next
	start := time.Now()
	called := make(chan struct{})
	go func() {
		defer close(called)
		a.Core().Republish()
	}()
	watch := make(chan error, 1)
	go func() {
		<-called
		var last error
		if !waitFor(ctx, 15*time.Minute, func() bool {
			st, err := publishStats(ctx, a)
			last = err
			return err == nil && st.Published-st0.Published >= uint64(res.devices+p.next-live0)
		}) {
			watch <- fmt.Errorf("first pass not sent after 15 min (%v)", last)
			return
		}
		passedAt.Store(int64(time.Since(start)))
		watch <- nil
	}()
	var during []latencyResult
	for passedAt.Load() == 0 {
		l, err := measureLatency(ctx, busy, p, clk, o.rate, time.Second)
		if err != nil {
			return err
		}
		if passedAt.Load() == 0 { // wholly inside the first pass
			during = append(during, l)
		}
	}
	if err := <-watch; err != nil {
		return fmt.Errorf("republish: %w", err)
	}
	res.republish = time.Duration(passedAt.Load())
	res.during, res.chunks = pool(during...), len(during)
	// Idle again once the probe's republishes (if any) are over.
	res.drained = waitDrained(ctx, a, max(time.Minute, 2*res.republish)) == nil
	res.reprobed = reprobed.Load() - reprobed0
	if res.drained {
		if res.idle[1], err = measureLatency(ctx, busy, p, clk, o.rate, o.latDur); err != nil {
			return err
		}
	}
	if w := p.wrong.Load(); w > 0 {
		return fmt.Errorf("%d changes arrived in a state that was not sent", w)
	}
	st, err := publishStats(ctx, a)
	if err != nil {
		return err
	}
	res.pubErrors = st.Errors
	printLive(srv, o, res)
	return nil
}

// waitDrained waits until n has nothing to publish and nothing in flight.
func waitDrained(ctx context.Context, n *agent.Agent, d time.Duration) error {
	var last error
	if !waitFor(ctx, d, func() bool {
		st, err := publishStats(ctx, n)
		last = err
		return err == nil && st.Pending == 0 && st.InFlight == 0
	}) {
		return fmt.Errorf("publishes still pending after %v (%v)", d, last)
	}
	return nil
}

func printLive(srv *xmpptest.Server, o *options, r liveResult) {
	w := os.Stdout
	fmt.Fprintf(w, "\n== live changes during a republish: %s %s; %s\n", srv.Kind, serverVersion(srv.Kind), machine())
	fmt.Fprintf(w, "agent A republishes %d own states (Core.Republish, as after a resync); Setvar on A at %d/s over 1000 other\n"+
		"devices → DeviceStateChange on B's socket; idle: %v before and after the republish; during: one-second runs\n"+
		"wholly inside its first pass (%d)\n\n", r.devices, o.rate, o.latDur, r.chunks)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "phase\tp50\tp99\tp999\tchanges\tlost\t\n")
	row := func(name string, l latencyResult) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t\n", name, ms(l.p50), ms(l.p99), ms(l.p999), l.n, l.lost)
	}
	idle := pool(r.idle[0], r.idle[1])
	row("idle, before", r.idle[0])
	if r.drained {
		row("idle, after", r.idle[1])
	}
	row("idle, both", idle)
	row("during the republish", r.during)
	tw.Flush()
	rat := float64(r.during.p99) / float64(idle.p99)
	fmt.Fprintf(w, "\np99 during / idle p99: %.2f× (target ≤ %.0f×: %s); p50: %s\n", rat, targetLiveP99Ratio,
		check(rat <= targetLiveP99Ratio && r.during.n > 0), ratio(float64(r.during.p50), float64(idle.p50)))
	fmt.Fprintf(w, "republish of %d (first pass): %v (%.0f/s); their first publish: %v (%.0f/s); publish errors: %d\n",
		r.devices, r.republish.Round(time.Millisecond), float64(r.devices)/r.republish.Seconds(),
		r.load.Round(time.Millisecond), float64(r.devices)/r.load.Seconds(), r.pubErrors)
	if r.reprobed > 0 {
		fmt.Fprintf(w, "the purge probe read an own item as gone %d times and republished again (Prosody's memory store)", r.reprobed)
		if !r.drained {
			fmt.Fprintf(w, "; A was still republishing %v after the first pass: no idle run after it", max(time.Minute, 2*r.republish).Round(time.Second))
		}
		fmt.Fprintln(w)
	}
}
