package devstate

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unsafe"
)

var testTime = time.Date(2026, 11, 23, 9, 0, 0, 123456789, time.UTC)

var (
	eidA = EID{0, 0, 0, 0, 0, 0xa}
	eidB = EID{0, 0, 0, 0, 0, 0xb}
	eidC = EID{0, 0, 0, 0, 0, 0xc}
)

func mustSet(t *testing.T, tab *Table, dev string, eid EID, s State, wantAgg State, wantChanged bool) {
	t.Helper()
	agg, changed, err := tab.Set(dev, eid, s, true, testTime)
	if err != nil {
		t.Fatalf("Set(%s, %v, %v): %v", dev, eid, s, err)
	}
	if agg != wantAgg || changed != wantChanged {
		t.Fatalf("Set(%s, %v, %v) = %v, %v; want %v, %v", dev, eid, s, agg, changed, wantAgg, wantChanged)
	}
}

func TestTableSetGetRemove(t *testing.T) {
	tab := NewTable(10)
	if _, ok := tab.Get("SIP/100"); ok {
		t.Fatal("Get on empty table: ok")
	}
	mustSet(t, tab, "SIP/100", eidA, NotInUse, NotInUse, true) // new device
	mustSet(t, tab, "SIP/100", eidA, NotInUse, NotInUse, false)
	mustSet(t, tab, "SIP/100", eidB, Ringing, Ringing, true)
	mustSet(t, tab, "SIP/100", eidC, Unavailable, Ringing, false)
	mustSet(t, tab, "SIP/100", eidA, InUse, RingInUse, true)
	mustSet(t, tab, "SIP/100", eidB, NotInUse, InUse, true)
	mustSet(t, tab, "sip/100", eidA, Busy, Busy, true) // names are case-sensitive
	if got, ok := tab.Get("SIP/100"); !ok || got != InUse {
		t.Fatalf("Get(SIP/100) = %v, %v", got, ok)
	}
	if tab.Len() != 2 {
		t.Fatalf("Len = %d, want 2", tab.Len())
	}

	// Removing entries one by one; the last removal makes the device go.
	check := func(dev string, eid EID, wantAgg State, wantChanged, wantGone bool) {
		t.Helper()
		agg, changed, gone := tab.Remove(dev, eid)
		if agg != wantAgg || changed != wantChanged || gone != wantGone {
			t.Fatalf("Remove(%s, %v) = %v, %v, %v; want %v, %v, %v", dev, eid, agg, changed, gone, wantAgg, wantChanged, wantGone)
		}
	}
	check("SIP/100", eidA, NotInUse, true, false) // {B: NOT_INUSE, C: UNAVAILABLE}
	check("SIP/100", eidA, NotInUse, false, false)
	check("SIP/100", eidB, Unavailable, true, false)
	check("SIP/999", eidB, Invalid, false, false)
	check("SIP/100", eidC, Invalid, true, true)
	if _, ok := tab.Get("SIP/100"); ok {
		t.Fatal("SIP/100 still there after its last entry went")
	}
	if got := tab.Entries("SIP/100"); got != nil {
		t.Fatalf("Entries of a gone device = %v", got)
	}
	if tab.Len() != 1 {
		t.Fatalf("Len = %d, want 1", tab.Len())
	}
	if got := tab.Servers(); !reflect.DeepEqual(got, []EID{eidA}) {
		t.Fatalf("Servers = %v, want [A]", got)
	}
}

func TestTableEntries(t *testing.T) {
	tab := NewTable(0)
	t1 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	tab.Set("Custom:x", eidC, OnHold, false, t1)
	tab.Set("Custom:x", eidA, Busy, true, testTime)
	tab.Set("Custom:x", eidB, State(77), true, time.Time{}) // out of range: stored as UNKNOWN
	got := tab.Entries("Custom:x")
	want := []Entry{
		{EID: eidA, State: Busy, Cachable: true, Updated: testTime},
		{EID: eidB, State: Unknown, Cachable: true},
		{EID: eidC, State: OnHold, Cachable: false, Updated: t1.UTC()},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Entries =\n%v\nwant\n%v", got, want)
	}
	if !got[2].Updated.Equal(t1) {
		t.Errorf("Updated %v, want the instant %v", got[2].Updated, t1)
	}
	// A state change keeps everything else of the entry up to date.
	tab.Set("Custom:x", eidC, OnHold, true, testTime)
	if e := tab.Entries("Custom:x")[2]; !e.Cachable || !e.Updated.Equal(testTime) {
		t.Errorf("entry after refresh = %+v", e)
	}
	if got := tab.ServerEntries(eidC); len(got) != 1 || got[0].Device != "Custom:x" || got[0].State != OnHold {
		t.Errorf("ServerEntries(C) = %+v", got)
	}
	if got := tab.ServerEntries(EID{9}); got != nil {
		t.Errorf("ServerEntries(unknown) = %+v", got)
	}
}

func TestTableFull(t *testing.T) {
	tab := NewTable(2)
	mustSet(t, tab, "a", eidA, InUse, InUse, true)
	mustSet(t, tab, "b", eidA, InUse, InUse, true)
	agg, changed, err := tab.Set("c", eidA, InUse, true, testTime)
	if !errors.Is(err, ErrFull) || agg != Invalid || changed {
		t.Fatalf("Set beyond bound = %v, %v, %v; want ErrFull", agg, changed, err)
	}
	if tab.Len() != 2 {
		t.Fatalf("Len = %d after a refused Set", tab.Len())
	}
	// Existing devices still update, also from a new server.
	mustSet(t, tab, "a", eidB, Ringing, RingInUse, true)
	mustSet(t, tab, "b", eidA, NotInUse, NotInUse, true)
	// Room again once a device goes.
	tab.Remove("b", eidA)
	mustSet(t, tab, "c", eidA, Busy, Busy, true)
	if got := tab.List(); !reflect.DeepEqual(got, []DeviceState{{"a", RingInUse}, {"c", Busy}}) {
		t.Fatalf("List = %v", got)
	}

	if _, _, err := tab.Set("", eidA, InUse, true, testTime); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Set of empty name: %v", err)
	}
}

// SetChecked asks admit only before a server adds an entry it does not
// hold yet, says whether the device is new, and leaves the table unchanged
// when admit refuses; Held follows what each server holds.
func TestTableSetChecked(t *testing.T) {
	tab := NewTable(0)
	errNo := errors.New("no")
	type call struct {
		eid       EID
		newDevice bool
	}
	var calls []call
	refuse := map[EID]bool{eidC: true}
	admit := func(eid EID, newDevice bool) error {
		calls = append(calls, call{eid, newDevice})
		if refuse[eid] {
			return errNo
		}
		return nil
	}
	set := func(dev string, eid EID, s State) (State, bool, error) {
		return tab.SetChecked(dev, eid, s, true, testTime, admit)
	}
	if _, _, err := set("d", eidA, InUse); err != nil {
		t.Fatal(err)
	}
	if _, _, err := set("d", eidB, Ringing); err != nil {
		t.Fatal(err)
	}
	if _, _, err := set("d", eidA, Busy); err != nil { // an update: not asked
		t.Fatal(err)
	}
	before, _ := tab.Get("d")
	if agg, changed, err := set("d", eidC, OnHold); err != errNo || agg != before || changed {
		t.Fatalf("refused entry of a held device = %v, %v, %v; want %v, false, the admit's error", agg, changed, err, before)
	}
	if agg, changed, err := set("e", eidC, OnHold); err != errNo || agg != Invalid || changed {
		t.Fatalf("refused new device = %v, %v, %v; want INVALID, false, the admit's error", agg, changed, err)
	}
	want := []call{{eidA, true}, {eidB, false}, {eidC, false}, {eidC, true}}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("admit calls %v, want %v", calls, want)
	}
	if tab.Len() != 1 || tab.Held(eidA) != 1 || tab.Held(eidB) != 1 || tab.Held(eidC) != 0 {
		t.Fatalf("Len %d, Held A %d B %d C %d; want 1, 1, 1, 0", tab.Len(), tab.Held(eidA), tab.Held(eidB), tab.Held(eidC))
	}
	if es := tab.Entries("d"); len(es) != 2 {
		t.Fatalf("entries of d after a refusal: %v", es)
	}
	refuse[eidC] = false
	mustSet(t, tab, "e", eidC, OnHold, OnHold, true)
	mustSet(t, tab, "f", eidC, OnHold, OnHold, true)
	if tab.Held(eidC) != 2 {
		t.Fatalf("Held C = %d, want 2", tab.Held(eidC))
	}
	tab.RemoveServer(eidC)
	tab.Remove("d", eidB)
	if tab.Held(eidC) != 0 || tab.Held(eidB) != 0 || tab.Held(eidA) != 1 {
		t.Fatalf("after removals Held A %d B %d C %d; want 1, 0, 0", tab.Held(eidA), tab.Held(eidB), tab.Held(eidC))
	}
	// The table's own bound still holds after an admit that lets all in.
	small := NewTable(1)
	all := func(EID, bool) error { return nil }
	small.SetChecked("a", eidA, InUse, true, testTime, all)
	if _, _, err := small.SetChecked("b", eidA, InUse, true, testTime, all); !errors.Is(err, ErrFull) {
		t.Fatalf("past the bound with admit: %v, want ErrFull", err)
	}
}

func TestTableMaxServers(t *testing.T) {
	tab := NewTable(MaxServers + 10)
	for i := range MaxServers {
		if _, _, err := tab.Set(fmt.Sprint("d", i), EID{1, byte(i)}, InUse, true, testTime); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := tab.Set("d0", EID{2}, Ringing, true, testTime)
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Set from server %d: %v, want ErrFull", MaxServers+1, err)
	}
	if got, _ := tab.Get("d0"); got != InUse {
		t.Fatalf("refused Set changed d0 to %v", got)
	}
	if _, _, err := tab.Set("new", EID{2}, Ringing, true, testTime); !errors.Is(err, ErrFull) || tab.Len() != MaxServers {
		t.Fatalf("Set of a new device from a new server: %v, Len %d", err, tab.Len())
	}
	// A server with no entry left frees its place.
	tab.RemoveServer(EID{1, 5})
	mustSet(t, tab, "d0", EID{2}, Ringing, RingInUse, true)
	if n := len(tab.Servers()); n != MaxServers {
		t.Fatalf("%d servers", n)
	}
}

func TestTableRemoveServer(t *testing.T) {
	tab := NewTable(0)
	for _, x := range []struct {
		dev string
		eid EID
		s   State
	}{
		{"SIP/300", eidA, Ringing},
		{"SIP/300", eidB, InUse}, // RINGINUSE → INUSE
		{"SIP/100", eidA, NotInUse},
		{"SIP/100", eidB, NotInUse}, // unchanged
		{"SIP/200", eidA, Busy},     // gone
		{"Custom:z", eidA, OnHold},  // gone
		{"Custom:y", eidA, Busy},
		{"Custom:y", eidC, Unavailable}, // BUSY → UNAVAILABLE
		{"SIP/400", eidB, Busy},         // not A's
	} {
		if _, _, err := tab.Set(x.dev, x.eid, x.s, true, testTime); err != nil {
			t.Fatal(err)
		}
	}
	tab.List() // index the devices, so that removal must repair it
	got := tab.RemoveServer(eidA)
	want := []Change{
		{"Custom:y", Unavailable, false},
		{"Custom:z", Invalid, true},
		{"SIP/200", Invalid, true},
		{"SIP/300", InUse, false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("RemoveServer =\n%v\nwant\n%v", got, want)
	}
	if got := tab.RemoveServer(eidA); got != nil {
		t.Fatalf("second RemoveServer = %v", got)
	}
	wantList := []DeviceState{{"Custom:y", Unavailable}, {"SIP/100", NotInUse}, {"SIP/300", InUse}, {"SIP/400", Busy}}
	if got := tab.List(); !reflect.DeepEqual(got, wantList) {
		t.Fatalf("List = %v", got)
	}
	if got := tab.Servers(); !reflect.DeepEqual(got, []EID{eidB, eidC}) {
		t.Fatalf("Servers = %v", got)
	}
}

func TestTableSetAllocs(t *testing.T) {
	tab := NewTable(0)
	for i := range 100 {
		for s := range 4 {
			tab.Set(fmt.Sprint("SIP/", i), EID{byte(s)}, NotInUse, true, testTime)
		}
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		i++
		tab.Set("SIP/42", EID{byte(i % 4)}, States[i%numStates], i%2 == 0, testTime)
	})
	if allocs != 0 {
		t.Fatalf("Set of an existing entry: %v allocs, want 0", allocs)
	}
	admit := func(EID, bool) error { return nil }
	allocs = testing.AllocsPerRun(1000, func() {
		i++
		tab.SetChecked("SIP/42", EID{byte(i % 4)}, States[i%numStates], i%2 == 0, testTime, admit)
	})
	if allocs != 0 {
		t.Fatalf("SetChecked of an existing entry: %v allocs, want 0", allocs)
	}
}

// model is the obvious table: a map of maps.
type model map[string]map[EID]State

func (m model) agg(dev string) State {
	var states []State
	for _, s := range m[dev] {
		states = append(states, s)
	}
	return refMerge(states)
}

func (m model) list() []DeviceState {
	out := []DeviceState{}
	for dev := range m {
		out = append(out, DeviceState{dev, m.agg(dev)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// TestTableRandom runs random operations against the model, with a small
// bound and devices that come and go, so that slots are re-used and the
// sorted index must be repaired in every way.
func TestTableRandom(t *testing.T) {
	for _, seed := range []int64{1, 7, 99} {
		rng := rand.New(rand.NewSource(seed))
		const maxDev = 150
		tab := NewTable(maxDev)
		m := model{}
		names := make([]string, 300)
		for i := range names {
			names[i] = fmt.Sprintf("%c/%d", 'A'+rng.Intn(5), rng.Intn(1000))
		}
		eids := []EID{eidA, eidB, eidC, {1}, {2}}
		for step := 0; step < 40000; step++ {
			dev := names[rng.Intn(len(names))]
			eid := eids[rng.Intn(len(eids))]
			switch op := rng.Intn(100); {
			case op < 60:
				s := States[rng.Intn(numStates)]
				before, had := m[dev]
				old := m.agg(dev)
				agg, changed, err := tab.Set(dev, eid, s, true, testTime)
				if !had && len(m) >= maxDev {
					if !errors.Is(err, ErrFull) {
						t.Fatalf("seed %d step %d: Set beyond bound: %v", seed, step, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("seed %d step %d: %v", seed, step, err)
				}
				if before == nil {
					m[dev] = map[EID]State{}
				}
				m[dev][eid] = s
				want := m.agg(dev)
				if agg != want || changed != (!had || want != old) {
					t.Fatalf("seed %d step %d: Set(%s,%v,%v) = %v,%v; want %v (was %v, had %v)", seed, step, dev, eid, s, agg, changed, want, old, had)
				}
			case op < 90:
				old := m.agg(dev)
				_, had := m[dev][eid]
				agg, changed, gone := tab.Remove(dev, eid)
				delete(m[dev], eid)
				wantGone := had && len(m[dev]) == 0
				if wantGone {
					delete(m, dev)
				}
				want := m.agg(dev)
				if _, ok := m[dev]; !ok {
					want = Invalid
				}
				if agg != want || gone != wantGone || changed != (had && (wantGone || want != old)) {
					t.Fatalf("seed %d step %d: Remove(%s,%v) = %v,%v,%v", seed, step, dev, eid, agg, changed, gone)
				}
			case op < 92:
				var want []Change
				for d, es := range m {
					if _, ok := es[eid]; !ok {
						continue
					}
					old := m.agg(d)
					delete(es, eid)
					if len(es) == 0 {
						delete(m, d)
						want = append(want, Change{d, Invalid, true})
					} else if a := m.agg(d); a != old {
						want = append(want, Change{d, a, false})
					}
				}
				slices.SortFunc(want, func(a, b Change) int { return strings.Compare(a.Device, b.Device) })
				if got := tab.RemoveServer(eid); !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: RemoveServer(%v) =\n%v\nwant\n%v", seed, step, eid, got, want)
				}
			default:
				if got, want := tab.List(), m.list(); !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: List =\n%v\nwant\n%v", seed, step, got, want)
				}
				es := tab.Entries(dev)
				if len(es) != len(m[dev]) || !slices.IsSortedFunc(es, func(a, b Entry) int { return bytes.Compare(a.EID[:], b.EID[:]) }) {
					t.Fatalf("seed %d step %d: Entries(%s) = %v, model %v", seed, step, dev, es, m[dev])
				}
				for _, e := range es {
					if m[dev][e.EID] != e.State {
						t.Fatalf("seed %d step %d: Entries(%s) = %v, model %v", seed, step, dev, es, m[dev])
					}
				}
			}
			if tab.Len() != len(m) {
				t.Fatalf("seed %d step %d: Len %d, model %d", seed, step, tab.Len(), len(m))
			}
		}
		if got, want := tab.List(), m.list(); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: final List =\n%v\nwant\n%v", seed, got, want)
		}
	}
}

// TestTableChurnBounded: devices that come and go without a List in
// between must not grow the table's bookkeeping.
func TestTableChurnBounded(t *testing.T) {
	tab := NewTable(0)
	tab.Set("keep", eidA, InUse, true, testTime)
	for i := range 100000 {
		dev := fmt.Sprint("tmp/", i)
		tab.Set(dev, eidA, Ringing, true, testTime)
		tab.Remove(dev, eidA)
	}
	if len(tab.devs) > 2 || len(tab.pending) > 2*tab.Len()+1024 || len(tab.index) != 1 {
		t.Fatalf("after churn: %d slots, %d pending, %d devices", len(tab.devs), len(tab.pending), len(tab.index))
	}
	if got := tab.List(); !reflect.DeepEqual(got, []DeviceState{{"keep", InUse}}) {
		t.Fatalf("List = %v", got)
	}
}

func TestTableNameNotRetained(t *testing.T) {
	buf := []byte("<item id='SIP/100'>")
	name := string(buf[10:17])
	tab := NewTable(0)
	tab.Set(name[:], eidA, InUse, true, testTime)
	got := tab.List()[0].Device
	if got != "SIP/100" {
		t.Fatalf("device %q", got)
	}
	if unsafeSameData(got, name) {
		t.Fatal("table keeps the caller's string data")
	}
}

func unsafeSameData(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
