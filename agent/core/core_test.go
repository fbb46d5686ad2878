package core

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

type published struct {
	device, mailbox string
	state           devstate.State
	counts          mwi.Counts
}

type recorder struct {
	mu      sync.Mutex
	pubs    []published
	changes []string
}

func (r *recorder) PublishDevice(d string, s devstate.State, _ bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubs = append(r.pubs, published{device: d, state: s})
}
func (r *recorder) PublishMailbox(m string, c mwi.Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pubs = append(r.pubs, published{mailbox: m, counts: c})
}
func (r *recorder) DeviceChanged(d string, s devstate.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, d+"="+s.String())
}
func (r *recorder) MailboxChanged(m string, c mwi.Counts) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, fmt.Sprintf("%s=%d/%d", m, c.New, c.Old))
}
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.changes
	r.changes = nil
	return c
}

var (
	eidA = devstate.EID{2, 0, 0, 0, 0, 1}
	eidB = devstate.EID{2, 0, 0, 0, 0, 2}
	eidC = devstate.EID{2, 0, 0, 0, 0, 3}
)

// newTestCore makes a core on a ManualClock: grace periods pass when the
// test advances the clock, never by sleeping.
func newTestCore(t *testing.T, cfg Config) (*Core, *recorder, *ManualClock) {
	t.Helper()
	cfg.EID = eidA
	cfg.JID = "a@x.test/r"
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	clk := NewManualClock()
	cfg.Clock = clk
	a := New(cfg)
	r := &recorder{}
	a.Attach(r, r)
	t.Cleanup(a.Stop)
	return a, r, clk
}

func equal(t *testing.T, got []string, want ...string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestLocalAndRemoteMerge(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	if err := a.SetDeviceState("SIP/100", devstate.InUse); err != nil {
		t.Fatal(err)
	}
	equal(t, r.take(), "SIP/100=INUSE")
	if len(r.pubs) != 1 || r.pubs[0].state != devstate.InUse {
		t.Fatalf("published %v", r.pubs)
	}
	a.RemoteDevice(DeviceItem{Device: "SIP/100", State: devstate.Ringing, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take(), "SIP/100=RINGINUSE")
	// Same cluster-wide state again: no event.
	a.RemoteDevice(DeviceItem{Device: "SIP/100", State: devstate.Ringing, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take())
	// An echo of our own EID changes nothing, whatever it says.
	a.RemoteDevice(DeviceItem{Device: "SIP/100", State: devstate.NotInUse, EID: eidA})
	equal(t, r.take())
	if s, _ := a.DeviceState("SIP/100"); s != devstate.RingInUse {
		t.Fatalf("state %v", s)
	}
	if len(r.pubs) != 1 {
		t.Fatalf("remote input was published: %v", r.pubs)
	}
}

func TestBadInputRejected(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	long := strings.Repeat("x", devstate.MaxNameLen+1)
	for _, name := range []string{"", long, "a\r\nEvent: x", "bad\xffutf8"} {
		if err := a.SetDeviceState(name, devstate.InUse); err == nil {
			t.Errorf("SetDeviceState(%q) accepted", name)
		}
		a.RemoteDevice(DeviceItem{Device: name, State: devstate.InUse, EID: eidB})
	}
	if err := a.SetMailbox("1@d", mwi.Counts{New: -1}); err == nil {
		t.Error("negative count accepted")
	}
	equal(t, r.take())
}

func TestSpoofedEIDRefused(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r1"})
	equal(t, r.take(), "d=INUSE")
	// Another resource of the same account may speak for it.
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.Busy, EID: eidB, Publisher: "b@x.test/r2"})
	equal(t, r.take(), "d=BUSY")
	// Another account may not.
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.NotInUse, EID: eidB, Publisher: "evil@x.test/r"})
	equal(t, r.take())
	if st := a.Stats(); st.Spoofed != 1 {
		t.Fatalf("spoofed = %d", st.Spoofed)
	}
}

func TestPresenceExpiry(t *testing.T) {
	a, r, clk := newTestCore(t, Config{StaleGrace: 30 * time.Millisecond})
	a.Presence("b@x.test/r", true)
	a.RemoteDevice(DeviceItem{Device: "d1", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	a.RemoteMailbox(MailboxItem{Mailbox: "1@c", Counts: mwi.Counts{New: 2}, EID: eidB, Publisher: "b@x.test/r"})
	a.SetDeviceState("d2", devstate.Ringing)
	a.RemoteDevice(DeviceItem{Device: "d2", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	r.take()

	// Away and back within the grace: nothing expires.
	a.Presence("b@x.test/r", false)
	clk.Advance(10 * time.Millisecond)
	a.Presence("b@x.test/r", true)
	clk.Advance(60 * time.Millisecond)
	equal(t, r.take())

	a.Presence("b@x.test/r", false)
	clk.Advance(29 * time.Millisecond)
	equal(t, r.take()) // not before the grace is over
	clk.Advance(time.Millisecond)
	equal(t, r.take(), "d1=UNKNOWN", "d2=RINGING", "1@c=0/0")
	if _, ok := a.DeviceState("d1"); ok {
		t.Fatal("d1 still held")
	}
}

func TestStaleKeep(t *testing.T) {
	a, r, clk := newTestCore(t, Config{Stale: StaleKeep, StaleGrace: time.Millisecond})
	a.Presence("b@x.test/r", true)
	a.RemoteDevice(DeviceItem{Device: "d1", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	a.Presence("b@x.test/r", false)
	clk.Advance(30 * time.Millisecond)
	equal(t, r.take(), "d1=INUSE")
	if s, _ := a.DeviceState("d1"); s != devstate.InUse {
		t.Fatal("kept state lost")
	}
}

func TestApplyServerStatesIsExact(t *testing.T) {
	a, r, clk := newTestCore(t, Config{})
	pubB := "b@x.test/r"
	a.RemoteDevice(DeviceItem{Device: "gone", State: devstate.InUse, EID: eidB, Publisher: pubB})
	a.RemoteDevice(DeviceItem{Device: "kept", State: devstate.InUse, EID: eidB, Publisher: pubB})
	a.RemoteDevice(DeviceItem{Device: "kept", State: devstate.Ringing, EID: eidC, Publisher: "c@x.test/r"})
	r.take()
	req := a.StatesRequest(pubB)
	// B answers: "kept" is BUSY now, "gone" it no longer holds; it also
	// holds a state of ours that we lost.
	a.ApplyServerStates(req, []DeviceItem{
		{Device: "kept", State: devstate.Busy, EID: eidB},
		{Device: "mine", State: devstate.OnHold, EID: eidA},
	}, nil)
	// kept: BUSY and RINGING still merge to RINGINUSE, so no event.
	equal(t, r.take(), "mine=ONHOLD", "gone=UNKNOWN")
	if got := serverStates(a, "kept"); got != "[020000000002=BUSY 020000000003=RINGING]" {
		t.Fatalf("kept entries %s", got)
	}
	ds, _ := a.OwnStates()
	if len(ds) != 1 || ds[0].Device != "mine" {
		t.Fatalf("own states %v", ds)
	}
	// A publication newer than the request wins over the answer.
	before := a.StatesRequest(pubB)
	clk.Advance(time.Millisecond)
	a.RemoteDevice(DeviceItem{Device: "kept", State: devstate.NotInUse, EID: eidB, Publisher: pubB})
	r.take()
	a.ApplyServerStates(before, []DeviceItem{{Device: "kept", State: devstate.Busy, EID: eidB}}, nil)
	equal(t, r.take())
	if got := serverStates(a, "kept"); got != "[020000000002=NOT_INUSE 020000000003=RINGING]" {
		t.Fatalf("kept entries %s", got)
	}
	// An empty answer from a known account drops what it held.
	a.ApplyServerStates(a.StatesRequest(pubB), nil, nil)
	if got := serverStates(a, "kept"); got != "[020000000003=RINGING]" {
		t.Fatalf("kept entries %s", got)
	}
}

// An answer that came over gossip before the items were read is exact:
// the items, which may be older, do not override that server's states;
// other servers' items still apply. After the items, early answers are
// ordinary ones, and the next Resync (a reconnect) applies every item.
func TestEarlyAnswerBeatsOlderItems(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	pubB, pubC := "b@x.test/r", "c@x.test/r"
	a.ApplyServerStates(a.EarlyStatesRequest(pubB), []DeviceItem{
		{Device: "d1", State: devstate.Busy, EID: eidB},
		{Device: "mine", State: devstate.OnHold, EID: eidA},
	}, []MailboxItem{{Mailbox: "1@x", Counts: mwi.Counts{New: 2}, EID: eidB}})
	equal(t, r.take(), "d1=BUSY", "mine=ONHOLD", "1@x=2/0")
	// The items: B's are older (d1 was INUSE, d2 B no longer holds, the
	// mailbox had no new messages), C's are news, and ours is older than
	// what B held of it.
	a.Resync([]DeviceItem{
		{Device: "d1", State: devstate.InUse, EID: eidB, Publisher: pubB},
		{Device: "d2", State: devstate.InUse, EID: eidB, Publisher: pubB},
		{Device: "d3", State: devstate.Ringing, EID: eidC, Publisher: pubC},
		{Device: "mine", State: devstate.NotInUse, EID: eidA, Publisher: "a@x.test/r"},
	}, []MailboxItem{{Mailbox: "1@x", Counts: mwi.Counts{Old: 2}, EID: eidB, Publisher: pubB}})
	equal(t, r.take(), "d3=RINGING")
	for dev, want := range map[string]devstate.State{"d1": devstate.Busy, "d3": devstate.Ringing, "mine": devstate.OnHold} {
		if s, _ := a.DeviceState(dev); s != want {
			t.Errorf("%s = %s, want %s", dev, s, want)
		}
	}
	if _, ok := a.DeviceState("d2"); ok {
		t.Error("d2, which B's answer did not hold, came back from an item")
	}
	if c, _ := a.MailboxCounts("1@x"); c != (mwi.Counts{New: 2}) {
		t.Errorf("1@x = %+v, want the answer's 2/0", c)
	}
	// Once the items are read, an early request is an ordinary one, and
	// the next items apply to B again.
	a.ApplyServerStates(a.EarlyStatesRequest(pubB), []DeviceItem{{Device: "d1", State: devstate.Busy, EID: eidB}}, nil)
	r.take()
	a.Resync([]DeviceItem{{Device: "d1", State: devstate.InUse, EID: eidB, Publisher: pubB}}, nil)
	equal(t, r.take(), "d1=INUSE")
}

func serverStates(a *Core, device string) string {
	var out []string
	for _, d := range a.Devices(true) {
		if d.Device == device {
			for _, s := range d.Servers {
				out = append(out, fmt.Sprintf("%x=%s", s.EID[:], s.State))
			}
		}
	}
	return fmt.Sprint(out)
}

func TestResyncRestoresOwnStatesOnce(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.Resync([]DeviceItem{
		{Device: "x", State: devstate.InUse, EID: eidA},
		{Device: "y", State: devstate.Busy, EID: eidB, Publisher: "b@x.test/r"},
	}, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{New: 1, Old: 2}, EID: eidA}})
	equal(t, r.take(), "x=INUSE", "y=BUSY", "1@c=1/2")
	// An own state this node already holds is not overwritten by old items.
	a.SetDeviceState("x", devstate.NotInUse)
	r.take()
	a.Resync([]DeviceItem{{Device: "x", State: devstate.InUse, EID: eidA}}, nil)
	equal(t, r.take())
	r.pubs = nil
	a.Republish()
	if len(r.pubs) != 2 {
		t.Fatalf("republished %v", r.pubs)
	}
}

func TestMailboxDelete(t *testing.T) {
	a, r, _ := newTestCore(t, Config{MWIMerge: mwi.Sum})
	a.SetMailbox("1@c", mwi.Counts{New: 2})
	a.RemoteMailbox(MailboxItem{Mailbox: "1@c", Counts: mwi.Counts{New: 3, Old: 1}, EID: eidB})
	equal(t, r.take(), "1@c=2/0", "1@c=5/1")
	if err := a.DeleteMailbox("1@c"); err != nil {
		t.Fatal(err)
	}
	equal(t, r.take(), "1@c=3/1")
	if err := a.DeleteMailbox("1@c"); err == nil {
		t.Fatal("second delete accepted")
	}
	last := r.pubs[len(r.pubs)-1]
	if last.mailbox != "1@c" || last.counts != (mwi.Counts{}) {
		t.Fatalf("delete published %v, want zero counts", last)
	}
}

// A server whose states expired must not be revived for good by the items
// fetched at the next connect: without its presence they expire again.
func TestResyncRevivedServerExpiresAgain(t *testing.T) {
	a, r, clk := newTestCore(t, Config{StaleGrace: 20 * time.Millisecond})
	a.Presence("b@x.test/r", true)
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	a.Presence("b@x.test/r", false)
	clk.Advance(20 * time.Millisecond)
	if a.Stats().Devices != 0 {
		t.Fatal("state not expired after the grace")
	}
	r.take()
	a.Resync([]DeviceItem{{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test"}}, nil)
	equal(t, r.take(), "d=INUSE")
	clk.Advance(20 * time.Millisecond)
	if a.Stats().Devices != 0 {
		t.Fatal("revived state not expired after the grace")
	}
	equal(t, r.take(), "d=UNKNOWN")
}

// A member (gossip says alive) is not expired for want of presence.
func TestMemberNotExpiredByMissingPresence(t *testing.T) {
	a, _, clk := newTestCore(t, Config{StaleGrace: 10 * time.Millisecond})
	a.BindEID(eidB, "b@x.test/r")
	a.Resync([]DeviceItem{{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test"}}, nil)
	clk.Advance(50 * time.Millisecond)
	if a.Stats().Devices != 1 {
		t.Fatal("member's state expired")
	}
	a.RemoveServer(eidB)
	if a.Stats().Devices != 0 {
		t.Fatal("dead member's state kept")
	}
}

// JIDs compare without case in their local part and domain.
func TestJIDCaseFolded(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.BindEID(eidB, "Server2@X.test/Res")
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.Busy, EID: eidB, Publisher: "server2@x.test/Res"})
	equal(t, r.take(), "d=BUSY")
	if a.Stats().Spoofed != 0 {
		t.Fatal("same account taken for a spoofer")
	}
}

// Two servers sharing one account: an answer from one does not wipe the
// other's states.
func TestSharedAccountAnswer(t *testing.T) {
	a, _, _ := newTestCore(t, Config{})
	a.RemoteDevice(DeviceItem{Device: "d1", State: devstate.InUse, EID: eidB, Publisher: "s@x.test/n1"})
	a.RemoteDevice(DeviceItem{Device: "d2", State: devstate.InUse, EID: eidC, Publisher: "s@x.test/n2"})
	a.ApplyServerStates(a.StatesRequest("s@x.test/n1"), []DeviceItem{{Device: "d1", State: devstate.Busy, EID: eidB}}, nil)
	if s, _ := a.DeviceState("d2"); s != devstate.InUse {
		t.Fatalf("d2 = %v after n1's answer", s)
	}
	a.ApplyServerStates(a.StatesRequest("s@x.test/n1"), nil, nil) // ambiguous: two EIDs bound
	if a.Stats().Devices != 2 {
		t.Fatal("an ambiguous empty answer dropped states")
	}
}

// A deleted mailbox (published as zero counts) is not restored as ours.
func TestDeletedMailboxNotRestored(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.Resync(nil, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{}, EID: eidA}})
	a.ApplyServerStates(a.StatesRequest("b@x.test/r"), nil, []MailboxItem{{Mailbox: "2@c", EID: eidA}})
	equal(t, r.take())
	if _, ms := a.OwnStates(); len(ms) != 0 {
		t.Fatalf("own mailboxes %v", ms)
	}
}

// After a restart, an own state restored from the PubSub items gives way to
// what a buddy holds of ours (the last notification it had; Prosody's
// memory store can hand out stale items), but a state the PBX set since
// never does.
func TestBuddyCopyOfOwnStateBeatsItems(t *testing.T) {
	a, _, _ := newTestCore(t, Config{})
	a.Presence("b@x.test/r", true)
	a.Resync([]DeviceItem{
		{Device: "SIP/stale", State: devstate.InUse, Cachable: true, EID: eidA, Publisher: "a@x/r"},
		{Device: "SIP/pbx", State: devstate.InUse, Cachable: true, EID: eidA, Publisher: "a@x/r"},
	}, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{New: 3}, EID: eidA, Publisher: "a@x/r"}})
	if st, _ := a.DeviceState("SIP/stale"); st != devstate.InUse {
		t.Fatalf("restored from the items: %v, want INUSE", st)
	}
	if err := a.SetDeviceState("SIP/pbx", devstate.Ringing); err != nil {
		t.Fatal(err)
	}
	req := a.StatesRequest("b@x.test/r")
	a.ApplyServerStates(req, []DeviceItem{
		{Device: "SIP/b", State: devstate.NotInUse, Cachable: true, EID: eidB, Publisher: "b@x.test/r"},
		{Device: "SIP/stale", State: devstate.Busy, Cachable: true, EID: eidA},
		{Device: "SIP/pbx", State: devstate.Busy, Cachable: true, EID: eidA},
	}, []MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{}, EID: eidA}})
	if st, _ := a.DeviceState("SIP/stale"); st != devstate.Busy {
		t.Errorf("restored own state after the buddy's copy: %v, want BUSY", st)
	}
	if st, _ := a.DeviceState("SIP/pbx"); st != devstate.Ringing {
		t.Errorf("state the PBX set: %v, want RINGING (a buddy's copy must not override it)", st)
	}
	if c, ok := a.MailboxCounts("1@c"); ok && c != (mwi.Counts{}) {
		t.Errorf("mailbox restored with 3 new, the buddy heard it deleted: %+v", c)
	}
	// Once the PBX sets it, a restored state is the PBX's: a later copy
	// (another buddy's answer) leaves it.
	if err := a.SetDeviceState("SIP/stale", devstate.OnHold); err != nil {
		t.Fatal(err)
	}
	a.ApplyServerStates(a.StatesRequest("b@x.test/r"), []DeviceItem{
		{Device: "SIP/b", State: devstate.NotInUse, Cachable: true, EID: eidB, Publisher: "b@x.test/r"},
		{Device: "SIP/stale", State: devstate.Busy, Cachable: true, EID: eidA},
	}, nil)
	if st, _ := a.DeviceState("SIP/stale"); st != devstate.OnHold {
		t.Errorf("after the PBX set it: %v, want ONHOLD", st)
	}
}

// Membership rebinding an EID to another account also ends what the
// first account's spelling was trusted for.
func TestRebindForgetsPublisher(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take(), "d=INUSE")
	a.BindEID(eidB, "c@x.test/r")
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.Busy, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take())
	if a.Stats().Spoofed != 1 {
		t.Fatalf("spoofed = %d, want 1", a.Stats().Spoofed)
	}
}

// A clock stepped backwards on this node does not make a later update
// look older: Asterisk's newest-wins MWI rule and the states-answer guard
// follow the order updates arrived in.
func TestClockStepDoesNotReorder(t *testing.T) {
	a, r, clk := newTestCore(t, Config{}) // mwi_merge = latest
	a.RemoteMailbox(MailboxItem{Mailbox: "1@c", Counts: mwi.Counts{New: 1}, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take(), "1@c=1/0")
	clk.Step(-time.Hour)
	a.RemoteMailbox(MailboxItem{Mailbox: "1@c", Counts: mwi.Counts{New: 5}, EID: eidC, Publisher: "c@x.test/r"})
	equal(t, r.take(), "1@c=5/0")

	// A states request, then the clock steps back, then a publication
	// overtakes the answer: the publication is newer and stays.
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	req := a.StatesRequest("b@x.test/r")
	clk.Step(-time.Hour)
	a.RemoteDevice(DeviceItem{Device: "d", State: devstate.Ringing, EID: eidB, Publisher: "b@x.test/r"})
	r.take()
	a.ApplyServerStates(req, []DeviceItem{{Device: "d", State: devstate.InUse, EID: eidB}}, nil)
	if s, _ := a.DeviceState("d"); s != devstate.Ringing {
		t.Fatalf("d = %v after an answer older than the publication, want RINGING", s)
	}
}

func TestSystemClockIsMonotonic(t *testing.T) {
	c := SystemClock()
	prev := c.Now()
	for range 1000 {
		now := c.Now()
		if now.Before(prev) {
			t.Fatalf("%v before %v", now, prev)
		}
		prev = now
	}
	if d := time.Since(c.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("system clock off the wall clock by %v right after start", d)
	}
}
