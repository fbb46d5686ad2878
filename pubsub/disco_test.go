package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
)

func discoItemsResult(items string) string {
	return `<iq xmlns="jabber:client" type="result" from="example.org" id="1"><query xmlns="http://jabber.org/protocol/disco#items">` +
		items + `</query></iq>`
}

// A domain's disco#items answer is read bounded; what is no service of
// its own is left out.
func TestParseDiscoItemsHostile(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<item/>`)                                    // no jid
	b.WriteString(`<item jid=""/>`)                             // empty
	b.WriteString(`<item jid="a b.example.org"/>`)              // does not parse
	b.WriteString(`<item jid="user@example.org"/>`)             // an account
	b.WriteString(`<item jid="pubsub.example.org/res"/>`)       // a resource
	b.WriteString(`<item jid="Example.org"/>`)                  // the domain itself
	b.WriteString(`<item jid="example.org" node="some-node"/>`) // a node, not an entity
	b.WriteString(`<item jid="pubsub.example.org"/>`)
	b.WriteString(`<item jid="PubSub.Example.org"/>`) // repeat, other case
	b.WriteString(`<other jid="muc.example.org"/>`)   // not an item
	b.WriteString(`<item xmlns="urn:other" jid="x.example.org"/>`)
	b.WriteString(`<item jid="` + strings.Repeat("x", 2000) + `.example.org"/>`) // over RFC 7622's bound
	for i := range 10000 {
		fmt.Fprintf(&b, `<item jid="s%d.example.org" name="n"/>`, i)
	}
	res, err := xmppstream.ParseDocument(discoItemsResult(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	jids, dropped := parseDiscoItems(res, "example.org")
	if len(jids) != maxDiscoItems || jids[0] != "pubsub.example.org" || jids[1] != "s0.example.org" ||
		jids[maxDiscoItems-1] != fmt.Sprintf("s%d.example.org", maxDiscoItems-2) {
		t.Fatalf("kept %d: %q", len(jids), jids)
	}
	// 9 malformed, repeated or foreign item elements, and the items past the bound.
	if want := 9 + 10000 - (maxDiscoItems - 1); dropped != want {
		t.Errorf("dropped %d, want %d", dropped, want)
	}

	for _, doc := range []string{
		`<iq type="result"/>`,
		`<iq type="result"><query xmlns="urn:other"><item jid="pubsub.example.org"/></query></iq>`,
	} {
		res, _ := xmppstream.ParseDocument(doc)
		if jids, _ := parseDiscoItems(res, "example.org"); len(jids) != 0 {
			t.Errorf("%s: %q", doc, jids)
		}
	}
	if jids, _ := parseDiscoItems(nil, "example.org"); len(jids) != 0 {
		t.Errorf("nil answer: %q", jids)
	}
}

func discoInfoDoc(inner string) string {
	return `<iq xmlns="jabber:client" type="result" id="1"><query xmlns="http://jabber.org/protocol/disco#info">` + inner + `</query></iq>`
}

func featureList(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString(`<feature var="` + featurePrefix + n + `"/>`)
	}
	return b.String()
}

// A disco#info answer: pubsub/service is a service, pubsub/pep is not;
// identity and feature lists are bounded; the features busylamp uses and
// the answer lacks are listed.
func TestParseServiceInfo(t *testing.T) {
	all := append(append([]string(nil), baseFeatures...), collectionFeatures...)
	for _, tc := range []struct {
		name, inner string
		service     bool
		missing     []string // flat mode
		missingColl []string // XEP-0248 mode
	}{
		{"ejabberd-like", `<identity category="pubsub" type="service" name="Publish-Subscribe"/>` + featureList(all...), true, nil, nil},
		{"prosody-like", `<identity category="pubsub" type="service"/>` + featureList(baseFeatures...),
			true, nil, []string{"pubsub#collections"}},
		{"pep only", `<identity category="pubsub" type="pep"/><identity category="server" type="im"/>` + featureList(all...),
			false, nil, nil},
		{"no identity", featureList(all...), false, nil, nil},
		{"identity in another namespace", `<identity xmlns="urn:other" category="pubsub" type="service"/>`, false, nil, nil},
		{"under-advertised", `<identity category="pubsub" type="service"/>` + featureList("publish", "subscribe"), true,
			[]string{"pubsub#create-nodes", "pubsub#create-and-configure", "pubsub#config-node", "pubsub#publish-options",
				"pubsub#retrieve-subscriptions", "pubsub#retrieve-items", "pubsub#item-ids", "pubsub#persistent-items",
				"pubsub#modify-affiliations", "pubsub#delete-items", "pubsub#purge-nodes", "pubsub#delete-nodes"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := xmppstream.ParseDocument(discoInfoDoc(tc.inner))
			if err != nil {
				t.Fatal(err)
			}
			info := parseServiceInfo(res)
			if info.pubsubService != tc.service {
				t.Fatalf("pubsubService %v, identities %q", info.pubsubService, info.identities)
			}
			if !tc.service {
				return
			}
			if got := missingFeatures(info, false); !slices.Equal(got, tc.missing) {
				t.Errorf("missing (flat) %q, want %q", got, tc.missing)
			}
			if tc.missingColl != nil {
				if got := missingFeatures(info, true); !slices.Equal(got, tc.missingColl) {
					t.Errorf("missing (XEP-0248) %q, want %q", got, tc.missingColl)
				}
			}
		})
	}

	// Oversized lists: bounded, and the identity after the bound is not read.
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, `<identity category="c%d" type="t"/>`, i)
	}
	b.WriteString(`<identity category="pubsub" type="service"/>`)
	for i := range 50000 {
		fmt.Fprintf(&b, `<feature var="urn:f:%d"/>`, i)
	}
	b.WriteString(`<feature var="` + strings.Repeat("f", 10000) + `"/><feature/><feature var=""/>`)
	res, err := xmppstream.ParseDocument(discoInfoDoc(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	info := parseServiceInfo(res)
	if info.pubsubService || len(info.features) != maxFeatures || len(info.identities) > 8 {
		t.Errorf("service %v, %d features, %d identities", info.pubsubService, len(info.features), len(info.identities))
	}
	if info := parseServiceInfo(nil); info.pubsubService || len(info.features) != 0 {
		t.Errorf("nil answer: %+v", info)
	}
}

// sessionEnds is a log handler that reports why each session attempt
// ended (Run's "XMPP session ended" line), for tests that wait for a
// setup to fail.
type sessionEnds struct {
	ch chan string
}

func (h sessionEnds) Enabled(context.Context, slog.Level) bool { return true }
func (h sessionEnds) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h sessionEnds) WithGroup(string) slog.Handler            { return h }
func (h sessionEnds) Handle(_ context.Context, r slog.Record) error {
	return logAttrs{prefixes: []string{"XMPP session ended"}, key: "err", ch: h.ch}.Handle(context.Background(), r)
}

// logAttrs is a log handler that sends the value of key of each line
// whose message starts with one of prefixes; with key "", the message
// and every attribute as key=value, space-separated.
type logAttrs struct {
	prefixes []string
	key      string
	ch       chan string
}

func (h logAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (h logAttrs) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h logAttrs) WithGroup(string) slog.Handler            { return h }
func (h logAttrs) Handle(_ context.Context, r slog.Record) error {
	if !slices.ContainsFunc(h.prefixes, func(p string) bool { return strings.HasPrefix(r.Message, p) }) {
		return nil
	}
	var all []string
	if h.key == "" {
		all = append(all, r.Message)
	}
	r.Attrs(func(a slog.Attr) bool {
		switch h.key {
		case "":
			all = append(all, a.Key+"="+a.Value.String())
		case a.Key:
			all = append(all, a.Value.String())
		}
		return true
	})
	if len(all) > 0 && (h.key != "" || len(all) > 1) {
		select {
		case h.ch <- strings.Join(all, " "):
		default: // the test reads the first few only
		}
	}
	return nil
}

// Without pubsub_node the service is discovered on the account's domain
// (Prosody and ejabberd both list pubsub.busylamp.test; ejabberd's domain
// itself is a pubsub/pep service, which must not be taken), checked, and
// used for everything: states flow both ways, and the status names it.
func TestServiceDiscovered(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		ca := peerConfig(srv, aj, apw, "disco1")
		ca.Service, ca.Buddies = "", []string{bj}
		cb := peerConfig(srv, bj, bpw, "disco2")
		cb.Service, cb.Buddies = "", []string{aj}
		a := startPeer(t, "A", ca)
		if st := a.c.Status(); st.Service != "" {
			t.Errorf("status before connecting names a service: %+v", st)
		}
		a.connected(connectWait)
		b := startPeer(t, "B", cb)
		b.connected(connectWait)
		for _, p := range []*peer{a, b} {
			if st := p.c.Status(); st.Service != srv.Service || len(st.Missing) != 0 {
				t.Errorf("%s status: service %q, missing %q; want %s and nothing missing", p.name, st.Service, st.Missing, srv.Service)
			}
		}
		dev, mbox := uniq(t, "SIP/disco"), uniq(t, "1")+"@disco"
		a.c.PublishDevice(dev, devstate.InUse, true)
		if got := b.device(eventWait, dev, devstate.InUse); got.EID != ca.EID {
			t.Errorf("B got %+v", got)
		}
		b.c.PublishMailbox(mbox, mwi.Counts{New: 1})
		a.mailbox(eventWait, mbox, mwi.Counts{New: 1})
		devs, _, err := b.c.FetchItems(context.Background(), NodeDevices)
		if err != nil || !hasDevice(devs, dev, devstate.InUse) {
			t.Errorf("B fetched %+v, %v", devs, err)
		}
	})
}

// A configured service is checked at connect: both servers advertise all
// busylamp uses in flat mode; in XEP-0248 mode Prosody (which has no
// collection nodes) lacks pubsub#collections, ejabberd nothing.
func TestServiceVerified(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		freshNodes(t, srv, false)
		a := startPeer(t, "A", peerConfig(srv, aj, apw, "verify"))
		a.connected(connectWait)
		if st := a.c.Status(); st.Service != srv.Service || len(st.Missing) != 0 {
			t.Errorf("status: service %q, missing %q", st.Service, st.Missing)
		}
		s, err := a.c.session()
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.iq(context.Background(), "get", srv.Service, &discoQuery{XMLName: xmlName(nsDiscoInfo, "query")})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		if srv.Kind == xmpptest.Prosody {
			want = []string{"pubsub#collections"}
		}
		if got := missingFeatures(parseServiceInfo(res), true); !slices.Equal(got, want) {
			t.Errorf("XEP-0248 mode: missing %q, want %q", got, want)
		}
		a.stop()

		// And a client in XEP-0248 mode says so in its status.
		freshNodes(t, srv, true)
		cfg := peerConfig(srv, aj, apw, "verify-coll")
		cfg.CollectionNodes = true
		b := startPeer(t, "B", cfg, func(s *settings) { s.subCheck = 0 })
		b.connected(connectWait)
		if st := b.c.Status(); !slices.Equal(st.Missing, want) {
			t.Errorf("XEP-0248 mode: status missing %q, want %q", st.Missing, want)
		}
		b.stop()
		freshNodes(t, srv, false) // leave flat nodes for the other tests
	})
}

// A pubsub_node that is no PubSub service: the domain itself (a server;
// on ejabberd also the accounts' PEP service), or a name nobody serves.
// The session fails with an error that says so, and Run retries.
func TestServiceNotPubSub(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		for _, tc := range []struct {
			service string
			want    []string
		}{
			{srv.Domain, []string{"PubSub service " + srv.Domain + " is not a PubSub service", "server/im", "want pubsub/service", "check pubsub_node"}},
			{"nope." + srv.Domain, []string{"PubSub service nope." + srv.Domain + ": disco#info:", "not a reachable PubSub service"}},
		} {
			ends := sessionEnds{ch: make(chan string, 4)}
			cfg := peerConfig(srv, aj, apw, "notps")
			cfg.Service = tc.service
			cfg.Logger = slog.New(ends)
			p := startPeer(t, "A", cfg)
			tm := time.NewTimer(connectWait)
			for attempt := range 2 { // the first, and a retry
				var msg string
				select {
				case msg = <-ends.ch:
				case <-tm.C:
					t.Fatalf("%s: no session end within %v", tc.service, connectWait)
				}
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s, attempt %d: %q lacks %q", tc.service, attempt, msg, w)
					}
				}
			}
			if st := p.c.Status(); st.State == "connected" || !strings.Contains(st.LastError, tc.service) {
				t.Errorf("status %+v", st)
			}
			tm.Stop()
			p.stop()
		}
	})
}

// ServiceError keeps the stanza error it wraps.
func TestServiceErrorUnwraps(t *testing.T) {
	se := &StanzaError{Type: "cancel", Condition: "item-not-found"}
	err := error(&ServiceError{Service: "x.example.org", Err: se})
	if !IsCondition(err, "item-not-found") || !strings.Contains(err.Error(), "item-not-found") {
		t.Errorf("%v", err)
	}
	var target *ServiceError
	if !errors.As(fmt.Errorf("setup: %w", err), &target) {
		t.Error("not a ServiceError")
	}
}

// A domain without a PubSub service: the session fails with an error
// that says so and what to do, and Run keeps retrying.
func TestNoServiceFound(t *testing.T) {
	srv := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{NoPubSub: true})
	aj, apw := srv.User("a")
	ends := sessionEnds{ch: make(chan string, 4)}
	cfg := peerConfig(srv, aj, apw, "none")
	cfg.Service = ""
	cfg.Logger = slog.New(ends)
	p := startPeer(t, "A", cfg)
	tm := time.NewTimer(connectWait)
	defer tm.Stop()
	want := "no PubSub service found at " + srv.Domain + " (looked at 0 items): set pubsub_node"
	for attempt := range 2 { // the first, and a retry
		select {
		case msg := <-ends.ch:
			if !strings.Contains(msg, want) {
				t.Errorf("attempt %d: %q lacks %q", attempt, msg, want)
			}
		case <-tm.C:
			t.Fatalf("no session end within %v", connectWait)
		}
	}
	if st := p.c.Status(); st.State == "connected" || st.Service != "" || !strings.Contains(st.LastError, want) {
		t.Errorf("status %+v", st)
	}
}

// A domain with two PubSub services: the first the server lists is
// used, and the other is logged.
func TestSeveralServicesFound(t *testing.T) {
	const extra = "pubsub2." + xmpptest.Domain
	srv := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{ExtraPubSub: extra})
	aj, apw := srv.User("a")
	disco := logAttrs{prefixes: []string{"several PubSub services found", "PubSub service discovered", "PubSub discovery"},
		ch: make(chan string, 16)}
	cfg := peerConfig(srv, aj, apw, "several")
	cfg.Service = ""
	cfg.Logger = slog.New(disco)
	p := startPeer(t, "A", cfg)
	var lines []string
	tm := time.NewTimer(connectWait)
	defer tm.Stop()
	for len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "several") {
		select {
		case l := <-disco.ch:
			lines = append(lines, l)
			if strings.HasPrefix(l, "PubSub service discovered") {
				t.Fatalf("one service found, want two; discovery logged:\n%s", strings.Join(lines, "\n"))
			}
		case <-tm.C:
			t.Fatalf("no line about several services within %v (status %+v); discovery logged:\n%s",
				connectWait, p.c.Status(), strings.Join(lines, "\n"))
		}
	}
	// Prosody lists its components in no fixed order.
	line := lines[len(lines)-1]
	a, b := "service="+srv.Service+" others="+extra, "service="+extra+" others="+srv.Service
	if !strings.Contains(line, a) && !strings.Contains(line, b) {
		t.Errorf("logged %q; want %q or %q", line, a, b)
	}
}
