package xmppstream

import (
	"encoding/xml"
	"errors"
	"strings"
)

// Namespaces of the stream itself (RFC 6120, XEP-0199).
const (
	nsClient  = "jabber:client"
	nsStream  = "http://etherx.jabber.org/streams"
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsSession = "urn:ietf:params:xml:ns:xmpp-session"
	nsStreams = "urn:ietf:params:xml:ns:xmpp-streams"
	nsPing    = "urn:xmpp:ping"

	// NSStanzas is the namespace of the stanza error conditions.
	NSStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
)

// Element is a parsed XML element: the whole of an incoming stanza.
// Stanzas are parsed into this tree first by xmlReader (bounded in size by
// MaxStanza, in depth by maxDepth) and read from it, so nothing in a
// payload can make the read loop block, allocate without limit, or panic.
// The accessors are nil-safe: a missing child reads as empty.
type Element struct {
	XMLName xml.Name
	Attrs   []xml.Attr // namespace declarations left out
	Content string     // character data directly inside this element
	Nodes   []Element
}

const maxDepth = 32

var errTooDeep = errors.New("XML nested too deeply")

// Attr is the value of the unprefixed (or xml:) attribute name, "" when
// there is none.
func (e *Element) Attr(name string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attrs {
		if a.Name.Local == name && (a.Name.Space == "" || a.Name.Space == "xml") {
			return a.Value
		}
	}
	return ""
}

// HasAttr reports whether e has the unprefixed attribute name.
func (e *Element) HasAttr(name string) bool {
	if e == nil {
		return false
	}
	for _, a := range e.Attrs {
		if a.Name.Local == name && a.Name.Space == "" {
			return true
		}
	}
	return false
}

// Child returns the first child with that namespace and local name; an
// empty namespace matches any.
func (e *Element) Child(space, local string) *Element {
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

// Children returns every child with that namespace and local name.
func (e *Element) Children(space, local string) []*Element {
	if e == nil {
		return nil
	}
	var out []*Element
	for i := range e.Nodes {
		n := &e.Nodes[i]
		if n.XMLName.Local == local && (space == "" || n.XMLName.Space == space) {
			out = append(out, n)
		}
	}
	return out
}

// FirstChild returns the first child element, whatever it is.
func (e *Element) FirstChild() *Element {
	if e == nil || len(e.Nodes) == 0 {
		return nil
	}
	return &e.Nodes[0]
}

// Text is the trimmed character data of e; "" for a missing element.
func (e *Element) Text() string {
	if e == nil {
		return ""
	}
	return strings.TrimSpace(e.Content)
}

// Is reports whether e is the element local in namespace space.
func (e *Element) Is(space, local string) bool {
	return e != nil && e.XMLName.Space == space && e.XMLName.Local == local
}
