package mwi

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

// Merge says how the servers' counts of one mailbox make its cluster-wide
// counts.
type Merge uint8

const (
	// Latest: the newest update wins, whatever server sent it (Asterisk's
	// rule). Newest means the latest update time given to Set; of equal
	// times, the one set last.
	Latest Merge = iota
	// Sum adds the counts over the servers, for mailboxes split across
	// servers.
	Sum
)

// String is the config file's spelling (mwi_merge).
func (m Merge) String() string {
	switch m {
	case Latest:
		return "latest"
	case Sum:
		return "sum"
	}
	return fmt.Sprintf("Merge(%d)", uint8(m))
}

// ParseMerge reads the config file's spelling, case-insensitively.
func ParseMerge(s string) (Merge, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "latest":
		return Latest, nil
	case "sum":
		return Sum, nil
	}
	return 0, fmt.Errorf("bad mwi merge %q: want latest or sum", s)
}

// DefaultMaxMailboxes is the bound NewTable uses when given none.
const DefaultMaxMailboxes = 200000

// MaxServers bounds the distinct servers (EIDs) a Table holds entries of.
// EIDs arrive in payloads, so without a bound a misbehaving publisher could
// grow every mailbox's entry list; a server stops counting once it has no
// entry left.
const MaxServers = 256

var (
	// ErrFull is returned by Set for a new mailbox beyond the table's bound
	// or a new server beyond MaxServers; updates of what is held still work.
	ErrFull = errors.New("mwi: table full")
	// ErrNoMailbox is returned by Set for an empty mailbox name.
	ErrNoMailbox = errors.New("mwi: empty mailbox name")
	// ErrCounts is returned by Set for a negative count.
	ErrCounts = errors.New("mwi: negative message count")
)

// Entry is one server's counts of a mailbox.
type Entry struct {
	EID     devstate.EID
	Counts  Counts
	Updated time.Time // as given to Set, kept to the nanosecond, in UTC and without a monotonic reading; zero if Set was given the zero time
}

// MailboxState is one mailbox and its cluster-wide counts.
type MailboxState struct {
	Mailbox string
	Counts  Counts
}

// MailboxEntry is one server's entry of one mailbox, as ServerEntries
// lists them.
type MailboxEntry struct {
	Mailbox string
	Entry
}

// Change reports a mailbox whose cluster-wide counts changed; Gone means no
// server holds counts of it any longer (Counts are then zero).
type Change struct {
	Mailbox string
	Counts  Counts
	Gone    bool
}

// Table holds, per mailbox ("mailbox@context", a case-sensitive key),
// every server's counts, and keeps the cluster-wide counts up to date by
// its Merge. A mailbox with no entry left disappears.
//
// A Table is not safe for concurrent use: one goroutine owns it.
//
// Each mailbox keeps its entries ordered from the oldest update to the
// newest, so that under Latest the aggregate is the last entry, and when
// the newest writer goes, the next newest takes over. Setting the counts of
// an existing mailbox and server allocates nothing. List keeps a sorted
// index that it repairs only when mailboxes came or went, by sorting the
// new ones and merging them in.
type Table struct {
	merge   Merge
	max     int
	boxes   map[string]*box
	servers map[devstate.EID]int32 // server → number of entries it holds
	sorted  []*box                 // in mailbox order as of the last sort; may hold gone boxes
	pending []*box                 // added since the last sort; may hold gone boxes
	stale   int                    // gone boxes in sorted
}

type box struct {
	name    string
	entries []entry // oldest update first
	agg     Counts
	live    bool // held by the table (a box that went is never re-used)
	indexed bool // in Table.sorted
}

type entry struct {
	updated int64 // Unix nanoseconds; 0 for the zero time
	eid     devstate.EID
	counts  Counts
}

// NewTable returns an empty table merging by merge that holds at most
// maxMailboxes mailboxes; maxMailboxes <= 0 means DefaultMaxMailboxes.
func NewTable(merge Merge, maxMailboxes int) *Table {
	if maxMailboxes <= 0 {
		maxMailboxes = DefaultMaxMailboxes
	}
	return &Table{
		merge:   merge,
		max:     maxMailboxes,
		boxes:   make(map[string]*box),
		servers: make(map[devstate.EID]int32),
	}
}

// Merge is the table's merge rule.
func (t *Table) Merge() Merge { return t.merge }

// Admit decides whether server eid may add an entry it does not hold yet
// (newMailbox: of a mailbox the table does not hold at all). A non-nil
// error refuses it and is returned by SetChecked as it is.
type Admit func(eid devstate.EID, newMailbox bool) error

// Set records server eid's counts of mailbox, updated at now, and returns the
// mailbox's cluster-wide counts and whether they changed (always true for
// a mailbox the table did not hold). On error (ErrFull, ErrNoMailbox,
// ErrCounts) the table is unchanged and agg is the current aggregate.
func (t *Table) Set(mailbox string, eid devstate.EID, c Counts, now time.Time) (agg Counts, changed bool, err error) {
	return t.SetChecked(mailbox, eid, c, now, nil)
}

// SetChecked is Set that asks admit, when it is not nil, before eid adds an
// entry it does not hold yet; updates of eid's entries are not asked about.
// admit runs before the table's own bounds are checked; if it refuses, the
// table is unchanged.
func (t *Table) SetChecked(mailbox string, eid devstate.EID, c Counts, now time.Time, admit Admit) (agg Counts, changed bool, err error) {
	b := t.boxes[mailbox]
	if b != nil {
		agg = b.agg
	}
	if c.New < 0 || c.Old < 0 {
		return agg, false, fmt.Errorf("set %s: %w (new %d, old %d)", mailbox, ErrCounts, c.New, c.Old)
	}
	e := entry{updated: unixNano(now), eid: eid, counts: c}
	if b != nil {
		if i := b.find(eid); i >= 0 {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
		} else {
			if admit != nil {
				if err := admit(eid, false); err != nil {
					return agg, false, err
				}
			}
			if err := t.addServer(eid); err != nil {
				return agg, false, err
			}
		}
		b.insert(e)
		return t.update(b)
	}
	if mailbox == "" {
		return Counts{}, false, ErrNoMailbox
	}
	if admit != nil {
		if err := admit(eid, true); err != nil {
			return Counts{}, false, err
		}
	}
	if len(t.boxes) >= t.max {
		return Counts{}, false, fmt.Errorf("add mailbox %q: %w (%d mailboxes)", mailbox, ErrFull, t.max)
	}
	if err := t.addServer(eid); err != nil {
		return Counts{}, false, err
	}
	// Clone: the name may be a slice of a larger buffer the table must not
	// keep alive.
	mailbox = strings.Clone(mailbox)
	b = &box{name: mailbox, entries: []entry{e}, agg: c, live: true}
	t.boxes[mailbox] = b
	t.pending = append(t.pending, b)
	if len(t.pending) > 2*len(t.boxes)+1024 {
		t.sortIndex() // keep pending bounded while mailboxes come and go unlisted
	}
	return c, true, nil
}

// insert places e after every entry not newer than it.
func (b *box) insert(e entry) {
	i := len(b.entries)
	for i > 0 && b.entries[i-1].updated > e.updated {
		i--
	}
	b.entries = slices.Insert(b.entries, i, e)
}

func (t *Table) update(b *box) (Counts, bool, error) {
	old := b.agg
	b.agg = t.aggregate(b.entries)
	return b.agg, b.agg != old, nil
}

func (t *Table) aggregate(es []entry) Counts {
	if len(es) == 0 {
		return Counts{}
	}
	if t.merge != Sum {
		return es[len(es)-1].counts
	}
	var sum Counts
	for i := range es {
		sum.New = addSat(sum.New, es[i].counts.New)
		sum.Old = addSat(sum.Old, es[i].counts.Old)
	}
	return sum
}

// addSat adds two counts that are not negative, stopping at the largest int
// rather than wrapping.
func addSat(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

// Remove drops server eid's entry of mailbox. It returns the mailbox's
// cluster-wide counts afterwards, whether they changed, and whether the
// mailbox is gone because no server holds it any longer (then agg is zero
// and changed is true). Removing an entry that is not there changes
// nothing.
func (t *Table) Remove(mailbox string, eid devstate.EID) (agg Counts, changed, gone bool) {
	b := t.boxes[mailbox]
	if b == nil {
		return Counts{}, false, false
	}
	i := b.find(eid)
	if i < 0 {
		return b.agg, false, false
	}
	return t.removeAt(b, i)
}

// removeAt drops entry i of the mailbox b.
func (t *Table) removeAt(b *box, i int) (agg Counts, changed, gone bool) {
	t.dropServer(b.entries[i].eid)
	b.entries = slices.Delete(b.entries, i, i+1)
	if len(b.entries) == 0 {
		delete(t.boxes, b.name)
		b.live, b.entries = false, nil
		if b.indexed {
			t.stale++
		}
		return Counts{}, true, true
	}
	agg, changed, _ = t.update(b)
	return agg, changed, false
}

// RemoveServer drops every entry of server eid, as when that server leaves
// the cluster, and returns the mailboxes whose cluster-wide counts changed
// or that are gone, sorted by mailbox.
func (t *Table) RemoveServer(eid devstate.EID) []Change {
	n := t.servers[eid]
	if n == 0 {
		return nil
	}
	var changes []Change
	for _, b := range t.boxes {
		if n == 0 {
			break
		}
		i := b.find(eid)
		if i < 0 {
			continue
		}
		n--
		agg, changed, gone := t.removeAt(b, i)
		if changed {
			changes = append(changes, Change{Mailbox: b.name, Counts: agg, Gone: gone})
		}
	}
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Mailbox, b.Mailbox) })
	return changes
}

// Get returns the mailbox's cluster-wide counts; ok is false if no server
// holds counts of it.
func (t *Table) Get(mailbox string) (agg Counts, ok bool) {
	b := t.boxes[mailbox]
	if b == nil {
		return Counts{}, false
	}
	return b.agg, true
}

// Entries returns every server's entry of mailbox, sorted by EID; nil if
// the table does not hold the mailbox.
func (t *Table) Entries(mailbox string) []Entry {
	b := t.boxes[mailbox]
	if b == nil {
		return nil
	}
	out := make([]Entry, len(b.entries))
	for i := range b.entries {
		out[i] = b.entries[i].export()
	}
	slices.SortFunc(out, func(a, b Entry) int { return bytes.Compare(a.EID[:], b.EID[:]) })
	return out
}

// ServerEntries returns server eid's entries, sorted by mailbox: what that
// server has published, e.g. this node's own counts to republish.
func (t *Table) ServerEntries(eid devstate.EID) []MailboxEntry {
	n := t.servers[eid]
	if n == 0 {
		return nil
	}
	out := make([]MailboxEntry, 0, n)
	for _, b := range t.boxes {
		if i := b.find(eid); i >= 0 {
			out = append(out, MailboxEntry{Mailbox: b.name, Entry: b.entries[i].export()})
		}
	}
	slices.SortFunc(out, func(a, b MailboxEntry) int { return strings.Compare(a.Mailbox, b.Mailbox) })
	return out
}

// List returns every mailbox and its cluster-wide counts, sorted by
// mailbox. Per-server details are in Entries.
func (t *Table) List() []MailboxState {
	t.sortIndex()
	out := make([]MailboxState, len(t.sorted))
	for i, b := range t.sorted {
		out[i] = MailboxState{Mailbox: b.name, Counts: b.agg}
	}
	return out
}

// sortIndex brings t.sorted up to date: it drops the mailboxes that went,
// sorts the ones added since, and merges the two.
func (t *Table) sortIndex() {
	if len(t.pending) == 0 && t.stale == 0 {
		return
	}
	kept := t.sorted[:0]
	for _, b := range t.sorted {
		if b.live {
			kept = append(kept, b)
		}
	}
	clear(t.sorted[len(kept):]) // let gone boxes be collected
	var add []*box
	for _, b := range t.pending {
		if b.live {
			b.indexed = true
			add = append(add, b)
		}
	}
	clear(t.pending)
	t.pending, t.stale = t.pending[:0], 0
	byName := func(a, b *box) int { return strings.Compare(a.name, b.name) }
	slices.SortFunc(add, byName)
	// Merge from the back so that kept can grow in place: each new box
	// finds its place by binary search and the boxes after it move as one
	// block, so a few new mailboxes cost few comparisons.
	n := len(kept)
	merged := slices.Grow(kept, len(add))[:n+len(add)]
	i, k := n, len(merged) // merged[:i] holds the kept boxes not yet placed; merged[k:] is final
	for j := len(add) - 1; j >= 0; j-- {
		p := sort.Search(i, func(x int) bool { return byName(merged[x], add[j]) > 0 })
		k -= i - p
		copy(merged[k:], merged[p:i])
		k--
		merged[k] = add[j]
		i = p
	}
	t.sorted = merged
}

// Len is the number of mailboxes held.
func (t *Table) Len() int { return len(t.boxes) }

// Held is the number of entries server eid holds (the mailboxes it has
// counts of).
func (t *Table) Held(eid devstate.EID) int { return int(t.servers[eid]) }

// Servers returns the servers that hold at least one entry, sorted.
func (t *Table) Servers() []devstate.EID {
	out := make([]devstate.EID, 0, len(t.servers))
	for eid := range t.servers {
		out = append(out, eid)
	}
	slices.SortFunc(out, func(a, b devstate.EID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// find returns the index in b.entries of eid's entry, or -1.
func (b *box) find(eid devstate.EID) int {
	for i := range b.entries {
		if b.entries[i].eid == eid {
			return i
		}
	}
	return -1
}

func (e *entry) export() Entry {
	x := Entry{EID: e.eid, Counts: e.counts}
	if e.updated != 0 {
		x.Updated = time.Unix(0, e.updated).UTC()
	}
	return x
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func (t *Table) addServer(eid devstate.EID) error {
	n, ok := t.servers[eid]
	if !ok && len(t.servers) >= MaxServers {
		return fmt.Errorf("add server %s: %w (%d servers)", eid, ErrFull, MaxServers)
	}
	t.servers[eid] = n + 1
	return nil
}

func (t *Table) dropServer(eid devstate.EID) {
	if n := t.servers[eid]; n > 1 {
		t.servers[eid] = n - 1
	} else {
		delete(t.servers, eid)
	}
}
