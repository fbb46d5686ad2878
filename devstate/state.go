// Package devstate owns device states: the nine values with Asterisk's names,
// the cluster-wide aggregation rule of Asterisk's devicestate.c, the entity
// id (EID) that names a server, and the per-server table of device states.
// It does no I/O.
package devstate

import "strings"

// State is one device state. The zero value is Unknown, which is also what
// any unrecognised name reads as. The numeric values are Asterisk's enum
// ast_device_state, so they also match what an AMI client may expect.
type State uint8

// The device states, numbered as Asterisk numbers them.
const (
	Unknown     State = 0
	NotInUse    State = 1
	InUse       State = 2
	Busy        State = 3
	Invalid     State = 4
	Unavailable State = 5
	Ringing     State = 6
	RingInUse   State = 7
	OnHold      State = 8

	numStates = 9
)

// names are Asterisk's spellings (ast_devstate_str), indexed by State.
var names = [numStates]string{
	Unknown:     "UNKNOWN",
	NotInUse:    "NOT_INUSE",
	InUse:       "INUSE",
	Busy:        "BUSY",
	Invalid:     "INVALID",
	Unavailable: "UNAVAILABLE",
	Ringing:     "RINGING",
	RingInUse:   "RINGINUSE",
	OnHold:      "ONHOLD",
}

// States lists every state in Asterisk's numeric order.
var States = [numStates]State{Unknown, NotInUse, InUse, Busy, Invalid, Unavailable, Ringing, RingInUse, OnHold}

// String returns Asterisk's name of s; a value out of range reads UNKNOWN.
func (s State) String() string {
	if int(s) < numStates {
		return names[s]
	}
	return names[Unknown]
}

// Valid reports whether s is one of the nine states.
func (s State) Valid() bool { return int(s) < numStates }

// Parse reads a state name case-insensitively, ignoring surrounding blanks.
// Anything that is not one of the nine names reads as Unknown, as in
// Asterisk's ast_devstate_val; ok says whether the name was recognised.
func Parse(name string) (s State, ok bool) {
	name = strings.TrimSpace(name)
	for i, n := range names {
		if len(n) == len(name) && strings.EqualFold(n, name) {
			return State(i), true
		}
	}
	return Unknown, false
}

// rank orders states for the merge, low to high (PROTOCOL.md).
var rank = [numStates]uint8{
	Invalid:     0,
	Unknown:     1,
	Unavailable: 2,
	NotInUse:    3,
	OnHold:      4,
	Ringing:     5,
	InUse:       6,
	Busy:        7,
	RingInUse:   8,
}

// Aggregate merges the states that several servers hold for one device into
// the cluster-wide state, by Asterisk's rule (ast_devstate_aggregate): it
// starts at Invalid; Ringing sets a ringing flag, InUse, Busy and OnHold set
// an in-use flag; with both flags the result is RingInUse, otherwise the
// state with the higher rank wins. The zero Aggregate reads Invalid.
type Aggregate struct {
	state   State
	set     bool // state holds a value; the zero value means Invalid
	ringing bool
	inUse   bool
}

// Add folds one server's state into the aggregate.
func (a *Aggregate) Add(s State) {
	if !s.Valid() {
		s = Unknown
	}
	switch s {
	case Ringing:
		a.ringing = true
	case InUse, Busy, OnHold:
		a.inUse = true
	}
	cur := a.Result()
	if a.ringing && a.inUse {
		a.state, a.set = RingInUse, true
		return
	}
	if rank[s] > rank[cur] {
		a.state, a.set = s, true
	} else {
		a.state, a.set = cur, true
	}
}

// Result is the merged state.
func (a *Aggregate) Result() State {
	if !a.set {
		return Invalid
	}
	return a.state
}

// Merge is the cluster-wide state of the given per-server states; with no
// states it is Invalid.
func Merge(states ...State) State {
	var a Aggregate
	for _, s := range states {
		a.Add(s)
	}
	return a.Result()
}
