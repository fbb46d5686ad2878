package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets (issue 6).
const (
	targetP50Ratio = 1.3
	targetThrRatio = 0.9
	targetBurstLag = time.Second
)

func printReports(w io.Writer, reports []*report, o *options, took time.Duration) {
	fmt.Fprintf(w, "\nbusylamp end-to-end benchmark, %s; %s; run took %s\n",
		time.Now().Format("2006-01-02 15:04"), machine(), took.Round(time.Second))
	fmt.Fprintf(w, "command: %s\n", strings.Join(os.Args, " "))
	fmt.Fprintf(w, "latency: %d changes/s over 1000 devices, %v per round; max/s: closed loop, at most %d changes outstanding\n"+
		"(sent, not yet seen by every receiver), %v per round, first quarter warm-up, median of the rounds; %d rounds\n"+
		"alternating baseline and busylamp on the same server; receivers: every member but the sender\n",
		o.rate, o.latDur, o.window, o.thrDur, o.rounds)
	for _, r := range reports {
		printReport(w, r, o)
	}
}

func check(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func printReport(w io.Writer, r *report, o *options) {
	fmt.Fprintf(w, "\n== %s %s (%s)\n\n", r.kind, r.version, r.desc)
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
		p50r := float64(l.p50) / float64(b.p50)
		thrr := t.perSec / bt.perSec
		notes = append(notes, fmt.Sprintf("%d agents: p50 %.2f× (target ≤ %.1f×: %s), throughput %.2f× (target ≥ %.1f×: %s), lost %d",
			n, p50r, targetP50Ratio, check(p50r <= targetP50Ratio), thrr, targetThrRatio, check(thrr >= targetThrRatio), l.lost+t.lost))
	}
	tw.Flush()
	for _, s := range notes {
		fmt.Fprintf(w, "  %s\n", s)
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
				fmt.Fprintf(w, "  %d agents: lag %s (target ≤ %v on Prosody-memory: %s)\n", n, ms(b.lag), targetBurstLag,
					check(b.lag <= targetBurstLag && r.burstBad[n] == 0))
			}
		}
	}

	if len(r.scale) > 0 {
		fmt.Fprintf(w, "\nscale: 4 agents publish the devices (a quarter each; refused: publishes the server refused);\n"+
			"a fifth joins in its own process: resync = Run → booted holding every device (PubSub items + own-states answers);\n"+
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
}

func mib(b int64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "/")
}
