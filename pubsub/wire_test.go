package pubsub

import (
	"encoding/xml"
	"fmt"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"gosrc.io/xmpp/stanza"
)

// The golden files in testdata are PROTOCOL.md's stanzas, with its
// alternatives resolved into one file each. The stanzas busylamp sends are
// compared with them element by element and attribute by attribute,
// ignoring ids, whitespace and comments.

var testEID = devstate.EID{0x00, 0x11, 0x22, 0x33, 0x44, 0x55}

// busylampFields are the node_config fields busylamp appends to PROTOCOL.md's
// form (see createRequest).
var busylampFields = []string{
	`<field xmlns="jabber:x:data" var="pubsub#max_items"><value>max</value></field>`,
	`<field xmlns="jabber:x:data" var="pubsub#itemreply"><value>publisher</value></field>`,
}

func golden(t *testing.T, name string) *elem {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	e, err := xmppstream.ParseDocument(string(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

func marshalled(t *testing.T, p stanza.IQPayload) *elem {
	t.Helper()
	b, err := xml.Marshal(newIQ("set", "pubsub.example.org", "id1", p))
	if err != nil {
		t.Fatal(err)
	}
	e, err := xmppstream.ParseDocument(string(b))
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return e
}

// sameTree reports the first difference between two trees, or "".
func sameTree(path string, want, got *elem, root bool) string {
	path += "/" + want.XMLName.Local
	if want.XMLName != got.XMLName {
		return fmt.Sprintf("%s: element %v, want %v", path, got.XMLName, want.XMLName)
	}
	attrs := func(e *elem) []string {
		var out []string
		for _, a := range e.Attrs {
			if root && a.Name.Local == "id" {
				continue
			}
			out = append(out, a.Name.Space+" "+a.Name.Local+"="+a.Value)
		}
		sort.Strings(out)
		return out
	}
	if w, g := attrs(want), attrs(got); strings.Join(w, "|") != strings.Join(g, "|") {
		return fmt.Sprintf("%s: attributes %q, want %q", path, g, w)
	}
	if w, g := strings.TrimSpace(want.Content), strings.TrimSpace(got.Content); w != g {
		return fmt.Sprintf("%s: text %q, want %q", path, g, w)
	}
	if len(want.Nodes) != len(got.Nodes) {
		var gn []string
		for _, n := range got.Nodes {
			gn = append(gn, n.XMLName.Local)
		}
		return fmt.Sprintf("%s: children %v, want %d", path, gn, len(want.Nodes))
	}
	for i := range want.Nodes {
		if d := sameTree(path, &want.Nodes[i], &got.Nodes[i], false); d != "" {
			return d
		}
	}
	return ""
}

// withBusylampFields appends busylamp's node_config fields to a golden create.
func withBusylampFields(t *testing.T, e *elem) *elem {
	x := e.Child(nsPubSub, "pubsub").Child(nsPubSub, "configure").Child(nsData, "x")
	if x == nil {
		t.Fatal("golden create has no form")
	}
	for _, f := range busylampFields {
		fe, err := xmppstream.ParseDocument(f)
		if err != nil {
			t.Fatal(err)
		}
		x.Nodes = append(x.Nodes, *fe)
	}
	return e
}

func TestGoldenStanzas(t *testing.T) {
	dev := DeviceItem{Device: "Custom:mystate", State: devstate.InUse, Cachable: true, EID: testEID}
	nonCachable := dev
	nonCachable.Cachable = false
	cases := []struct {
		file       string
		p          stanza.IQPayload
		nodeConfig bool // a create: PROTOCOL.md's form plus busylamp's fields
	}{
		{"create_flat.xml", createRequest("device_state", flatNode, ""), true},
		{"create_collection.xml", createRequest("device_state", collectionNode, ""), true},
		{"create_leaf.xml", createRequest("Custom:mystate", leafNode, "device_state"), true},
		{"affiliations.xml", ownersRequest("device_state", []string{"server2@example.org", "server3@example.org"}), false},
		{"publish_device_cachable.xml", publishDeviceRequest("device_state", dev, true), false},
		{"publish_device_noncachable.xml", publishDeviceRequest("device_state", nonCachable, true), false},
		{"publish_device_leaf.xml", publishDeviceRequest("Custom:mystate", dev, true), false},
		{"publish_mwi.xml", publishMailboxRequest("message_waiting", MailboxItem{Mailbox: "1000@default", Counts: mwi.Counts{New: 2, Old: 1}, EID: testEID}), false},
		{"subscribe_flat.xml", subscribeRequest("device_state", "server1@example.org", false), false},
		{"subscribe_collection.xml", subscribeRequest("device_state", "server1@example.org", true), false},
		{"unsubscribe.xml", unsubscribeRequest("device_state", "server1@example.org"), false},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			want := golden(t, c.file)
			if c.nodeConfig {
				want = withBusylampFields(t, want)
			}
			got := marshalled(t, c.p)
			if d := sameTree("", want, got, true); d != "" {
				b, _ := xml.Marshal(got)
				t.Errorf("%s\n got: %s", d, b)
			}
		})
	}
}

// The comparison itself must notice a difference, or the golden test
// proves nothing.
func TestGoldenComparisonDetectsDifferences(t *testing.T) {
	want := golden(t, "publish_device_cachable.xml")
	for _, mutate := range []func(DeviceItem) DeviceItem{
		func(d DeviceItem) DeviceItem { d.State = devstate.Busy; return d },
		func(d DeviceItem) DeviceItem { d.Device = "SIP/100"; return d },
		func(d DeviceItem) DeviceItem { d.EID[5] = 0x56; return d },
		func(d DeviceItem) DeviceItem { d.Cachable = false; return d },
	} {
		d := mutate(DeviceItem{Device: "Custom:mystate", State: devstate.InUse, Cachable: true, EID: testEID})
		if sameTree("", want, marshalled(t, publishDeviceRequest("device_state", d, true)), true) == "" {
			t.Errorf("difference not detected for %+v", d)
		}
	}
}

// The publish without publish-options that busylamp falls back to when
// the server refuses them (precondition-not-met) differs only in those.
func TestPublishWithoutOptions(t *testing.T) {
	d := DeviceItem{Device: "Custom:mystate", State: devstate.InUse, Cachable: false, EID: testEID}
	got := marshalled(t, publishDeviceRequest("device_state", d, false))
	want := golden(t, "publish_device_noncachable.xml")
	ps := want.Child(nsPubSub, "pubsub")
	ps.Nodes = ps.Nodes[:1]
	if diff := sameTree("", want, got, true); diff != "" {
		t.Error(diff)
	}
}

func TestParseStanzaError(t *testing.T) {
	e, _ := xmppstream.ParseDocument(`<error xmlns="jabber:client" type="cancel"><precondition-not-met xmlns="http://jabber.org/protocol/pubsub#errors"/><conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/><text xmlns="urn:ietf:params:xml:ns:xmpp-stanzas">nope</text></error>`)
	se := parseStanzaError(e)
	if se.Condition != "conflict" || se.PubSubCondition != "precondition-not-met" || se.Text != "nope" {
		t.Fatalf("%+v", se)
	}
	if !IsCondition(fmt.Errorf("x: %w", se), "precondition-not-met") || !IsCondition(se, "conflict") || IsCondition(se, "forbidden") {
		t.Error("IsCondition")
	}
	if got := se.Error(); got != "conflict (precondition-not-met): nope" {
		t.Errorf("Error() = %q", got)
	}
}
