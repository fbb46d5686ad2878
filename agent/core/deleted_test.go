package core

import (
	"fmt"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// republisher records republishes apart from live publishes.
type republisher struct {
	*recorder
	rep []published
}

func (r *republisher) RepublishDevice(string, devstate.State, bool) {}

func (r *republisher) RepublishMailbox(m string, c mwi.Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep = append(r.rep, published{mailbox: m, counts: c})
}

func (r *republisher) takeRep() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := ""
	for _, p := range r.rep {
		out += fmt.Sprintf("%s=%d/%d ", p.mailbox, p.counts.New, p.counts.Old)
	}
	r.rep = nil
	return out
}

func ownBoxes(a *Core) string {
	_, ms := a.OwnStates()
	out := ""
	for _, m := range ms {
		out += fmt.Sprintf("%s=%d/%d ", m.Mailbox, m.Counts.New, m.Counts.Old)
	}
	return out
}

// An own mailbox deleted before a restart (a tombstone of the store) is
// not taken back from the items nor from a buddy that missed the delete:
// the first republish sends its zero counts instead, once, behind live
// changes. Setting it again ends that; deleting it again starts it.
func TestForgottenOwnMailboxNotRestored(t *testing.T) {
	a, rec, _ := newTestCore(t, Config{})
	r := &republisher{recorder: rec}
	a.Attach(r, r)
	a.ForgetOwnMailboxes([]string{"1@c", "2@c"})
	a.Presence("b@x.test/r", true)

	a.Resync(nil, []MailboxItem{
		{Mailbox: "1@c", Counts: mwi.Counts{New: 3, Old: 1}, EID: eidA, Publisher: "a@x.test/r"},
		{Mailbox: "2@c", Counts: mwi.Counts{}, EID: eidA, Publisher: "a@x.test/r"},
		{Mailbox: "3@c", Counts: mwi.Counts{New: 4}, EID: eidA, Publisher: "a@x.test/r"},
	})
	if got := ownBoxes(a); got != "3@c=4/0 " {
		t.Fatalf("own mailboxes after the items: %q, want only 3@c", got)
	}
	a.ApplyServerStates(a.StatesRequest("b@x.test/r"), nil, []MailboxItem{
		{Mailbox: "9@b", Counts: mwi.Counts{New: 1}, EID: eidB},
		{Mailbox: "1@c", Counts: mwi.Counts{New: 5, Old: 5}, EID: eidA},
		{Mailbox: "2@c", Counts: mwi.Counts{New: 2}, EID: eidA},
	})
	if got := ownBoxes(a); got != "3@c=4/0 " {
		t.Fatalf("own mailboxes after the buddy's copy: %q, want only 3@c", got)
	}
	for _, m := range []string{"1@c", "2@c"} {
		if c, ok := a.MailboxCounts(m); ok {
			t.Fatalf("%s = %+v cluster-wide, want absent", m, c)
		}
	}
	equal(t, r.take(), "3@c=4/0", "9@b=1/0")
	if len(r.pubs) != 0 {
		t.Fatalf("published live during the resync: %v", r.pubs)
	}

	// The republish after the resync: own states, then the owed zeros;
	// through the republish lane only.
	a.Republish()
	if got := r.takeRep(); got != "3@c=4/0 1@c=0/0 2@c=0/0 " {
		t.Fatalf("first republish: %q", got)
	}
	a.Republish()
	if got := r.takeRep(); got != "3@c=4/0 " {
		t.Fatalf("second republish: %q, want the zeros only once", got)
	}
	if len(r.pubs) != 0 {
		t.Fatalf("republished as live changes: %v", r.pubs)
	}
	// A later resync (a reconnect) still does not take them back.
	a.Resync(nil, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{New: 3, Old: 1}, EID: eidA}})
	if got := ownBoxes(a); got != "3@c=4/0 " {
		t.Fatalf("own mailboxes after a reconnect: %q", got)
	}

	// The PBX sets it again: it is ours as set, and republished as such.
	if err := a.SetMailbox("1@c", mwi.Counts{New: 7}); err != nil {
		t.Fatal(err)
	}
	a.Republish()
	if got := r.takeRep(); got != "1@c=7/0 3@c=4/0 " {
		t.Fatalf("republish after a set: %q", got)
	}
	// Deleted live: its zeros go out live, and a resync that finds the
	// old counts (the zeros not yet at the server) leaves it deleted.
	if err := a.DeleteMailbox("1@c"); err != nil {
		t.Fatal(err)
	}
	if last := r.pubs[len(r.pubs)-1]; last.mailbox != "1@c" || last.counts != (mwi.Counts{}) {
		t.Fatalf("delete published %+v", last)
	}
	a.Resync(nil, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{New: 7}, EID: eidA}})
	a.ApplyServerStates(a.StatesRequest("b@x.test/r"), nil, []MailboxItem{
		{Mailbox: "9@b", Counts: mwi.Counts{New: 1}, EID: eidB},
		{Mailbox: "1@c", Counts: mwi.Counts{New: 7}, EID: eidA},
	})
	if got := ownBoxes(a); got != "3@c=4/0 " {
		t.Fatalf("own mailboxes after a live delete and a resync: %q", got)
	}
	a.Republish()
	if got := r.takeRep(); got != "3@c=4/0 " {
		t.Fatalf("republish after a live delete: %q (its zeros went out live)", got)
	}
}

// Without a republish lane, the owed zeros go out as publishes.
func TestForgottenOwnMailboxZerosPublished(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.ForgetOwnMailboxes([]string{"1@c", ""})
	a.Republish()
	if len(r.pubs) != 1 || r.pubs[0].mailbox != "1@c" || r.pubs[0].counts != (mwi.Counts{}) {
		t.Fatalf("published %+v, want 1@c's zero counts", r.pubs)
	}
}

// The deleted own mailboxes are bounded (by the mailbox table's bound
// here): past it the oldest is forgotten, and restored from the cluster.
func TestForgottenOwnMailboxesBounded(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 2})
	a.ForgetOwnMailboxes([]string{"1@c", "2@c", "3@c"})
	a.Resync(nil, []MailboxItem{
		{Mailbox: "1@c", Counts: mwi.Counts{New: 1}, EID: eidA},
		{Mailbox: "2@c", Counts: mwi.Counts{New: 2}, EID: eidA},
		{Mailbox: "3@c", Counts: mwi.Counts{New: 3}, EID: eidA},
	})
	if got := ownBoxes(a); got != "1@c=1/0 " {
		t.Fatalf("own mailboxes: %q, want only the oldest, forgotten, restored", got)
	}
}
