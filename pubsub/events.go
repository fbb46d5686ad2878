package pubsub

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// Event is what the client reports on the events channel, in the order it
// happened on the stream. The concrete types are below.
type Event interface{ isEvent() }

// Connected reports a (re)established session: subscribed to both nodes,
// with the items the nodes held (own EID included: see parseItem).
type Connected struct {
	JID       string // the bound full JID
	Devices   []DeviceItem
	Mailboxes []MailboxItem
}

// Disconnected reports the end of a session that had sent Connected. All
// buddy resources are then unknown; no Presence event says so one by one.
type Disconnected struct{ Err error }

// DeviceEvent is a device state published by another server.
type DeviceEvent struct{ Item DeviceItem }

// MailboxEvent is mailbox counts published by another server.
type MailboxEvent struct{ Item MailboxItem }

// Retracted reports an item removed from a node. Node is the node the
// notification named (a leaf in XEP-0248 mode); Kind says which collection
// it belongs to when that is known. A retraction names no server (no
// EID): on ejabberd it is mostly another server overwriting the item
// (see publishStart), immediately followed by its new value, so an agent
// should not drop states on it.
type Retracted struct {
	Node, ID string
	Kind     Kind
}

// Purged reports that every item of a node was removed.
type Purged struct {
	Node string
	Kind Kind
}

// Deleted reports that a node was deleted.
type Deleted struct {
	Node string
	Kind Kind
}

// Presence reports a buddy's resource coming, changing or going.
type Presence struct {
	JID       string // full JID
	Available bool   // this resource is available
	Show      string // "", chat, away, xa, dnd
	Status    string
	Priority  int
	// Online says that after this presence the buddy's account (its bare
	// JID) still has at least one available resource: false once its last
	// resource went, or when an unavailable presence without a resource
	// took them all (each of its events says false). The client's roster
	// is the one owner of a buddy's resources; Buddies lists them.
	Online bool
}

// OwnStatesRequest is a busylamp buddy asking for this server's own states;
// answer it with AnswerOwnStates.
type OwnStatesRequest struct {
	From, ID string
	sess     *session // the stream the request came on
}

func (Connected) isEvent()        {}
func (Disconnected) isEvent()     {}
func (DeviceEvent) isEvent()      {}
func (MailboxEvent) isEvent()     {}
func (Retracted) isEvent()        {}
func (Purged) isEvent()           {}
func (Deleted) isEvent()          {}
func (Presence) isEvent()         {}
func (OwnStatesRequest) isEvent() {}

// Kind says whether a node holds devices or mailboxes.
type Kind int

const (
	KindUnknown Kind = iota
	KindDevices
	KindMailboxes
)

func (k Kind) String() string {
	switch k {
	case KindDevices:
		return NodeDevices
	case KindMailboxes:
		return NodeMailboxes
	}
	return "unknown"
}

// parser turns PubSub items and notifications into typed values. own is
// this server's EID; reject logs what it drops.
type parser struct {
	own    devstate.EID
	reject func(msg string, args ...any)
	// kindOf names the kind of a node; in XEP-0248 mode a leaf is looked
	// up in what this client has seen.
	kindOf func(node string) Kind
	// echo, when set, is told of each notification of our own item.
	echo func(kind Kind, name string)
}

// item is one parsed item: a device, a mailbox, or nothing (ignored).
type item struct {
	dev  *DeviceItem
	mbox *MailboxItem
}

// parseItem reads one <item/>. Unknown payloads yield an empty item, and
// so does our own EID unless keepOwn (fetched items: after a restart the
// agent restores its own states from them; a live notification with our
// EID is only an echo). Malformed or oversized ones are rejected with a
// log line.
func (p *parser) parseItem(node string, it *elem, keepOwn bool) item {
	id := it.Attr("id")
	pl := it.FirstChild()
	if pl == nil || pl.XMLName.Space != nsAsterisk {
		return item{} // not ours: ignored silently, as PROTOCOL.md says
	}
	publisher := it.Attr("publisher")
	if len(publisher) > 3071 {
		publisher = ""
	}
	if err := checkName(id); err != nil {
		p.reject("item id", "node", node, "id", clip(id, 64), "err", err)
		return item{}
	}
	eid, err := devstate.ParseEID(strings.TrimSpace(pl.Attr("eid")))
	if err != nil {
		p.reject("payload eid", "node", node, "id", id, "err", err)
		return item{}
	}
	if eid == p.own && !keepOwn {
		if p.echo != nil {
			p.echo(p.kindOf(node), id)
		}
		return item{}
	}
	switch pl.XMLName.Local {
	case "state":
		text := strings.TrimSpace(pl.Content)
		if len(text) > maxStateLen {
			p.reject("device state too long", "node", node, "id", id)
			return item{}
		}
		st, ok := devstate.Parse(text)
		if !ok {
			// Asterisk reads any unknown name as UNKNOWN; so do we, but say so.
			p.reject("unknown device state name, read as UNKNOWN", "node", node, "id", id, "state", text)
		}
		cachable := true
		if pl.HasAttr("cachable") {
			n, err := strconv.Atoi(strings.TrimSpace(pl.Attr("cachable")))
			if err != nil {
				p.reject("payload cachable", "node", node, "id", id, "cachable", clip(pl.Attr("cachable"), 16))
				return item{}
			}
			cachable = n != 0
		}
		return item{dev: &DeviceItem{Device: id, State: st, Cachable: cachable, EID: eid, Publisher: publisher}}
	case "mailbox":
		nw, err1 := count(pl.Child("", "NEWMSGS"))
		old, err2 := count(pl.Child("", "OLDMSGS"))
		if err1 != nil || err2 != nil {
			p.reject("mailbox counts", "node", node, "id", id, "new", err1, "old", err2)
			return item{}
		}
		return item{mbox: &MailboxItem{Mailbox: id, Counts: mwi.Counts{New: nw, Old: old}, EID: eid, Publisher: publisher}}
	}
	return item{}
}

func count(e *elem) (int, error) {
	if e == nil {
		return 0, fmt.Errorf("missing")
	}
	s := strings.TrimSpace(e.Content)
	if len(s) > 10 {
		return 0, fmt.Errorf("out of range 0..%d", mwi.MaxCount)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("not a number")
	}
	if n < 0 || n > mwi.MaxCount {
		return 0, fmt.Errorf("%d out of range 0..%d", n, mwi.MaxCount)
	}
	return n, nil
}

// checkName bounds a device name, mailbox or item id: devstate's one rule
// for names.
func checkName(s string) error { return devstate.CheckName(s) }

// parseEvent reads a <message/> from the PubSub service. It returns the
// events in document order.
func (p *parser) parseEvent(msg *elem) []Event {
	ev := msg.Child(nsPubSubEvent, "event")
	if ev == nil {
		return nil
	}
	var out []Event
	for i := range ev.Nodes {
		n := &ev.Nodes[i]
		node := n.Attr("node")
		switch n.XMLName.Local {
		case "items":
			if checkName(node) != nil {
				p.reject("event node name", "node", clip(node, 64))
				continue
			}
			for j := range n.Nodes {
				c := &n.Nodes[j]
				switch c.XMLName.Local {
				case "item":
					it := p.parseItem(node, c, false)
					if it.dev != nil {
						out = append(out, DeviceEvent{Item: *it.dev})
					} else if it.mbox != nil {
						out = append(out, MailboxEvent{Item: *it.mbox})
					}
				case "retract":
					id := c.Attr("id")
					if err := checkName(id); err != nil {
						p.reject("retract id", "node", node, "err", err)
						continue
					}
					out = append(out, Retracted{Node: node, ID: id, Kind: p.kindOf(node)})
				}
			}
		case "purge":
			if checkName(node) == nil {
				out = append(out, Purged{Node: node, Kind: p.kindOf(node)})
			}
		case "delete":
			if checkName(node) == nil {
				out = append(out, Deleted{Node: node, Kind: p.kindOf(node)})
			}
		}
	}
	return out
}

// CheckName says why s cannot be a device name, mailbox or item id on the
// wire (empty, too long, not UTF-8, a control character), or nil: an
// alias of devstate.CheckName, the one rule for names.
func CheckName(s string) error { return devstate.CheckName(s) }
