package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

// Five members, each told one other's address, find each other; a sixth
// joining later through one address is announced to all; a member killed
// without leaving is declared dead (passing through suspect); one that
// leaves is reported as left, not dead.
func TestCluster(t *testing.T) {
	t.Parallel()
	all := startChain(t, 1, 5, nil) // 2 knows 1, 3 knows 2, ...
	waitConverged(t, 20*time.Second, all)
	for _, m := range all {
		for _, o := range all {
			if o == m {
				if evs := m.eventsFor(m.c.Name()); len(evs) != 0 {
					t.Errorf("member %d got events about itself: %v", m.i, evs)
				}
				continue
			}
			ev := m.waitEvent(t, 5*time.Second, EventJoin, o.c.Name())
			wantMeta(t, fmt.Sprintf("member %d join event", m.i), ev.Member, o.i)
		}
	}

	sixth := startMember(t, 6, []string{all[2].c.Addr()}, nil)
	select {
	case <-sixth.c.Joined():
	case <-time.After(20 * time.Second):
		t.Fatal("sixth member did not join")
	}
	for _, m := range all {
		ev := m.waitEvent(t, 5*time.Second, EventJoin, sixth.c.Name())
		wantMeta(t, fmt.Sprintf("member %d join event", m.i), ev.Member, 6)
		if ev.Member.Addr != sixth.c.Addr() || ev.Member.State != StateAlive {
			t.Errorf("member %d: join event %+v", m.i, ev.Member)
		}
	}
	all = append(all, sixth)
	waitConverged(t, 20*time.Second, all)

	// Kill member 2: no leave message, the others must detect it.
	victim := all[1]
	rest := append([]*member{all[0]}, all[2:]...)
	var sawSuspect atomic.Bool
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			for _, m := range rest {
				if stateOf(m.c, victim.c.Name()) == StateSuspect {
					sawSuspect.Store(true)
				}
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	killed := time.Now()
	victim.c.kill()
	var slowest time.Duration
	for _, m := range rest {
		ev := m.waitEvent(t, 20*time.Second, EventDead, victim.c.Name())
		wantMeta(t, fmt.Sprintf("member %d dead event", m.i), ev.Member, victim.i)
		slowest = max(slowest, m.eventTime(EventDead, victim.c.Name()).Sub(killed))
	}
	close(stopWatch)
	watch.Wait()
	t.Logf("local profile, 6 members: killed member seen dead by all 5 others after %v", slowest.Round(10*time.Millisecond))
	if !sawSuspect.Load() {
		t.Error("the killed member was never listed as suspect")
	}
	for _, m := range rest {
		if got := stateOf(m.c, victim.c.Name()); got != StateDead {
			t.Errorf("member %d lists the killed member as %q", m.i, got)
		}
		for _, ev := range m.eventsFor(victim.c.Name()) {
			if ev.Kind == EventLeave {
				t.Errorf("member %d got a leave event for the killed member", m.i)
			}
		}
	}

	// Member 4 leaves gracefully.
	leaver := all[3]
	stay := []*member{all[0], all[2], all[4], all[5]}
	if err := leaver.c.Leave(5 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	for _, m := range stay {
		ev := m.waitEvent(t, 20*time.Second, EventLeave, leaver.c.Name()) // generous: a loaded machine delays the broadcast
		wantMeta(t, fmt.Sprintf("member %d leave event", m.i), ev.Member, leaver.i)
	}
	if err := leaver.c.Close(); err != nil {
		t.Errorf("close after leave: %v", err)
	}
	if err := leaver.c.Leave(time.Second); err != ErrClosed {
		t.Errorf("leave after close: %v", err)
	}
	// Each member decides leave or death once, when memberlist reports the
	// member gone, and it has done so; let failure detection run a round
	// over the rest anyway, so that a late second report would show.
	waitProbeRound(t, 20*time.Second, stay, time.Now())
	for _, m := range stay {
		for _, ev := range m.eventsFor(leaver.c.Name()) {
			if ev.Kind == EventDead {
				t.Errorf("member %d got a dead event for the member that left", m.i)
			}
		}
		ms := m.c.Members()
		if len(ms) != 6 {
			t.Errorf("member %d lists %d members, want 6 (4 alive, 1 dead, 1 left): %s", m.i, len(ms), describe(ms))
		}
		if got := stateOf(m.c, leaver.c.Name()); got != StateLeft {
			t.Errorf("member %d lists the leaver as %q", m.i, got)
		}
		for i := 1; i < len(ms); i++ {
			if ms[i-1].Name >= ms[i].Name {
				t.Errorf("members not sorted by name: %s", describe(ms))
			}
		}
	}
	if !strings.Contains(all[0].logs.String(), `msg="cluster member dead"`) {
		t.Errorf("no log line for the death:\n%s", all[0].logs)
	}
}

// The LAN profile's failure detection time, in the five-member
// cluster. memberlist's LAN timings: probe every 1 s, 500 ms probe timeout,
// suspicion 4 s at minimum (with 2 confirmations from other members), up to
// 24 s without.
func TestFailureDetectionLAN(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 10 s")
	}
	t.Parallel()
	all := startChain(t, 1, 5, func(c *Config) { c.Profile = ProfileLAN })
	waitConverged(t, 20*time.Second, all)
	victim := all[2]
	killed := time.Now()
	victim.c.kill()
	first, last := time.Duration(1<<62), time.Duration(0)
	for _, m := range append(all[:2:2], all[3:]...) {
		m.waitEvent(t, 40*time.Second, EventDead, victim.c.Name())
		d := m.eventTime(EventDead, victim.c.Name()).Sub(killed)
		first, last = min(first, d), max(last, d)
	}
	t.Logf("LAN profile, 5 members: killed member seen dead by the first of 4 after %v, by all after %v",
		first.Round(10*time.Millisecond), last.Round(10*time.Millisecond))
}

// A member with another key, or with none, is refused by an encrypted
// cluster, and sees no one either.
func TestWrongKeyRefused(t *testing.T) {
	t.Parallel()
	a := startMember(t, 1, nil, nil)
	b := startMember(t, 2, []string{a.c.Addr()}, nil)
	waitConverged(t, 20*time.Second, []*member{a, b})

	otherKey := startMember(t, 3, []string{a.c.Addr(), b.c.Addr()}, func(c *Config) {
		c.SecretKey = []byte("another key, also 32 bytes long!")
	})
	noKey := startMember(t, 4, []string{a.c.Addr()}, func(c *Config) { c.SecretKey = nil })
	// Several join attempts each, and the members they tried to join on
	// with their gossip meanwhile.
	for _, m := range []*member{otherKey, noKey} {
		waitFor(t, 30*time.Second, fmt.Sprintf("member %d: three failed joins", m.i), func() (bool, string) {
			n := strings.Count(m.logs.String(), "join failed")
			return n >= 3, fmt.Sprintf("%d", n)
		})
	}
	waitProbeRound(t, 20*time.Second, []*member{a, b}, time.Now())
	for _, m := range []*member{otherKey, noKey} {
		select {
		case <-m.c.Joined():
			t.Errorf("member %d joined with a wrong key", m.i)
		default:
		}
		if ms := m.c.Members(); len(ms) != 1 {
			t.Errorf("member %d sees %s", m.i, describe(ms))
		}
		if !strings.Contains(m.logs.String(), "join failed") {
			t.Errorf("member %d logged no failed join:\n%s", m.i, m.logs)
		}
	}
	for _, m := range []*member{a, b} {
		if ms := m.c.Members(); len(ms) != 2 {
			t.Errorf("member %d sees %s", m.i, describe(ms))
		}
		if evs := append(m.eventsFor(otherKey.c.Name()), m.eventsFor(noKey.c.Name())...); len(evs) != 0 {
			t.Errorf("member %d got events %v", m.i, evs)
		}
	}
}

// A member whose meta is not busylamp's is listed with empty meta, and its
// join is still reported.
func TestBadMetaListedEmpty(t *testing.T) {
	t.Parallel()
	a := startMember(t, 1, nil, nil)

	mc := memberlist.DefaultLocalConfig()
	mc.Name = "stranger"
	mc.BindAddr, mc.BindPort = "127.0.0.1", 0
	mc.SecretKey = testKey
	mc.Label = "busylamp"
	mc.Delegate = rawMeta(`{"not":"busylamp"}`)
	mc.Logger = newStdLogger(discard)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ml.Shutdown() }()
	if _, err := ml.Join([]string{a.c.Addr()}); err != nil {
		t.Fatal(err)
	}
	ev := a.waitEvent(t, 5*time.Second, EventJoin, "stranger")
	if !ev.Member.Meta.IsZero() {
		t.Errorf("join event meta %+v", ev.Member.Meta)
	}
	waitFor(t, 5*time.Second, "stranger listed", func() (bool, string) {
		ms := a.c.Members()
		return len(ms) == 2 && stateOf(a.c, "stranger") == StateAlive, describe(ms)
	})
	for _, m := range a.c.Members() {
		if m.Name == "stranger" && !m.Meta.IsZero() {
			t.Errorf("stranger listed with meta %+v", m.Meta)
		}
	}
	if n := strings.Count(a.logs.String(), "member meta rejected"); n != 1 {
		t.Errorf("%d log lines for the bad meta, want 1:\n%s", n, a.logs)
	}
}

type rawMeta string

func (r rawMeta) NodeMeta(int) []byte               { return []byte(r) }
func (rawMeta) NotifyMsg([]byte)                    {}
func (rawMeta) GetBroadcasts(int, int) [][]byte     { return nil }
func (rawMeta) LocalState(bool) []byte              { return nil }
func (rawMeta) MergeRemoteState(buf []byte, _ bool) {}

// A reader that does not read holds up nothing; when it reads, it gets
// every join.
func TestSlowReader(t *testing.T) {
	t.Parallel()
	ch := make(chan Event)
	seed, err := Start(Config{Bind: "127.0.0.1:0", Profile: ProfileLocal, SecretKey: testKey,
		JID: testJID(1), EID: testEID(1), Version: "1.0.1", Logger: slog.New(slog.NewTextHandler(&logBuf{}, &slog.HandlerOptions{Level: slog.LevelDebug}))}, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = seed.Close() }()
	var others []*member
	for i := 2; i <= 4; i++ {
		others = append(others, startMember(t, i, []string{seed.Addr()}, nil))
	}
	for _, c := range []*Cluster{seed, others[0].c, others[1].c, others[2].c} {
		waitFor(t, 20*time.Second, c.Name()+" lists all", func() (bool, string) {
			return len(c.Members()) == 4, describe(c.Members())
		})
	}
	others[2].c.kill()
	for _, m := range others[:2] {
		m.waitEvent(t, 20*time.Second, EventDead, others[2].c.Name())
	}
	waitFor(t, 5*time.Second, "seed sees the death", func() (bool, string) {
		return stateOf(seed, others[2].c.Name()) == StateDead, describe(seed.Members())
	})
	// One event may already be out of the queue, waiting on the channel;
	// the rest are coalesced per member.
	got := map[string]EventKind{}
	n := 0
	for quiet := false; !quiet; {
		select {
		case ev := <-ch:
			got[ev.Member.Name] = ev.Kind
			n++
		case <-time.After(time.Second):
			quiet = true
		}
	}
	if n > 4 {
		t.Errorf("%d events for 3 joins and a death", n)
	}
	want := map[string]EventKind{testJID(2): EventJoin, testJID(3): EventJoin, testJID(4): EventDead}
	for name, k := range want {
		if got[name] != k {
			t.Errorf("%s: last event %v, want %v (all: %v)", name, got[name], k, got)
		}
	}
}

// What memberlist's public API does not tell is derived: a member alone
// lists itself alive; a peer is alive, then suspect once its probes go
// unanswered.
func TestStateView(t *testing.T) {
	t.Parallel()
	a := startMember(t, 1, nil, nil)
	if ms := a.c.Members(); len(ms) != 1 || ms[0].Name != a.c.Name() || ms[0].State != StateAlive {
		t.Errorf("alone: %s", describe(ms))
	}
	b := startMember(t, 2, []string{a.c.Addr()}, nil)
	waitConverged(t, 20*time.Second, []*member{a, b})
	// Alive stays alive while probes are answered: several rounds of them.
	waitFor(t, 20*time.Second, "probes of b answered", func() (bool, string) {
		return a.probedSince(b.c.Name(), time.Now().Add(-time.Second)), describe(a.c.Members())
	})
	if got := stateOf(a.c, b.c.Name()); got != StateAlive {
		t.Errorf("b listed as %q while it answers", got)
	}
	b.c.kill()
	var since time.Time
	waitFor(t, 20*time.Second, "b suspect", func() (bool, string) {
		for _, m := range a.c.Members() {
			if m.Name == b.c.Name() && m.State == StateSuspect {
				since = m.Since
				return true, ""
			}
		}
		return false, describe(a.c.Members())
	})
	if since.IsZero() || time.Since(since) > 20*time.Second {
		t.Errorf("suspect since %v", since)
	}
	// Dead follows; TestCluster waits for it.
}

// A graceful leave (Close) and a crash (gossip cut, no leave message) at
// the same time are told apart by every other member; and a member that
// gossips a leave intent naming another cannot make that one's crash pass
// for a leave: the named member refutes it.
func TestLeaveAndCrashToldApart(t *testing.T) {
	t.Parallel()
	all := startChain(t, 1, 5, nil)
	waitConverged(t, 20*time.Second, all)
	leaver, crasher := all[1], all[3]
	rest := []*member{all[0], all[2], all[4]}

	forger := all[0]
	forged := intent{leave: true, seq: 100, name: crasher.c.Name()}
	forger.c.gossip(forged, nil)
	for _, m := range rest[1:] {
		_ = forger.c.ml.SendToAddress(memberlist.Address{Addr: m.c.Addr(), Name: m.c.Name()}, forged.marshal())
	}
	waitFor(t, 20*time.Second, "the forged intent refuted everywhere", func() (bool, string) {
		if !strings.Contains(crasher.logs.String(), "refuting a leave intent") {
			return false, "the member named did not refute"
		}
		for _, m := range append(rest, leaver) {
			m.c.mu.Lock()
			r, ok := m.c.intents[crasher.c.Name()]
			m.c.mu.Unlock()
			if !ok || r.leave || r.seq != forged.seq {
				return false, fmt.Sprintf("member %d holds %+v, %v", m.i, r, ok)
			}
		}
		return true, ""
	})

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); crasher.c.kill() }()
	go func() {
		defer wg.Done()
		if err := leaver.c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	wg.Wait()
	for _, m := range rest {
		m.waitEvent(t, 30*time.Second, EventLeave, leaver.c.Name())
		m.waitEvent(t, 30*time.Second, EventDead, crasher.c.Name())
	}
	for _, m := range rest {
		for _, ev := range m.eventsFor(leaver.c.Name()) {
			if ev.Kind == EventDead {
				t.Errorf("member %d: the member that closed reported dead", m.i)
			}
		}
		for _, ev := range m.eventsFor(crasher.c.Name()) {
			if ev.Kind == EventLeave {
				t.Errorf("member %d: the member that crashed reported as left", m.i)
			}
		}
		if got := stateOf(m.c, leaver.c.Name()); got != StateLeft {
			t.Errorf("member %d lists the closed member as %q", m.i, got)
		}
		if got := stateOf(m.c, crasher.c.Name()); got != StateDead {
			t.Errorf("member %d lists the crashed member as %q", m.i, got)
		}
	}
}

// Close ends every goroutine the package and memberlist started. Not
// parallel, so that other tests' goroutines do not count.
func TestCloseLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var cs []*Cluster
	for i := 1; i <= 3; i++ {
		cfg := Config{Bind: "127.0.0.1:0", Profile: ProfileLocal, SecretKey: testKey,
			JID: testJID(i), EID: testEID(i), Logger: discard}
		if i > 1 {
			cfg.Join = []string{cs[0].Addr()}
		}
		c, err := Start(cfg, make(chan Event)) // nobody reads
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	waitFor(t, 5*time.Second, "three members", func() (bool, string) {
		return len(cs[0].Members()) == 3, describe(cs[0].Members())
	})
	// One more whose only join address accepts and then says nothing:
	// Close must not wait for the LAN profile's 10 s stream timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	held.Add(1)
	accepted := make(chan struct{}, 1)
	go func() {
		defer held.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	lone, err := Start(Config{Bind: "127.0.0.1:0", Profile: ProfileLAN, SecretKey: testKey,
		JID: testJID(9), EID: testEID(9), Join: []string{silent.Addr().String()}, Logger: discard}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select { // the join is waiting for an answer
	case <-accepted:
	case <-time.After(20 * time.Second):
		t.Fatal("the join never dialed the silent address")
	}
	start := time.Now()
	if err := lone.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	// Waiting for the join would take the whole stream timeout (the join
	// cannot end sooner); a busy machine makes Close slower, not that slow.
	if d, timeout := time.Since(start), memberlist.DefaultLANConfig().TCPTimeout; d >= timeout {
		t.Errorf("close took %v with a join in flight: it waited for the %v stream timeout", d, timeout)
	}
	_ = silent.Close()
	held.Wait()
	for _, c := range cs {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	waitFor(t, 5*time.Second, "goroutines back to where they were", func() (bool, string) {
		n := runtime.NumGoroutine()
		if n <= before {
			return true, ""
		}
		buf := make([]byte, 1<<16)
		return false, fmt.Sprintf("%d > %d:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	})
}

// Close leaves gracefully: the others see a leave, not a death.
func TestCloseIsLeave(t *testing.T) {
	t.Parallel()
	all := startChain(t, 1, 3, nil)
	waitConverged(t, 20*time.Second, all)
	if err := all[1].c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*member{all[0], all[2]} {
		m.waitEvent(t, 5*time.Second, EventLeave, all[1].c.Name())
		if got := stateOf(m.c, all[1].c.Name()); got != StateLeft {
			t.Errorf("member %d lists the closed member as %q", m.i, got)
		}
	}
}

// The cluster started all at once: each member knows one other,
// and some are joined before they have joined anyone themselves. They must
// still become one cluster, quickly.
func TestConcurrentStartConverges(t *testing.T) {
	t.Parallel()
	var all []*member
	for i := 1; i <= 6; i++ {
		var join []string
		if i > 1 {
			join = []string{all[i-2].c.Addr()}
		}
		all = append(all, startMember(t, i, join, nil))
	}
	start := time.Now()
	waitConverged(t, 10*time.Second, all)
	t.Logf("converged in %v", time.Since(start).Round(10*time.Millisecond))
}

// The member everyone joined restarts, knowing no one: the others, alone,
// join it again.
func TestSeedRestartRejoined(t *testing.T) {
	t.Parallel()
	seed := startMember(t, 1, nil, nil)
	addr := seed.c.Addr()
	other := startMember(t, 2, []string{addr}, nil)
	waitConverged(t, 20*time.Second, []*member{seed, other})
	seed.c.kill()
	other.waitEvent(t, 20*time.Second, EventDead, seed.c.Name())

	again := startMember(t, 1, nil, func(c *Config) { c.Bind = addr })
	waitConverged(t, 20*time.Second, []*member{again, other})
	// The members list can show the seed alive a moment before its join
	// event has been delivered: wait for the event, then count.
	countJoins := func() int {
		joins := 0
		for _, ev := range other.eventsFor(seed.c.Name()) {
			if ev.Kind == EventJoin {
				joins++
			}
		}
		return joins
	}
	waitFor(t, 20*time.Second, "the seed's second join event", func() (bool, string) {
		return countJoins() >= 2, fmt.Sprint(other.eventsFor(seed.c.Name()))
	})
	if joins := countJoins(); joins != 2 {
		t.Errorf("%d join events for the seed, want 2: %v", joins, other.eventsFor(seed.c.Name()))
	}
}
