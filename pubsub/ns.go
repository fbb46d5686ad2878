package pubsub

// Namespaces used here.
const (
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
