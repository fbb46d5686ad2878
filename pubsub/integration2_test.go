package pubsub

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
)

// busylamp's own-states exchange between two agents, in chunks; the
// errors an Asterisk node (or anyone not answering it) yields.
func TestOwnStatesExchange(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		cj, cpw := srv.User("c")
		freshNodes(t, srv, false, bj, cj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies = []string{bj}
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies = []string{aj}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		b.connected(connectWait)
		aFull := b.presence(eventWait, aj, true).JID

		const ndev, nmbox = 1100, 150 // three chunks of at most 500
		var devs []DeviceItem
		var mboxes []MailboxItem
		for i := 0; i < ndev; i++ {
			devs = append(devs, DeviceItem{Device: fmt.Sprintf("PJSIP/%04d", i), State: devstate.States[i%9], Cachable: i%2 == 0, EID: ca.EID})
		}
		for i := 0; i < nmbox; i++ {
			mboxes = append(mboxes, MailboxItem{Mailbox: fmt.Sprintf("%d@default", i), Counts: mwi.Counts{New: i, Old: 1}, EID: ca.EID})
		}
		// A answers every request the agent way: from its event loop.
		var answered atomic.Int32
		var lostSnapshot atomic.Bool // answer with a cursor A does not know
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			for {
				select {
				case ev := <-a.ev:
					if req, ok := ev.(OwnStatesRequest); ok {
						answered.Add(1)
						if lostSnapshot.Load() {
							ans := &answer{to: req.From, devs: devs, mboxes: mboxes}
							if err := req.sess.send(newIQ("result", req.From, req.ID, chunk(ans, "gone", 0))); err != nil {
								t.Errorf("answer: %v", err)
							}
							continue
						}
						if err := a.c.AnswerOwnStates(req, devs, mboxes); err != nil {
							t.Errorf("answer: %v", err)
						}
					}
				case <-ctx.Done():
					return
				}
			}
		}()
		gotD, gotM, err := b.c.RequestOwnStates(context.Background(), aFull, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(gotD) != ndev || len(gotM) != nmbox {
			t.Fatalf("got %d devices and %d mailboxes, want %d and %d", len(gotD), len(gotM), ndev, nmbox)
		}
		for i := range devs {
			if gotD[i] != devs[i] {
				t.Fatalf("device %d: %+v, want %+v", i, gotD[i], devs[i])
			}
		}
		for i := range mboxes {
			if gotM[i] != mboxes[i] {
				t.Fatalf("mailbox %d: %+v, want %+v", i, gotM[i], mboxes[i])
			}
		}
		if n := answered.Load(); n != 1 {
			t.Errorf("the agent was asked %d times; later chunks must come from the snapshot", n)
		}

		// The first chunk, then a cursor A no longer knows: cut off, not
		// taken for an Asterisk node, not a partial success.
		lostSnapshot.Store(true)
		gotD, _, err = b.c.RequestOwnStates(context.Background(), aFull, 0)
		if !errors.Is(err, ErrOwnStatesIncomplete) || !IsCondition(err, "item-not-found") || gotD != nil {
			t.Errorf("answer cut off after one chunk: %d devices, %v; want ErrOwnStatesIncomplete (item-not-found)", len(gotD), err)
		}
		lostSnapshot.Store(false)

		// A resource that is not there: the server answers for it.
		_, _, err = b.c.RequestOwnStates(context.Background(), jid.Bare(aj)+"/gone", 0)
		if !errors.Is(err, ErrOwnStatesUnsupported) {
			t.Errorf("request to a missing resource: %v, want ErrOwnStatesUnsupported", err)
		}
		// Not a buddy: refused.
		cc := peerConfig(srv, cj, cpw, "astvoip3")
		c := startPeer(t, "C", cc)
		c.connected(connectWait)
		_, _, err = c.c.RequestOwnStates(context.Background(), aFull, 0)
		if !IsCondition(err, "forbidden") {
			t.Errorf("request from a non-buddy: %v, want forbidden", err)
		}
	})
}

// Any IQ get or set nobody handles gets service-unavailable (RFC 6120
// 8.4), pings are answered, disco#info names the own-states feature.
func TestIQRequestsAnswered(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		a := startPeer(t, "A", peerConfig(srv, aj, apw, "astvoip1"))
		a.connected(connectWait)
		b := startPeer(t, "B", peerConfig(srv, bj, bpw, "astvoip2"))
		b.connected(connectWait)
		s, err := b.c.session()
		if err != nil {
			t.Fatal(err)
		}
		to := a.c.Status().JID
		ctx := context.Background()
		if _, err := s.iq(ctx, "get", to, &pingReq{}); err != nil {
			t.Errorf("ping: %v", err)
		}
		_, err = s.iq(ctx, "get", to, &discoQuery{XMLName: xml.Name{Space: "jabber:iq:version", Local: "query"}})
		if !IsCondition(err, "service-unavailable") {
			t.Errorf("unknown get: %v", err)
		}
		_, err = s.iq(ctx, "set", to, &discoQuery{XMLName: xml.Name{Space: "urn:example:whatever", Local: "x"}})
		if !IsCondition(err, "service-unavailable") {
			t.Errorf("unknown set: %v", err)
		}
		res, err := s.iq(ctx, "get", to, &discoQuery{XMLName: xml.Name{Space: nsDiscoInfo, Local: "query"}})
		if err != nil {
			t.Fatal(err)
		}
		var vars []string
		for _, f := range res.Child(nsDiscoInfo, "query").Children("", "feature") {
			vars = append(vars, f.Attr("var"))
		}
		if !contains(vars, NSOwnStates) || !contains(vars, nsPing) {
			t.Errorf("disco#info features %v", vars)
		}
	})
}

// auth_policy, autoregister, autoprune, AddBuddy and RemoveBuddy.
func TestRosterPolicies(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		bj, bpw := srv.User("b")
		cj, cpw := srv.User("c")
		junk := "junk-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")) + "@" + srv.Domain
		// C denies subscription requests; B asks.
		cc := peerConfig(srv, cj, cpw, "astvoip3")
		cc.AuthPolicy = "deny"
		cc.Buddies = []string{bj, junk} // junk ends up in C's roster
		c := startPeer(t, "C", cc)
		c.connected(connectWait)
		// Start clean: B forgets C.
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.AutoPrune = true
		b := startPeer(t, "B", cb)
		b.connected(connectWait)
		b.stop()
		cb.AutoPrune = false
		cb.Buddies = []string{cj}
		b = startPeer(t, "B2", cb)
		b.connected(connectWait)
		deadline := time.Now().Add(eventWait)
		for {
			bs := b.c.Buddies()
			if len(bs) == 1 && bs[0].JID == jid.Bare(cj) && bs[0].InRoster && !bs[0].Pending &&
				bs[0].Subscription != "to" && bs[0].Subscription != "both" {
				break // denied: no pending request left, no subscription
			}
			if time.Now().After(deadline) {
				t.Fatalf("B's buddies %+v: C should have denied the subscription", bs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.stop()
		// autoprune: C without buddies removes them from its roster.
		c.stop()
		cc.Buddies = nil
		cc.AutoPrune = true
		c = startPeer(t, "C2", cc)
		c.connected(connectWait)
		roster := rosterJIDs(t, c)
		if contains(roster, junk) || contains(roster, jid.Bare(bj)) {
			t.Errorf("C's roster after autoprune: %v", roster)
		}
		// AddBuddy at run time: roster entry; RemoveBuddy: gone again.
		if err := c.c.AddBuddy(context.Background(), junk); err != nil && !IsCondition(err, "forbidden") && !IsCondition(err, "item-not-found") {
			// Affiliations need C to own the nodes; the roster part must work.
			t.Logf("AddBuddy: %v", err)
		}
		if roster := rosterJIDs(t, c); !contains(roster, junk) {
			t.Errorf("roster after AddBuddy: %v", roster)
		}
		if bs := c.c.Buddies(); len(bs) != 1 || bs[0].JID != junk {
			t.Errorf("Buddies() after AddBuddy: %+v", bs)
		}
		_ = c.c.RemoveBuddy(context.Background(), junk)
		if roster := rosterJIDs(t, c); contains(roster, junk) {
			t.Errorf("roster after RemoveBuddy: %v", roster)
		}
		if bs := c.c.Buddies(); len(bs) != 0 {
			t.Errorf("Buddies() after RemoveBuddy: %+v", bs)
		}
	})
}

func rosterJIDs(t *testing.T, p *peer) []string {
	t.Helper()
	s, err := p.c.session()
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.iq(context.Background(), "get", "", &rosterGet{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range res.Child(nsRoster, "query").Children("", "item") {
		out = append(out, it.Attr("jid"))
	}
	return out
}

// AddBuddy makes the new buddy an owner of both nodes at once.
func TestAddBuddyAffiliation(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false) // no owner but the admin
		a := startPeer(t, "A", peerConfig(srv, aj, apw, "astvoip1"))
		a.connected(connectWait)
		if err := a.c.AddBuddy(context.Background(), bj); err != nil {
			t.Fatal(err)
		}
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		b := startPeer(t, "B", cb)
		b.connected(connectWait) // subscribing to a whitelist node needs the affiliation
		dev := uniq(t, "SIP/new")
		b.c.PublishDevice(dev, devstate.InUse, true)
		a.device(eventWait, dev, devstate.InUse)
		if err := a.c.RemoveBuddy(context.Background(), bj); err != nil {
			t.Fatal(err)
		}
		b.c.PublishDevice(dev, devstate.Busy, true)
		waitIdle(t, b.c)
		if b.c.Stats().Errors == 0 {
			t.Errorf("B could still publish after RemoveBuddy")
		}
	})
}

// freezer is a TCP proxy whose traffic can be stopped without closing the
// connections: a dead peer as pings see it.
type freezer struct {
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		if f.frozen.Load() {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, s)
		f.mu.Unlock()
		f.wg.Add(2)
		go f.pipe(c, s)
		go f.pipe(s, c)
	}
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if f.frozen.Load() {
			continue // swallowed: the peer hears nothing, and no close
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

func (f *freezer) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// A connection that goes silent is found dead by the pings, within
// PingInterval + IQTimeout by their timers, and the client reconnects.
// What is asserted is the mechanism: the session ends on an unanswered
// ping, not on the read deadline (PingInterval + IQTimeout + 5 s) nor
// anything else. How long it took is logged, not asserted: on a busy
// machine timers fire late and the bound by the clock held only when idle.
func TestDeadConnectionDetected(t *testing.T) {
	srv := sharedServer(t, xmpptest.Prosody)
	aj, apw := srv.Admin("a")
	f := newFreezer(t, srv.Addr)
	ca := peerConfig(srv, aj, apw, "frozen")
	ca.Address = f.ln.Addr().String()
	ca.PingInterval = time.Second
	ca.IQTimeout = 2 * time.Second
	a := startPeer(t, "A", ca)
	a.connected(connectWait)
	f.frozen.Store(true)
	t0 := time.Now()
	ev := a.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
	t.Logf("dead connection found %v after the freeze (ping every %v, IQ timeout %v)",
		time.Since(t0).Round(time.Millisecond), ca.PingInterval, ca.IQTimeout)
	if err := ev.(Disconnected).Err; err == nil || !strings.Contains(err.Error(), "no answer to ping") {
		t.Errorf("Disconnected error %v, want the ping's", err)
	}
	f.frozen.Store(false)
	a.connected(connectWait)
}

// No goroutine outlives a session that ended, nor Run, however often the
// session was lost.
func TestNoGoroutineLeak(t *testing.T) {
	srv := sharedServer(t, xmpptest.Prosody)
	aj, apw := srv.Admin("a")
	// Everything running now (the servers' helpers among it) may stay.
	before := goleak.IgnoreCurrent()
	for round := 0; round < 3; round++ {
		f := newFreezer(t, srv.Addr)
		ca := peerConfig(srv, aj, apw, fmt.Sprintf("leak%d", round))
		ca.Address = f.ln.Addr().String()
		ca.PingInterval = 300 * time.Millisecond
		ca.IQTimeout = 500 * time.Millisecond
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		for i := 0; i < 50; i++ {
			a.c.PublishDevice(fmt.Sprintf("Local/leak%d", i%5), devstate.InUse, true)
		}
		f.frozen.Store(true) // pending IQs and publishes in flight die with the session
		a.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
		// The session's goroutines (read loop, keepalive, publisher,
		// subscription check) ended before Disconnected was sent; left are
		// Run's own loop and dispatcher and the freezer's proxying. While
		// frozen no new session can start.
		goleak.VerifyNone(t, before,
			goleak.IgnoreAnyFunction("github.com/busylamp/busylamp/pubsub.(*Client).Run"),
			goleak.IgnoreAnyFunction("github.com/busylamp/busylamp/pubsub.(*eventQueue).run"),
			goleak.IgnoreAnyFunction("github.com/busylamp/busylamp/pubsub.(*freezer).accept"),
			goleak.IgnoreAnyFunction("github.com/busylamp/busylamp/pubsub.(*freezer).pipe"))
		f.frozen.Store(false)
		a.connected(connectWait)
		a.stop()
		f.close()
	}
	goleak.VerifyNone(t, before)
}

// XEP-0248 mode as the servers here implement it (the finding in the
// package doc): the collections and a leaf can be created and the
// collection subscribed with Asterisk's options, but the leaf is not
// associated and the collection's subscriber hears nothing.
func TestCollectionModeFindings(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, true, bj)
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.CollectionNodes = true
		ca.Buddies = []string{bj}
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.CollectionNodes = true
		cb.Buddies = []string{aj}
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb) // subscribes to the collections with the XEP-0248 options
		b.connected(connectWait)
		ctx := context.Background()
		leaf := uniq(t, "SIP/leaf")
		if err := a.c.CreateLeaf(ctx, NodeDevices, leaf); err != nil {
			t.Fatalf("leaf create with pubsub#collection: %v", err)
		}
		a.c.PublishDevice(leaf, devstate.InUse, true)
		waitIdle(t, a.c)
		if st := a.c.Stats(); st.Errors != 0 {
			t.Fatalf("publish to the leaf: %+v", st)
		}
		children, err := a.c.ListNodes(ctx, NodeDevices)
		if err != nil {
			t.Fatal(err)
		}
		top, _ := a.c.ListNodes(ctx, "")
		t.Logf("%s: disco#items of %s: %v; leaf at the top level: %v", srv.Kind, NodeDevices, children, contains(top, leaf))
		if contains(children, leaf) {
			t.Errorf("%s now associates leaves with collections: update the package doc and PROTOCOL.md", srv.Kind)
		}
		select {
		case ev := <-b.ev:
			for {
				if de, ok := ev.(DeviceEvent); ok && de.Item.Device == leaf {
					t.Errorf("%s now delivers leaf items to collection subscribers: update the package doc", srv.Kind)
				}
				select {
				case ev = <-b.ev:
					continue
				case <-time.After(1500 * time.Millisecond):
				}
				break
			}
		case <-time.After(1500 * time.Millisecond):
		}
		freshNodes(t, srv, false) // leave flat nodes for the other tests
	})
}

// Fetching pages through RSM where the service pages (ejabberd), and
// keeps more than Prosody's default 20 items (pubsub#max_items=max).
func TestFetchManyItems(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		n, want := 900, 900 // ejabberd keeps max_items_node items (1000 by default)
		if srv.Kind == "prosody" {
			n, want = 300, 256 // pubsub_max_items, Prosody's default cap for "max"
		}
		a := startPeer(t, "A", peerConfig(srv, aj, apw, "astvoip1"))
		a.connected(connectWait)
		t0 := time.Now()
		for i := 0; i < n; i++ {
			a.c.PublishDevice(fmt.Sprintf("PJSIP/page%04d", i), devstate.InUse, true)
		}
		waitIdle(t, a.c)
		t.Logf("%s: %d publishes took %v", srv.Kind, n, time.Since(t0))
		b := startPeer(t, "B", peerConfig(srv, bj, bpw, "astvoip2"))
		conn := b.connected(connectWait)
		t.Logf("%s: fetched %d of %d", srv.Kind, len(conn.Devices), n)
		if len(conn.Devices) < want {
			t.Errorf("fetched %d items, want at least %d", len(conn.Devices), want)
		}
	})
}

// Prosody's memory store refuses a node's 1001st item unless
// storage_archive_item_limit is raised (xmpptest and the example config
// raise it), and Prosody answers an items request in one stanza, ignoring
// RSM: past some 13,000 devices that stanza exceeded maxStanza and the
// fetching client could never connect. max_items bounds it to the newest
// maxUnpaged items.
func TestMemoryStorePastItemLimit(t *testing.T) {
	srv := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{Memory: true})
	aj, apw := srv.Admin("a")
	bj, bpw := srv.User("b")
	ca := peerConfig(srv, aj, apw, "astvoip1")
	ca.Buddies = []string{bj}
	a := startPeer(t, "A", ca)
	a.connected(connectWait)
	const n = 14000
	t0 := time.Now()
	for i := 0; i < n; i++ {
		a.c.PublishDevice(fmt.Sprintf("PJSIP/mem%05d", i), devstate.Busy, true)
	}
	waitIdle(t, a.c)
	t.Logf("%d publishes took %v", n, time.Since(t0))
	if st := a.c.Stats(); st.Errors > 0 {
		t.Errorf("the server refused %d of %d publishes", st.Errors, n)
	}
	b := startPeer(t, "B", peerConfig(srv, bj, bpw, "astvoip2"))
	conn := b.connected(connectWait)
	if len(conn.Devices) != maxUnpaged {
		t.Errorf("fetched %d items, want the newest %d", len(conn.Devices), maxUnpaged)
	}
	for _, d := range conn.Devices {
		var i int
		if _, err := fmt.Sscanf(d.Device, "PJSIP/mem%05d", &i); err != nil || i < n-maxUnpaged {
			t.Errorf("fetched %s, not one of the newest %d", d.Device, maxUnpaged)
			break
		}
	}
}
