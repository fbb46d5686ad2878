package core

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// Room for states. max_devices (Config.MaxDevices) bounds three things, in
// each table (devices, mailboxes):
//
//   - the own room: this node's own entries, whatever remote servers hold,
//     so that no flood from the cluster locks out the PBX beside it;
//   - the remote room: the devices held by remote servers only (not by
//     this node too), in total;
//   - a share of half of it per remote source, an account (the bare JID
//     its EIDs are bound to; at most maxEIDsPerJID of them) or an EID not
//     yet bound to one: one source cannot take the whole remote room.
//
// Only the addition of an entry a server does not hold yet is checked;
// updates of what is held always work. The tables' hard bound is twice
// max_devices (own room + remote room), so memory stays bounded.

// ErrNoRoom is returned (wrapped) when a state is refused for want of
// room: SetDeviceState and SetMailbox when the own room is full.
var ErrNoRoom = errors.New("no room")

// Why a remote entry was refused; refusals are counted, not returned to
// anyone, so no message is built per refusal.
var (
	errPastShare  = errors.New("source past its share")
	errRemoteFull = errors.New("remote room full")
)

const (
	// refusalLogEvery is how often one source's refusals are logged.
	refusalLogEvery = 10 * time.Second
	// otherSource counts refusals of sources beyond maxServers.
	otherSource = "(other)"
)

// source is who holds a remote entry, for its share: an account, or an
// EID bound to none. A struct, not a string, so that counting a refusal
// builds no name.
type source struct {
	jid string
	eid devstate.EID
}

func (s source) String() string {
	if s.jid != "" {
		return s.jid
	}
	return s.eid.String()
}

// refusal counts what one source was refused.
type refusal struct {
	total    uint64
	unlogged int // since the last log line
	logged   time.Time
}

// holder is what the admission reads of either table.
type holder interface {
	Len() int
	Held(eid devstate.EID) int
}

// share is what one remote source may hold in each table.
func (a *Core) share() int { return max(a.cfg.MaxDevices/2, 1) }

// admitDevice and admitMailbox are the tables' admission checks (Admit),
// called under a.mu only when a server adds an entry it does not hold yet.
func (a *Core) admitDevice(eid devstate.EID, newDevice bool) error {
	return a.admitLocked(a.devices, "devices", eid, newDevice)
}

func (a *Core) admitMailbox(eid devstate.EID, newMailbox bool) error {
	return a.admitLocked(a.mailboxes, "mailboxes", eid, newMailbox)
}

func (a *Core) admitLocked(t holder, kind string, eid devstate.EID, newEntry bool) error {
	if eid == a.cfg.EID {
		if n := t.Held(eid); n >= a.cfg.MaxDevices {
			return fmt.Errorf("%w: this node holds %d own %s, the max_devices bound; raise [agent] max_devices", ErrNoRoom, n, kind)
		}
		return nil
	}
	if _, held := a.sourceOfLocked(t, eid); held >= a.share() {
		return errPastShare
	}
	if newEntry && t.Len()-t.Held(a.cfg.EID) >= a.cfg.MaxDevices {
		return errRemoteFull
	}
	return nil
}

// sourceOfLocked is the source eid's entries count for, and what that
// source holds in t.
func (a *Core) sourceOfLocked(t holder, eid devstate.EID) (source, int) {
	s := a.servers[eid]
	if s == nil || s.jid == "" {
		return source{eid: eid}, t.Held(eid)
	}
	p := a.jids[s.jid]
	if p == nil {
		return source{jid: s.jid}, t.Held(eid)
	}
	held := 0
	for e := range p.eids {
		held += t.Held(e)
	}
	if _, ok := p.eids[eid]; !ok {
		held += t.Held(eid) // a rebinding that found no room for the new account left it out
	}
	return source{jid: s.jid}, held
}

// refusedLocked handles a remote entry that the table did not take. It
// reports whether err was for want of room (then it is counted against
// the source and logged at most every refusalLogEvery per source).
func (a *Core) refusedLocked(t holder, kind, name string, eid devstate.EID, err error) bool {
	reason := ""
	switch {
	case errors.Is(err, errPastShare):
		reason = "share"
	case errors.Is(err, errRemoteFull):
		reason = "full"
	case errors.Is(err, devstate.ErrFull), errors.Is(err, mwi.ErrFull):
		reason = "table full"
	default:
		return false
	}
	src, held := a.sourceOfLocked(t, eid)
	r := a.refused[src]
	if r == nil {
		if len(a.refused) >= maxServers {
			src = source{jid: otherSource}
			r = a.refused[src]
		}
		if r == nil {
			if src.jid != "" {
				src.jid = strings.Clone(src.jid)
			}
			r = &refusal{}
			a.refused[src] = r
		}
	}
	a.refusedN++
	r.total++
	r.unlogged++
	now := a.now()
	if !r.logged.IsZero() && now.Sub(r.logged) < refusalLogEvery {
		return true
	}
	a.log.Warn("remote states refused: raise [agent] max_devices if this source is legitimate",
		"source", src.String(), "kind", kind, "refused", r.unlogged, "reason", reason, "last", name,
		"held", held, "share", a.share(), "remote_room", a.cfg.MaxDevices)
	r.logged, r.unlogged = now, 0
	return true
}

// SourceRefused is what one remote source was refused, as Stats lists it.
type SourceRefused struct {
	Source  string // bare JID, or the EID of a server bound to no account, or "(other)"
	Refused uint64
}

func (a *Core) refusedBySourceLocked() []SourceRefused {
	out := make([]SourceRefused, 0, len(a.refused))
	for src, r := range a.refused {
		out = append(out, SourceRefused{Source: src.String(), Refused: r.total})
	}
	slices.SortFunc(out, func(x, y SourceRefused) int { return strings.Compare(x.Source, y.Source) })
	return out
}
