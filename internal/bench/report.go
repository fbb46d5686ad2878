package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets (issue 12).
const (
	targetP50Ratio  = 1.10
	targetP99Ratio  = 1.10
	targetP999Ratio = 1.5
	targetThrRatio  = 1.0
	targetBurstLag  = 250 * time.Millisecond
)

func printReports(w io.Writer, reports []*report, o *options, took time.Duration) {
	fmt.Fprintf(w, "\nbusylamp end-to-end benchmark, %s; %s; run took %s\n",
		time.Now().Format("2006-01-02 15:04"), machine(), took.Round(time.Second))
	fmt.Fprintf(w, "command: %s\n", strings.Join(os.Args, " "))
	fmt.Fprintf(w, "latency: %d changes/s over 1000 devices, %v per round; max/s: closed loop, at most %d changes outstanding\n"+
		"(sent, not yet seen by every receiver), %v per round, first quarter warm-up, median of the rounds; %d rounds\n"+
		"alternating baseline and busylamp on the same server, the baseline behind two local sockets between them;\n"+
		"receivers: every member but the sender\n",
		o.rate, o.latDur, o.window, o.thrDur, o.rounds)
	for _, r := range reports {
		printReport(w, r, o)
	}
	printCPUPerChange(w, o)
}

// printCPUPerChange reads each agent's CPU out of the profile (its
// samples carry the label node=NAME) and divides it by the changes of the
// profiled run.
func printCPUPerChange(w io.Writer, o *options) {
	if o.cpuProfile == "" || o.profChanges == 0 {
		return
	}
	out, err := exec.Command("go", "tool", "pprof", "-tags", o.cpuProfile).Output()
	if err != nil {
		fmt.Fprintf(w, "\nCPU per change: go tool pprof -tags %s: %v\n", o.cpuProfile, err)
		return
	}
	var parts []string
	for _, line := range strings.Split(string(out), "\n") {
		// "       90ms (56.25%): agent1"
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[2], "agent") {
			continue
		}
		d, err := time.ParseDuration(f[0])
		if err != nil {
			continue
		}
		role := "receiving"
		if f[2] == "agent1" {
			role = "publishing"
		}
		parts = append(parts, fmt.Sprintf("%s (%s) %.1f µs", f[2], role, float64(d)/1e3/float64(o.profChanges)))
	}
	fmt.Fprintf(w, "\nCPU per change (2-agent throughput run, %d changes, profile %s): %s (target ≤ 10 µs on the publishing agent)\n",
		o.profChanges, o.cpuProfile, strings.Join(parts, ", "))
}

func check(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// controlVerdict holds the baseline behind the two local sockets (an AMI
// agent that adds nothing else) to the latency targets busylamp is held
// to, and busylamp to them against it: what of a miss is the sockets'.
func controlVerdict(n int, base, relay, busy latencyResult) string {
	r := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	p50, p99, p999 := r(relay.p50, base.p50), r(relay.p99, base.p99), r(relay.p999, base.p999)
	b50, b99, b999 := r(busy.p50, relay.p50), r(busy.p99, relay.p99), r(busy.p999, relay.p999)
	return fmt.Sprintf("%d agents, 1000 devices, the same targets: the baseline behind the two sockets (nothing else) / the baseline: "+
		"p50 %.2f× (%s), p99 %.2f× (%s), p999 %.2f× (%s); busylamp / the baseline behind the sockets: p50 %.2f× (%s), p99 %.2f× (%s), p999 %.2f× (%s)",
		n, p50, check(p50 <= targetP50Ratio), p99, check(p99 <= targetP99Ratio), p999, check(p999 <= targetP999Ratio),
		b50, check(b50 <= targetP50Ratio), b99, check(b99 <= targetP99Ratio), b999, check(b999 <= targetP999Ratio))
}

func printReport(w io.Writer, r *report, o *options) {
	fmt.Fprintf(w, "\n== %s %s (%s)\n", r.kind, r.version, r.desc)
	if r.pinned != "" {
		fmt.Fprintf(w, "latency, throughput and burst: %s\n", r.pinned)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "system\tp50\tp99\tp999\tmax/s\t(runs)\tlost\t\n")
	row := func(name string, l latencyResult, t throughputResult) {
		runs := make([]int, len(t.runs))
		for i, v := range t.runs {
			runs[i] = int(v + 0.5)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.0f\t(%s)\t%d\t\n", name, ms(l.p50), ms(l.p99), ms(l.p999), t.perSec, ints(runs), l.lost+t.lost)
	}
	if r.base1.n > 0 {
		row("baseline: 1 publisher → 1 subscriber", r.base1, r.base1Thr)
	}
	var notes []string
	for _, n := range o.sizes {
		b, ok := r.base[n]
		if !ok {
			continue
		}
		row(fmt.Sprintf("baseline: %d clients, all subscribed", n), b, r.baseThr[n])
		rl, haveRelay := r.relay[n]
		haveRelay = haveRelay && rl.n > 0
		if haveRelay {
			fmt.Fprintf(tw, "  the same behind two local sockets (AMI in, AMI out)\t%s\t%s\t%s\t\t\t%d\t\n", ms(rl.p50), ms(rl.p99), ms(rl.p999), rl.lost)
		}
		l, ok := r.busy[n]
		if !ok {
			continue
		}
		t := r.busyThr[n]
		row(fmt.Sprintf("busylamp: %d agents (AMI → AMI)", n), l, t)
		if lo, ok := r.local[n]; ok {
			fmt.Fprintf(tw, "  of which AMI in → out on agent A alone\t%s\t%s\t%s\t\t\t\t\n", ms(lo.p50), ms(lo.p99), ms(lo.p999))
		}
		bt := r.baseThr[n]
		fmt.Fprintf(tw, "  ratio busylamp / baseline\t%s\t%s\t%s\t%s\t\t\t\n",
			ratio(float64(l.p50), float64(b.p50)), ratio(float64(l.p99), float64(b.p99)),
			ratio(float64(l.p999), float64(b.p999)), ratio(t.perSec, bt.perSec))
		if haveRelay {
			fmt.Fprintf(tw, "  ratio busylamp / the baseline behind sockets\t%s\t%s\t%s\t\t\t\t\n",
				ratio(float64(l.p50), float64(rl.p50)), ratio(float64(l.p99), float64(rl.p99)), ratio(float64(l.p999), float64(rl.p999)))
			notes = append(notes, fmt.Sprintf("%d agents, 1000 devices: the two local sockets alone add %s to the baseline's p50 (%.2f×); "+
				"busylamp's p50 is %.2f× the baseline's behind them, %s on top of them",
				n, usDiff(rl.p50, b.p50), float64(rl.p50)/float64(b.p50), float64(l.p50)/float64(rl.p50), usDiff(l.p50, rl.p50)))
			notes = append(notes, controlVerdict(n, b, rl, l))
			if hs, h := r.relayHops[n], r.hops[n]; hs[0] > 0 && h != nil && len(h.seg[0]) > 0 && len(h.seg[len(h.seg)-1]) > 0 {
				notes = append(notes, fmt.Sprintf("%d agents: socket hops at p50, relay / busylamp: in (Setvar sent → read) %s / %s, out (event write starts → read) %s / %s",
					n, us(hs[0]), us(percentiles(h.seg[0], 0.5)[0]), us(hs[1]), us(percentiles(h.seg[len(h.seg)-1], 0.5)[0])))
			}
		}
		p50r := float64(l.p50) / float64(b.p50)
		p99r := float64(l.p99) / float64(b.p99)
		p999r := float64(l.p999) / float64(b.p999)
		thrr := t.perSec / bt.perSec
		notes = append(notes, fmt.Sprintf("%d agents, 1000 devices: p50 %.2f× (≤ %.2f×: %s), p99 %.2f× (≤ %.2f×: %s), p999 %.2f× (≤ %.1f×: %s), "+
			"throughput %.3f× (≥ %.1f×: %s), lost %d",
			n, p50r, targetP50Ratio, check(p50r <= targetP50Ratio), p99r, targetP99Ratio, check(p99r <= targetP99Ratio),
			p999r, targetP999Ratio, check(p999r <= targetP999Ratio), thrr, targetThrRatio, check(thrr >= targetThrRatio), l.lost+t.lost))
		if b1, ok := r.base1dev[n]; ok && b1.n > 0 {
			l1 := r.busy1dev[n]
			fmt.Fprintf(tw, "baseline: %d clients, one device\t%s\t%s\t%s\t\t\t%d\t\n", n, ms(b1.p50), ms(b1.p99), ms(b1.p999), b1.lost)
			fmt.Fprintf(tw, "busylamp: %d agents, one device\t%s\t%s\t%s\t\t\t%d\t\n", n, ms(l1.p50), ms(l1.p99), ms(l1.p999), l1.lost)
			fmt.Fprintf(tw, "  ratio busylamp / baseline\t%s\t%s\t%s\t\t\t\t\n",
				ratio(float64(l1.p50), float64(b1.p50)), ratio(float64(l1.p99), float64(b1.p99)), ratio(float64(l1.p999), float64(b1.p999)))
			r50, r99 := float64(l1.p50)/float64(b1.p50), float64(l1.p99)/float64(b1.p99)
			notes = append(notes, fmt.Sprintf("%d agents, one device: p50 %.2f× (%s), p99 %.2f× (%s); %d changes not seen by some agent "+
				"(coalesced: a newer state came while the last publish was unanswered), last state wrong on %d agents",
				n, r50, check(r50 <= targetP50Ratio), r99, check(r99 <= targetP99Ratio), l1.lost, r.oneBad[n]))
		}
	}
	tw.Flush()
	for _, s := range notes {
		fmt.Fprintf(w, "  %s\n", s)
	}
	for _, n := range o.sizes {
		if f, ok := r.fair[n]; ok {
			diff := "none"
			if len(f.diff) > 0 {
				diff = strings.Join(f.diff, "; ")
			}
			fmt.Fprintf(w, "  fair baseline, %d members: items on the node busylamp %d / baseline %d; subscribers %d / %d; "+
				"access_model %s / %s, max_items %s / %s, persist_items %s / %s; options that differ: %s\n",
				n, f.busy.items, f.base.items, f.busy.subs, f.base.subs,
				f.busy.value("pubsub#access_model"), f.base.value("pubsub#access_model"),
				f.busy.value("pubsub#max_items"), f.base.value("pubsub#max_items"),
				f.busy.value("pubsub#persist_items"), f.base.value("pubsub#persist_items"), diff)
		}
	}
	for _, n := range o.sizes {
		b, l := receiverP50s(r.base[n]), receiverP50s(r.busy[n])
		if len(b) < 2 || len(l) < 2 {
			continue
		}
		// The fastest receiver against the others: what the receivers
		// of one change wait for each other on this machine.
		fmt.Fprintf(w, "  p50 by receiver, fastest first, %d members: baseline %s; busylamp %s\n", n, durations(b), durations(l))
	}
	for _, n := range o.sizes {
		st, ok := r.stalls[n]
		if !ok {
			continue
		}
		// The p999 tail of each side, beside what else was slow then.
		fmt.Fprintf(w, "  p999 tail, %d members, beside a ping of the server every 10 ms (its own client), a 1 ms sleep in this process and the steal:\n", n)
		b, l := r.base[n], r.busy[n]
		tailOf(b, b.p999, &st[0]).print(w, "baseline", b.p999)
		tailOf(l, l.p999, &st[1]).print(w, "busylamp", l.p999)
	}
	for _, n := range o.sizes {
		bc, lc := r.baseThr[n].cpu, r.busyThr[n].cpu
		if bc.changes == 0 || lc.changes == 0 {
			continue
		}
		// Where the machine's CPU went while the server was the limit:
		// the server's work per change on each side, and what this
		// process (the bare clients; the agents and their AMI clients)
		// took from it.
		fmt.Fprintf(w, "  CPU in the throughput runs, %d members, baseline / busylamp: server %.1f / %.1f µs per change (%.0f%% / %.0f%% of the machine); "+
			"this process %.1f / %.1f µs per change (%.0f%% / %.0f%%); idle %.0f%% / %.0f%%, steal %.0f%% / %.0f%%\n",
			n, bc.perChange(bc.server), lc.perChange(lc.server), bc.shareOf(bc.server), lc.shareOf(lc.server),
			bc.perChange(bc.self), lc.perChange(lc.self), bc.shareOf(bc.self), lc.shareOf(lc.self),
			bc.share(bc.idle), lc.share(lc.idle), bc.share(bc.steal), lc.share(lc.steal))
		br, bw, brc, bwc := bc.ioPerChange()
		lr, lw, lrc, lwc := lc.ioPerChange()
		fmt.Fprintf(w, "    the server's socket work per change, baseline / busylamp: %.2f / %.2f reads of %.0f / %.0f bytes, %.2f / %.2f writes of %.0f / %.0f bytes\n",
			br, lr, brc, lrc, bw, lw, bwc, lwc)
	}
	for _, n := range o.sizes {
		r.hops[n].print(w, fmt.Sprintf("busylamp, %d agents: where the time goes (latency runs at %d/s, A → every other agent)", n, o.rate))
	}

	if len(r.busyBurst) > 0 || r.baseBurst.changes > 0 {
		fmt.Fprintf(w, "\nburst: %d changes over %d devices, as fast as the socket (baseline: the client) takes them; lag = burst end → every receiver shows every final state\n\n",
			o.burst, o.burstDevs)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "system\ttaken in\trate\tlag\tseen per receiver\twrong at end\t\n")
		if b := r.baseBurst; b.changes > 0 {
			fmt.Fprintf(tw, "baseline: send every change (%d clients)\t%s\t%.0f/s\t%s\t%s\t-\t\n",
				o.sizes[0], ms(b.send), float64(b.changes)/b.send.Seconds(), ms(max(b.lag, time.Microsecond)), ints(b.seen))
		}
		for _, n := range o.sizes {
			b, ok := r.busyBurst[n]
			if !ok {
				continue
			}
			fmt.Fprintf(tw, "busylamp: %d agents, coalescing\t%s\t%.0f/s\t%s\t%s\t%d\t\n",
				n, ms(b.send), float64(b.changes)/b.send.Seconds(), ms(max(b.lag, time.Microsecond)), ints(b.seen), r.burstBad[n])
		}
		tw.Flush()
		for _, n := range o.sizes {
			if b, ok := r.busyBurst[n]; ok {
				floor := "-"
				if rate := r.baseThr[n].perSec; rate > 0 {
					f := time.Duration(float64(b.pendingAtEnd) / rate * float64(time.Second))
					floor = fmt.Sprintf("%s (%d devices pending ÷ %.0f publishes/s, the server's rate with %d subscribers), lag/floor %s",
						ms(max(f, time.Microsecond)), b.pendingAtEnd, rate, n, ratio(float64(b.lag), float64(f)))
				}
				fmt.Fprintf(w, "  %d agents: lag %s (target ≤ %v: %s); floor %s\n", n, ms(b.lag), targetBurstLag,
					check(b.lag <= targetBurstLag && r.burstBad[n] == 0), floor)
			}
		}
	}

	if len(r.scale) > 0 {
		fmt.Fprintf(w, "\nscale: 4 agents publish the devices (a quarter each; refused: publishes the server refused);\n"+
			"a fifth joins in its own process: resync = Run → booted holding every device (PubSub items + own-states answers;\n"+
			"with gossip, the members' answers alone when it boots before XMPP has connected: then 0 items fetched);\n"+
			"VmRSS/VmHWM of that process, HeapInuse after a GC; DeviceStateList of every device on its socket;\n"+
			"gossip: the five share a gossip cluster and own states come over it; resync (XMPP): a second joiner outside gossip\n\n")
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "devices\tpublished in\trefused\tgossip\tresync\tresync (XMPP)\titems fetched\tVmRSS\tVmHWM\tHeapInuse\tDeviceStateList\t\n")
		for _, s := range r.scale {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%v\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", s.devices, ms(s.publish), s.pubErrors, s.gossip, ms(s.resync), ms(s.resyncXMPP), s.fetched,
				mib(s.rssKB<<10), mib(s.hwmKB<<10), mib(int64(s.heapInuse)), ms(s.listTime))
		}
		tw.Flush()
	}
	printMany(w, r.many, o)
}

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func durations(v []time.Duration) string {
	s := make([]string, len(v))
	for i, d := range v {
		s[i] = ms(d)
	}
	return strings.Join(s, " / ")
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "/")
}
