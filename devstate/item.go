package devstate

// Item is one server's state of one device as that server published it:
// what a PubSub item or notification carries, what a buddy's own-states
// answer lists, and what the agent's core takes in.
type Item struct {
	Device    string
	State     State
	Cachable  bool
	EID       EID
	Publisher string // the publishing JID when the XMPP server exposes it, else ""
}
