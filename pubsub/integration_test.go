package pubsub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
)

// Integration tests: every feature against real Prosody and ejabberd
// (internal/xmpptest starts them once per test binary).

func forKinds(t *testing.T, f func(t *testing.T, srv *xsrv)) {
	for _, k := range xmpptest.Kinds {
		t.Run(string(k), func(t *testing.T) { f(t, sharedServer(t, k)) })
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("BUSYLAMP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Bounds on waits for what must happen: a session up, an event, an
// answer. On an idle machine each takes milliseconds to a few seconds; the
// bounds are for a machine busy with other work (both cores taken by
// other test binaries or stress-ng), where the servers answer many times
// slower. A wait ends as soon as what it waits for happens, so the bounds
// cost nothing when all is well.
const (
	connectWait = 120 * time.Second // a session up: reconnect backoff (at most maxBackoff) included
	eventWait   = 60 * time.Second  // an event or answer
	iqTimeout   = 30 * time.Second  // Config.IQTimeout of the test clients
	// idleStall bounds waitIdle's wait for the next publish answer.
	idleStall = 60 * time.Second
)

// peer is one running client and its events.
type peer struct {
	t      *testing.T
	name   string
	c      *Client
	cfg    Config
	ev     chan Event
	cancel context.CancelFunc
	done   chan error
}

func peerConfig(srv *xsrv, jid, pw, resource string) Config {
	cfg := DefaultConfig()
	cfg.JID = jid + "/" + resource
	cfg.Password = pw
	cfg.Address = srv.Addr
	cfg.Service = srv.Service
	cfg.UseTLS = false
	cfg.EID = devstate.DeriveEID(cfg.JID)
	cfg.IQTimeout = iqTimeout
	cfg.Logger = testLogger()
	cfg.Trace = os.Getenv("BUSYLAMP_TEST_LOG") == "trace"
	return cfg
}

// startPeer starts a client; tune, when given, adjusts its internals
// before it runs.
func startPeer(t *testing.T, name string, cfg Config, tune ...func(*settings)) *peer {
	t.Helper()
	p := &peer{t: t, name: name, cfg: cfg, ev: make(chan Event, 4096), done: make(chan error, 1)}
	c, err := New(cfg, p.ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tune {
		f(c.s)
	}
	p.c = c
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- c.Run(ctx) }()
	t.Cleanup(p.stop)
	return p
}

func (p *peer) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case <-p.done:
	case <-time.After(eventWait):
		p.t.Errorf("%s: Run did not return", p.name)
	}
}

// waitFor reads events until one satisfies match.
func (p *peer) waitFor(d time.Duration, what string, match func(Event) bool) Event {
	p.t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case ev := <-p.ev:
			if match(ev) {
				return ev
			}
		case <-tm.C:
			p.t.Fatalf("%s: no %s within %v (status %+v)", p.name, what, d, p.c.Status())
			return nil
		}
	}
}

// waitAll reads events until each matcher has matched one, in any order.
func (p *peer) waitAll(d time.Duration, what string, matchers ...func(Event) bool) {
	p.t.Helper()
	left := append([]func(Event) bool(nil), matchers...)
	p.waitFor(d, what, func(ev Event) bool {
		for i, m := range left {
			if m(ev) {
				left = append(left[:i], left[i+1:]...)
				break
			}
		}
		return len(left) == 0
	})
}

func isDevice(dev string, st devstate.State) func(Event) bool {
	return func(ev Event) bool {
		de, ok := ev.(DeviceEvent)
		return ok && de.Item.Device == dev && de.Item.State == st
	}
}

func isMailbox(mbox string, c mwi.Counts) func(Event) bool {
	return func(ev Event) bool {
		me, ok := ev.(MailboxEvent)
		return ok && me.Item.Mailbox == mbox && me.Item.Counts == c
	}
}

func (p *peer) connected(d time.Duration) Connected {
	p.t.Helper()
	return p.waitFor(d, "Connected", func(ev Event) bool { _, ok := ev.(Connected); return ok }).(Connected)
}

func (p *peer) device(d time.Duration, dev string, st devstate.State) DeviceItem {
	p.t.Helper()
	return p.waitFor(d, fmt.Sprintf("device %s=%v", dev, st), func(ev Event) bool {
		de, ok := ev.(DeviceEvent)
		return ok && de.Item.Device == dev && de.Item.State == st
	}).(DeviceEvent).Item
}

func (p *peer) mailbox(d time.Duration, mbox string, c mwi.Counts) MailboxItem {
	p.t.Helper()
	return p.waitFor(d, fmt.Sprintf("mailbox %s=%v", mbox, c), func(ev Event) bool {
		me, ok := ev.(MailboxEvent)
		return ok && me.Item.Mailbox == mbox && me.Item.Counts == c
	}).(MailboxEvent).Item
}

func (p *peer) presence(d time.Duration, bare string, available bool) Presence {
	p.t.Helper()
	return p.waitFor(d, "presence of "+bare, func(ev Event) bool {
		pr, ok := ev.(Presence)
		return ok && strings.HasPrefix(pr.JID, bare+"/") && pr.Available == available
	}).(Presence)
}

// uniq makes device and mailbox names no earlier test has used.
func uniq(t *testing.T, s string) string {
	return fmt.Sprintf("%s-%s-%d", s, strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano()%1e9)
}

// freshNodes deletes and re-creates both nodes with the admin account,
// making owners the given buddies, so each test starts with known nodes.
func freshNodes(t *testing.T, srv *xsrv, collection bool, owners ...string) {
	t.Helper()
	jid, pw := srv.Admin("a")
	cfg := peerConfig(srv, jid, pw, "cleaner")
	cfg.Buddies = owners
	cfg.AutoRegister = false
	cfg.CollectionNodes = collection
	// subCheck 0: its own check must not re-create the nodes it deletes.
	p := startPeer(t, "cleaner", cfg, func(s *settings) { s.subCheck = 0 })
	p.connected(connectWait)
	ctx := context.Background()
	unsubscribeAll(t, p)
	for _, n := range []string{NodeDevices, NodeMailboxes} {
		if err := p.c.DeleteNode(ctx, n); err != nil && !IsCondition(err, "item-not-found") {
			t.Fatalf("delete %s: %v", n, err)
		}
		var err error
		if collection {
			err = p.c.CreateCollection(ctx, n)
		} else {
			err = p.c.CreateNode(ctx, n)
		}
		if err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	p.stop()
}

// unsubscribeAll unsubscribes p from both nodes, so that deleting them
// does not make it reconnect.
func unsubscribeAll(t *testing.T, p *peer) {
	t.Helper()
	s, err := p.c.session()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{NodeDevices, NodeMailboxes} {
		if _, err := s.iq(context.Background(), "set", p.cfg.Service, unsubscribeRequest(n, jid.Bare(p.cfg.JID))); err != nil {
			t.Fatalf("unsubscribe %s: %v", n, err)
		}
	}
}

// Two servers publish and subscribe device states and MWI both ways.
func TestPublishSubscribe(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		ca.Status, ca.StatusMessage, ca.Priority = "dnd", "busy lamp A", 5
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		b.connected(connectWait)

		// Presence both ways, with A's status (subscriptions settle first).
		pr := b.presence(eventWait, aj, true)
		if pr.Show != "dnd" || pr.Status != "busy lamp A" || pr.Priority != 5 {
			t.Errorf("B sees A's presence %+v", pr)
		}
		a.presence(eventWait, bj, true)

		dev, dev2, mbox := uniq(t, "SIP/100"), uniq(t, "Custom:b"), uniq(t, "1000")+"@default"
		a.c.PublishDevice(dev, devstate.InUse, true)
		got := b.device(eventWait, dev, devstate.InUse)
		if got.EID != ca.EID || !got.Cachable {
			t.Errorf("B got %+v", got)
		}
		if got.Publisher == "" || jid.Bare(got.Publisher) != jid.Bare(aj) {
			t.Errorf("publisher %q, want %s (itemreply / expose_publisher)", got.Publisher, aj)
		}
		a.c.PublishDevice(dev, devstate.Ringing, false) // cachable=0: publish-options
		if got := b.device(eventWait, dev, devstate.Ringing); got.Cachable {
			t.Errorf("cachable=0 arrived as %+v", got)
		}
		a.c.PublishMailbox(mbox, mwi.Counts{New: 2, Old: 1})
		if got := b.mailbox(eventWait, mbox, mwi.Counts{New: 2, Old: 1}); got.EID != ca.EID {
			t.Errorf("B got %+v", got)
		}
		b.c.PublishDevice(dev2, devstate.Busy, true)
		b.c.PublishMailbox(mbox, mwi.Counts{New: 0, Old: 3})
		a.waitAll(eventWait, "B's device and mailbox", isDevice(dev2, devstate.Busy), isMailbox(mbox, mwi.Counts{Old: 3}))

		// show buddies: A's resource with its status.
		var seen bool
		for _, bd := range b.c.Buddies() {
			for _, r := range bd.Resources {
				if bd.JID == jid.Bare(aj) && r.Resource == "astvoip1" && r.Show == "dnd" && r.Priority == 5 {
					seen = true
				}
			}
		}
		if !seen {
			t.Errorf("B's buddies %+v lack A/astvoip1", b.c.Buddies())
		}
		if st := a.c.Stats(); st.Published < 3 || st.Errors != 0 {
			t.Errorf("A stats %+v", st)
		}
		if st := a.c.Status(); st.State != "connected" || st.JID != ca.JID {
			t.Errorf("A status %+v", st)
		}

		// Items fetch returns the current state, own EID included (the
		// agent restores its own states from it after a restart).
		devs, mboxes, err := b.c.FetchItems(context.Background(), NodeDevices)
		if err != nil {
			t.Fatal(err)
		}
		if !hasDevice(devs, dev, devstate.Ringing) || !hasDevice(devs, dev2, devstate.Busy) {
			t.Errorf("B fetched %+v", devs)
		}
		_ = mboxes
	})
}

func hasDevice(ds []DeviceItem, dev string, st devstate.State) bool {
	for _, d := range ds {
		if d.Device == dev && d.State == st {
			return true
		}
	}
	return false
}

// A server that connects later learns the current states from the items,
// and its own states are republished from Config.OwnStates.
func TestResyncOnConnect(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		dev, mbox, own := uniq(t, "SIP/7"), uniq(t, "7")+"@ctx", uniq(t, "SIP/own")
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		a.c.PublishDevice(dev, devstate.OnHold, true)
		a.c.PublishMailbox(mbox, mwi.Counts{New: 4})
		waitIdle(t, a.c)

		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		cb.OwnStates = func() ([]DeviceItem, []MailboxItem) {
			return []DeviceItem{{Device: own, State: devstate.Busy, Cachable: true}}, nil
		}
		b := startPeer(t, "B", cb)
		conn := b.connected(connectWait)
		if !hasDevice(conn.Devices, dev, devstate.OnHold) {
			t.Errorf("Connected devices %+v lack %s", conn.Devices, dev)
		}
		var mok bool
		for _, m := range conn.Mailboxes {
			mok = mok || (m.Mailbox == mbox && m.Counts.New == 4 && m.EID == ca.EID)
		}
		if !mok {
			t.Errorf("Connected mailboxes %+v lack %s", conn.Mailboxes, mbox)
		}
		a.device(eventWait, own, devstate.Busy) // B's republished own state
	})
}

// waitIdle waits until every publish has been answered. It fails when no
// publish has been sent, answered or failed for idleStall: a stall, not a slow
// server (a busy machine takes minutes for the 14,000 publishes of
// TestMemoryStorePastItemLimit, an idle one seconds).
func waitIdle(t *testing.T, c *Client) {
	t.Helper()
	last := c.Stats()
	deadline := time.Now().Add(idleStall)
	for {
		st := c.Stats()
		if st.Pending == 0 && st.InFlight == 0 {
			return
		}
		if st != last { // sent, answered or failed since
			last, deadline = st, time.Now().Add(idleStall)
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishes not answered: none for %v: %+v", idleStall, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sees waits until p knows dev=st: from the items of conn, or an event.
func (p *peer) sees(conn Connected, d time.Duration, dev string, st devstate.State) {
	p.t.Helper()
	if !hasDevice(conn.Devices, dev, st) {
		p.device(d, dev, st)
	}
}

// Killing the server and starting it again on the same port: both sessions
// reconnect, re-subscribe, resync and republish. How soon they reconnect
// once the server is back is the backoff's bound (at most maxBackoff); the
// wait for it counts from when the server answers again, as the restart
// itself takes from 1 s to a minute, depending on the server and the load.
func TestServerRestart(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		dev, own := uniq(t, "SIP/9"), uniq(t, "SIP/mine")
		var mu sync.Mutex
		ownState := devstate.NotInUse
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		ca.PingInterval = 2 * time.Second
		ca.OwnStates = func() ([]DeviceItem, []MailboxItem) {
			mu.Lock()
			defer mu.Unlock()
			return []DeviceItem{{Device: own, State: ownState, Cachable: true}}, nil
		}
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		cb.PingInterval = 2 * time.Second
		devState := devstate.InUse
		// Own states as they are now (Config.OwnStates' contract): a
		// republish (a connect, the purge check) must not bring back a
		// value the test has replaced since.
		cb.OwnStates = func() ([]DeviceItem, []MailboxItem) {
			mu.Lock()
			defer mu.Unlock()
			return []DeviceItem{{Device: dev, State: devState, Cachable: true}}, nil
		}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		connB := b.connected(connectWait)
		b.sees(connB, eventWait, own, devstate.NotInUse) // A's republish at its connect
		a.device(eventWait, dev, devstate.InUse)         // B's republish at its connect
		waitIdle(t, b.c)
		waitIdle(t, a.c)

		if err := srv.Kill(); err != nil {
			t.Fatal(err)
		}
		isDisc := func(ev Event) bool { _, ok := ev.(Disconnected); return ok }
		a.waitFor(eventWait, "Disconnected", isDisc)
		b.waitFor(eventWait, "Disconnected", isDisc)
		if st := a.c.Status(); st.State == "connected" || st.LastError == "" {
			t.Errorf("A status after kill: %+v", st)
		}
		mu.Lock()
		ownState = devstate.Busy
		mu.Unlock()
		a.c.PublishDevice(own, devstate.Busy, true) // waits for the next session
		down := time.Now()
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		connA := a.connected(connectWait)
		connB = b.connected(connectWait - time.Since(up))
		t.Logf("%s: reconnected %v after the restart began (the server took %v); items kept: %v", srv.Kind,
			time.Since(down).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond), hasDevice(connA.Devices, dev, devstate.InUse))
		// Resynced: from the items the server kept, and from the
		// republished own states (ejabberd may lose recent items when
		// killed: its pubsub_item table is a dets file).
		a.sees(connA, eventWait, dev, devstate.InUse)
		b.sees(connB, eventWait, own, devstate.Busy)
		// Re-subscribed: new publications flow both ways.
		mu.Lock()
		devState = devstate.NotInUse
		mu.Unlock()
		b.c.PublishDevice(dev, devstate.NotInUse, true)
		a.device(eventWait, dev, devstate.NotInUse)
		mu.Lock()
		ownState = devstate.OnHold
		mu.Unlock()
		a.c.PublishDevice(own, devstate.OnHold, true)
		b.device(eventWait, own, devstate.OnHold)
		if st := a.c.Status(); st.State != "connected" {
			t.Errorf("A status %+v", st)
		}
	})
}

// Publishing to a node that was deleted: item-not-found, the node is
// created again (with the buddies as owners), the publish retried and the
// subscription renewed.
func TestNodeAutoCreateAfterItemNotFound(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		ca.PingInterval = 500 * time.Millisecond
		a := startPeer(t, "A", ca, func(s *settings) { s.subCheck = time.Second })
		a.connected(connectWait)
		ctx := context.Background()
		unsubscribeAll(t, a) // else the deletion makes A reconnect (TestNodeDeletedUnderSessions)
		for _, n := range []string{NodeDevices, NodeMailboxes} {
			if err := a.c.DeleteNode(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		dev, mbox := uniq(t, "SIP/recreated"), uniq(t, "5")+"@x"
		a.c.PublishDevice(dev, devstate.Ringing, true)
		a.c.PublishMailbox(mbox, mwi.Counts{New: 1})
		waitIdle(t, a.c)
		if st := a.c.Stats(); st.Errors != 0 {
			t.Fatalf("publish after delete failed: %+v", st)
		}
		nodes, err := a.c.ListNodes(ctx, "")
		if err != nil || !contains(nodes, NodeDevices) || !contains(nodes, NodeMailboxes) {
			t.Fatalf("nodes %v, %v", nodes, err)
		}
		// Fetching works only for the whitelisted owners, so this also
		// proves the affiliations.
		cb := peerConfig(srv, bj, bpw, "reader")
		cb.Buddies = []string{aj}
		b := startPeer(t, "B", cb)
		conn := b.connected(connectWait)
		if !hasDevice(conn.Devices, dev, devstate.Ringing) {
			t.Errorf("B's items %+v lack %s", conn.Devices, dev)
		}
		if srv.Kind == "ejabberd" {
			// ejabberd does not answer item-not-found: it creates the
			// node on the publish, with its defaults and A as the only
			// owner. A's subscription check notices the lost
			// subscription and reconnects, which subscribes and makes
			// the buddies owners again.
			a.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
			a.connected(connectWait)
		}
		// A is subscribed again (on Prosody right when it created the nodes).
		dev2 := uniq(t, "SIP/fromB")
		b.c.PublishDevice(dev2, devstate.InUse, true)
		a.device(eventWait, dev2, devstate.InUse)
	})
}

// A node deleted and created again by someone else takes the
// subscriptions with it: Prosody says so (a delete event), ejabberd does
// not (the periodic subscription check finds out). Either way the sessions
// reconnect, subscribe again and resync.
func TestNodeDeletedUnderSessions(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		cb.PingInterval = 500 * time.Millisecond
		b := startPeer(t, "B", cb, func(s *settings) { s.subCheck = time.Second })
		b.connected(connectWait)

		freshNodes(t, srv, false, bj) // another server deletes and re-creates both
		b.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
		b.connected(connectWait)
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		dev := uniq(t, "SIP/after")
		a.c.PublishDevice(dev, devstate.Busy, true)
		b.device(eventWait, dev, devstate.Busy)
	})
}

// Another session of the same account (a second resource, or the agent
// restarted while the server still holds its old session) unsubscribes
// and subscribes the bare JID when it connects. A subscription check that
// falls between the two must not end this session: it looks again.
func TestSubscriptionCheckSparesOtherSession(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		other := peerConfig(srv, aj, apw, "other")
		other.Buddies = []string{bj}
		x := startPeer(t, "X", other, func(s *settings) { s.subCheck = 0 })
		x.connected(connectWait)
		xs, err := x.c.session()
		if err != nil {
			t.Fatal(err)
		}

		// A's first check after X's unsubscribe sees the subscription
		// missing; X subscribes again before A looks the second time
		// (the hook holds A's check loop until then).
		var once sync.Once
		resubscribed := make(chan error, 1)
		checks := make(chan error, 64)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		armed := make(chan struct{})
		a := startPeer(t, "A", ca, func(s *settings) {
			s.subCheck = 200 * time.Millisecond
			s.onCheck = func(err error) {
				select {
				case <-armed:
				default:
					return
				}
				if err != nil {
					once.Do(func() {
						_, serr := xs.iq(context.Background(), "set", other.Service, subscribeRequest(NodeDevices, jid.Bare(aj), false))
						resubscribed <- serr
					})
				}
				select {
				case checks <- err:
				default:
				}
			}
		})
		a.connected(connectWait)
		close(armed)
		if _, err := xs.iq(context.Background(), "set", other.Service, unsubscribeRequest(NodeDevices, jid.Bare(aj))); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(eventWait)
		sawMiss := false
		for ok := false; !ok; {
			select {
			case err := <-checks:
				if err != nil {
					sawMiss = true
				} else {
					ok = sawMiss // a clean check after the miss
				}
			case ev := <-a.ev:
				if _, bad := ev.(Disconnected); bad {
					t.Fatalf("A's session ended on one missed check: %+v", ev)
				}
			case <-deadline:
				t.Fatalf("no missed check followed by a clean one (miss seen: %v)", sawMiss)
			}
		}
		if err := <-resubscribed; err != nil {
			t.Fatal(err)
		}
		if st := a.c.Status(); st.State != "connected" {
			t.Fatalf("A: %+v", st)
		}
		// Still subscribed and in the same session: B's publication arrives.
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		b := startPeer(t, "B", cb)
		b.connected(connectWait)
		dev := uniq(t, "SIP/kept")
		b.c.PublishDevice(dev, devstate.InUse, true)
		a.device(eventWait, dev, devstate.InUse)
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// An account that may not create nodes gets an error that says how to fix it.
func TestCreateForbiddenIsHelpful(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		cj, cpw := srv.User("c")
		freshNodes(t, srv, false, cj)
		cc := peerConfig(srv, cj, cpw, "astvoip3")
		c := startPeer(t, "C", cc)
		c.connected(connectWait)
		err := c.c.CreateNode(context.Background(), uniq(t, "not_allowed"))
		var fe *CreateForbiddenError
		if !errors.As(err, &fe) {
			t.Fatalf("create by a plain account: %v (%T), want CreateForbiddenError", err, err)
		}
		msg := err.Error()
		for _, want := range []string{jid.Bare(cj), srv.Service, "admins = {", "prosody.cfg.lua", "access_createnode"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
		if !IsCondition(err, "forbidden") {
			t.Errorf("condition lost: %v", err)
		}
		c.stop()

		// Connecting to a service without the nodes: the session cannot be
		// set up, and the status says why.
		aj, apw := srv.Admin("a")
		ca := peerConfig(srv, aj, apw, "cleaner2")
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		unsubscribeAll(t, a)
		for _, n := range []string{NodeDevices, NodeMailboxes} {
			if err := a.c.DeleteNode(context.Background(), n); err != nil {
				t.Fatal(err)
			}
		}
		a.stop()
		c2 := startPeer(t, "C2", cc)
		deadline := time.Now().Add(eventWait)
		for !strings.Contains(c2.c.Status().LastError, "access_createnode") {
			if time.Now().After(deadline) {
				t.Fatalf("status %+v", c2.c.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
		c2.stop()
		freshNodes(t, srv, false) // leave the nodes for the other tests
	})
}

// A burst of publishes on few devices: fewer publishes are sent than were
// asked for, and the subscriber ends with the last state of each device.
func TestCoalescingBurst(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		ca.PublishWindow = 4
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		b.connected(connectWait)

		const n, ndev = 3000, 8
		devs := make([]string, ndev)
		for i := range devs {
			devs[i] = uniq(t, fmt.Sprintf("Local/burst%d", i))
		}
		before := a.c.Stats()
		start := time.Now()
		final := map[string]devstate.State{}
		for i := 0; i < n; i++ {
			st := devstate.States[i%len(devstate.States)]
			a.c.PublishDevice(devs[i%ndev], st, true)
			final[devs[i%ndev]] = st
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%d PublishDevice calls took %v: they must not block", n, d)
		}
		waitIdle(t, a.c)
		st := a.c.Stats()
		sent := st.Published - before.Published
		t.Logf("%s: %d publishes asked, %d sent, %d coalesced", srv.Kind, n, sent, st.Coalesced-before.Coalesced)
		if sent >= n || st.Coalesced == before.Coalesced {
			t.Errorf("sent %d of %d publishes: nothing coalesced", sent, n)
		}
		if st.Errors != before.Errors {
			t.Errorf("errors: %+v", st)
		}
		// B's view: the last event per device must be the final state.
		last := map[string]devstate.State{}
		deadline := time.After(eventWait)
		for !sameStates(last, final) {
			select {
			case ev := <-b.ev:
				if de, ok := ev.(DeviceEvent); ok {
					if _, ours := final[de.Item.Device]; ours {
						last[de.Item.Device] = de.Item.State
					}
				}
			case <-deadline:
				t.Fatalf("B ended with %v, want %v", last, final)
			}
		}
	})
}

func sameStates(a, b map[string]devstate.State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}
