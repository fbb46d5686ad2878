package pubsub

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"github.com/busylamp/busylamp/mwi"
)

// The publish request as busylamp marshalled it with encoding/xml before
// publishIQ.appendTo: the reference the encoder must match byte for byte.
type publishRequest struct {
	payload
	XMLName        xml.Name    `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Publish        *publishReq `xml:"publish"`
	PublishOptions *configure  `xml:"publish-options"`
}

type publishReq struct {
	Node string      `xml:"node,attr"`
	Item publishItem `xml:"item"`
}

type publishItem struct {
	ID      string        `xml:"id,attr"`
	State   *statePayload `xml:"http://asterisk.org state"`
	Mailbox *mboxPayload  `xml:"http://asterisk.org mailbox"`
}

type statePayload struct {
	EID      string `xml:"eid,attr"`
	Cachable string `xml:"cachable,attr"`
	State    string `xml:",chardata"`
}

type mboxPayload struct {
	EID string `xml:"eid,attr"`
	New int    `xml:"NEWMSGS"`
	Old int    `xml:"OLDMSGS"`
}

func publishDeviceRequest(node string, it DeviceItem, withOptions bool) *publishRequest {
	r := &publishRequest{Publish: &publishReq{Node: node, Item: publishItem{
		ID:    it.Device,
		State: &statePayload{EID: it.EID.String(), Cachable: cachableAttr(it.Cachable), State: it.State.String()},
	}}}
	if !it.Cachable && withOptions {
		r.PublishOptions = &configure{Form: &stanza.Form{Type: stanza.FormTypeSubmit, Fields: []*stanza.Field{
			formType("http://jabber.org/protocol/pubsub#publish-options"),
			field("pubsub#persist_items", "0"),
		}}}
	}
	return r
}

func publishMailboxRequest(node string, it MailboxItem) *publishRequest {
	return &publishRequest{Publish: &publishReq{Node: node, Item: publishItem{
		ID:      it.Mailbox,
		Mailbox: &mboxPayload{EID: it.EID.String(), New: it.Counts.New, Old: it.Counts.Old},
	}}}
}

// referenceBytes is what xml.Marshal wrote for p.
func referenceBytes(t testing.TB, p *publishIQ, id, to string) []byte {
	t.Helper()
	var r *publishRequest
	if p.mailbox {
		r = publishMailboxRequest(p.node, p.mbox)
	} else {
		r = publishDeviceRequest(p.node, p.dev, p.options)
	}
	b, err := xml.Marshal(newIQ("set", to, id, r))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Names that need escaping, or are not what XML can carry (encoding/xml
// writes U+FFFD for those, and so must the encoder).
var encoderNames = []string{
	"Custom:mystate", "SIP/100", "PJSIP/1000-00000001", "1000@default",
	"a&b", "<x>", "it's", `say "hi"`, `&<>'"`, "&amp;", "]]>",
	"Café/Zürich", "日本語/内線", "emoji 📞", "tab\tnl\ncr\r", "\x00nul\x1f\x7f",
	"bad\xffutf8", "\xe2\x82", "surrogate \xed\xa0\x80", "\ufffd", "\ufffe\uffff", "\U0010FFFF",
	strings.Repeat("&", 300), strings.Repeat("é", 200), "",
}

func TestPublishEncoderMatchesMarshal(t *testing.T) {
	eids := []devstate.EID{testEID, {}, {0xff, 0xfe, 0xa0, 0x0b, 0x10, 0x01}}
	nodes := []string{NodeDevices, NodeMailboxes, "Custom:leaf&<'\">"}
	n := 0
	check := func(p publishIQ, id, to string) {
		t.Helper()
		n++
		want := referenceBytes(t, &p, id, to)
		got := p.appendTo([]byte("prefix"), id, to)
		if !bytes.Equal(got[len("prefix"):], want) {
			t.Fatalf("%+v id %q to %q:\n got: %s\nwant: %s", p, id, to, got[len("prefix"):], want)
		}
	}
	for _, name := range encoderNames {
		for _, node := range append(nodes, name) {
			for _, eid := range eids {
				for s := devstate.State(0); s <= devstate.State(9); s++ { // 9: out of range, reads as UNKNOWN
					for _, cachable := range []bool{true, false} {
						for _, opts := range []bool{true, false} {
							d := DeviceItem{Device: name, State: s, Cachable: cachable, EID: eid}
							check(newPublishIQ(node, pubKey{name: name}, pubValue{dev: d}, opts), "Xk3_9Q16", "pubsub.example.org")
						}
					}
				}
				for _, c := range []mwi.Counts{{}, {New: 2, Old: 1}, {New: MaxCount, Old: 12345}, {New: -1, Old: -99}} {
					m := MailboxItem{Mailbox: name, Counts: c, EID: eid}
					check(newPublishIQ(node, pubKey{mailbox: true, name: name}, pubValue{mbox: m}, true), "id1", "pubsub.example.org")
				}
			}
		}
	}
	// The envelope's attributes, escaped or left out when empty, as
	// stanza.IQ's omitempty does.
	d := DeviceItem{Device: "SIP/100", State: devstate.Busy, EID: testEID}
	for _, id := range []string{"", "1", "a&b\"<"} {
		for _, to := range []string{"", "pubsub.example.org", "ps'ü&"} {
			check(newPublishIQ(NodeDevices, pubKey{name: "SIP/100"}, pubValue{dev: d}, true), id, to)
		}
	}
	t.Logf("%d publishes byte-identical", n)
}

// The encoder's publishes are PROTOCOL.md's (the golden files).
func TestPublishEncoderGolden(t *testing.T) {
	dev := DeviceItem{Device: "Custom:mystate", State: devstate.InUse, Cachable: true, EID: testEID}
	nonCachable := dev
	nonCachable.Cachable = false
	devKey := pubKey{name: dev.Device}
	for _, c := range []struct {
		file string
		p    publishIQ
	}{
		{"publish_device_cachable.xml", newPublishIQ("device_state", devKey, pubValue{dev: dev}, true)},
		{"publish_device_noncachable.xml", newPublishIQ("device_state", devKey, pubValue{dev: nonCachable}, true)},
		{"publish_device_leaf.xml", newPublishIQ("Custom:mystate", devKey, pubValue{dev: dev}, true)},
		{"publish_mwi.xml", newPublishIQ("message_waiting", pubKey{mailbox: true, name: "1000@default"},
			pubValue{mbox: MailboxItem{Mailbox: "1000@default", Counts: mwi.Counts{New: 2, Old: 1}, EID: testEID}}, true)},
	} {
		t.Run(c.file, func(t *testing.T) {
			b := c.p.appendTo(nil, "id1", "pubsub.example.org")
			got, err := xmppstream.ParseDocument(string(b))
			if err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if d := sameTree("", golden(t, c.file), got, true); d != "" {
				t.Errorf("%s\n got: %s", d, b)
			}
		})
	}
}

// Fuzz the byte identity beyond the table above.
func FuzzPublishEncoder(f *testing.F) {
	for _, n := range encoderNames {
		f.Add(n, "device_state", uint8(3), true, false)
	}
	f.Fuzz(func(t *testing.T, name, node string, st uint8, cachable, mailbox bool) {
		var p publishIQ
		if mailbox {
			p = newPublishIQ(node, pubKey{mailbox: true, name: name}, pubValue{mbox: MailboxItem{Mailbox: name, Counts: mwi.Counts{New: int(st), Old: 7}, EID: testEID}}, true)
		} else {
			p = newPublishIQ(node, pubKey{name: name}, pubValue{dev: DeviceItem{Device: name, State: devstate.State(st), Cachable: cachable, EID: testEID}}, true)
		}
		if got, want := p.appendTo(nil, "id", "ps"), referenceBytes(t, &p, "id", "ps"); !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

// One publish as the publisher writes it: the encoder into a buffer kept
// between writes, against xml.Marshal of the request structs it replaced
// (the same-run baseline).
func BenchmarkEncodePublish(b *testing.B) {
	for _, c := range []struct {
		name string
		p    publishIQ
	}{
		{"device", newPublishIQ(NodeDevices, pubKey{name: "PJSIP/1000"}, pubValue{dev: DeviceItem{Device: "PJSIP/1000", State: devstate.InUse, Cachable: true, EID: testEID}}, true)},
		{"device-noncachable", newPublishIQ(NodeDevices, pubKey{name: "PJSIP/1000"}, pubValue{dev: DeviceItem{Device: "PJSIP/1000", State: devstate.InUse, EID: testEID}}, true)},
		{"mailbox", newPublishIQ(NodeMailboxes, pubKey{mailbox: true, name: "1000@default"}, pubValue{mbox: MailboxItem{Mailbox: "1000@default", Counts: mwi.Counts{New: 2, Old: 1}, EID: testEID}}, true)},
	} {
		const id, to = "Xk3_9Q255s", "pubsub.example.org"
		b.Run(c.name+"/append", func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 1024)
			for b.Loop() {
				buf = c.p.appendTo(buf[:0], id, to)
			}
		})
		b.Run(c.name+"/xml.Marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var r *publishRequest
				if c.p.mailbox {
					r = publishMailboxRequest(c.p.node, c.p.mbox)
				} else {
					r = publishDeviceRequest(c.p.node, c.p.dev, c.p.options)
				}
				if _, err := xml.Marshal(newIQ("set", to, id, r)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
