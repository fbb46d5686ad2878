package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// A stall watch runs beside each latency run of 1,000 devices, baseline
// and busylamp alike, so that a tail sample can be laid beside what else
// was slow at that moment:
//   - the server: a client of its own (no presence, so it gets no
//     notifications) pings the server every 10 ms (XEP-0199) and times
//     the answer, which no agent is on the path of;
//   - this process: a goroutine sleeps 1 ms at a time, and an oversleep
//     is a time the Go runtime, or the OS, did not run it;
//   - the machine: steal ticks (/proc/stat), time the hypervisor gave the
//     CPUs to other guests.
// A tail sample that overlaps a slow ping had its time at the server
// (or the machine) for everyone, not on busylamp's own path.

// span is an interval on the run's clock (clock.now), with a value: a
// ping's round trip, an oversleep, or steal ticks.
type span struct {
	from, to int64
	v        int64
}

// stalls is what one or more watches saw.
type stalls struct {
	pings  []span // every ping, v = round trip (ns)
	sleeps []span // oversleeps of more than 2 ms, v = the excess (ns)
	steal  []span // sample intervals with steal, v = ticks
	failed int    // pings not answered within a second
}

func (s *stalls) add(o *stalls) {
	s.pings = append(s.pings, o.pings...)
	s.sleeps = append(s.sleeps, o.sleeps...)
	s.steal = append(s.steal, o.steal...)
	s.failed += o.failed
}

const (
	pingEvery    = 10 * time.Millisecond
	oversleepMin = 2 * time.Millisecond
)

// watchStalls starts a watch; stop ends it and returns what it saw. ping
// sends one ping and waits for its answer.
func watchStalls(ctx context.Context, clk clock, ping func(context.Context) error) (stop func() *stalls) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var pings stalls
	var proc stalls
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(pingEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			from := clk.now()
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			err := ping(pctx)
			pcancel()
			if ctx.Err() != nil {
				return
			}
			to := clk.now()
			if err != nil {
				pings.failed++
				continue
			}
			pings.pings = append(pings.pings, span{from, to, to - from})
		}
	}()
	go func() {
		defer wg.Done()
		_, _, st0 := machineTicks()
		at0 := clk.now()
		for i := 0; ctx.Err() == nil; i++ {
			before := clk.now()
			time.Sleep(time.Millisecond)
			after := clk.now()
			if over := after - before - int64(time.Millisecond); over > int64(oversleepMin) {
				proc.sleeps = append(proc.sleeps, span{before, after, over})
			}
			if i%10 == 9 {
				_, _, st := machineTicks()
				if st > st0 {
					proc.steal = append(proc.steal, span{at0, after, st - st0})
				}
				st0, at0 = st, after
			}
		}
	}()
	return func() *stalls {
		cancel()
		wg.Wait()
		pings.add(&proc)
		return &pings
	}
}

// overlap is the largest value of the spans that overlap [from, to], and
// their sum.
func overlap(ss []span, from, to int64) (most, sum int64) {
	for _, s := range ss {
		if s.to >= from && s.from <= to {
			most = max(most, s.v)
			sum += s.v
		}
	}
	return most, sum
}

// tailReport lays the tail samples (at or above cut) of one system's
// latency runs beside the stalls seen during them.
type tailReport struct {
	samples     int
	slowPing    int           // tail samples during which a ping took ≥ half their latency
	worstPing   time.Duration // the slowest ping during any tail sample
	oversleep   time.Duration // the largest oversleep during any tail sample
	steal       int64         // steal ticks during the tail samples (sum over the samples' intervals)
	pingP50     time.Duration // over the whole runs
	pingMax     time.Duration
	pingsFailed int
}

func tailOf(l latencyResult, cut time.Duration, st *stalls) tailReport {
	var r tailReport
	if st == nil {
		return r
	}
	rtts := make([]time.Duration, len(st.pings))
	for i, p := range st.pings {
		rtts[i] = time.Duration(p.v)
	}
	if len(rtts) > 0 {
		r.pingP50 = percentiles(rtts, 0.5)[0]
		r.pingMax = slices.Max(rtts)
	}
	r.pingsFailed = st.failed
	for i, d := range l.samples {
		if d < cut || i >= len(l.at) {
			continue
		}
		from, to := l.at[i], l.at[i]+int64(d)
		r.samples++
		ping, _ := overlap(st.pings, from, to)
		if ping*2 >= int64(d) {
			r.slowPing++
		}
		r.worstPing = max(r.worstPing, time.Duration(ping))
		over, _ := overlap(st.sleeps, from, to)
		r.oversleep = max(r.oversleep, time.Duration(over))
		_, steal := overlap(st.steal, from, to)
		r.steal += steal
	}
	return r
}

func (r tailReport) print(w io.Writer, name string, cut time.Duration) {
	if r.samples == 0 {
		return
	}
	ms := func(d time.Duration) string {
		if d <= 0 {
			return "0 ms"
		}
		return ms(d)
	}
	fmt.Fprintf(w, "    %s: %d samples ≥ %s; during %d of them a ping of the server took ≥ half their latency (slowest ping %s); "+
		"this process overslept by up to %s, steal %d ticks; pings over the runs p50 %s, max %s, %d unanswered\n",
		name, r.samples, ms(cut), r.slowPing, ms(r.worstPing), ms(r.oversleep), r.steal, ms(r.pingP50), ms(r.pingMax), r.pingsFailed)
}
