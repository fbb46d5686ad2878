package pubsub

import (
	"context"
	"encoding/xml"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmppstream"
)

// rawStanza is a stanza of hand-written XML: what a hostile or broken
// account may send.
type rawStanza struct {
	XMLName xml.Name
	To      string `xml:"to,attr,omitempty"`
	Type    string `xml:"type,attr,omitempty"`
	Inner   string `xml:",innerxml"`
}

// rawPubSub is a PubSub request of hand-written XML.
type rawPubSub struct {
	payload
	XMLName xml.Name `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Inner   string   `xml:",innerxml"`
}

// ignoreAll is a stream handler that answers every request with an error.
type ignoreAll struct{}

func (ignoreAll) HandleMessage(*xmppstream.Stream, *elem)  {}
func (ignoreAll) HandlePresence(*xmppstream.Stream, *elem) {}
func (ignoreAll) HandleIQ(s *xmppstream.Stream, e *elem) {
	s.ReplyError(e, "cancel", "service-unavailable", "503")
}

func sessionOf(t *testing.T, p *peer) *session {
	t.Helper()
	s, err := p.c.session()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Any account can send a stanza nested 100 deep to an agent's full JID;
// the agent skips it, counts it, and its session goes on.
func TestDeepStanzaSkipped(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		mj, mpw := srv.User("m")
		a := startPeer(t, "A", peerConfig(srv, aj, apw, "astvoip1"))
		a.connected(connectWait)
		sa := sessionOf(t, a)
		// Mallory: any account, with a plain stream.
		m, err := xmppstream.Dial(context.Background(), xmppstream.Config{Addr: srv.Addr, JID: mj + "/mallory", Password: mpw,
			Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		m.Start(ignoreAll{})
		t.Cleanup(func() { m.Close(context.Canceled); m.Wait() })
		deep := strings.Repeat("<x xmlns='urn:example:deep'>", 100) + strings.Repeat("</x>", 100)
		if err := m.Send(&rawStanza{XMLName: xml.Name{Local: "message"}, To: sa.jid, Type: "chat",
			Inner: "<body>hi</body>" + deep}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(eventWait)
		for sa.st.Skipped() == 0 {
			if time.Now().After(deadline) || sa.ctx.Err() != nil {
				t.Fatalf("the deep message was not skipped (skipped %d, session ended: %v)", sa.st.Skipped(), context.Cause(sa.ctx))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := sa.iq(context.Background(), "get", srv.Domain, &pingReq{}); err != nil {
			t.Fatalf("ping after the deep message: %v", err)
		}
		if !a.c.sessionIs(sa) || sa.ctx.Err() != nil {
			t.Fatalf("the session ended: %v", context.Cause(sa.ctx))
		}
	})
}

// Large items on device_state make one items answer larger than a stanza
// may be (4 MiB; 256 items of 24 KB do on Prosody's default limits; here
// 48 of 100 KB, which the test servers store faster): a connecting client
// still connects, reads the items by id, and learns the states among them.
func TestLargeItemsDoNotKeepAClientOut(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		cj, cpw := srv.User("c")
		freshNodes(t, srv, false, bj, cj)
		ca := peerConfig(srv, aj, apw, "junk")
		ca.IQTimeout = 30 * time.Second // Prosody stores large items slowly, slower still under -race
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		sa := sessionOf(t, a)
		pad := strings.Repeat("z", 100<<10)
		const junk, window = 48, 4
		// A few at a time: the servers throttle a client's bytes.
		var calls []*xmppstream.Call
		for i := range junk + window {
			if i >= window {
				if _, err := sa.wait(context.Background(), calls[i-window]); err != nil {
					t.Fatalf("publish junk %d: %v", i-window, err)
				}
			}
			if i >= junk {
				continue
			}
			call, err := sa.sendIQ("set", srv.Service, &rawPubSub{Inner: fmt.Sprintf(
				`<publish node='device_state'><item id='junk-%d'><junk xmlns='urn:example:junk'>%s</junk></item></publish>`, i, pad)})
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, call)
		}
		dev := uniq(t, "SIP/big")
		b := startPeer(t, "B", peerConfig(srv, bj, bpw, "astvoip2"))
		b.connected(connectWait)
		b.c.PublishDevice(dev, devstate.InUse, true)
		waitIdle(t, b.c)

		t0 := time.Now()
		c := startPeer(t, "C", peerConfig(srv, cj, cpw, "astvoip3"))
		conn := c.connected(connectWait)
		t.Logf("%s: connected over 48 items of 100 KB in %v, %d devices read, %d items skipped",
			srv.Kind, time.Since(t0).Round(time.Millisecond), len(conn.Devices), c.c.fetchSkipped.Load())
		if !hasDevice(conn.Devices, dev, devstate.InUse) {
			t.Fatalf("C did not read %s among the large items: %+v", dev, conn.Devices)
		}
		if st := c.c.Status(); st.State != "connected" {
			t.Fatalf("C: %+v", st)
		}
	})
}

// Another account purges device_state, then deletes it (Asterisk's CLI
// has 'xmpp purge nodes' and 'xmpp delete node'): every client notices
// (the notification, or the periodic check where the server sends none),
// re-creates the node, re-subscribes and republishes within seconds.
func TestNodePurgedOrDeletedByAnother(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		oj, opw := srv.Admin("op")
		freshNodes(t, srv, false, aj, bj, oj)
		devA, devB := uniq(t, "SIP/a"), uniq(t, "SIP/b")
		own := func(dev string) func() ([]DeviceItem, []MailboxItem) {
			return func() ([]DeviceItem, []MailboxItem) {
				return []DeviceItem{{Device: dev, State: devstate.InUse, Cachable: true}}, nil
			}
		}
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.Buddies, ca.OwnStates = []string{bj, oj}, own(devA)
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		cb.Buddies, cb.OwnStates = []string{aj, oj}, own(devB)
		a := startPeer(t, "A", ca)
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		b.connected(connectWait)
		waitIdle(t, a.c)
		waitIdle(t, b.c)
		// The operator's tool: it does not follow the nodes (no check that
		// would make it re-create the node it deletes, owned by it alone).
		co := peerConfig(srv, oj, opw, "cli")
		co.AutoRegister = false
		co.Buddies = []string{aj, bj}
		op := startPeer(t, "operator", co, func(s *settings) { s.subCheck = 0 })
		op.connected(connectWait)
		unsubscribeAll(t, op)
		ctx := context.Background()
		both := func(what string, since time.Time) {
			t.Helper()
			deadline := since.Add(eventWait)
			for {
				ds, _, err := op.c.FetchItems(ctx, NodeDevices)
				if err == nil && hasDevice(ds, devA, devstate.InUse) && hasDevice(ds, devB, devstate.InUse) {
					t.Logf("%s: both states back in device_state %v after the %s", srv.Kind, time.Since(since).Round(time.Millisecond), what)
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the %s: items %+v, err %v", what, ds, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		both("start", time.Now())

		t0 := time.Now()
		if err := op.c.Purge(ctx, NodeDevices); err != nil {
			t.Fatal(err)
		}
		both("purge", t0)

		t0 = time.Now()
		if err := op.c.DeleteNode(ctx, NodeDevices); err != nil {
			t.Fatal(err)
		}
		both("delete", t0)
		// Subscribed again: a new publication reaches the other.
		a.c.PublishDevice(devA, devstate.Ringing, true)
		b.device(eventWait, devA, devstate.Ringing)
	})
}
