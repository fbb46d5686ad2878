package cluster

import (
	"errors"
	"reflect"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// stateView reads memberlist's own view of each node's state, which its
// public API does not give in two cases busylamp needs:
//
//   - Left or dead: memberlist's one callback for both, NotifyLeave, passes
//     a Node whose State is always StateAlive, because the internal
//     nodeState shadows Node.State with a State field of its own
//     (hashicorp/memberlist#293, fix proposed in #321).
//   - Suspect: no callback at all, and the public Members() returns
//     pointers into the table that memberlist goes on writing after its
//     lock is released, so reading State from them is a data race.
//
// So this reads the table the only safe way, under memberlist's own lock,
// reaching the unexported fields by reflection. The layout is checked once
// against the pinned version (v0.7.0). If #321 lands, the field lookup
// finds Node.State instead and still reads the right value; if the layout
// changes otherwise, newStateView fails, Start logs it, suspect is not
// shown and a departure whose kind is unknown is reported as dead
// (TestStateView fails to say so).
type stateView struct {
	mu    *sync.RWMutex
	nodes reflect.Value // []*nodeState
}

// nodeLayout is where the fields are, found once.
type nodeLayout struct {
	lock, nodes  []int // in Memberlist
	node, state  []int // in nodeState
	change, name []int // in nodeState, in Node
}

var layout = sync.OnceValues(func() (nodeLayout, error) {
	var l nodeLayout
	mt := reflect.TypeFor[memberlist.Memberlist]()
	lock, ok := mt.FieldByName("nodeLock")
	if !ok || lock.Type != reflect.TypeFor[sync.RWMutex]() {
		return l, errors.New("memberlist has no nodeLock sync.RWMutex")
	}
	nodes, ok := mt.FieldByName("nodes")
	if !ok || nodes.Type.Kind() != reflect.Slice || nodes.Type.Elem().Kind() != reflect.Pointer ||
		nodes.Type.Elem().Elem().Kind() != reflect.Struct {
		return l, errors.New("memberlist has no nodes []*nodeState")
	}
	st := nodes.Type.Elem().Elem()
	node, ok := st.FieldByName("Node")
	if !ok || node.Type != reflect.TypeFor[memberlist.Node]() {
		return l, errors.New("nodeState has no Node")
	}
	state, ok := st.FieldByName("State") // nodeState's own, or Node's if #321 lands
	if !ok || state.Type != reflect.TypeFor[memberlist.NodeStateType]() {
		return l, errors.New("nodeState has no State")
	}
	change, ok := st.FieldByName("StateChange")
	if !ok || change.Type != reflect.TypeFor[time.Time]() {
		return l, errors.New("nodeState has no StateChange time.Time")
	}
	name, _ := reflect.TypeFor[memberlist.Node]().FieldByName("Name")
	return nodeLayout{
		lock: lock.Index, nodes: nodes.Index,
		node: node.Index, state: state.Index, change: change.Index,
		name: append(append([]int(nil), node.Index...), name.Index...),
	}, nil
})

func newStateView(ml *memberlist.Memberlist) (*stateView, error) {
	l, err := layout()
	if err != nil {
		return nil, err
	}
	v := reflect.ValueOf(ml).Elem()
	return &stateView{
		mu:    (*sync.RWMutex)(v.FieldByIndex(l.lock).Addr().UnsafePointer()),
		nodes: v.FieldByIndex(l.nodes),
	}, nil
}

// suspects returns the suspected members' names and since when.
func (s *stateView) suspects() map[string]time.Time {
	l, _ := layout()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out map[string]time.Time
	for i := range s.nodes.Len() {
		ns := s.nodes.Index(i).Elem()
		if memberlist.NodeStateType(ns.FieldByIndex(l.state).Int()) != memberlist.StateSuspect {
			continue
		}
		if out == nil {
			out = make(map[string]time.Time)
		}
		out[ns.FieldByIndex(l.name).String()] = *(*time.Time)(ns.FieldByIndex(l.change).Addr().UnsafePointer())
	}
	return out
}

// stateLocked returns memberlist's state of the node named name. The
// caller must hold memberlist's node lock, as its event callbacks do.
func (s *stateView) stateLocked(name string) (memberlist.NodeStateType, bool) {
	l, _ := layout()
	for i := range s.nodes.Len() {
		ns := s.nodes.Index(i).Elem()
		if ns.FieldByIndex(l.name).String() == name {
			return memberlist.NodeStateType(ns.FieldByIndex(l.state).Int()), true
		}
	}
	return 0, false
}
