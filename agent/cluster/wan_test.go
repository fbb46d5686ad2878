package cluster

import (
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/busylamp/busylamp/internal/wanpath"
)

// The path: 100 ms round trip, 1% loss each way, five members.
// BUSYLAMP_WAN_RTT (a duration), BUSYLAMP_WAN_LOSS (a fraction) and
// BUSYLAMP_WAN_MEMBERS (3 to 9) try others; the bounds are then reported,
// not asserted. BUSYLAMP_WAN_WINDOW (a duration, default 30 s) lengthens
// the window over which live members' suspicions are counted.
var wanPath = wanpath.Path{RTT: 100 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.01, Seed: 14}

// TestWANTiming runs five members over an impaired path (internal/wanpath)
// with the wan profile and, beside it, the lan one: four start, a fifth
// joins, one is killed. It measures how long the members take to see each
// other alive after the start and after the join, how long until they all
// see the killed one dead, and counts the suspicions and deaths of live
// members over the run (at least 30 s). For wan it asserts no live member
// is declared dead and that the times fall within memberlist's own
// timings; for lan it asserts only the death is found.
func TestWANTiming(t *testing.T) {
	path, size, custom := wanPath, 5, false
	window := 30 * time.Second
	if s := os.Getenv("BUSYLAMP_WAN_WINDOW"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("BUSYLAMP_WAN_WINDOW: %v", err)
		}
		window = d
	}
	if s := os.Getenv("BUSYLAMP_WAN_RTT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("BUSYLAMP_WAN_RTT: %v", err)
		}
		path.RTT, custom = d, true
	}
	if s := os.Getenv("BUSYLAMP_WAN_LOSS"); s != "" {
		p, err := strconv.ParseFloat(s, 64)
		if err != nil || p < 0 || p >= 1 {
			t.Fatalf("BUSYLAMP_WAN_LOSS %q: want a fraction in [0, 1)", s)
		}
		path.Loss, custom = p, true
	}
	if s := os.Getenv("BUSYLAMP_WAN_MEMBERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 3 || n > 9 {
			t.Fatalf("BUSYLAMP_WAN_MEMBERS %q: want 3 to 9", s)
		}
		size, custom = n, true
	}
	for _, profile := range []string{ProfileWAN, ProfileLAN} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			r := measureTiming(t, profile, path, size, window)
			t.Logf("%s profile, %d members, rtt %v ±%v, loss %.1f%%: %s", profile, size, path.RTT, path.Jitter/2, 100*path.Loss, r)
			if custom {
				return
			}
			// The impaired path is in effect: the measured round trip
			// and the loss counted are the ones asked for.
			if r.pingRTT < path.RTT-path.Jitter || r.pingRTT > 4*path.RTT {
				t.Errorf("median ping round trip %v, want about %v", r.pingRTT, path.RTT)
			}
			if r.Packets < 100 || r.Dropped == 0 {
				t.Errorf("%d datagrams sent, %d dropped: want some lost", r.Packets, r.Dropped)
			}
			mc := profileConfig(profile)
			if profile == ProfileWAN {
				if r.falseDead > 0 {
					t.Errorf("%d live members declared dead", r.falseDead)
				}
				// memberlist's suspicion timeout is its floor: with five
				// members it waits for no confirmations (it wants
				// SuspicionMult-2 = 4 from the n-2 = 3 others: too many,
				// so none), and the floor is all it waits.
				if floor := suspicionTimeout(mc, 5); r.deadFirst < floor-time.Second {
					t.Errorf("killed member dead after %v, before memberlist's suspicion timeout %v: not the wan timings", r.deadFirst, floor)
				}
				if r.startConverged > 15*time.Second || r.joinConverged > 10*time.Second {
					t.Errorf("converged %v after the start, %v after the join: want within 15 s and 10 s (antiEntropy's syncs at 1 s and 5 s, a push-pull of a few round trips)",
						r.startConverged, r.joinConverged)
				}
			}
			if bound := deadBound(mc, 5); r.deadAll > bound {
				t.Errorf("killed member dead everywhere after %v, want within %v", r.deadAll, bound)
			}
		})
	}
}

func profileConfig(profile string) *memberlist.Config {
	if profile == ProfileWAN {
		return memberlist.DefaultWANConfig()
	}
	return memberlist.DefaultLANConfig()
}

// suspicionTimeout is memberlist's (util.go): its floor, for n members.
func suspicionTimeout(mc *memberlist.Config, n int) time.Duration {
	scale := math.Max(1, math.Log10(float64(n)))
	return time.Duration(float64(mc.SuspicionMult) * scale * float64(mc.ProbeInterval))
}

// deadBound is the longest a dead member should take to be declared dead
// by every member: memberlist probes the members in turn, one per probe
// interval, so the first probe of it may come n-1 intervals after its
// death; that probe takes an interval (direct, indirect, TCP); then the
// suspicion timeout; then gossip of the death. Plus 10 s for the round
// trips and a busy machine. With enough members to confirm a suspicion
// (SuspicionMult-2 others besides the suspect and the suspecter),
// memberlist starts its timer at SuspicionMaxTimeoutMult times the floor
// and shortens it as confirmations come.
func deadBound(mc *memberlist.Config, n int) time.Duration {
	timeout := suspicionTimeout(mc, n)
	if n-2 >= mc.SuspicionMult-2 {
		timeout *= time.Duration(mc.SuspicionMaxTimeoutMult)
	}
	return time.Duration(n)*mc.ProbeInterval + timeout + 10*time.Second
}

type timingResult struct {
	startConverged, joinConverged time.Duration // until all see all alive
	deadFirst, deadAll            time.Duration // from the kill until the first, the last sees it dead
	pingRTT                       time.Duration // median of memberlist pings between two members
	window                        time.Duration // over which the counts below are taken

	suspects    int // memberlist: "Suspect X has failed", X alive
	ownSuspects int // this package's suspect (probe.go), of a live member
	refutes     int // live members refuting a suspicion of themselves
	falseDead   int // live members declared dead: memberlist's "Marking X as failed", or a dead event

	wanpath.Counts // of all the members' paths
}

func (r timingResult) String() string {
	return fmt.Sprintf("start converged %v, join converged %v, kill seen dead first %v all %v, ping rtt %v; over %v: "+
		"%d false suspicions (memberlist), %d (own probes), %d refuted, %d false dead; "+
		"%d datagrams, %d lost, %d over the limit; %d stream writes, %d retransmitted; %d dials, %d SYN lost",
		r.startConverged.Round(time.Millisecond), r.joinConverged.Round(time.Millisecond),
		r.deadFirst.Round(time.Millisecond), r.deadAll.Round(time.Millisecond), r.pingRTT.Round(time.Millisecond),
		r.window.Round(time.Second), r.suspects, r.ownSuspects, r.refutes, r.falseDead,
		r.Packets, r.Dropped, r.Overflow, r.Writes, r.Retransmits, r.Dials, r.SynLost)
}

// measureTiming runs one cluster of size members over path, counting
// live members' suspicions over window at least.
func measureTiming(t *testing.T, profile string, path wanpath.Path, size int, window time.Duration) timingResult {
	var (
		r    timingResult
		mu   sync.Mutex
		made []*wanpath.Transport
	)
	mod := func(i int) func(*Config) {
		return func(c *Config) {
			c.Profile = profile
			p := path
			p.Seed = path.Seed*1000 + uint64(i)
			c.WrapTransport = p.Wrap(func(t *wanpath.Transport) {
				mu.Lock()
				made = append(made, t)
				mu.Unlock()
			})
		}
	}
	names := func(ms []*member) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.c.Name())
		}
		return out
	}

	// All but one start at once, joining the first.
	start := time.Now()
	first := startMember(t, 1, nil, mod(1))
	ms := []*member{first}
	for i := 2; i < size; i++ {
		ms = append(ms, startMember(t, i, []string{first.c.Addr()}, mod(i)))
	}
	converged := waitAllAlive(t, 60*time.Second, ms, names(ms))
	r.startConverged = converged.Sub(start)
	windowStart := converged

	r.pingRTT = medianPing(t, ms[0], ms[1], 9)

	// The last joins the one started last.
	joinAt := time.Now()
	ms = append(ms, startMember(t, size, []string{ms[len(ms)-1].c.Addr()}, mod(size)))
	r.joinConverged = waitAllAlive(t, 60*time.Second, ms, names(ms)).Sub(joinAt)

	// One that is not the first is killed.
	victim := ms[2]
	var live []*member
	for _, m := range ms {
		if m != victim {
			live = append(live, m)
		}
	}
	killAt := time.Now()
	victim.c.kill()
	seen := waitAllSee(t, deadBound(profileConfig(profile), size)+30*time.Second, live, victim.c.Name(), StateDead)
	r.deadFirst, r.deadAll = seen[0].Sub(killAt), seen[len(seen)-1].Sub(killAt)

	// The rest of the window, if the death was found sooner.
	if rest := time.Until(windowStart.Add(window)); rest > 0 {
		timer := time.NewTimer(rest)
		<-timer.C
	}
	r.window = time.Since(windowStart)

	alive := map[string]bool{}
	for _, m := range live {
		alive[m.c.Name()] = true
	}
	for _, m := range ms { // the victim's lines too: before its death
		for _, line := range m.logs.Lines("has failed, no acks received") {
			if name := between(line, "Suspect ", " has failed"); alive[name] {
				r.suspects++
			}
		}
		for _, line := range m.logs.Lines("as failed, suspect timeout reached") {
			if name := between(line, "Marking ", " as failed"); alive[name] {
				r.falseDead++
			}
		}
		for _, line := range m.logs.Lines("member suspect: probes unanswered") {
			if name := between(line, " name=", " "); alive[name] {
				r.ownSuspects++
			}
		}
		if alive[m.c.Name()] {
			r.refutes += len(m.logs.Lines("Refuting a suspect message"))
		}
		for name := range alive {
			for _, ev := range m.eventsFor(name) {
				if ev.Kind.gone() {
					r.falseDead++
				}
			}
		}
	}
	mu.Lock()
	for _, tr := range made {
		r.Add(tr.Counts())
	}
	mu.Unlock()
	return r
}

// between returns what follows the first before in s, up to after (or the
// end of s).
func between(s, before, after string) string {
	i := strings.Index(s, before)
	if i < 0 {
		return ""
	}
	s = s[i+len(before):]
	if j := strings.Index(s, after); j >= 0 {
		s = s[:j]
	}
	return strings.Trim(s, `"`)
}

// waitAllAlive waits until each of ms lists exactly want as alive, and
// returns when that was first seen.
func waitAllAlive(t *testing.T, d time.Duration, ms []*member, want []string) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, d, fmt.Sprintf("%d members see each other alive", len(ms)), func() (bool, string) {
		for _, m := range ms {
			var alive []string
			for _, x := range m.c.Members() {
				if x.State == StateAlive {
					alive = append(alive, x.Name)
				}
			}
			if !slices.Equal(alive, want) {
				return false, fmt.Sprintf("member %d: %s", m.i, describe(m.c.Members()))
			}
		}
		at = time.Now()
		return true, ""
	})
	return at
}

// waitAllSee waits until each of ms lists the member named name in state,
// and returns when each was first seen to, earliest first.
func waitAllSee(t *testing.T, d time.Duration, ms []*member, name, state string) []time.Time {
	t.Helper()
	seen := make([]time.Time, len(ms))
	waitFor(t, d, fmt.Sprintf("%d members see %s %s", len(ms), name, state), func() (bool, string) {
		now, all, detail := time.Now(), true, ""
		for i, m := range ms {
			if !seen[i].IsZero() {
				continue
			}
			if stateOf(m.c, name) == state {
				seen[i] = now
			} else {
				all = false
				detail += fmt.Sprintf("member %d: %s; ", m.i, describe(m.c.Members()))
			}
		}
		return all, detail
	})
	slices.SortFunc(seen, func(a, b time.Time) int { return a.Compare(b) })
	return seen
}

// medianPing is the median round trip of n memberlist pings from a to b
// that were answered; zero if none was (a round trip over the profile's
// probe timeout).
func medianPing(t *testing.T, a, b *member, n int) time.Duration {
	t.Helper()
	addr, err := net.ResolveUDPAddr("udp", b.c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var rtts []time.Duration
	for range n {
		if rtt, err := a.c.ml.Ping(b.c.Name(), addr); err == nil {
			rtts = append(rtts, rtt)
		}
	}
	if len(rtts) == 0 {
		return 0
	}
	slices.Sort(rtts)
	return rtts[len(rtts)/2]
}
