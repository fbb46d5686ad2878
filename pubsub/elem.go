package pubsub

import (
	"encoding/xml"
	"errors"
	"strings"
)

// Namespaces used here.
const (
	nsClient       = "jabber:client"
	nsStream       = "http://etherx.jabber.org/streams"
	nsTLS          = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL         = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind         = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession      = "urn:ietf:params:xml:ns:xmpp-session"
	nsStanzas      = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsStreams      = "urn:ietf:params:xml:ns:xmpp-streams"
	nsRoster       = "jabber:iq:roster"
	nsPing         = "urn:xmpp:ping"
	nsDiscoInfo    = "http://jabber.org/protocol/disco#info"
	nsDiscoItems   = "http://jabber.org/protocol/disco#items"
	nsPubSub       = "http://jabber.org/protocol/pubsub"
	nsPubSubOwner  = "http://jabber.org/protocol/pubsub#owner"
	nsPubSubEvent  = "http://jabber.org/protocol/pubsub#event"
	nsPubSubErrors = "http://jabber.org/protocol/pubsub#errors"
	nsRSM          = "http://jabber.org/protocol/rsm"
	nsData         = "jabber:x:data"
	nsAsterisk     = "http://asterisk.org"
	// NSOwnStates is busylamp's own-states exchange (a directed IQ get
	// between busylamp agents; see RequestOwnStates).
	NSOwnStates = "urn:busylamp:states:0"
)

// elem is a parsed XML element: the whole of an incoming stanza. Stanzas are
// parsed into this tree first by xmlReader (bounded in size by maxStanza,
// in depth by maxDepth) and read from it, so nothing in a payload can make
// the read loop block, allocate without limit, or panic.
type elem struct {
	XMLName xml.Name
	Attr    []xml.Attr
	Content string // character data directly inside this element
	Nodes   []elem
}

const maxDepth = 32

var errTooDeep = errors.New("XML nested too deeply")

func (e *elem) attr(name string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attr {
		if a.Name.Local == name && (a.Name.Space == "" || a.Name.Space == "xml") {
			return a.Value
		}
	}
	return ""
}

func (e *elem) hasAttr(name string) bool {
	if e == nil {
		return false
	}
	for _, a := range e.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return true
		}
	}
	return false
}

// child returns the first child with that namespace and local name; an
// empty namespace matches any.
func (e *elem) child(space, local string) *elem {
	if e == nil {
		return nil
	}
	for i := range e.Nodes {
		n := &e.Nodes[i]
		if n.XMLName.Local == local && (space == "" || n.XMLName.Space == space) {
			return n
		}
	}
	return nil
}

// children returns every child with that namespace and local name.
func (e *elem) children(space, local string) []*elem {
	if e == nil {
		return nil
	}
	var out []*elem
	for i := range e.Nodes {
		n := &e.Nodes[i]
		if n.XMLName.Local == local && (space == "" || n.XMLName.Space == space) {
			out = append(out, n)
		}
	}
	return out
}

// firstChild returns the first child element, whatever it is.
func (e *elem) firstChild() *elem {
	if e == nil || len(e.Nodes) == 0 {
		return nil
	}
	return &e.Nodes[0]
}

// text is the trimmed character data of e; "" for a missing element.
func (e *elem) text() string {
	if e == nil {
		return ""
	}
	return strings.TrimSpace(e.Content)
}

func (e *elem) is(space, local string) bool {
	return e != nil && e.XMLName.Space == space && e.XMLName.Local == local
}
