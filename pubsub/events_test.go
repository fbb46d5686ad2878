package pubsub

import (
	"context"
	"fmt"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"reflect"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

var (
	ownEID   = devstate.EID{0x02, 0, 0, 0, 0, 0x01}
	otherEID = devstate.EID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55}
)

// eventMsg wraps event children in the notification message Prosody and
// ejabberd send (PROTOCOL.md "Subscribing and receiving").
func eventMsg(inner string) string {
	return `<message xmlns="jabber:client" from="pubsub.example.org" to="server1@example.org" type="headline">` +
		`<event xmlns="http://jabber.org/protocol/pubsub#event">` + inner + `</event></message>`
}

func stateItem(id, eid, attrs, state string) string {
	return `<item id="` + id + `" publisher="server2@example.org"><state xmlns="http://asterisk.org" eid="` + eid + `"` + attrs + `>` + state + `</state></item>`
}

func mboxItem(id, eid, nw, old string) string {
	return `<item id="` + id + `"><mailbox xmlns="http://asterisk.org" eid="` + eid + `"><NEWMSGS>` + nw + `</NEWMSGS><OLDMSGS>` + old + `</OLDMSGS></mailbox></item>`
}

type rejectLog struct{ msgs []string }

func (r *rejectLog) reject(msg string, args ...any) { r.msgs = append(r.msgs, msg) }

func TestParseEvents(t *testing.T) {
	other := otherEID.String()
	long := strings.Repeat("x", MaxNameLen+1)
	cases := []struct {
		name     string
		xml      string
		want     []Event
		rejected int
	}{
		{"device state, Asterisk's shape",
			`<items node="device_state">` + stateItem("Custom:mystate", other, ` cachable="1"`, "INUSE") + `</items>`,
			[]Event{DeviceEvent{DeviceItem{Device: "Custom:mystate", State: devstate.InUse, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}}}, 0},
		{"not cachable, state name in lower case",
			`<items node="device_state">` + stateItem("SIP/100", other, ` cachable="0"`, " ringing ") + `</items>`,
			[]Event{DeviceEvent{DeviceItem{Device: "SIP/100", State: devstate.Ringing, EID: otherEID, Publisher: "server2@example.org"}}}, 0},
		{"no cachable attribute reads cachable",
			`<items node="device_state">` + stateItem("SIP/100", other, ``, "BUSY") + `</items>`,
			[]Event{DeviceEvent{DeviceItem{Device: "SIP/100", State: devstate.Busy, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}}}, 0},
		{"mailbox",
			`<items node="message_waiting">` + mboxItem("1000@default", other, "2", "1") + `</items>`,
			[]Event{MailboxEvent{MailboxItem{Mailbox: "1000@default", Counts: mwi.Counts{New: 2, Old: 1}, EID: otherEID}}}, 0},
		{"several items keep their order",
			`<items node="device_state">` + stateItem("A", other, ` cachable="1"`, "INUSE") + stateItem("B", other, ` cachable="1"`, "NOT_INUSE") + stateItem("A", other, ` cachable="1"`, "ONHOLD") + `</items>`,
			[]Event{
				DeviceEvent{DeviceItem{Device: "A", State: devstate.InUse, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}},
				DeviceEvent{DeviceItem{Device: "B", State: devstate.NotInUse, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}},
				DeviceEvent{DeviceItem{Device: "A", State: devstate.OnHold, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}},
			}, 0},
		{"retract", `<items node="device_state"><retract id="SIP/100"/></items>`,
			[]Event{Retracted{Node: "device_state", ID: "SIP/100", Kind: KindDevices}}, 0},
		{"purge", `<purge node="message_waiting"/>`, []Event{Purged{Node: "message_waiting", Kind: KindMailboxes}}, 0},
		{"delete", `<delete node="device_state"/>`, []Event{Deleted{Node: "device_state", Kind: KindDevices}}, 0},
		{"unknown payload is ignored quietly",
			`<items node="device_state"><item id="x"><geoloc xmlns="http://jabber.org/protocol/geoloc"><lat>1</lat></geoloc></item></items>`, nil, 0},
		{"unknown element in the asterisk namespace is ignored",
			`<items node="device_state"><item id="x"><presence xmlns="http://asterisk.org" eid="` + other + `"/></item></items>`, nil, 0},
		{"own EID is ignored quietly",
			`<items node="device_state">` + stateItem("SIP/100", ownEID.String(), ` cachable="1"`, "INUSE") + `</items>`, nil, 0},
		{"unknown state name reads UNKNOWN (logged)",
			`<items node="device_state">` + stateItem("SIP/100", other, ` cachable="1"`, "FROBNICATED") + `</items>`,
			[]Event{DeviceEvent{DeviceItem{Device: "SIP/100", State: devstate.Unknown, Cachable: true, EID: otherEID, Publisher: "server2@example.org"}}}, 1},
		{"oversized device name", `<items node="device_state">` + stateItem(long, other, ` cachable="1"`, "INUSE") + `</items>`, nil, 1},
		{"oversized state text", `<items node="device_state">` + stateItem("SIP/1", other, ``, strings.Repeat("INUSE", 10)) + `</items>`, nil, 1},
		{"control character in the id", `<items node="device_state">` + stateItem("SIP/1&#x9;", other, ``, "INUSE") + `</items>`, nil, 1},
		{"missing item id", `<items node="device_state"><item><state xmlns="http://asterisk.org" eid="` + other + `">INUSE</state></item></items>`, nil, 1},
		{"bad EID", `<items node="device_state">` + stateItem("SIP/1", "00:11:22", ``, "INUSE") + `</items>`, nil, 1},
		{"missing EID", `<items node="device_state"><item id="a"><state xmlns="http://asterisk.org">INUSE</state></item></items>`, nil, 1},
		{"bad cachable", `<items node="device_state">` + stateItem("SIP/1", other, ` cachable="yes"`, "INUSE") + `</items>`, nil, 1},
		{"count out of range", `<items node="message_waiting">` + mboxItem("1000@default", other, "99999999", "1") + `</items>`, nil, 1},
		{"negative count", `<items node="message_waiting">` + mboxItem("1000@default", other, "-1", "1") + `</items>`, nil, 1},
		{"huge count", `<items node="message_waiting">` + mboxItem("1000@default", other, "1"+strings.Repeat("0", 40), "1") + `</items>`, nil, 1},
		{"count not a number", `<items node="message_waiting">` + mboxItem("1000@default", other, "two", "1") + `</items>`, nil, 1},
		{"missing OLDMSGS", `<items node="message_waiting"><item id="1000@default"><mailbox xmlns="http://asterisk.org" eid="` + other + `"><NEWMSGS>1</NEWMSGS></mailbox></item></items>`, nil, 1},
		{"a bad item does not stop the good ones",
			`<items node="message_waiting">` + mboxItem("1@d", other, "x", "1") + mboxItem("2@d", other, "3", "0") + `</items>`,
			[]Event{MailboxEvent{MailboxItem{Mailbox: "2@d", Counts: mwi.Counts{New: 3}, EID: otherEID}}}, 1},
		{"oversized node name", `<items node="` + long + `">` + stateItem("SIP/1", other, ``, "INUSE") + `</items>`, nil, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var log rejectLog
			p := &parser{own: ownEID, reject: log.reject, kindOf: flatKind}
			msg, err := xmppstream.ParseDocument(eventMsg(c.xml))
			if err != nil {
				t.Fatal(err)
			}
			got := p.parseEvent(msg)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("events\n got %#v\nwant %#v", got, c.want)
			}
			if len(log.msgs) != c.rejected {
				t.Errorf("rejected %d (%v), want %d", len(log.msgs), log.msgs, c.rejected)
			}
		})
	}
}

func flatKind(node string) Kind {
	switch node {
	case NodeDevices:
		return KindDevices
	case NodeMailboxes:
		return KindMailboxes
	}
	return KindUnknown
}

// Only the PubSub service may send notifications: a message with a forged
// event from anyone else is dropped.
func TestHandleMessageOnlyFromService(t *testing.T) {
	cfg := testConfig()
	events := make(chan Event, 4)
	c, err := New(cfg, events)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &session{cl: c, ctx: ctx}
	item := `<items node="device_state">` + stateItem("SIP/1", otherEID.String(), ` cachable="1"`, "INUSE") + `</items>`
	for _, from := range []string{"mallory@example.org/x", "", "example.org", "PubSub.Example.org"} {
		msg, _ := xmppstream.ParseDocument(strings.Replace(eventMsg(item), `from="pubsub.example.org"`, fmt.Sprintf("from=%q", from), 1))
		c.handleMessage(s, msg)
	}
	c.q.mu.Lock()
	got := append([]Event(nil), c.q.q...)
	c.q.mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("queued %d events, want 1 (only the one from the service, case-insensitive domain): %#v", len(got), got)
	}
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.JID = "server1@example.org/astvoip1"
	cfg.Password = "x"
	cfg.Service = "pubsub.example.org"
	cfg.EID = ownEID
	cfg.Buddies = []string{"server2@example.org/astvoip2", "Server3@Example.org"}
	return cfg
}

func TestConfigValidate(t *testing.T) {
	s, err := testConfig().validate()
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != "example.org" || s.bare != "server1@example.org" || s.resource != "astvoip1" {
		t.Errorf("derived %q %q %q", s.addr, s.bare, s.resource)
	}
	if !reflect.DeepEqual(s.buddies, []string{"server2@example.org", "server3@example.org"}) {
		t.Errorf("buddies %v", s.buddies)
	}
	bad := []func(*Config){
		func(c *Config) { c.JID = "example.org" },
		func(c *Config) { c.JID = "@example.org/x" },
		func(c *Config) { c.Service = "a@/x" },
		func(c *Config) { c.Status = "sleepy" },
		func(c *Config) { c.Priority = 128 },
		func(c *Config) { c.AuthPolicy = "maybe" },
		func(c *Config) { c.EID = devstate.EID{} },
		func(c *Config) { c.Buddies = []string{"a@/x"} },
		func(c *Config) { c.Address = "host:99999" },
	}
	noService := testConfig()
	noService.Service = "" // discovered at connect (XEP-0030)
	if _, err := noService.validate(); err != nil {
		t.Errorf("no pubsub_node: %v", err)
	}
	for i, f := range bad {
		cfg := testConfig()
		f(&cfg)
		if _, err := cfg.validate(); err == nil {
			t.Errorf("case %d: no error for %+v", i, cfg)
		}
	}
	for in, show := range map[string]string{"available": "", "Chat": "chat", "away": "away", "xaway": "xa", "xa": "xa", "dnd": "dnd"} {
		cfg := testConfig()
		cfg.Status = in
		s, err := cfg.validate()
		if err != nil || s.show != show {
			t.Errorf("status %q: show %q err %v", in, s.show, err)
		}
	}
	// One name without a port is kept as it is: it is looked up by SRV
	// at every connect (xmppstream.Resolve); lists are kept for the dial.
	for in, want := range map[string]string{
		"xmpp.example.org":                 "xmpp.example.org",
		" xmpp.example.org:5223 ":          "xmpp.example.org:5223",
		"10.0.0.1:5222, xmpp2.example.org": "10.0.0.1:5222, xmpp2.example.org",
		"":                                 "example.org",
	} {
		cfg := testConfig()
		cfg.Address = in
		if s, err := cfg.validate(); err != nil || s.addr != want {
			t.Errorf("address %q: addr %q err %v, want %q", in, s.addr, err, want)
		}
	}
}

// Fetched items keep this server's own EID (a restarted agent restores
// its own states from them); notifications drop it as an echo.
func TestParseItemKeepsOwnWhenFetched(t *testing.T) {
	p := &parser{own: ownEID, reject: func(string, ...any) { t.Error("rejected") }, kindOf: flatKind}
	doc := `<item xmlns="http://jabber.org/protocol/pubsub" id="SIP/100"><state xmlns="http://asterisk.org" eid="` +
		ownEID.String() + `" cachable="1">INUSE</state></item>`
	it, err := xmppstream.ParseDocument(doc)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.parseItem("device_state", it, true); got.dev == nil || got.dev.EID != ownEID || got.dev.State != devstate.InUse {
		t.Fatalf("fetched own item: %+v", got.dev)
	}
	if got := p.parseItem("device_state", it, false); got.dev != nil {
		t.Fatalf("notified own item kept: %+v", got.dev)
	}
}
