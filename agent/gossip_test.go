package agent

import (
	"context"
	"fmt"
	"github.com/busylamp/busylamp/internal/testlog"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// Against a real Prosody and real gossip on 127.0.0.1: the own-states
// exchange of a resync over memberlist's stream, its fallback to XMPP,
// and what the stream refuses.

var gossipKey = []byte("busylamp-test-gossip-key-32bytes")

// logBuf collects an agent's log; BUSYLAMP_TEST_LOG=1 copies it to stderr.
type logBuf = testlog.Buffer

type realAgent struct {
	*Agent
	jid  string // full
	logs *logBuf
}

// startRealAgent runs an agent on srv as account name (test-unique),
// with the given buddies (full JIDs) and, when join is not nil, gossip
// joining join; it is stopped when the test ends. Its cluster field is
// set once it has booted.
func startRealAgent(t *testing.T, srv *xmpptest.Server, name string, buddies []string, join []string, edit func(*Config)) *realAgent {
	t.Helper()
	bare, pw := srv.Admin(name)
	x := pubsub.DefaultConfig()
	x.JID, x.Password, x.Address, x.Service, x.UseTLS = bare+"/test", pw, srv.Addr, srv.Service, false
	x.EID = devstate.DeriveEID("agent-test\x00" + name)
	x.Buddies = buddies
	m := manager.DefaultConfig()
	m.Username, m.Secret = "admin", "test-secret"
	logs := &logBuf{}
	cfg := Config{Name: name, Version: "test", XMPP: x, Manager: m, ManagerAddr: "127.0.0.1:0",
		Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("agent", name)}
	if join != nil {
		cfg.Cluster = &cluster.Config{Bind: "127.0.0.1:0", Join: join, SecretKey: gossipKey, Profile: cluster.ProfileLocal}
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent %s: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() && os.Getenv("BUSYLAMP_TEST_LOG") == "" {
			t.Logf("log of %s:\n%s", name, logs.String())
		}
	})
	return &realAgent{Agent: a, jid: x.JID, logs: logs}
}

func (r *realAgent) booted(t *testing.T) {
	t.Helper()
	select {
	case <-r.Core().Booted():
	case <-time.After(60 * time.Second):
		t.Fatalf("%s not booted after 60 s", r.jid)
	}
}

func (r *realAgent) set(t *testing.T, device string, st devstate.State) {
	t.Helper()
	if err := (backend{r.Agent}).SetDeviceState(context.Background(), device, st); err != nil {
		t.Fatal(err)
	}
}

// stat reads a counter of 'show stats'.
func (r *realAgent) stat(t *testing.T, line string) int {
	t.Helper()
	out, err := r.Command(context.Background(), "show stats")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(out, line+": ")
	if !ok {
		t.Fatalf("show stats has no %q line:\n%s", line, out)
	}
	var n int
	fmt.Sscan(rest, &n)
	return n
}

// gatedProxy forwards the TCP connections it accepts to target once
// open is called; until then it holds them. It stops when the test ends,
// after the agents (its cleanup is registered before theirs).
func gatedProxy(t *testing.T, target string) (addr string, open func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	open = func() { once.Do(func() { close(gate) }) }
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				select {
				case <-gate:
				case <-done:
					return
				}
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				ended := make(chan struct{}, 2)
				for _, p := range [][2]net.Conn{{s, c}, {c, s}} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						io.Copy(p[0], p[1])
						ended <- struct{}{}
					}()
				}
				select {
				case <-ended:
				case <-done:
				}
				c.Close()
				s.Close()
			}()
		}
	}()
	return ln.Addr().String(), open
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// servers returns each server's state of device as this agent holds it.
func (r *realAgent) servers(device string) map[devstate.EID]devstate.State {
	out := map[devstate.EID]devstate.State{}
	if d, ok := r.Core().Device(device); ok {
		for _, s := range d.Servers {
			out[s.EID] = s.State
		}
	}
	return out
}

func (r *realAgent) eid() devstate.EID { return r.cfg.XMPP.EID }

// A joining agent with gossip gets its buddies' own states over the
// memberlist stream, not through the server: exactly, including a device
// two servers set (which the one PubSub item per device cannot tell).
func TestResyncOverGossip(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	bj, _ := srv.Admin("gos-b")
	cj, _ := srv.Admin("gos-c")
	b := startRealAgent(t, srv, "gos-b", []string{cj + "/test"}, []string{}, nil)
	b.booted(t) // after its gossip started: b.cluster is set
	c := startRealAgent(t, srv, "gos-c", []string{bj + "/test"}, []string{b.cluster.Addr()}, nil)
	c.booted(t)
	b.set(t, "Gos:shared", devstate.InUse)
	b.set(t, "Gos:b", devstate.Busy)
	if err := (backend{b.Agent}).SetMailbox(context.Background(), "1@gos", mwi.Counts{New: 2, Old: 1}); err != nil {
		t.Fatal(err)
	}
	c.set(t, "Gos:shared", devstate.Ringing)
	c.set(t, "Gos:c", devstate.OnHold)
	// B and C know each other in gossip: A, joining B, learns of both.
	waitUntil(t, "B and C see each other", func() bool {
		_, ok1 := b.memberOf(c.jid)
		_, ok2 := c.memberOf(b.jid)
		return ok1 && ok2
	})

	// A's XMPP connection waits at a gate until A has booted: it can
	// boot only from the members' answers over gossip (on a busy machine
	// the local server could otherwise win the race).
	addr, open := gatedProxy(t, srv.Addr)
	a := startRealAgent(t, srv, "gos-a", []string{b.jid, c.jid}, []string{b.cluster.Addr()},
		func(cfg *Config) { cfg.XMPP.Address = addr })
	a.booted(t)
	if !strings.Contains(a.logs.String(), "booted from the members' states over gossip") {
		t.Error("not booted over gossip ahead of XMPP")
	}
	if strings.Contains(a.logs.String(), "XMPP connected") {
		t.Error("XMPP connected through the closed gate")
	}
	// The items and the resync after the connect follow, and must leave
	// the states as exact.
	open()
	waitUntil(t, "the resync after the connect", func() bool { return strings.Contains(a.logs.String(), "resync complete") })
	if got, want := a.servers("Gos:shared"), map[devstate.EID]devstate.State{b.eid(): devstate.InUse, c.eid(): devstate.Ringing}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Gos:shared per server = %v, want %v", got, want)
	}
	if st, _ := a.Core().DeviceState("Gos:shared"); st != devstate.RingInUse {
		t.Errorf("Gos:shared = %s, want RINGINUSE", st)
	}
	for dev, want := range map[string]devstate.State{"Gos:b": devstate.Busy, "Gos:c": devstate.OnHold} {
		if st, ok := a.Core().DeviceState(dev); !ok || st != want {
			t.Errorf("%s = %s, want %s", dev, st, want)
		}
	}
	if mc, ok := a.Core().MailboxCounts("1@gos"); !ok || mc != (mwi.Counts{New: 2, Old: 1}) {
		t.Errorf("1@gos = %+v", mc)
	}
	// The resync asked both over gossip and nobody over XMPP.
	if n := a.stat(t, "States answers over gossip"); n < 4 {
		t.Errorf("states answers over gossip: %d, want at least 4 (both asked early and after the connect)", n)
	}
	if n := a.stat(t, "States answers over XMPP"); n != 0 {
		t.Errorf("states answers over XMPP: %d, want 0", n)
	}
	if n := a.stat(t, "States requests fallen back to XMPP"); n != 0 {
		t.Errorf("fallbacks: %d, want 0", n)
	}
	for _, r := range []*realAgent{b, c} {
		if s := r.cluster.DirectStats(); s.Sent == 0 || s.Received == 0 {
			t.Errorf("%s answered no ask over gossip: %+v", r.jid, s)
		}
		if n := r.stat(t, "Gossip states messages refused"); n != 0 {
			t.Errorf("%s refused %d gossip messages", r.jid, n)
		}
	}
}

// A member that does not answer over gossip (an older busylamp: its
// gossip takes no direct messages) is asked over XMPP after the gossip
// wait; a buddy not in gossip at all is asked over XMPP at once.
func TestResyncGossipFallback(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	aj, _ := srv.Admin("fb-a")
	bj, _ := srv.Admin("fb-b")
	cj, _ := srv.Admin("fb-c")
	b := startRealAgent(t, srv, "fb-b", []string{aj + "/test", cj + "/test"}, nil, nil)
	c := startRealAgent(t, srv, "fb-c", []string{aj + "/test", bj + "/test"}, nil, nil)
	b.booted(t)
	c.booted(t)
	b.set(t, "Fb:shared", devstate.Busy)
	c.set(t, "Fb:shared", devstate.Ringing)
	// B's gossip, as an older version runs it.
	old, err := cluster.Start(cluster.Config{Bind: "127.0.0.1:0", SecretKey: gossipKey, Profile: cluster.ProfileLocal,
		JID: b.jid, EID: b.eid(), Version: "old", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	a := startRealAgent(t, srv, "fb-a", []string{b.jid, c.jid}, []string{old.Addr()},
		func(c *Config) { c.ResyncTimeout = 3 * time.Second })
	a.booted(t)
	if got, want := a.servers("Fb:shared"), map[devstate.EID]devstate.State{b.eid(): devstate.Busy, c.eid(): devstate.Ringing}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Fb:shared per server = %v, want %v", got, want)
	}
	if n := a.stat(t, "States requests fallen back to XMPP"); n < 1 {
		t.Errorf("fallbacks: %d, want at least 1", n)
	}
	if n := a.stat(t, "States answers over XMPP"); n < 2 {
		t.Errorf("states answers over XMPP: %d, want at least 2 (B after the fallback, C at once)", n)
	}
	if n := a.stat(t, "States answers over gossip"); n != 0 {
		t.Errorf("states answers over gossip: %d, want 0", n)
	}
	if !strings.Contains(a.logs.String(), "states over gossip failed; asking over XMPP") {
		t.Error("no log line for the fallback")
	}
}

type rawMember []byte

func (r rawMember) NodeMeta(int) []byte               { return r }
func (rawMember) NotifyMsg([]byte)                    {}
func (rawMember) GetBroadcasts(int, int) [][]byte     { return nil }
func (rawMember) LocalState(bool) []byte              { return nil }
func (rawMember) MergeRemoteState(buf []byte, _ bool) {}

// What a member with the key writes on the stream is refused when it is
// too large, garbage, an answer nobody asked for or an ask from a
// stranger: each with a log line and a count, and the agent goes on
// answering asks.
func TestGossipGarbageRefused(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	a := startRealAgent(t, srv, "bad-a", nil, []string{}, nil)
	a.booted(t)
	a.set(t, "Bad:a", devstate.InUse)

	meta, err := cluster.Meta{JID: "evil@busylamp.test/x", EID: devstate.DeriveEID("evil"), Version: "evil"}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = "evil", "127.0.0.1", 0, 0
	mc.SecretKey, mc.Label, mc.Delegate = gossipKey, "busylamp", rawMember(meta)
	mc.Logger = log.New(io.Discard, "", 0)
	// It never probes: Shutdown does not wait for a probe in flight,
	// which goleak would then find.
	mc.ProbeInterval = time.Hour
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	if _, err := ml.Join([]string{a.cluster.Addr()}); err != nil {
		t.Fatal(err)
	}
	var node *memberlist.Node
	for _, n := range ml.Members() {
		if n.Name == a.cluster.Name() {
			node = n
		}
	}
	if node == nil {
		t.Fatal("the agent is not a member")
	}
	send := func(body []byte) {
		t.Helper()
		if err := ml.SendReliable(node, append([]byte{3}, body...)); err != nil {
			t.Fatal(err)
		}
	}
	refused := func() int { return a.stat(t, "Gossip states messages refused") }
	send(make([]byte, cluster.MaxDirectSize+1))
	waitUntil(t, "the oversized message refused", func() bool { return refused() == 1 })
	send([]byte("garbage, not a states message"))
	waitUntil(t, "the garbage refused", func() bool { return refused() == 2 })
	forged, err := encodeAnswer(gossipID{9}, []pubsub.DeviceItem{{Device: "Bad:forged", State: devstate.Busy, EID: devstate.DeriveEID("evil")}}, nil, cluster.MaxDirectSize)
	if err != nil {
		t.Fatal(err)
	}
	send(forged[0])
	waitUntil(t, "the answer nobody asked for refused", func() bool { return refused() == 3 })
	send(encodeAsk(gossipID{8}, "nobody"))
	waitUntil(t, "the ask from a stranger refused", func() bool { return refused() == 4 })
	logs := a.logs.String()
	for _, want := range []string{"direct message refused", "over 1048576 bytes", "gossip states message refused", "version 103"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log has no %q", want)
		}
	}
	if _, ok := a.Core().DeviceState("Bad:forged"); ok {
		t.Error("the forged answer's device was taken")
	}

	// Still answering: a member that joins now gets A's states over gossip.
	b := startRealAgent(t, srv, "bad-b", []string{a.jid}, []string{a.cluster.Addr()}, nil)
	b.booted(t)
	waitUntil(t, "B has A's state", func() bool {
		st, ok := b.Core().DeviceState("Bad:a")
		return ok && st == devstate.InUse
	})
	if n := b.stat(t, "States answers over gossip"); n < 1 {
		t.Errorf("B got %d answers over gossip after the garbage, want at least 1", n)
	}
}

// closedAddr is a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// With gossip on, a joining agent whose buddies are all members boots
// from their answers over gossip, before (here: without) its XMPP
// session: with every server's states exact, a device two servers set
// included. A configured buddy that is no member (an Asterisk node,
// known only from the items) keeps it waiting for XMPP.
func TestBootOverGossipBeforeXMPP(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	bj, _ := srv.Admin("early-b")
	cj, _ := srv.Admin("early-c")
	b := startRealAgent(t, srv, "early-b", []string{cj + "/test"}, []string{}, nil)
	b.booted(t)
	c := startRealAgent(t, srv, "early-c", []string{bj + "/test"}, []string{b.cluster.Addr()}, nil)
	c.booted(t)
	b.set(t, "Early:shared", devstate.InUse)
	b.set(t, "Early:b", devstate.Busy)
	c.set(t, "Early:shared", devstate.Ringing)
	waitUntil(t, "B and C see each other", func() bool {
		_, ok1 := b.memberOf(c.jid)
		_, ok2 := c.memberOf(b.jid)
		return ok1 && ok2
	})
	dead := closedAddr(t)
	offline := func(cfg *Config) { cfg.XMPP.Address = dead }

	a := startRealAgent(t, srv, "early-a", []string{b.jid, c.jid}, []string{b.cluster.Addr()}, offline)
	a.booted(t)
	if st := a.xmpp.Status().State; st == "connected" {
		t.Fatalf("XMPP state %q, want it never connected", st)
	}
	if got, want := a.servers("Early:shared"), map[devstate.EID]devstate.State{b.eid(): devstate.InUse, c.eid(): devstate.Ringing}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Early:shared per server = %v, want %v", got, want)
	}
	if st, _ := a.Core().DeviceState("Early:b"); st != devstate.Busy {
		t.Errorf("Early:b = %s, want BUSY", st)
	}
	if !strings.Contains(a.logs.String(), "booted from the members' states over gossip") {
		t.Error("no log line for the early boot")
	}

	ast, _ := srv.Admin("early-ast")
	d := startRealAgent(t, srv, "early-d", []string{ast, b.jid, c.jid}, []string{b.cluster.Addr()}, offline)
	waitUntil(t, "D's early resync ends", func() bool {
		return strings.Contains(d.logs.String(), "early resync: a buddy is no member; booting waits for the items\" agent=early-d buddy="+ast)
	})
	select {
	case <-d.Core().Booted():
		t.Fatal("D booted without the items of a buddy that is no member")
	default:
	}
}
