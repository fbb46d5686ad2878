package mwi

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

var (
	t0 = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	t1 = t0.Add(time.Second)
	t2 = t0.Add(2 * time.Second)
	t3 = t0.Add(3 * time.Second)

	srvA = devstate.EID{0, 0, 0, 0, 0, 0xa}
	srvB = devstate.EID{0, 0, 0, 0, 0, 0xb}
	srvC = devstate.EID{0, 0, 0, 0, 0, 0xc}
)

func TestCountsWaiting(t *testing.T) {
	if (Counts{}).Waiting() || (Counts{Old: 3}).Waiting() || !(Counts{New: 1}).Waiting() {
		t.Fatal("Waiting wrong")
	}
}

func TestParseMerge(t *testing.T) {
	for in, want := range map[string]Merge{"latest": Latest, "LATEST": Latest, " Sum ": Sum, "sum": Sum} {
		if got, err := ParseMerge(in); err != nil || got != want {
			t.Errorf("ParseMerge(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "last", "summ", "newest"} {
		if _, err := ParseMerge(in); err == nil {
			t.Errorf("ParseMerge(%q): no error", in)
		}
	}
	if Latest.String() != "latest" || Sum.String() != "sum" || Merge(9).String() != "Merge(9)" {
		t.Error("Merge.String wrong")
	}
}

// step is one operation on a table and what it must return. A step with
// remove set removes server's entry; otherwise it sets counts at time at.
type step struct {
	remove  bool
	server  devstate.EID
	counts  Counts
	at      time.Time
	agg     Counts
	changed bool
	gone    bool
}

func runSteps(t *testing.T, merge Merge, steps []step) {
	t.Helper()
	tab := NewTable(merge, 10)
	const mb = "1000@default"
	for i, s := range steps {
		if s.remove {
			agg, changed, gone := tab.Remove(mb, s.server)
			if agg != s.agg || changed != s.changed || gone != s.gone {
				t.Fatalf("%v step %d: Remove(%v) = %v, %v, %v; want %v, %v, %v", merge, i, s.server, agg, changed, gone, s.agg, s.changed, s.gone)
			}
			continue
		}
		agg, changed, err := tab.Set(mb, s.server, s.counts, s.at)
		if err != nil || agg != s.agg || changed != s.changed {
			t.Fatalf("%v step %d: Set(%v, %v) = %v, %v, %v; want %v, %v", merge, i, s.server, s.counts, agg, changed, err, s.agg, s.changed)
		}
		if got, ok := tab.Get(mb); !ok || got != s.agg {
			t.Fatalf("%v step %d: Get = %v, %v", merge, i, got, ok)
		}
	}
}

func TestTableLatest(t *testing.T) {
	runSteps(t, Latest, []step{
		{server: srvA, counts: Counts{2, 1}, at: t1, agg: Counts{2, 1}, changed: true},
		{server: srvB, counts: Counts{0, 3}, at: t2, agg: Counts{0, 3}, changed: true},
		{server: srvC, counts: Counts{5, 5}, at: t0, agg: Counts{0, 3}},                // older than B's: B stays
		{server: srvA, counts: Counts{2, 1}, at: t3, agg: Counts{2, 1}, changed: true}, // A again newest
		{server: srvA, counts: Counts{2, 1}, at: t3, agg: Counts{2, 1}},                // refresh, no change
		// The latest writer goes: the next newest (B at t2) takes over.
		{remove: true, server: srvA, agg: Counts{0, 3}, changed: true},
		{remove: true, server: srvA, agg: Counts{0, 3}}, // not there
		{remove: true, server: srvC, agg: Counts{0, 3}}, // not the latest: nothing changes
		{remove: true, server: srvB, agg: Counts{}, changed: true, gone: true},
		{remove: true, server: srvB},
	})
	// Equal times: the one set last wins; remove it and the other wins.
	runSteps(t, Latest, []step{
		{server: srvB, counts: Counts{1, 0}, at: t1, agg: Counts{1, 0}, changed: true},
		{server: srvA, counts: Counts{7, 0}, at: t1, agg: Counts{7, 0}, changed: true},
		{server: srvB, counts: Counts{3, 0}, at: t1, agg: Counts{3, 0}, changed: true},
		{server: srvC, counts: Counts{3, 0}, at: t1, agg: Counts{3, 0}},
		{remove: true, server: srvC, agg: Counts{3, 0}},
		{remove: true, server: srvB, agg: Counts{7, 0}, changed: true},
	})
	// An entry's update time moves with each Set: A set at t2, then again
	// at t0 (a clock stepped back) is older than B's t1.
	runSteps(t, Latest, []step{
		{server: srvA, counts: Counts{1, 1}, at: t2, agg: Counts{1, 1}, changed: true},
		{server: srvB, counts: Counts{2, 2}, at: t1, agg: Counts{1, 1}},
		{server: srvA, counts: Counts{3, 3}, at: t0, agg: Counts{2, 2}, changed: true},
		{remove: true, server: srvB, agg: Counts{3, 3}, changed: true},
	})
}

func TestTableSum(t *testing.T) {
	runSteps(t, Sum, []step{
		{server: srvA, counts: Counts{2, 1}, at: t1, agg: Counts{2, 1}, changed: true},
		{server: srvB, counts: Counts{0, 3}, at: t2, agg: Counts{2, 4}, changed: true},
		{server: srvC, counts: Counts{0, 0}, at: t0, agg: Counts{2, 4}},
		{server: srvA, counts: Counts{1, 2}, at: t3, agg: Counts{1, 5}, changed: true},
		{server: srvB, counts: Counts{1, 2}, at: t3, agg: Counts{2, 4}, changed: true},
		{server: srvA, counts: Counts{2, 1}, at: t3, agg: Counts{3, 3}, changed: true},
		{remove: true, server: srvA, agg: Counts{1, 2}, changed: true},
		{remove: true, server: srvC, agg: Counts{1, 2}},
		{remove: true, server: srvB, agg: Counts{}, changed: true, gone: true},
	})
	// Sums stop at the largest int instead of wrapping.
	runSteps(t, Sum, []step{
		{server: srvA, counts: Counts{math.MaxInt, 1}, at: t1, agg: Counts{math.MaxInt, 1}, changed: true},
		{server: srvB, counts: Counts{5, math.MaxInt}, at: t1, agg: Counts{math.MaxInt, math.MaxInt}, changed: true},
		{remove: true, server: srvA, agg: Counts{5, math.MaxInt}, changed: true},
	})
}

func TestTableErrors(t *testing.T) {
	tab := NewTable(Latest, 2)
	tab.Set("a@x", srvA, Counts{1, 0}, t1)
	tab.Set("b@x", srvA, Counts{1, 0}, t1)
	if _, changed, err := tab.Set("c@x", srvA, Counts{1, 0}, t1); !errors.Is(err, ErrFull) || changed || tab.Len() != 2 {
		t.Fatalf("Set beyond bound: %v, %v, Len %d", changed, err, tab.Len())
	}
	if agg, changed, err := tab.Set("a@x", srvB, Counts{4, 0}, t2); err != nil || !changed || agg != (Counts{4, 0}) {
		t.Fatalf("update of a held mailbox when full: %v %v %v", agg, changed, err)
	}
	if agg, changed, err := tab.Set("a@x", srvA, Counts{-1, 0}, t3); !errors.Is(err, ErrCounts) || changed || agg != (Counts{4, 0}) {
		t.Fatalf("negative count: %v %v %v", agg, changed, err)
	}
	if got := tab.Entries("a@x"); got[0].Counts != (Counts{1, 0}) {
		t.Fatalf("refused Set changed the entry: %v", got)
	}
	if _, _, err := tab.Set("", srvA, Counts{}, t1); !errors.Is(err, ErrNoMailbox) {
		t.Fatalf("empty mailbox: %v", err)
	}
	tab.Remove("b@x", srvA)
	if _, _, err := tab.Set("c@x", srvA, Counts{0, 0}, t1); err != nil {
		t.Fatalf("Set after room was made: %v", err)
	}

	tab = NewTable(Sum, 0)
	for i := range MaxServers {
		if _, _, err := tab.Set("m", devstate.EID{1, byte(i)}, Counts{1, 0}, t1); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := tab.Set("n", devstate.EID{2}, Counts{1, 0}, t1); !errors.Is(err, ErrFull) {
		t.Fatalf("server %d: %v", MaxServers+1, err)
	}
	if _, _, err := tab.Set("m", devstate.EID{2}, Counts{1, 0}, t1); !errors.Is(err, ErrFull) {
		t.Fatalf("server %d: %v", MaxServers+1, err)
	}
	if got, _ := tab.Get("m"); got != (Counts{MaxServers, 0}) {
		t.Fatalf("Get = %v", got)
	}
}

// SetChecked asks admit only before a server adds an entry it does not
// hold yet, says whether the mailbox is new, and leaves the table
// unchanged when admit refuses; Held follows what each server holds.
func TestTableSetChecked(t *testing.T) {
	tab := NewTable(Sum, 0)
	errNo := errors.New("no")
	type call struct {
		eid        devstate.EID
		newMailbox bool
	}
	var calls []call
	refuse := map[devstate.EID]bool{srvC: true}
	admit := func(eid devstate.EID, newMailbox bool) error {
		calls = append(calls, call{eid, newMailbox})
		if refuse[eid] {
			return errNo
		}
		return nil
	}
	set := func(mb string, eid devstate.EID, c Counts) (Counts, bool, error) {
		return tab.SetChecked(mb, eid, c, t0, admit)
	}
	for _, x := range []struct {
		mb  string
		eid devstate.EID
		c   Counts
	}{{"1@c", srvA, Counts{1, 0}}, {"1@c", srvB, Counts{2, 0}}, {"1@c", srvA, Counts{3, 0}}} { // the last an update: not asked
		if _, _, err := set(x.mb, x.eid, x.c); err != nil {
			t.Fatal(err)
		}
	}
	if agg, changed, err := set("1@c", srvC, Counts{7, 7}); err != errNo || agg != (Counts{5, 0}) || changed {
		t.Fatalf("refused entry of a held mailbox = %v, %v, %v; want 5/0, false, the admit's error", agg, changed, err)
	}
	if agg, changed, err := set("2@c", srvC, Counts{7, 7}); err != errNo || agg != (Counts{}) || changed {
		t.Fatalf("refused new mailbox = %v, %v, %v; want 0/0, false, the admit's error", agg, changed, err)
	}
	want := []call{{srvA, true}, {srvB, false}, {srvC, false}, {srvC, true}}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("admit calls %v, want %v", calls, want)
	}
	if tab.Len() != 1 || tab.Held(srvA) != 1 || tab.Held(srvB) != 1 || tab.Held(srvC) != 0 {
		t.Fatalf("Len %d, Held A %d B %d C %d; want 1, 1, 1, 0", tab.Len(), tab.Held(srvA), tab.Held(srvB), tab.Held(srvC))
	}
	refuse[srvC] = false
	for _, mb := range []string{"1@c", "2@c"} {
		if _, _, err := set(mb, srvC, Counts{1, 1}); err != nil {
			t.Fatal(err)
		}
	}
	if tab.Held(srvC) != 2 {
		t.Fatalf("Held C = %d, want 2", tab.Held(srvC))
	}
	tab.RemoveServer(srvC)
	tab.Remove("1@c", srvB)
	if tab.Held(srvC) != 0 || tab.Held(srvB) != 0 || tab.Held(srvA) != 1 {
		t.Fatalf("after removals Held A %d B %d C %d; want 1, 0, 0", tab.Held(srvA), tab.Held(srvB), tab.Held(srvC))
	}
	// The table's own bound still holds after an admit that lets all in.
	small := NewTable(Latest, 1)
	all := func(devstate.EID, bool) error { return nil }
	small.SetChecked("1@c", srvA, Counts{}, t0, all)
	if _, _, err := small.SetChecked("2@c", srvA, Counts{}, t0, all); !errors.Is(err, ErrFull) {
		t.Fatalf("past the bound with admit: %v, want ErrFull", err)
	}
}

func TestTableRemoveServerAndList(t *testing.T) {
	for _, merge := range []Merge{Latest, Sum} {
		tab := NewTable(merge, 0)
		tab.Set("300@default", srvA, Counts{1, 1}, t2)
		tab.Set("300@default", srvB, Counts{2, 0}, t1)
		tab.Set("100@default", srvA, Counts{4, 0}, t1) // gone
		tab.Set("200@default", srvB, Counts{0, 9}, t1) // not A's
		tab.Set("400@other", srvB, Counts{3, 0}, t1)
		tab.Set("400@other", srvA, Counts{0, 0}, t0) // older, and 0 under Sum: no change either way
		tab.List()
		got := tab.RemoveServer(srvA)
		// 300@default was {1,1} (Latest: A is newest) or {3,1} (Sum).
		want := []Change{{"100@default", Counts{}, true}, {"300@default", Counts{2, 0}, false}}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%v: RemoveServer =\n%v\nwant\n%v", merge, got, want)
		}
		wantList := []MailboxState{{"200@default", Counts{0, 9}}, {"300@default", Counts{2, 0}}, {"400@other", Counts{3, 0}}}
		if got := tab.List(); !reflect.DeepEqual(got, wantList) {
			t.Fatalf("%v: List = %v", merge, got)
		}
		if got := tab.RemoveServer(srvA); got != nil {
			t.Fatalf("%v: second RemoveServer = %v", merge, got)
		}
		if got := tab.Servers(); !reflect.DeepEqual(got, []devstate.EID{srvB}) {
			t.Fatalf("%v: Servers = %v", merge, got)
		}
	}
}

func TestTableEntries(t *testing.T) {
	tab := NewTable(Latest, 0)
	loc := time.FixedZone("X", -7200)
	tab.Set("1@d", srvC, Counts{1, 2}, t1.In(loc))
	tab.Set("1@d", srvA, Counts{3, 4}, t2)
	tab.Set("1@d", srvB, Counts{5, 6}, time.Time{})
	want := []Entry{
		{srvA, Counts{3, 4}, t2},
		{srvB, Counts{5, 6}, time.Time{}},
		{srvC, Counts{1, 2}, t1},
	}
	if got := tab.Entries("1@d"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Entries =\n%v\nwant\n%v", got, want)
	}
	if got := tab.Entries("2@d"); got != nil {
		t.Fatalf("Entries of unknown = %v", got)
	}
	tab.Set("0@d", srvC, Counts{7, 0}, t1)
	wantC := []MailboxEntry{{"0@d", Entry{srvC, Counts{7, 0}, t1}}, {"1@d", Entry{srvC, Counts{1, 2}, t1}}}
	if got := tab.ServerEntries(srvC); !reflect.DeepEqual(got, wantC) {
		t.Fatalf("ServerEntries = %v", got)
	}
}

func TestTableSetAllocs(t *testing.T) {
	for _, merge := range []Merge{Latest, Sum} {
		tab := NewTable(merge, 0)
		for s := range 4 {
			tab.Set("1000@default", devstate.EID{byte(s)}, Counts{1, 1}, t0)
		}
		i := 0
		allocs := testing.AllocsPerRun(1000, func() {
			i++
			tab.Set("1000@default", devstate.EID{byte(i % 4)}, Counts{i % 3, i % 5}, t0.Add(time.Duration(i)))
		})
		if allocs != 0 {
			t.Fatalf("%v: Set of an existing entry: %v allocs, want 0", merge, allocs)
		}
		admit := func(devstate.EID, bool) error { return nil }
		allocs = testing.AllocsPerRun(1000, func() {
			i++
			tab.SetChecked("1000@default", devstate.EID{byte(i % 4)}, Counts{i % 3, i % 5}, t0.Add(time.Duration(i)), admit)
		})
		if allocs != 0 {
			t.Fatalf("%v: SetChecked of an existing entry: %v allocs, want 0", merge, allocs)
		}
	}
}

// modelEntry is one server's counts with the order they came in.
type modelEntry struct {
	c   Counts
	at  int64
	seq int
}

type model map[string]map[devstate.EID]modelEntry

func (m model) agg(merge Merge, mb string) Counts {
	var out Counts
	var best *modelEntry
	for _, e := range m[mb] {
		out.New += e.c.New
		out.Old += e.c.Old
		if best == nil || e.at > best.at || e.at == best.at && e.seq > best.seq {
			best = &e
		}
	}
	if merge == Latest {
		if best == nil {
			return Counts{}
		}
		return best.c
	}
	return out
}

func TestTableRandom(t *testing.T) {
	for _, merge := range []Merge{Latest, Sum} {
		for _, seed := range []int64{1, 2, 3} {
			rng := rand.New(rand.NewSource(seed))
			const maxBoxes = 80
			tab := NewTable(merge, maxBoxes)
			m := model{}
			names := make([]string, 120)
			for i := range names {
				names[i] = fmt.Sprintf("%d@%c", rng.Intn(1000), 'a'+rng.Intn(3))
			}
			servers := []devstate.EID{srvA, srvB, srvC, {1}}
			for seq := 0; seq < 30000; seq++ {
				mb := names[rng.Intn(len(names))]
				srv := servers[rng.Intn(len(servers))]
				old, had := m.agg(merge, mb), m[mb] != nil
				switch op := rng.Intn(100); {
				case op < 60:
					c := Counts{rng.Intn(4), rng.Intn(4)}
					at := int64(rng.Intn(20)) // few distinct times: many ties
					agg, changed, err := tab.Set(mb, srv, c, t0.Add(time.Duration(at)))
					if !had && len(m) >= maxBoxes {
						if !errors.Is(err, ErrFull) {
							t.Fatalf("%v seed %d: Set beyond bound: %v", merge, seed, err)
						}
						continue
					}
					if !had {
						m[mb] = map[devstate.EID]modelEntry{}
					}
					m[mb][srv] = modelEntry{c, at, seq}
					want := m.agg(merge, mb)
					if err != nil || agg != want || changed != (!had || want != old) {
						t.Fatalf("%v seed %d op %d: Set = %v %v %v; want %v (was %v)", merge, seed, seq, agg, changed, err, want, old)
					}
				case op < 92:
					_, hadEntry := m[mb][srv]
					agg, changed, gone := tab.Remove(mb, srv)
					delete(m[mb], srv)
					wantGone := hadEntry && len(m[mb]) == 0
					if wantGone {
						delete(m, mb)
					}
					want := m.agg(merge, mb)
					if agg != want || gone != wantGone || changed != (wantGone || want != old) {
						t.Fatalf("%v seed %d op %d: Remove = %v %v %v; want %v gone %v", merge, seed, seq, agg, changed, gone, want, wantGone)
					}
				case op < 94:
					var want []Change
					for name, es := range m {
						if _, ok := es[srv]; !ok {
							continue
						}
						before := m.agg(merge, name)
						delete(es, srv)
						if len(es) == 0 {
							delete(m, name)
							want = append(want, Change{name, Counts{}, true})
						} else if a := m.agg(merge, name); a != before {
							want = append(want, Change{name, a, false})
						}
					}
					slices.SortFunc(want, func(a, b Change) int { return strings.Compare(a.Mailbox, b.Mailbox) })
					if got := tab.RemoveServer(srv); !reflect.DeepEqual(got, want) {
						t.Fatalf("%v seed %d op %d: RemoveServer =\n%v\nwant\n%v", merge, seed, seq, got, want)
					}
				default:
					var want []MailboxState
					for name := range m {
						want = append(want, MailboxState{name, m.agg(merge, name)})
					}
					sort.Slice(want, func(i, j int) bool { return want[i].Mailbox < want[j].Mailbox })
					got := tab.List()
					if len(got) == 0 && len(want) == 0 {
						break
					}
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("%v seed %d op %d: List =\n%v\nwant\n%v", merge, seed, seq, got, want)
					}
					es := tab.Entries(mb)
					if len(es) != len(m[mb]) || !slices.IsSortedFunc(es, func(a, b Entry) int { return bytes.Compare(a.EID[:], b.EID[:]) }) {
						t.Fatalf("%v seed %d op %d: Entries = %v", merge, seed, seq, es)
					}
				}
				if tab.Len() != len(m) {
					t.Fatalf("%v seed %d op %d: Len %d, model %d", merge, seed, seq, tab.Len(), len(m))
				}
			}
		}
	}
}

// TestTableChurnBounded: mailboxes that come and go without a List in
// between must not grow the table's bookkeeping.
func TestTableChurnBounded(t *testing.T) {
	tab := NewTable(Sum, 0)
	tab.Set("keep@x", srvA, Counts{1, 0}, t0)
	tab.List()
	for i := range 100000 {
		mb := fmt.Sprint(i, "@tmp")
		tab.Set(mb, srvA, Counts{1, 0}, t0)
		tab.Remove(mb, srvA)
	}
	if len(tab.pending) > 2*tab.Len()+1024 || len(tab.sorted) > 2 { // keep@x, and a box that went after the last repair
		t.Fatalf("after churn: %d pending, %d sorted", len(tab.pending), len(tab.sorted))
	}
	tab.Remove("keep@x", srvA)
	tab.Set("new@x", srvB, Counts{0, 2}, t1)
	if got := tab.List(); !reflect.DeepEqual(got, []MailboxState{{"new@x", Counts{0, 2}}}) {
		t.Fatalf("List = %v", got)
	}
}
