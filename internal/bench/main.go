// Command bench measures busylamp end to end against a baseline measured in
// the same run, on real XMPP servers started on loopback (make bench):
//
//   - baseline: plain XMPP clients, one publishing Asterisk-shaped
//     items, the others subscribed, through the same server: publish→notify
//     latency at light load and the most notifications per second;
//   - busylamp: Setvar DEVICE_STATE on agent A's AMI socket →
//     DeviceStateChange on the other agents' sockets, for 2 and 5 agents:
//     latency at 100 changes/s and the most changes per second with nothing
//     lost, then their ratios to the baseline;
//   - a burst of changes over a set of devices, as fast as A's socket takes
//     them, against the baseline publishing every change;
//   - scale: the resync time and memory of an agent joining 4 servers that
//     publish 10,000 or 100,000 devices, and DeviceStateList on it;
//   - many (-phases many): 2, 8 and 32 agents in processes of their own,
//     1,000 own devices each: convergence, CPU, RSS, a full restart (many.go).
//
// Every agent and client runs in this process (the joining agent of the
// scale test runs in a child process, so its RSS is its own), and every
// timestamp comes from the one monotonic clock.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/pubsub"
)

type options struct {
	quick       bool
	ejabberd    bool
	noProsody   bool
	rate        int
	latDur      time.Duration
	thrDur      time.Duration
	window      int
	burst       int
	burstDevs   int
	scale       []int
	cpuProfile  string
	phases      map[string]bool
	ejPhases    map[string]bool // on ejabberd
	sizes       []int
	pubWindow   int
	pin         bool // e2e: the server on a CPU of its own (pin.go)
	stallWatch  bool // e2e: the stall watch beside the latency runs
	maxDevices  int  // agents' max_devices (0: the default)
	profiled    bool
	profChanges int // changes sent during the profiled run
	rounds      int
	verbose     bool
	many        manyOptions
	log         *slog.Logger
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == childArg {
		os.Exit(childMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == manyChildArg {
		os.Exit(manyChildMain(os.Args[2:]))
	}
	var o options
	var scale string
	flag.BoolVar(&o.quick, "quick", false, "short run: shorter phases, a 20,000-change burst, scale 10,000 only")
	flag.BoolVar(&o.ejabberd, "ejabberd", false, "also run everything on ejabberd")
	flag.BoolVar(&o.noProsody, "no-prosody", false, "skip Prosody (with -ejabberd: ejabberd only)")
	flag.IntVar(&o.rate, "rate", 100, "light load, changes per second")
	flag.DurationVar(&o.latDur, "latency-time", 5*time.Second, "duration of each light-load run")
	flag.DurationVar(&o.thrDur, "throughput-time", 5*time.Second, "duration of each throughput run (the first quarter is warm-up)")
	flag.IntVar(&o.window, "window", 256, "throughput: most changes outstanding (sent, not yet seen by every receiver)")
	flag.IntVar(&o.burst, "burst", 100000, "burst: changes")
	flag.IntVar(&o.burstDevs, "burst-devices", 1000, "burst: devices")
	flag.StringVar(&scale, "scale", "10000,100000", "scale: device counts (comma-separated; empty: skip)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the 2-agent busylamp throughput run (labels node=agent1, node=agent2) to this file")
	flag.BoolVar(&o.verbose, "v", false, "agents log at info level")
	phases := flag.String("phases", "e2e,burst,scale", "what to run: e2e, burst, scale, live, many")
	ejPhases := flag.String("ejabberd-phases", "", "with -ejabberd: what to run on ejabberd (empty: as -phases)")
	sizes := flag.String("sizes", "2,5", "cluster sizes (agents, and plain clients for the baseline)")
	flag.IntVar(&o.pubWindow, "publish-window", 0, "agents' PublishWindow (0: busylamp's default)")
	flag.BoolVar(&o.stallWatch, "stall-watch", true, "e2e: the stall watch beside the latency runs (stalls.go)")
	flag.BoolVar(&o.pin, "pin", true, "e2e and burst: pin the server to the last CPU and this process to the others, so that they do not compete")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of latency and throughput, alternating baseline and busylamp")
	o.many.flags(flag.CommandLine)
	flag.Parse()
	o.phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		o.phases[strings.TrimSpace(p)] = true
	}
	o.ejPhases = o.phases
	if *ejPhases != "" {
		o.ejPhases = map[string]bool{}
		for _, p := range strings.Split(*ejPhases, ",") {
			o.ejPhases[strings.TrimSpace(p)] = true
		}
	}
	if o.quick {
		o.latDur, o.thrDur, o.burst, o.rounds = 3*time.Second, 4*time.Second, 20000, 1
		if scale == "10000,100000" {
			scale = "10000"
		}
	}
	o.scale, o.sizes = intList(scale), intList(*sizes)
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var kinds []xmpptest.Kind
	if !o.noProsody {
		kinds = append(kinds, xmpptest.Prosody)
	}
	if o.ejabberd {
		kinds = append(kinds, xmpptest.Ejabberd)
	}
	start := time.Now()
	var reports []*report
	for _, k := range kinds {
		ko := o
		if k == xmpptest.Ejabberd {
			ko.phases = o.ejPhases
		}
		r, err := runKind(ctx, k, &ko)
		o.profiled, o.profChanges = o.profiled || ko.profiled, max(o.profChanges, ko.profChanges)
		if r != nil {
			reports = append(reports, r)
		}
		if err != nil {
			logf("%s: %v", k, err)
			printReports(os.Stdout, reports, &o, time.Since(start))
			os.Exit(1)
		}
	}
	printReports(os.Stdout, reports, &o, time.Since(start))
}

// report holds one server's results.
type report struct {
	kind    xmpptest.Kind
	desc    string
	version string

	base1     latencyResult // one publisher, one subscriber (not the publisher)
	base1Thr  throughputResult
	base      map[int]latencyResult // n clients, all subscribed
	baseThr   map[int]throughputResult
	baseBurst burstResult
	busy      map[int]latencyResult
	relay     map[int]latencyResult    // the baseline behind two local sockets (relay.go)
	relayHops map[int][2]time.Duration // its socket hops' p50: in, out
	busyThr   map[int]throughputResult
	stalls    map[int][2]stalls // during the 1,000-device latency runs: baseline, busylamp
	pinned    string            // how latency, throughput and the burst ran (pin.go)
	busyBurst map[int]burstResult
	local     map[int]latencyResult // agent A's socket to itself
	hops      map[int]*hopBreakdown // busylamp's latency runs, per hop
	base1dev  map[int]latencyResult // the latency runs over one device
	busy1dev  map[int]latencyResult
	fair      map[int]fairness
	oneBad    map[int]int // agents whose one device is not in its last state
	burstBad  map[int]int // devices not in their final state (DeviceStateList)
	scale     []scaleResult
	many      []manyResult
}

// fairness is what the fair baseline's node and busylamp's have in
// common, read from the server after the warm-up.
type fairness struct {
	busy, base nodeFacts
	diff       []string // copied options that differ
}

func startServer(kind xmpptest.Kind) (*xmpptest.Server, error) {
	return xmpptest.Start(kind, xmpptest.Options{Memory: kind == xmpptest.Prosody})
}

func runKind(ctx context.Context, kind xmpptest.Kind, o *options) (*report, error) {
	r := &report{kind: kind, version: serverVersion(kind),
		base: map[int]latencyResult{}, baseThr: map[int]throughputResult{},
		busy: map[int]latencyResult{}, relay: map[int]latencyResult{}, relayHops: map[int][2]time.Duration{}, busyThr: map[int]throughputResult{}, stalls: map[int][2]stalls{},
		busyBurst: map[int]burstResult{}, burstBad: map[int]int{}, local: map[int]latencyResult{},
		hops: map[int]*hopBreakdown{}, base1dev: map[int]latencyResult{}, busy1dev: map[int]latencyResult{}, fair: map[int]fairness{}, oneBad: map[int]int{}}
	r.desc = string(kind)
	if kind == xmpptest.Prosody {
		r.desc += ", PubSub in memory"
	}
	for _, n := range o.sizes {
		if !o.phases["e2e"] && !o.phases["burst"] {
			break
		}
		if err := withServer(kind, func(srv *xmpptest.Server) error { return runCluster(ctx, srv, n, o, r) }); err != nil {
			return r, fmt.Errorf("%d agents: %w", n, err)
		}
	}
	for _, n := range o.scale {
		if !o.phases["scale"] {
			break
		}
		err := withServer(kind, func(srv *xmpptest.Server) error {
			res, err := measureScale(ctx, srv, n, o)
			r.scale = append(r.scale, res)
			return err
		})
		if err != nil {
			return r, fmt.Errorf("scale %d: %w", n, err)
		}
	}
	if o.phases["live"] { // live.go prints its own table
		if err := withServer(kind, func(srv *xmpptest.Server) error { return measureLiveDuringRepublish(ctx, srv, o) }); err != nil {
			return r, fmt.Errorf("live during republish: %w", err)
		}
	}
	if o.phases["many"] {
		return r, runMany(ctx, kind, o, r)
	}
	return r, nil
}

// The systems of runCluster, by index.
const (
	sysBase  = iota // the bare clients
	sysBusy         // busylamp's agents, AMI to AMI
	sysRelay        // the bare clients behind two local sockets (relay.go)
	sysRef          // one publisher, one subscriber (the first size only)
)

// runCluster measures the baseline and busylamp with n members on one
// server, alternating between them round by round, so that both meet the
// same conditions (this machine is shared).
func runCluster(ctx context.Context, srv *xmpptest.Server, n int, o *options, r *report) error {
	kind := srv.Kind
	clk := clock{base: time.Now()}
	logf("%s: %d plain clients and %d busylamp agents", kind, n, n)
	busy, err := startBusy(ctx, srv, n, o)
	if err != nil {
		return err
	}
	defer busy.close()
	// The fair baseline: its node is configured as busylamp's is (read
	// from the server as agent1's account, an owner), holds as many items
	// and has as many subscribers.
	probe, err := dialBareAs(ctx, srv, busy.cl.names[0], "probe", false)
	if err != nil {
		return err
	}
	defer probe.close()
	busyFacts, err := readNodeFacts(ctx, probe, srv.Service, pubsub.NodeDevices)
	if err != nil {
		return err
	}
	// Its node and accounts are named as long as busylamp's
	// ("device_state", "agent1"), so that every notification and answer
	// the server writes is as long on both sides.
	base, err := startBare(ctx, srv, "plain_states", "plain", n, true, busyFacts.fields)
	if err != nil {
		return err
	}
	defer base.close()
	var ref *bareSystem
	if n == o.sizes[0] {
		// The configuration: the publisher is not subscribed.
		if ref, err = startBare(ctx, srv, "bench_reference", "ref", 2, false, busyFacts.fields); err != nil {
			return err
		}
		defer ref.close()
	}
	relay, err := startRelay(base)
	if err != nil {
		return err
	}
	defer relay.close()
	// Indexed by sysBase, sysBusy, sysRelay, sysRef.
	systems := []system{base, busy, relay}
	if ref != nil {
		systems = append(systems, ref)
	}
	// Each system's changes go to its own pool of devices (its own node);
	// the relay's are the baseline's (it is the baseline's node).
	size := max(1000, o.burstDevs)
	pools := make([]*devicePool, len(systems))
	for i := range pools {
		pools[i] = newPool("Custom:D", size)
	}
	pools[sysRelay] = pools[sysBase]
	busyPool := pools[1]
	// A first pass over every device of the pools makes every path warm
	// and gives each node one item per device: the same number of items.
	one := make([]*devicePool, len(systems))
	for i, sys := range systems {
		if _, err := measureLatency(ctx, sys, pools[i], clk, 500, time.Duration(size)*time.Second/500); err != nil {
			return err
		}
		if i == sysRelay {
			continue // the baseline's node: no item more than busylamp's
		}
		one[i] = newOneDevicePool(fmt.Sprintf("Custom:S%d-", i))
		if _, err := measureLatency(ctx, sys, one[i], clk, 50, 200*time.Millisecond); err != nil {
			return err
		}
	}
	baseFacts, err := readNodeFacts(ctx, base.clients[0], srv.Service, base.node)
	if err != nil {
		return err
	}
	if busyFacts, err = readNodeFacts(ctx, probe, srv.Service, pubsub.NodeDevices); err != nil {
		return err
	}
	relay.resetHops()
	r.fair[n] = fairness{busy: busyFacts, base: baseFacts, diff: busyFacts.differences(baseFacts)}
	// Latency, throughput and the burst (whose floor is the throughput
	// measured here) run pinned; the other phases, on servers of their
	// own, on every CPU.
	if o.pin {
		undo, desc, err := pinApart(serverPIDs(srv))
		if err != nil {
			return fmt.Errorf("pin the server apart: %w", err)
		}
		r.pinned = desc
		defer undo()
	} else {
		r.pinned = "not pinned (-pin=false)"
	}
	if o.phases["e2e"] {
		warm := o.thrDur / 4
		cpu := newCPUMeter(serverPIDs(srv))
		lat := make([][]latencyResult, len(systems))
		lat1 := make([][]latencyResult, len(systems))
		thr := make([][]throughputResult, len(systems))
		var hops []*hopBreakdown
		// The probe has no presence: its pings see the server, and it gets
		// no notifications.
		pingServer := func(ctx context.Context) error {
			return probe.iq(ctx, "get", srv.Domain, `<ping xmlns="urn:xmpp:ping"/>`)
		}
		var watched [2]stalls
		for round := range o.rounds {
			// The relay between the two, the reference last.
			order := []int{sysBase, sysRelay, sysBusy, sysRef}[:len(systems)]
			if round%2 == 1 {
				order[0], order[2] = sysBusy, sysBase
			}
			logf("%s: %d members, round %d of %d: latency at %d/s, then throughput", kind, n, round+1, o.rounds, o.rate)
			for _, i := range order {
				var stop func() *hopBreakdown
				if i == sysBusy {
					stop = busy.traceHops(ctx)
				}
				// The stall watch runs beside the baseline, the relay and
				// busylamp: its pings and 1 ms sleeps share the bench's
				// CPU and lengthen its wake-ups (the relay's Setvar hop,
				// p50, from 17-48 µs without it to 49-88 µs), so all three
				// meet it. The relay's is not reported.
				var stopWatch func() *stalls
				if i != sysRef && o.stallWatch {
					stopWatch = watchStalls(ctx, clk, pingServer)
				}
				l, err := measureLatency(ctx, systems[i], pools[i], clk, o.rate, o.latDur)
				if stop != nil {
					hops = append(hops, stop())
				}
				if stopWatch != nil {
					if st := stopWatch(); i == sysBase || i == sysBusy {
						watched[i].add(st)
					}
				}
				if err != nil {
					return err
				}
				lat[i] = append(lat[i], l)
			}
			for _, i := range order {
				if i == sysRelay || i == sysRef {
					continue
				}
				l, err := measureLatency(ctx, systems[i], one[i], clk, o.rate, o.latDur/2)
				if err != nil {
					return err
				}
				lat1[i] = append(lat1[i], l)
			}
			for _, i := range order {
				if i == sysRelay {
					continue // latency only
				}
				profile := i == sysBusy && n == o.sizes[0] && round == 0 && o.cpuProfile != "" && !o.profiled
				o.profiled = o.profiled || profile
				t, err := measureBusyThroughput(ctx, systems[i], pools[i], clk, o, warm, profile, cpu)
				if err != nil {
					return err
				}
				thr[i] = append(thr[i], t)
			}
		}
		// Agent A's own socket: Setvar in, its DeviceStateChange out, no
		// XMPP on the way: what the AMI hops cost.
		busy.onlySender = true
		local, err := measureLatency(ctx, busy, busyPool, clk, o.rate, o.latDur)
		busy.onlySender = false
		if err != nil {
			return err
		}
		r.local[n] = local
		r.hops[n] = mergeBreakdowns(hops...)
		r.base1dev[n], r.busy1dev[n] = pool(lat1[0]...), pool(lat1[1]...)
		if r.oneBad[n], err = busy.check(ctx, one[1].want()); err != nil {
			return err
		}
		r.stalls[n] = watched
		r.base[n], r.baseThr[n] = pool(lat[0]...), median(thr[0]...)
		r.busy[n], r.busyThr[n] = pool(lat[1]...), median(thr[1]...)
		r.relay[n] = pool(lat[sysRelay]...)
		in, out := relay.hopP50s()
		r.relayHops[n] = [2]time.Duration{in, out}
		if ref != nil {
			r.base1, r.base1Thr = pool(lat[sysRef]...), median(thr[sysRef]...)
		}
		for i, p := range pools {
			if w := p.wrong.Load(); w > 0 {
				return fmt.Errorf("system %d: %d changes arrived in a state that was not sent", i, w)
			}
		}
	}
	if !o.phases["burst"] {
		return nil
	}
	logf("%s: busylamp burst, %d agents, %d changes over %d devices", kind, n, o.burst, o.burstDevs)
	// Agent A shows each state as soon as its Setvar is answered; its own
	// events would only load this process, so its listener stops taking
	// them. Its DeviceStateList is checked with the others'.
	if err := busy.listeners[0].stopEvents(); err != nil {
		return err
	}
	res, err := measureBurst(ctx, busy, busyPool, clk, o.burst, o.burstDevs, false, 2*time.Minute)
	if err != nil {
		return err
	}
	r.busyBurst[n] = res
	busy.withSender = true
	if r.burstBad[n], err = busy.check(ctx, burstWant(busyPool, o.burst, o.burstDevs)); err != nil {
		return err
	}
	if n == o.sizes[0] {
		logf("%s: baseline burst, %d changes over %d devices, every change published", kind, o.burst, o.burstDevs)
		r.baseBurst, err = measureBurst(ctx, base, pools[0], clk, o.burst, o.burstDevs, true, 10*time.Minute)
	}
	return err
}

// measureBusyThroughput measures throughput; for busylamp it then checks
// every agent's DeviceStateList, and it may profile the run.
func measureBusyThroughput(ctx context.Context, sys system, p *devicePool, clk clock, o *options, warm time.Duration, profile bool, cpu cpuMeter) (throughputResult, error) {
	if profile {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return throughputResult{}, err
		}
		defer f.Close()
		// 1,000 samples a second rather than 100: the agents' CPU per
		// change is a few hundred samples otherwise (the runtime warns
		// that the rate was set before; the profile is right).
		runtime.SetCPUProfileRate(1000)
		if err := pprof.StartCPUProfile(f); err != nil {
			return throughputResult{}, err
		}
	}
	t, err := measureThroughput(ctx, sys, p, clk, o.window, o.thrDur, warm, cpu)
	if profile {
		pprof.StopCPUProfile()
		o.profChanges = t.sent
	}
	if err != nil {
		return t, err
	}
	if bs, ok := sys.(*busySystem); ok {
		bad, err := bs.check(ctx, p.want())
		if err != nil {
			return t, err
		}
		t.lost = max(t.lost, bad)
	}
	return t, nil
}

func intList(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func withServer(kind xmpptest.Kind, f func(*xmpptest.Server) error) error {
	srv, err := startServer(kind)
	if err != nil {
		return err
	}
	defer srv.Close()
	return f(srv)
}

func serverVersion(kind xmpptest.Kind) string {
	pkg := map[xmpptest.Kind]string{xmpptest.Prosody: "prosody", xmpptest.Ejabberd: "ejabberd"}[kind]
	out, err := runQuiet("dpkg-query", "-W", "-f=${Version}", pkg)
	if err != nil {
		return "?"
	}
	return out
}

func machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf(", %.1f GiB", float64(kb)/(1<<20))
		}
	}
	return fmt.Sprintf("%d CPUs%s, %s %s/%s", runtime.NumCPU(), mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
