package core

import (
	"container/list"
	"strings"

	"github.com/busylamp/busylamp/mwi"
)

// maxDeletedBoxes bounds the deleted own mailboxes the core remembers, as
// agent/store's DefaultMaxTombstones bounds those it keeps (and never more
// than the mailbox table's bound).
const maxDeletedBoxes = 10_000

// deletedBoxes are the own mailboxes the PBX deleted and has not set
// again: the store's tombstones handed over at start, and the deletes
// since. The cluster may still hold their old counts (an item the delete's
// zero counts never reached before a crash, a buddy that missed the
// delete), and a resync must not take them back as ours. An entry is void
// once the mailbox is held as own again (the PBX set it): every use looks
// at that, so SetMailbox need not know of it. In the order of the deletes,
// at most max of them: the oldest is forgotten first.
type deletedBoxes struct {
	max   int
	order *list.List // of *deletedBox, oldest at the front
	at    map[string]*list.Element
}

type deletedBox struct {
	name string
	// zeros: its zero counts are still to be republished (a tombstone
	// from the store: the delete's own publication may never have left).
	zeros bool
}

func newDeletedBoxes(max int) deletedBoxes {
	return deletedBoxes{max: max, order: list.New(), at: make(map[string]*list.Element)}
}

func (d *deletedBoxes) add(name string, zeros bool) {
	if e, ok := d.at[name]; ok {
		e.Value.(*deletedBox).zeros = zeros
		d.order.MoveToBack(e)
		return
	}
	name = strings.Clone(name) // not a slice of a larger message
	d.at[name] = d.order.PushBack(&deletedBox{name: name, zeros: zeros})
	for len(d.at) > d.max {
		delete(d.at, d.order.Remove(d.order.Front()).(*deletedBox).name)
	}
}

func (d *deletedBoxes) has(name string) bool { _, ok := d.at[name]; return ok }

func (d *deletedBoxes) remove(e *list.Element) {
	delete(d.at, d.order.Remove(e).(*deletedBox).name)
}

// ForgetOwnMailboxes tells the core, at start and before the first
// resync, which own mailboxes the PBX deleted (the store's tombstones,
// oldest first): no resync restores them from PubSub items or a buddy's
// copy until the PBX sets them again, and the next Republish sends their
// zero counts, once, so that the items and Asterisk nodes hear of the
// delete. A mailbox held as own is not forgotten.
func (a *Core) ForgetOwnMailboxes(mailboxes []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range mailboxes {
		if checkName("mailbox", m) != nil || a.holdsMailboxLocked(m, a.cfg.EID) {
			continue
		}
		a.deletedBox.add(m, true)
	}
}

// deletedOwnLocked says whether mailbox is an own mailbox the PBX
// deleted and has not set again.
func (a *Core) deletedOwnLocked(mailbox string) bool {
	return a.deletedBox.has(mailbox) && !a.holdsMailboxLocked(mailbox, a.cfg.EID)
}

// republishDeletedLocked sends the zero counts still owed for deleted own
// mailboxes, and forgets those the PBX has set again.
func (a *Core) republishDeletedLocked(publish func(mailbox string, c mwi.Counts)) {
	for e := a.deletedBox.order.Front(); e != nil; {
		next := e.Next()
		b := e.Value.(*deletedBox)
		switch {
		case a.holdsMailboxLocked(b.name, a.cfg.EID):
			a.deletedBox.remove(e)
		case b.zeros:
			publish(b.name, mwi.Counts{})
			b.zeros = false
		}
		e = next
	}
}
