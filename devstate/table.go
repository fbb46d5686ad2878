package devstate

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// DefaultMaxDevices is the bound NewTable uses when given none (the
// max_devices default of the config file).
const DefaultMaxDevices = 200000

// MaxServers bounds the distinct servers (EIDs) a Table holds entries of.
// EIDs arrive in payloads, so without a bound a misbehaving publisher could
// grow every device's entry list; 256 is far beyond any PBX cluster that
// shares one PubSub node. A server stops counting once it has no entry left.
const MaxServers = 256

var (
	// ErrFull is returned by Set for a new device beyond the table's bound,
	// or for a new server beyond MaxServers. Updates of what is already
	// held still work.
	ErrFull = errors.New("devstate: table full")
	// ErrNoDevice is returned by Set for an empty device name.
	ErrNoDevice = errors.New("devstate: empty device name")
)

// Entry is one server's state of a device.
type Entry struct {
	EID      EID
	State    State
	Cachable bool
	Updated  time.Time // as given to Set, kept to the nanosecond, in UTC and without a monotonic reading; zero if Set was given the zero time
}

// DeviceState is one device and its cluster-wide state.
type DeviceState struct {
	Device string
	State  State
}

// Change reports a device whose cluster-wide state changed; Gone means no
// server holds a state of it any longer (State is then Invalid).
type Change struct {
	Device string
	State  State
	Gone   bool
}

// DeviceEntry is one server's entry of one device, as ServerEntries lists
// them.
type DeviceEntry struct {
	Device string
	Entry
}

// Table holds, per device, every server's state of it, and keeps the
// cluster-wide state (Merge over the servers) up to date. Device names are
// case-sensitive keys. A device with no entry left disappears.
//
// A Table is not safe for concurrent use: one goroutine owns it.
//
// Layout, for memory and speed: a device's entries are one small slice of
// 16-byte values (no map per device) whose first element is a header
// holding the aggregate and the device's slot. The name → entries map finds
// them with one lookup and one more cache line, so setting the state of an
// existing device and server touches little memory and allocates nothing.
// Slots (name and the same slice) serve List, which keeps a sorted index
// of slots that it repairs only when devices came or went, by sorting the
// new ones and merging them in.
type Table struct {
	max     int
	index   map[string][]entry // device name → header and entries, as devs[slot].es
	devs    []record           // by slot
	free    []int32            // unused slots in devs
	servers map[EID]int32      // server → number of entries it holds
	sorted  []int32            // slots in device-name order as of the last sort; may hold stale slots
	pending []int32            // slots of devices added since the last sort; may hold stale slots
	stale   int                // slots in sorted whose device has gone since the last sort
	scratch []int32            // reused by sortIndex
}

type record struct {
	name    string  // "" for a free slot
	es      []entry // es[0] is the header (see head); es[1:] the servers' entries
	indexed bool    // this device (not just the slot) is in Table.sorted
}

// entry is Entry in 16 bytes. In a header entry, updated holds the slot
// and state the aggregate.
type entry struct {
	updated  int64 // Unix nanoseconds; 0 for the zero time
	eid      EID
	state    State
	cachable bool
}

func (r *record) live() bool { return r.name != "" }

// NewTable returns an empty table that holds at most maxDevices devices;
// maxDevices <= 0 means DefaultMaxDevices.
func NewTable(maxDevices int) *Table {
	if maxDevices <= 0 {
		maxDevices = DefaultMaxDevices
	}
	return &Table{
		max:     maxDevices,
		index:   make(map[string][]entry),
		servers: make(map[EID]int32),
	}
}

// Admit decides whether server eid may add an entry it does not hold yet
// (newDevice: of a device the table does not hold at all). A non-nil error
// refuses it and is returned by SetChecked as it is.
type Admit func(eid EID, newDevice bool) error

// Set records server eid's state of device and returns the device's
// cluster-wide state and whether that changed (always true for a device the
// table did not hold). A state out of range is stored as Unknown, as
// Aggregate reads it. err is ErrFull for a new device beyond the bound or a
// new server beyond MaxServers, ErrNoDevice for an empty name; the table is
// then unchanged and agg is the device's current state (Invalid if absent).
func (t *Table) Set(device string, eid EID, s State, cachable bool, now time.Time) (agg State, changed bool, err error) {
	return t.SetChecked(device, eid, s, cachable, now, nil)
}

// SetChecked is Set that asks admit, when it is not nil, before eid adds an
// entry it does not hold yet; updates of eid's entries are not asked about
// (and cost what they cost in Set). admit runs before the table's own
// bounds are checked; if it refuses, the table is unchanged.
func (t *Table) SetChecked(device string, eid EID, s State, cachable bool, now time.Time, admit Admit) (agg State, changed bool, err error) {
	if !s.Valid() {
		s = Unknown
	}
	e := entry{updated: unixNano(now), eid: eid, state: s, cachable: cachable}
	if es, ok := t.index[device]; ok {
		for i := 1; i < len(es); i++ {
			if es[i].eid == eid {
				old := es[i].state
				es[i] = e
				if old == s {
					return es[0].state, false, nil
				}
				return update(es)
			}
		}
		if admit != nil {
			if err := admit(eid, false); err != nil {
				return es[0].state, false, err
			}
		}
		if err := t.addServer(eid); err != nil {
			return es[0].state, false, err
		}
		es = t.store(es, append(grow(es), e))
		return update(es)
	}
	if device == "" {
		return Invalid, false, ErrNoDevice
	}
	if admit != nil {
		if err := admit(eid, true); err != nil {
			return Invalid, false, err
		}
	}
	if len(t.index) >= t.max {
		return Invalid, false, fmt.Errorf("add device %q: %w (%d devices)", device, ErrFull, t.max)
	}
	if err := t.addServer(eid); err != nil {
		return Invalid, false, err
	}
	slot := t.alloc()
	es := []entry{{updated: int64(slot), state: s}, e}
	// Clone: the name may be a slice of a larger buffer (a parsed stanza)
	// that the table must not keep alive.
	d := &t.devs[slot]
	d.name, d.es = strings.Clone(device), es
	t.index[d.name] = es
	t.addPending(slot)
	return s, true, nil
}

// grow makes room for one more entry in es: a quarter more, so that a
// device of 16 servers holds no more than 18 entries of room.
func grow(es []entry) []entry {
	if len(es) < cap(es) {
		return es
	}
	// Not append's doubling: that would give a device of 16 servers room
	// for 32.
	out := make([]entry, len(es), len(es)+1+len(es)/4)
	copy(out, es)
	return out
}

// store makes es the device's slice in both places, after its length or
// array changed (old is the slice as it was).
func (t *Table) store(old, es []entry) []entry {
	d := &t.devs[old[0].updated]
	d.es = es
	t.index[d.name] = es // d.name, not the caller's string: assigning replaces the key
	return es
}

// update recomputes the aggregate in es's header after an entry changed.
func update(es []entry) (State, bool, error) {
	old := es[0].state
	es[0].state = merge(es[1:])
	return es[0].state, es[0].state != old, nil
}

func merge(es []entry) State {
	var a Aggregate
	for i := range es {
		a.Add(es[i].state)
	}
	return a.Result()
}

// Remove drops server eid's entry of device. It returns the device's
// cluster-wide state afterwards, whether it changed, and whether the device
// is gone because no server holds it any longer (then agg is Invalid and
// changed is true). Removing an entry that is not there changes nothing.
func (t *Table) Remove(device string, eid EID) (agg State, changed, gone bool) {
	es, ok := t.index[device]
	if !ok {
		return Invalid, false, false
	}
	i := find(es, eid)
	if i < 0 {
		return es[0].state, false, false
	}
	return t.removeAt(es, i)
}

// removeAt drops entry i of the device es.
func (t *Table) removeAt(es []entry, i int) (agg State, changed, gone bool) {
	t.dropServer(es[i].eid)
	last := len(es) - 1
	es[i] = es[last]
	if last == 1 {
		t.freeSlot(int32(es[0].updated))
		return Invalid, true, true
	}
	es = t.store(es, es[:last])
	agg, changed, _ = update(es)
	return agg, changed, false
}

// RemoveServer drops every entry of server eid, as when that server leaves
// the cluster, and returns the devices whose cluster-wide state changed or
// that are gone, sorted by device name.
func (t *Table) RemoveServer(eid EID) []Change {
	n := t.servers[eid]
	if n == 0 {
		return nil
	}
	var changes []Change
	for slot := range t.devs {
		if n == 0 {
			break
		}
		d := &t.devs[slot]
		if !d.live() {
			continue
		}
		i := find(d.es, eid)
		if i < 0 {
			continue
		}
		n--
		name := d.name
		agg, changed, gone := t.removeAt(d.es, i)
		if changed {
			changes = append(changes, Change{Device: name, State: agg, Gone: gone})
		}
	}
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Device, b.Device) })
	return changes
}

// Get returns the device's cluster-wide state; ok is false if no server
// holds a state of it.
func (t *Table) Get(device string) (agg State, ok bool) {
	es, ok := t.index[device]
	if !ok {
		return Invalid, false
	}
	return es[0].state, true
}

// Entries returns every server's entry of device, sorted by EID; nil if the
// table does not hold the device.
func (t *Table) Entries(device string) []Entry {
	es, ok := t.index[device]
	if !ok {
		return nil
	}
	es = es[1:]
	out := make([]Entry, len(es))
	for i := range es {
		out[i] = es[i].export()
	}
	slices.SortFunc(out, func(a, b Entry) int { return bytes.Compare(a.EID[:], b.EID[:]) })
	return out
}

// ServerEntries returns server eid's entries, sorted by device: what that
// server has published, e.g. this node's own states to republish.
func (t *Table) ServerEntries(eid EID) []DeviceEntry {
	n := t.servers[eid]
	if n == 0 {
		return nil
	}
	out := make([]DeviceEntry, 0, n)
	for slot := range t.devs {
		d := &t.devs[slot]
		if !d.live() {
			continue
		}
		if i := find(d.es, eid); i >= 0 {
			out = append(out, DeviceEntry{Device: d.name, Entry: d.es[i].export()})
		}
	}
	slices.SortFunc(out, func(a, b DeviceEntry) int { return strings.Compare(a.Device, b.Device) })
	return out
}

// List returns every device and its cluster-wide state, sorted by device
// name. It costs one allocation and a pass over the devices; when devices
// came or went since the last List it also sorts the new names and merges
// them in. Per-server details are in Entries.
func (t *Table) List() []DeviceState {
	t.sortIndex()
	out := make([]DeviceState, len(t.sorted))
	for i, slot := range t.sorted {
		d := &t.devs[slot]
		out[i] = DeviceState{Device: d.name, State: d.es[0].state}
	}
	return out
}

// Len is the number of devices held.
func (t *Table) Len() int { return len(t.index) }

// Held is the number of entries server eid holds (the devices it has a
// state of).
func (t *Table) Held(eid EID) int { return int(t.servers[eid]) }

// Servers returns the servers that hold at least one entry, sorted.
func (t *Table) Servers() []EID {
	out := make([]EID, 0, len(t.servers))
	for eid := range t.servers {
		out = append(out, eid)
	}
	slices.SortFunc(out, func(a, b EID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// find returns the index in es of eid's entry, or -1.
func find(es []entry, eid EID) int {
	for i := 1; i < len(es); i++ {
		if es[i].eid == eid {
			return i
		}
	}
	return -1
}

func (e *entry) export() Entry {
	x := Entry{EID: e.eid, State: e.state, Cachable: e.cachable}
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

func (t *Table) addServer(eid EID) error {
	n, ok := t.servers[eid]
	if !ok && len(t.servers) >= MaxServers {
		return fmt.Errorf("add server %s: %w (%d servers)", eid, ErrFull, MaxServers)
	}
	t.servers[eid] = n + 1
	return nil
}

func (t *Table) dropServer(eid EID) {
	if n := t.servers[eid]; n > 1 {
		t.servers[eid] = n - 1
	} else {
		delete(t.servers, eid)
	}
}

func (t *Table) alloc() int32 {
	if n := len(t.free); n > 0 {
		slot := t.free[n-1]
		t.free = t.free[:n-1]
		return slot
	}
	t.devs = append(t.devs, record{})
	return int32(len(t.devs) - 1)
}

func (t *Table) freeSlot(slot int32) {
	d := &t.devs[slot]
	delete(t.index, d.name)
	if d.indexed {
		t.stale++
	}
	*d = record{}
	t.free = append(t.free, slot)
}

// addPending notes a new device for the sorted index. Should List not be
// called for long while devices come and go, the index is repaired early
// so that pending stays bounded by the number of devices.
func (t *Table) addPending(slot int32) {
	t.pending = append(t.pending, slot)
	if len(t.pending) > 2*len(t.index)+1024 {
		t.sortIndex()
	}
}

// sortIndex brings t.sorted up to date: it drops the slots of devices that
// have gone (a slot re-used by a new device is not indexed), sorts the
// devices added since, and merges the two.
func (t *Table) sortIndex() {
	if len(t.pending) == 0 && t.stale == 0 {
		return
	}
	kept := t.sorted[:0]
	for _, slot := range t.sorted {
		if d := &t.devs[slot]; d.live() && d.indexed {
			kept = append(kept, slot)
		}
	}
	add := t.scratch[:0]
	for _, slot := range t.pending {
		// A slot may be pending twice (its device went and another came);
		// indexed marks the first sighting of its current device.
		if d := &t.devs[slot]; d.live() && !d.indexed {
			d.indexed = true
			add = append(add, slot)
		}
	}
	t.pending = t.pending[:0]
	t.stale = 0
	if len(add) == 0 {
		t.sorted = kept
		t.scratch = add
		return
	}
	byName := func(a, b int32) int { return strings.Compare(t.devs[a].name, t.devs[b].name) }
	slices.SortFunc(add, byName)
	// Merge from the back so that kept can grow in place: each new slot
	// finds its place by binary search and the kept slots after it move
	// as one block, so a few new devices cost few comparisons.
	n := len(kept)
	merged := slices.Grow(kept, len(add))[:n+len(add)]
	i, k := n, len(merged) // merged[:i] holds the kept slots not yet placed; merged[k:] is final
	for j := len(add) - 1; j >= 0; j-- {
		p := sort.Search(i, func(x int) bool { return byName(merged[x], add[j]) > 0 })
		k -= i - p
		copy(merged[k:], merged[p:i])
		k--
		merged[k] = add[j]
		i = p
	}
	t.sorted = merged
	t.scratch = add[:0]
}
