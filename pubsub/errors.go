package pubsub

import (
	"errors"
	"fmt"
	"strings"

	"github.com/busylamp/busylamp/internal/xmppstream"
)

var (
	// ErrNotConnected is returned by calls that need a session while there
	// is none. A call cut off by the end of a session wraps it and why the
	// session ended.
	ErrNotConnected = xmppstream.ErrNotConnected
	// ErrTimeout is returned when an IQ gets no answer within Config.IQTimeout.
	ErrTimeout = xmppstream.ErrTimeout
	// ErrOwnStatesUnsupported is returned by RequestOwnStates when the peer
	// does not speak busylamp's own-states exchange (an Asterisk node, or
	// a busylamp whose resource is gone). The agent may ignore it.
	ErrOwnStatesUnsupported = errors.New("peer does not answer busylamp's own-states request")
	// ErrOwnStatesIncomplete is returned by RequestOwnStates when the
	// peer answered the first chunks and then not a later one (in time):
	// a busylamp peer, worth asking again.
	ErrOwnStatesIncomplete = errors.New("own-states answer cut off after the first chunks")
	// ErrClosed is returned after Run has ended.
	ErrClosed = errors.New("client closed")
)

// AuthError is a SASL failure: wrong password, unknown account, or no
// mechanism in common. Reconnecting is still tried (the account may be
// created later), but the error is logged as what it is.
type AuthError = xmppstream.AuthError

// StanzaError is an error reply to an IQ (RFC 6120 section 8.3).
type StanzaError struct {
	Type      string // cancel, auth, modify, wait, continue
	Condition string // defined condition, e.g. "item-not-found", "forbidden"
	// PubSubCondition is the XEP-0060 application condition when the
	// server added one, e.g. "precondition-not-met", "nodeid-required".
	PubSubCondition string
	Text            string
	Code            string // legacy numeric code, when present
}

func (e *StanzaError) Error() string {
	var b strings.Builder
	b.WriteString(e.Condition)
	if e.Condition == "" {
		b.WriteString("error")
	}
	if e.PubSubCondition != "" {
		b.WriteString(" (" + e.PubSubCondition + ")")
	}
	if e.Text != "" {
		b.WriteString(": " + e.Text)
	}
	return b.String()
}

// IsCondition reports whether err is, or wraps, a StanzaError with the
// given defined or PubSub condition.
func IsCondition(err error, cond string) bool {
	var se *StanzaError
	return errors.As(err, &se) && (se.Condition == cond || se.PubSubCondition == cond)
}

// parseStanzaError reads an <error/> element.
func parseStanzaError(e *elem) *StanzaError {
	se := &StanzaError{Type: e.Attr("type"), Code: e.Attr("code")}
	if e == nil {
		return se
	}
	for i := range e.Nodes {
		c := &e.Nodes[i]
		switch c.XMLName.Space {
		case xmppstream.NSStanzas:
			if c.XMLName.Local == "text" {
				se.Text = clip(strings.TrimSpace(c.Content), 512)
			} else if se.Condition == "" {
				se.Condition = c.XMLName.Local
			}
		case nsPubSubErrors:
			se.PubSubCondition = c.XMLName.Local
		}
	}
	if se.Condition == "" {
		se.Condition = "undefined-condition"
	}
	return se
}

// CreateForbiddenError says that this account may not create PubSub nodes
// on the service, and how an operator fixes that.
type CreateForbiddenError struct {
	Node, Account, Service string
	Err                    error
}

func (e *CreateForbiddenError) Error() string {
	return fmt.Sprintf("create node %s on %s: %v: account %s may not create nodes there. "+
		"Prosody: add it to admins = { %q } in prosody.cfg.lua (or set autocreate_on_publish = true on the pubsub component); "+
		"ejabberd: allow it in mod_pubsub's access_createnode (an access rule matching %s); "+
		"or let a permitted account create %s and %s with every server as owner",
		e.Node, e.Service, e.Err, e.Account, e.Account, e.Account, NodeDevices, NodeMailboxes)
}

func (e *CreateForbiddenError) Unwrap() error { return e.Err }

// PublishForbiddenError says that this account is not allowed to publish to
// (or subscribe on) a node that exists: it is not on its whitelist.
type PublishForbiddenError struct {
	Op, Node, Account, Service string
	Err                        error
}

func (e *PublishForbiddenError) Error() string {
	return fmt.Sprintf("%s %s on %s: %v: account %s is not an owner or publisher of the node; "+
		"add it as buddy on a server that owns the node (busylamp and Asterisk make every buddy an owner when they create it), "+
		"or set its affiliation with an owner account",
		e.Op, e.Node, e.Service, e.Err, e.Account)
}

func (e *PublishForbiddenError) Unwrap() error { return e.Err }

func clip(s string, n int) string { return xmppstream.Clip(s, n) }
