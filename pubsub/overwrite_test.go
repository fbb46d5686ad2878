package pubsub

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"

	"github.com/busylamp/busylamp/internal/xmppstream"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Issue 14 item 5: Asterisk nodes republish their cached device states
// when they connect, under the same item ids (the device names) that the
// other nodes published; on ejabberd 23.01 the second account's publish
// is refused (forbidden, no legacy code attribute), and Asterisk 22's
// res_xmpp crashes on that error (asterisk/asterisk#1236). These tests use
// plain streams, as an Asterisk node would: A publishes item X on a node
// created as busylamp creates it, then B publishes item X again.
//
// ejabberd's node_flat (23.01) refuses to overwrite an item whose creator
// is another bare JID, whatever the publish model or affiliation; only a
// node that stores no items (max items 0) skips that check. Prosody lets
// any publisher overwrite.

// overwriteCase is one node configuration and what B's overwrite gets.
type overwriteCase struct {
	name string
	// fields replace (or add) fields of busylamp's node form.
	fields map[string]string
	// bAff is B's affiliation, set by the creator after the create.
	bAff string
	// noItems applies Config.NoItems's form (keepNoItems).
	noItems bool
	// ok per server kind: the overwrite answers a result.
	ok map[xmpptest.Kind]bool
}

var overwriteCases = []overwriteCase{
	{name: "busylamp node, B owner", bAff: "owner",
		ok: map[xmpptest.Kind]bool{xmpptest.Prosody: true, xmpptest.Ejabberd: false}},
	{name: "B publisher", bAff: "publisher",
		ok: map[xmpptest.Kind]bool{xmpptest.Prosody: true, xmpptest.Ejabberd: false}},
	{name: "publish_model open", bAff: "owner", fields: map[string]string{"pubsub#publish_model": "open"},
		ok: map[xmpptest.Kind]bool{xmpptest.Prosody: true, xmpptest.Ejabberd: false}},
	{name: "publish_model open, B no affiliation", bAff: "none",
		fields: map[string]string{"pubsub#publish_model": "open", "pubsub#access_model": "open"},
		ok:     map[xmpptest.Kind]bool{xmpptest.Ejabberd: false}},
	// The one that works on ejabberd: a node that keeps no items. The
	// notifications still go out; nothing is stored to refuse against.
	{name: "max_items 0", bAff: "owner", fields: map[string]string{"pubsub#max_items": "0"},
		ok: map[xmpptest.Kind]bool{xmpptest.Ejabberd: true}},
	// busylamp's node with pubsub_persist_items = no (keepNoItems).
	{name: "busylamp node keeping no items", bAff: "owner", noItems: true,
		ok: map[xmpptest.Kind]bool{xmpptest.Prosody: true, xmpptest.Ejabberd: true}},
}

// notes is a stream handler that passes the item ids and publishers of
// PubSub notifications to a channel.
type notes struct{ ch chan string }

func (n notes) HandleMessage(_ *xmppstream.Stream, e *elem) {
	for _, items := range e.Child(nsPubSubEvent, "event").Children("", "items") {
		for _, it := range items.Children("", "item") {
			st := it.Child(nsAsterisk, "state")
			select {
			case n.ch <- items.Attr("node") + " " + it.Attr("id") + " " + st.Attr("eid") + " " + st.Text():
			default:
			}
		}
	}
}
func (notes) HandlePresence(*xmppstream.Stream, *elem) {}
func (notes) HandleIQ(s *xmppstream.Stream, e *elem) {
	s.ReplyError(e, "cancel", "service-unavailable", "503")
}

func plainStream(t *testing.T, srv *xsrv, bare, pw, resource string, h xmppstream.Handler) *xmppstream.Stream {
	t.Helper()
	s, err := xmppstream.Dial(context.Background(), xmppstream.Config{Addr: srv.Addr, JID: bare + "/" + resource,
		Password: pw, IQTimeout: iqTimeout, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Start(h)
	t.Cleanup(func() { s.Close(context.Canceled); s.Wait() })
	return s
}

// asteriskPublish is the device state publish res_xmpp sends.
func asteriskPublish(node, item, eid, state string) *rawPubSub {
	return &rawPubSub{Inner: fmt.Sprintf(`<publish node='%s'><item id='%s'>`+
		`<state xmlns='http://asterisk.org' eid='%s' cachable='1'>%s</state></item></publish>`, node, item, eid, state)}
}

// overwriteNode creates node as busylamp does, with the case's fields,
// and gives B and the watcher their affiliations.
func overwriteNode(t *testing.T, creator *xmppstream.Stream, service, node string, c overwriteCase, b, watcher string) {
	t.Helper()
	ctx := context.Background()
	req := createRequest(node, flatNode, "")
	if c.noItems {
		req = keepNoItems(req)
	}
	fields := req.Configure.Form.Fields
	for v, val := range c.fields {
		found := false
		for _, f := range fields {
			if f.Var == v {
				f.ValuesList, found = []string{val}, true
			}
		}
		if !found {
			fields = append(fields, field(v, val))
		}
	}
	req.Configure.Form.Fields = fields
	if _, err := creator.IQ(ctx, "set", service, req); err != nil {
		t.Fatalf("create %s: %v", node, err)
	}
	aff := &affiliations{Node: node, List: []affiliation{{JID: watcher, Affiliation: "owner"}}}
	if c.bAff != "none" {
		aff.List = append(aff.List, affiliation{JID: b, Affiliation: c.bAff})
	}
	if _, err := creator.IQ(ctx, "set", service, &psOwner{Affiliations: aff}); err != nil {
		t.Fatalf("affiliations of %s: %v", node, err)
	}
	t.Cleanup(func() {
		_, _ = creator.IQ(context.Background(), "set", service, &psOwner{Delete: &nodeRef{Node: node}})
	})
}

func TestOverwriteAnotherAccountsItem(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		wj, wpw := srv.User("w")
		a := plainStream(t, srv, aj, apw, "ow-a", ignoreAll{})
		b := plainStream(t, srv, bj, bpw, "ow-b", ignoreAll{})
		seen := notes{ch: make(chan string, 64)}
		w := plainStream(t, srv, wj, wpw, "ow-w", seen)
		// Available, so that notifications to the bare JID reach it.
		if err := w.Send(&rawStanza{XMLName: xml.Name{Local: "presence"}}); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, c := range overwriteCases {
			want, asserted := c.ok[srv.Kind]
			if !asserted {
				continue
			}
			t.Run(c.name, func(t *testing.T) {
				node := uniq(t, "overwrite")
				overwriteNode(t, a, srv.Service, node, c, bj, wj)
				if _, err := w.IQ(ctx, "set", srv.Service, subscribeRequest(node, wj, false)); err != nil {
					t.Fatalf("watcher subscribe: %v", err)
				}
				if _, err := a.IQ(ctx, "set", srv.Service, asteriskPublish(node, "Custom:x", "00:11:22:33:44:01", "INUSE")); err != nil {
					t.Fatalf("A's publish: %v", err)
				}
				waitNote(t, seen.ch, node+" Custom:x 00:11:22:33:44:01 INUSE")
				res, err := b.IQ(ctx, "set", srv.Service, asteriskPublish(node, "Custom:x", "00:11:22:33:44:02", "RINGING"))
				if !want {
					var se *xmppstream.StanzaError
					if !errors.As(err, &se) || se.Condition != "forbidden" {
						t.Fatalf("B's overwrite: want forbidden, got %v", err)
					}
					// What makes res_xmpp crash: no legacy code, and the
					// request's <pubsub> echoed.
					echoed := res.Child(nsPubSub, "pubsub") != nil
					t.Logf("%s: B's overwrite refused: %s (type %s, code %q, request echoed: %v)", srv.Kind, se.Condition, se.Type, se.Code, echoed)
					if se.Code != "" {
						t.Errorf("the error carries a legacy code %q: Asterisk would not crash on it", se.Code)
					}
					return
				}
				if err != nil {
					t.Fatalf("B's overwrite: want a result, got %v", err)
				}
				waitNote(t, seen.ch, node+" Custom:x 00:11:22:33:44:02 RINGING")
				// And back: A overwrites B's.
				if _, err := a.IQ(ctx, "set", srv.Service, asteriskPublish(node, "Custom:x", "00:11:22:33:44:01", "NOT_INUSE")); err != nil {
					t.Fatalf("A's overwrite of B's: %v", err)
				}
				waitNote(t, seen.ch, node+" Custom:x 00:11:22:33:44:01 NOT_INUSE")
				items, err := w.IQ(ctx, "get", srv.Service, itemsRequest(node, pageSize, ""))
				n := 0
				if err == nil {
					n = len(items.Child(nsPubSub, "pubsub").Child("", "items").Children("", "item"))
				}
				t.Logf("%s: overwrite accepted both ways; the node holds %d items (err %v)", srv.Kind, n, err)
			})
		}
	})
}

func waitNote(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	deadline := time.After(eventWait)
	for {
		select {
		case got := <-ch:
			if got == want {
				return
			}
		case <-deadline:
			t.Fatalf("no notification %q", want)
		}
	}
}

// The crash's sequence on nodes busylamp made keep no items (NoItems),
// created so or configured so at connect: an Asterisk node publishes a
// device, a busylamp agent publishes it too, and another Asterisk node,
// connecting, republishes it (cachable, and non-cachable with Asterisk's
// publish-options): every publish answers a result, the agent hears each
// and never has to retract.
func TestNoItemsNodesTakeEveryPublisher(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		for _, mode := range []string{"created", "reconfigured"} {
			t.Run(mode, func(t *testing.T) { noItemsNodes(t, srv, mode == "created") })
		}
	})
}

func noItemsNodes(t *testing.T, srv *xsrv, create bool) {
	aj, apw := srv.User("ast1")
	cj, cpw := srv.User("ast2")
	bj, bpw := srv.Admin("a")
	ctx := context.Background()
	ast1 := plainStream(t, srv, aj, apw, "astvoip1", ignoreAll{})
	ast2 := plainStream(t, srv, cj, cpw, "astvoip2", ignoreAll{})
	dev := uniq(t, "Custom:x")
	cfg := peerConfig(srv, bj, bpw, "astvoip0")
	cfg.NoItems = true
	cfg.Buddies = []string{aj, cj}
	var b *peer
	if create {
		freshNodes(t, srv, false)
		cleaner := startPeer(t, "cleaner", peerConfig(srv, bj, bpw, "cleaner"), func(s *settings) { s.subCheck = 0 })
		cleaner.connected(connectWait)
		unsubscribeAll(t, cleaner)
		for _, n := range []string{NodeDevices, NodeMailboxes} {
			if err := cleaner.c.DeleteNode(ctx, n); err != nil {
				t.Fatalf("delete %s: %v", n, err)
			}
		}
		cleaner.stop()
		b = startPeer(t, "B", cfg)
		b.connected(connectWait) // creates both nodes, keeping no items
		if _, err := ast1.IQ(ctx, "set", srv.Service, asteriskPublish(NodeDevices, dev, "00:11:22:33:44:01", "INUSE")); err != nil {
			t.Fatalf("Asterisk 1's publish: %v", err)
		}
		b.device(eventWait, dev, devstate.InUse)
	} else {
		// Nodes as busylamp made them before, an item of Asterisk 1's
		// kept; B's connect makes them keep no items.
		freshNodes(t, srv, false, aj, cj)
		if _, err := ast1.IQ(ctx, "set", srv.Service, asteriskPublish(NodeDevices, dev, "00:11:22:33:44:01", "INUSE")); err != nil {
			t.Fatalf("Asterisk 1's publish: %v", err)
		}
		b = startPeer(t, "B", cfg)
		b.connected(connectWait)
	}
	b.c.PublishDevice(dev, devstate.Ringing, true)
	waitIdle(t, b.c)
	if st := b.c.Stats(); st.Errors != 0 {
		t.Fatalf("B's publish over Asterisk 1's failed: %+v", st)
	}
	if _, err := ast2.IQ(ctx, "set", srv.Service, asteriskPublish(NodeDevices, dev, "00:11:22:33:44:02", "BUSY")); err != nil {
		t.Fatalf("Asterisk 2 republishing at connect: %v", err)
	}
	b.device(eventWait, dev, devstate.Busy)
	nonCachable := &rawPubSub{Inner: fmt.Sprintf(`<publish node='%s'><item id='%s'>`+
		`<state xmlns='http://asterisk.org' eid='00:11:22:33:44:02' cachable='0'>NOT_INUSE</state></item></publish>`+
		`<publish-options><x xmlns='jabber:x:data' type='submit'>`+
		`<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`+
		`<field var='pubsub#persist_items'><value>0</value></field></x></publish-options>`, NodeDevices, dev)}
	if _, err := ast2.IQ(ctx, "set", srv.Service, nonCachable); err != nil {
		t.Fatalf("Asterisk 2's non-cachable publish: %v", err)
	}
	b.device(eventWait, dev, devstate.NotInUse)
	if st := b.c.Stats(); st.Errors != 0 {
		t.Fatalf("B's publishes failed: %+v", st)
	}
	if sessionOf(t, b).overwriteNoted.Load() {
		t.Fatal("B had to retract an item to publish over it")
	}
	t.Logf("%s: every publisher's publish of %s taken", srv.Kind, dev)
	// Leave the shared server's nodes as the other tests expect.
	b.stop()
	freshNodes(t, srv, false)
}

// What Asterisk's error handler meets on a persistent node: its
// non-cachable publish (publish-options persist_items 0) is refused with
// precondition-not-met by both servers. res_xmpp reads the legacy code
// only when the answer echoes the request's <pubsub> (it returns early
// otherwise): ejabberd echoes it, so any PubSub error crashes an Asterisk
// node there.
func TestAsteriskNonCachableOnPersistentNode(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		a := plainStream(t, srv, aj, apw, "nc-a", ignoreAll{})
		b := plainStream(t, srv, bj, bpw, "nc-b", ignoreAll{})
		node := uniq(t, "noncachable")
		overwriteNode(t, a, srv.Service, node, overwriteCase{bAff: "owner"}, bj, aj)
		req := &rawPubSub{Inner: fmt.Sprintf(`<publish node='%s'><item id='Custom:nc'>`+
			`<state xmlns='http://asterisk.org' eid='00:11:22:33:44:02' cachable='0'>INUSE</state></item></publish>`+
			`<publish-options><x xmlns='jabber:x:data' type='submit'>`+
			`<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`+
			`<field var='pubsub#persist_items'><value>0</value></field></x></publish-options>`, node)}
		res, err := b.IQ(context.Background(), "set", srv.Service, req)
		var se *xmppstream.StanzaError
		if !errors.As(err, &se) {
			t.Fatalf("non-cachable publish on a persistent node: want an error, got %v", err)
		}
		echoed := res.Child(nsPubSub, "pubsub") != nil
		t.Logf("%s: refused: %v (code %q, request echoed: %v)", srv.Kind, se, se.Code, echoed)
		if srv.Kind == xmpptest.Ejabberd && (!echoed || se.Code != "") {
			t.Errorf("ejabberd: echoed %v, code %q; want the request echoed and no code (what crashes res_xmpp)", echoed, se.Code)
		}
	})
}
