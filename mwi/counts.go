// Package mwi owns message-waiting counts: per mailbox ("mailbox@context")
// and per server, the new and old message counts, and their cluster-wide
// merge (Asterisk's newest-update-wins rule, or the sum over servers).
// It does no I/O.
package mwi

// Counts are a mailbox's new and old message counts.
type Counts struct {
	New int
	Old int
}

// Waiting reports whether there are new messages, as AMI's Waiting header.
func (c Counts) Waiting() bool { return c.New > 0 }
