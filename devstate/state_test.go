package devstate

import (
	"fmt"
	"math/rand"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want State
		ok   bool
	}{
		{"UNKNOWN", Unknown, true},
		{"NOT_INUSE", NotInUse, true},
		{"INUSE", InUse, true},
		{"BUSY", Busy, true},
		{"INVALID", Invalid, true},
		{"UNAVAILABLE", Unavailable, true},
		{"RINGING", Ringing, true},
		{"RINGINUSE", RingInUse, true},
		{"ONHOLD", OnHold, true},
		{"not_inuse", NotInUse, true},
		{"Not_InUse", NotInUse, true},
		{"ringinuse", RingInUse, true},
		{"oNhOlD", OnHold, true},
		{"unknown", Unknown, true},
		{" BUSY ", Busy, true},
		{"\tinuse\n", InUse, true},
		// Anything else reads as UNKNOWN.
		{"", Unknown, false},
		{"   ", Unknown, false},
		{"FOO", Unknown, false},
		{"NOT INUSE", Unknown, false},
		{"NOTINUSE", Unknown, false},
		{"INUSEX", Unknown, false},
		{"RING", Unknown, false},
		{"IN_USE", Unknown, false},
		{"ONHOLD\x00", Unknown, false},
		{"2", Unknown, false},
		{"ſ", Unknown, false},
	}
	for _, tt := range tests {
		got, ok := Parse(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Parse(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestString(t *testing.T) {
	want := map[State]string{
		Unknown:     "UNKNOWN",
		NotInUse:    "NOT_INUSE",
		InUse:       "INUSE",
		Busy:        "BUSY",
		Invalid:     "INVALID",
		Unavailable: "UNAVAILABLE",
		Ringing:     "RINGING",
		RingInUse:   "RINGINUSE",
		OnHold:      "ONHOLD",
		9:           "UNKNOWN",
		255:         "UNKNOWN",
	}
	for s, w := range want {
		if got := s.String(); got != w {
			t.Errorf("State(%d).String() = %q, want %q", uint8(s), got, w)
		}
	}
	// Asterisk's numbering (enum ast_device_state).
	for i, s := range States {
		if int(s) != i || !s.Valid() {
			t.Errorf("States[%d] = %d (valid %v)", i, s, s.Valid())
		}
		if back, ok := Parse(s.String()); !ok || back != s {
			t.Errorf("Parse(%q) = %v, %v; want %v", s.String(), back, ok, s)
		}
	}
	if State(9).Valid() {
		t.Error("State(9).Valid() = true")
	}
}

// mergeTable is Asterisk's aggregation of two states, written out from the
// rule in PROTOCOL.md: RINGING with any of INUSE, BUSY, ONHOLD gives
// RINGINUSE; otherwise the higher rank wins (INVALID 0, UNKNOWN 1,
// UNAVAILABLE 2, NOT_INUSE 3, ONHOLD 4, RINGING 5, INUSE 6, BUSY 7,
// RINGINUSE 8). Rows are the first state, columns the second, both in
// Asterisk's numeric order.
var mergeTable = [numStates][numStates]State{
	//           UNKNOWN      NOT_INUSE    INUSE      BUSY       INVALID      UNAVAILABLE  RINGING    RINGINUSE  ONHOLD
	Unknown:     {Unknown, NotInUse, InUse, Busy, Unknown, Unavailable, Ringing, RingInUse, OnHold},
	NotInUse:    {NotInUse, NotInUse, InUse, Busy, NotInUse, NotInUse, Ringing, RingInUse, OnHold},
	InUse:       {InUse, InUse, InUse, Busy, InUse, InUse, RingInUse, RingInUse, InUse},
	Busy:        {Busy, Busy, Busy, Busy, Busy, Busy, RingInUse, RingInUse, Busy},
	Invalid:     {Unknown, NotInUse, InUse, Busy, Invalid, Unavailable, Ringing, RingInUse, OnHold},
	Unavailable: {Unavailable, NotInUse, InUse, Busy, Unavailable, Unavailable, Ringing, RingInUse, OnHold},
	Ringing:     {Ringing, Ringing, RingInUse, RingInUse, Ringing, Ringing, Ringing, RingInUse, RingInUse},
	RingInUse:   {RingInUse, RingInUse, RingInUse, RingInUse, RingInUse, RingInUse, RingInUse, RingInUse, RingInUse},
	OnHold:      {OnHold, OnHold, InUse, Busy, OnHold, OnHold, RingInUse, RingInUse, OnHold},
}

func TestMergePairs(t *testing.T) {
	n := 0
	for _, a := range States {
		for _, b := range States {
			n++
			want := mergeTable[a][b]
			if got := Merge(a, b); got != want {
				t.Errorf("Merge(%v, %v) = %v, want %v", a, b, got, want)
			}
			var agg Aggregate
			agg.Add(a)
			agg.Add(b)
			if got := agg.Result(); got != want {
				t.Errorf("Aggregate{%v, %v} = %v, want %v", a, b, got, want)
			}
		}
	}
	if n != 81 {
		t.Fatalf("checked %d pairs, want 81", n)
	}
}

func TestMergeFewStates(t *testing.T) {
	if got := Merge(); got != Invalid {
		t.Errorf("Merge() = %v, want INVALID", got)
	}
	var zero Aggregate
	if got := zero.Result(); got != Invalid {
		t.Errorf("zero Aggregate = %v, want INVALID", got)
	}
	for _, s := range States {
		if got := Merge(s); got != s {
			t.Errorf("Merge(%v) = %v", s, got)
		}
	}
	// Values out of range read as Unknown, as they print.
	if got := Merge(State(9)); got != Unknown {
		t.Errorf("Merge(9) = %v, want UNKNOWN", got)
	}
	if got := Merge(State(200), Unavailable); got != Unavailable {
		t.Errorf("Merge(200, UNAVAILABLE) = %v, want UNAVAILABLE", got)
	}
	if got := Merge(Invalid, State(42)); got != Unknown {
		t.Errorf("Merge(INVALID, 42) = %v, want UNKNOWN", got)
	}
	// Three states: the flags persist across unrelated states.
	if got := Merge(OnHold, NotInUse, Ringing); got != RingInUse {
		t.Errorf("Merge(ONHOLD, NOT_INUSE, RINGING) = %v, want RINGINUSE", got)
	}
	if got := Merge(Ringing, Unavailable, Unknown, Busy, Invalid); got != RingInUse {
		t.Errorf("Merge(RINGING, UNAVAILABLE, UNKNOWN, BUSY, INVALID) = %v, want RINGINUSE", got)
	}
}

// refMerge is an order-free statement of the rule, written independently
// of Aggregate: RINGINUSE if any server reports it, or one reports RINGING
// and another INUSE, BUSY or ONHOLD; else the highest-ranked state; INVALID
// for none.
func refMerge(states []State) State {
	refRank := func(s State) int {
		switch s {
		case Invalid:
			return 0
		case Unknown:
			return 1
		case Unavailable:
			return 2
		case NotInUse:
			return 3
		case OnHold:
			return 4
		case Ringing:
			return 5
		case InUse:
			return 6
		case Busy:
			return 7
		case RingInUse:
			return 8
		}
		panic(fmt.Sprintf("state %d", s))
	}
	var anyRinging, anyInUse bool
	best := Invalid
	for _, s := range states {
		switch s {
		case Ringing:
			anyRinging = true
		case InUse, Busy, OnHold:
			anyInUse = true
		}
		if refRank(s) > refRank(best) {
			best = s
		}
	}
	if anyRinging && anyInUse {
		return RingInUse
	}
	return best
}

func TestMergeProperty(t *testing.T) {
	for _, seed := range []int64{1, 2, 3, 20240601} {
		rng := rand.New(rand.NewSource(seed))
		for n := 0; n < 5000; n++ {
			// Sizes up to 20; skewed choices so that rare mixes occur.
			k := rng.Intn(21)
			states := make([]State, k)
			pool := States[:]
			if rng.Intn(2) == 0 {
				pool = []State{Invalid, Unknown, Unavailable, NotInUse, Ringing}
				if rng.Intn(2) == 0 {
					pool = append(pool, OnHold)
				}
			}
			for i := range states {
				states[i] = pool[rng.Intn(len(pool))]
			}
			want := refMerge(states)
			if got := Merge(states...); got != want {
				t.Fatalf("seed %d: Merge(%v) = %v, want %v", seed, states, got, want)
			}
			// The order of the servers does not matter.
			for p := 0; p < 3; p++ {
				rng.Shuffle(len(states), func(i, j int) { states[i], states[j] = states[j], states[i] })
				if got := Merge(states...); got != want {
					t.Fatalf("seed %d: Merge(%v) = %v after shuffle, want %v", seed, states, got, want)
				}
			}
			// A Table holding the multiset, one server each, agrees.
			tab := NewTable(1)
			for i, s := range states {
				if _, _, err := tab.Set("dev", EID{0, 0, 0, 0, 0, byte(i)}, s, true, testTime); err != nil {
					t.Fatal(err)
				}
			}
			if got, ok := tab.Get("dev"); len(states) > 0 && (!ok || got != want) {
				t.Fatalf("seed %d: table of %v = %v, %v; want %v", seed, states, got, ok, want)
			}
		}
	}
}
