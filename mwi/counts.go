// Package mwi owns message-waiting counts: per mailbox ("mailbox@context")
// and per server, the new and old message counts, and their cluster-wide
// merge (Asterisk's newest-update-wins rule, or the sum over servers).
// It does no I/O.
package mwi

import (
	"fmt"

	"github.com/busylamp/busylamp/devstate"
)

// MaxCount bounds NEWMSGS and OLDMSGS, as the wire takes them.
const MaxCount = 1_000_000

// Counts are a mailbox's new and old message counts.
type Counts struct {
	New int
	Old int
}

// Waiting reports whether there are new messages, as AMI's Waiting header.
func (c Counts) Waiting() bool { return c.New > 0 }

// Check says why c cannot be held or published (a count out of range), or
// nil.
func (c Counts) Check() error {
	if c.New < 0 || c.Old < 0 || c.New > MaxCount || c.Old > MaxCount {
		return fmt.Errorf("counts out of range (0 to %d)", MaxCount)
	}
	return nil
}

// Item is one server's counts of one mailbox as that server published
// them (see devstate.Item).
type Item struct {
	Mailbox   string
	Counts    Counts
	EID       devstate.EID
	Publisher string // the publishing JID when the XMPP server exposes it, else ""
}
