package pubsub

import (
	"encoding/xml"
	"strconv"
	"unicode/utf8"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/devstate"
)

// Outgoing payloads. The envelopes are the library's stanza.IQ and
// stanza.Presence, the data forms its stanza.Form; the PubSub payloads are
// busylamp's own structs because the library's do not produce the exact
// shapes of PROTOCOL.md (no jid on the pubsub affiliation, no way to put
// <configure/> beside <create/> with a submit form and nothing else, ...).

// payload makes an element usable as a stanza.IQ payload.
type payload struct{}

func (payload) Namespace() string         { return "" }
func (payload) GetSet() *stanza.ResultSet { return nil }
func newIQ(typ, to, id string, p stanza.IQPayload) *stanza.IQ {
	return &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.StanzaType(typ), To: to, Id: id}, Payload: p}
}

// psRequest is <pubsub xmlns="http://jabber.org/protocol/pubsub">.
type psRequest struct {
	payload
	XMLName       xml.Name      `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Create        *nodeRef      `xml:"create"`
	Configure     *configure    `xml:"configure"`
	Unsubscribe   *subscribeReq `xml:"unsubscribe"`
	Subscribe     *subscribeReq `xml:"subscribe"`
	Options       *configure    `xml:"options"`
	Items         *itemsRef     `xml:"items"`
	Retract       *retractReq   `xml:"retract"`
	Subscriptions *nodeRef      `xml:"subscriptions"`
	Set           *rsmSet       `xml:"set"`
}

type retractReq struct {
	Node   string `xml:"node,attr"`
	Notify string `xml:"notify,attr,omitempty"`
	Item   struct {
		ID string `xml:"id,attr"`
	} `xml:"item"`
}

// retractRequest removes one item; notify=false asks the service not to
// tell the subscribers (XEP-0060 7.2.2.1).
func retractRequest(node, id string, notify bool) *psRequest {
	r := &retractReq{Node: node}
	if !notify {
		r.Notify = "false"
	}
	r.Item.ID = id
	return &psRequest{Retract: r}
}

// psOwner is <pubsub xmlns="http://jabber.org/protocol/pubsub#owner">.
type psOwner struct {
	payload
	XMLName      xml.Name      `xml:"http://jabber.org/protocol/pubsub#owner pubsub"`
	Affiliations *affiliations `xml:"affiliations"`
	Purge        *nodeRef      `xml:"purge"`
	Delete       *nodeRef      `xml:"delete"`
	Configure    *nodeConfig   `xml:"configure"`
}

// nodeConfig is an owner's configure of an existing node.
type nodeConfig struct {
	Node string       `xml:"node,attr"`
	Form *stanza.Form `xml:"x"`
}

type nodeRef struct {
	Node string `xml:"node,attr"`
}

type itemsRef struct {
	Node     string   `xml:"node,attr"`
	MaxItems int      `xml:"max_items,attr,omitempty"`
	Items    []itemID `xml:"item"`
}

type itemID struct {
	ID string `xml:"id,attr"`
}

// itemsByIDRequest asks for the items of node with the given ids
// (XEP-0060 6.5.8).
func itemsByIDRequest(node string, ids []string) *psRequest {
	r := &itemsRef{Node: node, Items: make([]itemID, len(ids))}
	for i, id := range ids {
		r.Items[i].ID = id
	}
	return &psRequest{Items: r}
}

type configure struct {
	Form *stanza.Form `xml:"x"`
}

type subscribeReq struct {
	Node string `xml:"node,attr"`
	JID  string `xml:"jid,attr"`
}

type affiliations struct {
	Node string        `xml:"node,attr"`
	List []affiliation `xml:"affiliation"`
}

type affiliation struct {
	JID         string `xml:"jid,attr"`
	Affiliation string `xml:"affiliation,attr"`
}

type rsmSet struct {
	XMLName xml.Name `xml:"http://jabber.org/protocol/rsm set"`
	Max     int      `xml:"max"`
	After   string   `xml:"after,omitempty"`
}

// discoQuery is a disco#items or disco#info get.
type discoQuery struct {
	payload
	XMLName xml.Name
	Node    string `xml:"node,attr,omitempty"`
}

type pingReq struct {
	payload
	XMLName xml.Name `xml:"urn:xmpp:ping ping"`
}

// rosterSet adds or removes one roster item.
type rosterSet struct {
	payload
	XMLName xml.Name          `xml:"jabber:iq:roster query"`
	Item    stanza.RosterItem `xml:"item"`
}

type rosterGet struct {
	payload
	XMLName xml.Name `xml:"jabber:iq:roster query"`
}

func field(v, value string) *stanza.Field {
	return &stanza.Field{Var: v, ValuesList: []string{value}}
}

func formType(ns string) *stanza.Field {
	return &stanza.Field{Var: "FORM_TYPE", Type: stanza.FieldTypeHidden, ValuesList: []string{ns}}
}

// nodeKind is what a node is created as.
type nodeKind int

const (
	flatNode       nodeKind = iota // XEP-0060 leaf, no node_type field (flat mode)
	collectionNode                 // XEP-0248 collection
	leafNode                       // XEP-0248 leaf in a collection
)

// createRequest is PROTOCOL.md's node creation: create + configure with
// the node_config form, to which busylamp appends two fields both servers
// accept: pubsub#max_items=max (Prosody keeps only 20 items per node by
// default, so a resync from items would miss devices) and
// pubsub#itemreply=publisher (ejabberd then puts the publisher's full JID
// on items; Prosody ignores it and needs expose_publisher instead).
func createRequest(node string, kind nodeKind, collection string) *psRequest {
	fields := []*stanza.Field{formType("http://jabber.org/protocol/pubsub#node_config")}
	switch kind {
	case collectionNode:
		fields = append(fields, field("pubsub#node_type", "collection"))
	case leafNode:
		fields = append(fields, field("pubsub#node_type", "leaf"))
	}
	fields = append(fields,
		field("pubsub#deliver_payloads", "1"),
		field("pubsub#persist_items", "1"),
		field("pubsub#access_model", "whitelist"),
	)
	if kind == leafNode {
		fields = append(fields, field("pubsub#collection", collection))
	}
	fields = append(fields, field("pubsub#max_items", "max"), field("pubsub#itemreply", "publisher"))
	return &psRequest{
		Create:    &nodeRef{Node: node},
		Configure: &configure{Form: &stanza.Form{Type: stanza.FormTypeSubmit, Fields: fields}},
	}
}

// keepNoItems makes a create request's node keep no items
// (Config.NoItems): persist_items 0, and no last item sent on subscribe,
// without which ejabberd keeps one anyway.
func keepNoItems(r *psRequest) *psRequest {
	f := r.Configure.Form
	for _, x := range f.Fields {
		if x.Var == "pubsub#persist_items" {
			x.ValuesList = []string{"0"}
		}
	}
	f.Fields = append(f.Fields, field("pubsub#send_last_published_item", "never"))
	return r
}

// noItemsConfigRequest makes an existing node keep no items, as
// keepNoItems does at creation.
func noItemsConfigRequest(node string) *psOwner {
	return &psOwner{Configure: &nodeConfig{Node: node, Form: &stanza.Form{Type: stanza.FormTypeSubmit, Fields: []*stanza.Field{
		formType("http://jabber.org/protocol/pubsub#node_config"),
		field("pubsub#persist_items", "0"),
		field("pubsub#send_last_published_item", "never"),
	}}}}
}

// ownersRequest makes every JID an owner of node.
func ownersRequest(node string, jids []string) *psOwner {
	a := &affiliations{Node: node}
	for _, j := range jids {
		a.List = append(a.List, affiliation{JID: j, Affiliation: "owner"})
	}
	return &psOwner{Affiliations: a}
}

// affiliationRequest sets one JID's affiliation (owner, or none to remove).
func affiliationRequest(node, jid, aff string) *psOwner {
	return &psOwner{Affiliations: &affiliations{Node: node, List: []affiliation{{JID: jid, Affiliation: aff}}}}
}

func cachableAttr(c bool) string {
	if c {
		return "1"
	}
	return "0"
}

// subscribeRequest is a subscribe of the bare JID; in XEP-0248 mode with
// the subscribe_options form Asterisk sends.
func subscribeRequest(node, bare string, collection bool) *psRequest {
	r := &psRequest{Subscribe: &subscribeReq{Node: node, JID: bare}}
	if collection {
		r.Options = &configure{Form: &stanza.Form{Type: stanza.FormTypeSubmit, Fields: []*stanza.Field{
			formType("http://jabber.org/protocol/pubsub#subscribe_options"),
			field("pubsub#subscription_type", "items"),
			field("pubsub#subscription_depth", "all"),
			field("pubsub#expire", "presence"),
		}}}
	}
	return r
}

func unsubscribeRequest(node, bare string) *psRequest {
	return &psRequest{Unsubscribe: &subscribeReq{Node: node, JID: bare}}
}

// itemsRequest asks for a page of max items after the given RSM key.
// max_items bounds the answer of a service that ignores RSM (Prosody 0.12
// answers every item in one stanza otherwise, past maxStanza at some
// 13,000 devices; with it, the newest unpaged items); a service that pages
// (ejabberd) follows RSM and ignores max_items.
func itemsRequest(node string, max int, after string) *psRequest {
	return &psRequest{Items: &itemsRef{Node: node, MaxItems: maxUnpaged}, Set: &rsmSet{Max: max, After: after}}
}

func itoa(n int) string { return strconv.Itoa(n) }

func xmlName(space, local string) xml.Name { return xml.Name{Space: space, Local: local} }

// publishIQ is one publish (PROTOCOL.md "Publishing"): a device state or
// a mailbox's counts, to node. Publishes are the hot path (one per
// change), so they are not marshalled by encoding/xml but appended by
// appendTo, byte for byte what xml.Marshal made of the request structs
// it replaces (wire_test.go keeps those as the reference).
type publishIQ struct {
	node    string
	mailbox bool
	dev     DeviceItem
	mbox    MailboxItem
	// options asks for publish-options persist_items=0, as Asterisk
	// does for a state that is not cachable.
	options bool
}

// newPublishIQ is the publish of v; publish-options only when the state
// is not cachable and withOptions (the server has not refused them).
func newPublishIQ(node string, k pubKey, v pubValue, withOptions bool) publishIQ {
	if k.mailbox {
		return publishIQ{node: node, mailbox: true, mbox: v.mbox}
	}
	return publishIQ{node: node, dev: v.dev, options: !v.dev.Cachable && withOptions}
}

const publishOptionsForm = `<publish-options><x xmlns="jabber:x:data" type="submit">` +
	`<field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#publish-options</value></field>` +
	`<field var="pubsub#persist_items"><value>0</value></field></x></publish-options>`

// appendTo appends the IQ set with id to the service to b.
func (p *publishIQ) appendTo(b []byte, id, to string) []byte {
	b = append(b, `<iq type="set"`...)
	if id != "" {
		b = appendAttr(b, "id", id)
	}
	if to != "" {
		b = appendAttr(b, "to", to)
	}
	b = append(b, `><pubsub xmlns="http://jabber.org/protocol/pubsub"><publish`...)
	b = appendAttr(b, "node", p.node)
	b = append(b, `><item`...)
	if p.mailbox {
		b = appendAttr(b, "id", p.mbox.Mailbox)
		b = append(b, `><mailbox xmlns="http://asterisk.org" eid="`...)
		b = appendEID(b, p.mbox.EID)
		b = append(b, `"><NEWMSGS>`...)
		b = strconv.AppendInt(b, int64(p.mbox.Counts.New), 10)
		b = append(b, `</NEWMSGS><OLDMSGS>`...)
		b = strconv.AppendInt(b, int64(p.mbox.Counts.Old), 10)
		b = append(b, `</OLDMSGS></mailbox></item></publish>`...)
	} else {
		b = appendAttr(b, "id", p.dev.Device)
		b = append(b, `><state xmlns="http://asterisk.org" eid="`...)
		b = appendEID(b, p.dev.EID)
		if p.dev.Cachable {
			b = append(b, `" cachable="1">`...)
		} else {
			b = append(b, `" cachable="0">`...)
		}
		b = appendEscaped(b, p.dev.State.String())
		b = append(b, `</state></item></publish>`...)
		if p.options {
			b = append(b, publishOptionsForm...)
		}
	}
	return append(b, `</pubsub></iq>`...)
}

// appendAttr appends ` name="value"`, the value escaped.
func appendAttr(b []byte, name, value string) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `="`...)
	b = appendEscaped(b, value)
	return append(b, '"')
}

// appendEID appends e as EID.String does, without its allocation.
func appendEID(b []byte, e devstate.EID) []byte {
	const hex = "0123456789abcdef"
	for i, x := range e {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[x>>4], hex[x&0xf])
	}
	return b
}

// appendEscaped appends s escaped for text and attribute values exactly
// as encoding/xml escapes them (its EscapeString): the five markup
// characters, tab, newline and carriage return as references, and what
// XML cannot carry (invalid UTF-8, characters outside XML's range) as
// U+FFFD.
func appendEscaped(b []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, width := utf8.DecodeRuneInString(s[i:])
			i += width
			if xmlChar(r) && !(r == utf8.RuneError && width == 1) {
				continue
			}
			b = append(b, s[last:i-width]...)
			b = append(b, "\uFFFD"...)
			last = i
			continue
		}
		i++
		var esc string
		switch c {
		case '"':
			esc = "&#34;"
		case '\'':
			esc = "&#39;"
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\t':
			esc = "&#x9;"
		case '\n':
			esc = "&#xA;"
		case '\r':
			esc = "&#xD;"
		default:
			if c >= 0x20 {
				continue
			}
			esc = "\uFFFD"
		}
		b = append(b, s[last:i-1]...)
		b = append(b, esc...)
		last = i
	}
	return append(b, s[last:]...)
}

// xmlChar reports whether XML 1.0 allows r (encoding/xml's
// isInCharacterRange), for r at or past utf8.RuneSelf.
func xmlChar(r rune) bool {
	return r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}
