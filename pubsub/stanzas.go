package pubsub

import (
	"encoding/xml"
	"strconv"

	"gosrc.io/xmpp/stanza"
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
	XMLName        xml.Name      `xml:"http://jabber.org/protocol/pubsub pubsub"`
	Create         *nodeRef      `xml:"create"`
	Configure      *configure    `xml:"configure"`
	Unsubscribe    *subscribeReq `xml:"unsubscribe"`
	Subscribe      *subscribeReq `xml:"subscribe"`
	Options        *configure    `xml:"options"`
	Publish        *publishReq   `xml:"publish"`
	PublishOptions *configure    `xml:"publish-options"`
	Items          *itemsRef     `xml:"items"`
	Retract        *retractReq   `xml:"retract"`
	Subscriptions  *nodeRef      `xml:"subscriptions"`
	Set            *rsmSet       `xml:"set"`
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

// publishDeviceRequest is PROTOCOL.md's device state publish; publish-options
// (persist_items=0) only when the state is not cachable, as Asterisk does.
func publishDeviceRequest(node string, it DeviceItem, withOptions bool) *psRequest {
	r := &psRequest{Publish: &publishReq{Node: node, Item: publishItem{
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

func publishMailboxRequest(node string, it MailboxItem) *psRequest {
	return &psRequest{Publish: &publishReq{Node: node, Item: publishItem{
		ID:      it.Mailbox,
		Mailbox: &mboxPayload{EID: it.EID.String(), New: it.Counts.New, Old: it.Counts.Old},
	}}}
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
