package core

import (
	"errors"
	"fmt"
	"github.com/busylamp/busylamp/internal/testlog"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

const (
	flooder = "evil@x.test/r"
	honest  = "b2@x.test/r"
	third   = "c3@x.test/r"
)

var (
	eidFlood  = devstate.EID{2, 0, 0, 0, 0xee, 1}
	eidHonest = devstate.EID{2, 0, 0, 0, 0xbb, 2}
	eidThird  = devstate.EID{2, 0, 0, 0, 0xcc, 3}
)

// devicesHeld counts the devices eid has a state of.
func devicesHeld(a *Core, eid devstate.EID) int {
	n := 0
	for _, d := range a.Devices(true) {
		for _, s := range d.Servers {
			if s.EID == eid {
				n++
			}
		}
	}
	return n
}

func mailboxesHeld(a *Core, eid devstate.EID) int {
	n := 0
	for _, m := range a.Mailboxes(true) {
		for _, s := range m.Servers {
			if s.EID == eid {
				n++
			}
		}
	}
	return n
}

func refusedOf(a *Core, src string) uint64 {
	for _, r := range a.Stats().RefusedBy {
		if r.Source == src {
			return r.Refused
		}
	}
	return 0
}

// Issue 11: one account publishing a flood of distinct devices must not
// lock out this node's own PBX, nor take the room of the other servers.
// max_devices = 100: own room 100, remote room 100, a share of 50.
func TestRemoteDeviceFloodHeldToShare(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 100})
	for i := range 10000 {
		a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("Flood/%d", i), State: devstate.InUse, EID: eidFlood, Publisher: flooder})
	}
	if n := devicesHeld(a, eidFlood); n != 50 {
		t.Fatalf("flooder holds %d devices, want its share of 50", n)
	}
	if st := a.Stats(); st.Refused != 9950 || refusedOf(a, "evil@x.test") != 9950 || len(st.RefusedBy) != 1 {
		t.Fatalf("refused %d, by source %v; want 9950, all of evil@x.test", st.Refused, st.RefusedBy)
	}

	// The own PBX: a new device, and the whole own room.
	for i := range 100 {
		if err := a.SetDeviceState(fmt.Sprintf("PJSIP/%d", i), devstate.Ringing); err != nil {
			t.Fatalf("own device %d after the flood: %v", i, err)
		}
	}
	err := a.SetDeviceState("PJSIP/one-too-many", devstate.InUse)
	if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "raise [agent] max_devices") {
		t.Fatalf("own device past the own room: %v, want ErrNoRoom naming max_devices", err)
	}
	// An own state of a device that remote servers hold is still room of
	// its own, and updates of own devices always work.
	if err := a.SetDeviceState("PJSIP/0", devstate.Busy); err != nil {
		t.Fatal(err)
	}

	// Another account still adds devices, up to its own share.
	for i := range 50 {
		a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("PJSIP/b2-%d", i), State: devstate.OnHold, EID: eidHonest, Publisher: honest})
	}
	if n := devicesHeld(a, eidHonest); n != 50 {
		t.Fatalf("second account holds %d devices, want 50", n)
	}
	if refusedOf(a, "b2@x.test") != 0 {
		t.Fatalf("second account refused within its share: %v", a.Stats().RefusedBy)
	}
	a.RemoteDevice(DeviceItem{Device: "PJSIP/b2-past-share", State: devstate.OnHold, EID: eidHonest, Publisher: honest})
	if refusedOf(a, "b2@x.test") != 1 || refusedOf(a, "evil@x.test") != 9950 {
		t.Fatalf("refused by source %v, want b2@x.test 1, evil@x.test 9950", a.Stats().RefusedBy)
	}
	// The remote room is full (50 + 50): a third account's new device is
	// refused, but it may add its state to a device already held.
	a.RemoteDevice(DeviceItem{Device: "PJSIP/c3", State: devstate.InUse, EID: eidThird, Publisher: third})
	a.RemoteDevice(DeviceItem{Device: "PJSIP/1", State: devstate.InUse, EID: eidThird, Publisher: third})
	if _, ok := a.DeviceState("PJSIP/c3"); ok || devicesHeld(a, eidThird) != 1 || refusedOf(a, "c3@x.test") != 1 {
		t.Fatalf("third account: holds %d, refused %d; want 1 (on an own device), 1", devicesHeld(a, eidThird), refusedOf(a, "c3@x.test"))
	}

	// Updates of what the flooder and the other hold still apply.
	a.RemoteDevice(DeviceItem{Device: "Flood/0", State: devstate.Busy, EID: eidFlood, Publisher: flooder})
	a.RemoteDevice(DeviceItem{Device: "PJSIP/b2-0", State: devstate.Unavailable, EID: eidHonest, Publisher: honest})
	if s, _ := a.DeviceState("Flood/0"); s != devstate.Busy {
		t.Fatalf("update of a held device: %v, want BUSY", s)
	}
	if s, _ := a.DeviceState("PJSIP/b2-0"); s != devstate.Unavailable {
		t.Fatalf("update of a held device: %v, want UNAVAILABLE", s)
	}
	if st := a.Stats(); st.Devices != 200 {
		t.Fatalf("%d devices held, want 200 (own room + remote room)", st.Devices)
	}
	// Once the flooder's states go, the others have room again.
	a.RemoveServer(eidFlood)
	a.RemoteDevice(DeviceItem{Device: "PJSIP/c3", State: devstate.InUse, EID: eidThird, Publisher: third})
	if s, _ := a.DeviceState("PJSIP/c3"); s != devstate.InUse {
		t.Fatalf("after the flooder left: PJSIP/c3 = %v, want INUSE", s)
	}
}

func TestRemoteMailboxFloodHeldToShare(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 100})
	for i := range 10000 {
		a.RemoteMailbox(MailboxItem{Mailbox: fmt.Sprintf("%d@flood", i), Counts: mwi.Counts{New: 1}, EID: eidFlood, Publisher: flooder})
	}
	if n := mailboxesHeld(a, eidFlood); n != 50 {
		t.Fatalf("flooder holds %d mailboxes, want its share of 50", n)
	}
	for i := range 100 {
		if err := a.SetMailbox(fmt.Sprintf("%d@own", i), mwi.Counts{New: 2}); err != nil {
			t.Fatalf("own mailbox %d after the flood: %v", i, err)
		}
	}
	if err := a.SetMailbox("past@own", mwi.Counts{New: 2}); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("own mailbox past the own room: %v, want ErrNoRoom", err)
	}
	for i := range 51 {
		a.RemoteMailbox(MailboxItem{Mailbox: fmt.Sprintf("%d@b2", i), Counts: mwi.Counts{New: 3}, EID: eidHonest, Publisher: honest})
	}
	if n := mailboxesHeld(a, eidHonest); n != 50 {
		t.Fatalf("second account holds %d mailboxes, want 50", n)
	}
	if refusedOf(a, "evil@x.test") != 9950 || refusedOf(a, "b2@x.test") != 1 || a.Stats().Refused != 9951 {
		t.Fatalf("refused %d by source %v; want evil@x.test 9950, b2@x.test 1", a.Stats().Refused, a.Stats().RefusedBy)
	}
	a.RemoteMailbox(MailboxItem{Mailbox: "0@flood", Counts: mwi.Counts{New: 9, Old: 1}, EID: eidFlood, Publisher: flooder})
	if c, _ := a.MailboxCounts("0@flood"); c != (mwi.Counts{New: 9, Old: 1}) {
		t.Fatalf("update of a held mailbox: %+v", c)
	}
}

// A flooder that binds the most EIDs an account may speak for is still one
// source with one share.
func TestFloodOverManyEIDsIsOneShare(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 100})
	for e := range maxEIDsPerJID + 1 {
		eid := devstate.EID{2, 0, 0, 0, 0xe0, byte(e)}
		for i := range 1000 {
			dev := fmt.Sprintf("Flood/%d-%d", e, i)
			a.RemoteDevice(DeviceItem{Device: dev, State: devstate.InUse, EID: eid, Publisher: fmt.Sprintf("evil@x.test/r%d", e)})
			a.RemoteMailbox(MailboxItem{Mailbox: dev + "@c", Counts: mwi.Counts{New: 1}, EID: eid, Publisher: fmt.Sprintf("evil@x.test/r%d", e)})
		}
	}
	if st := a.Stats(); st.Devices != 50 || st.Mailboxes != 50 {
		t.Fatalf("an account of %d EIDs holds %d devices and %d mailboxes, want one share of 50 each", maxEIDsPerJID, st.Devices, st.Mailboxes)
	}
	if refusedOf(a, "evil@x.test") != 2*(maxEIDsPerJID*1000-50) {
		t.Fatalf("refused by source %v", a.Stats().RefusedBy)
	}
	for i := range 50 {
		a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("PJSIP/%d", i), State: devstate.Busy, EID: eidHonest, Publisher: honest})
	}
	if n := devicesHeld(a, eidHonest); n != 50 {
		t.Fatalf("second account holds %d devices, want 50", n)
	}
}

// A server bound to no account (the XMPP server does not say who
// published) is a source of its own.
func TestUnboundEIDIsItsOwnSource(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 10})
	for i := range 20 {
		a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("Flood/%d", i), State: devstate.InUse, EID: eidFlood})
	}
	if n := devicesHeld(a, eidFlood); n != 5 || refusedOf(a, eidFlood.String()) != 15 {
		t.Fatalf("unbound EID holds %d, refused %v; want 5, 15 under its EID", n, a.Stats().RefusedBy)
	}
}

// Items (Resync) and a buddy's states answer (ApplyServerStates) are held
// to the same shares; own states restored from them have the own room.
func TestFloodThroughResyncAndAnswer(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 100})
	var items []DeviceItem
	var boxes []MailboxItem
	for i := range 1000 {
		items = append(items, DeviceItem{Device: fmt.Sprintf("Flood/%d", i), State: devstate.InUse, EID: eidFlood, Publisher: flooder})
		boxes = append(boxes, MailboxItem{Mailbox: fmt.Sprintf("%d@flood", i), Counts: mwi.Counts{New: 1}, EID: eidFlood, Publisher: flooder})
	}
	for i := range 100 {
		items = append(items, DeviceItem{Device: fmt.Sprintf("PJSIP/%d", i), State: devstate.Ringing, EID: eidA, Publisher: "a@x.test/r"})
		boxes = append(boxes, MailboxItem{Mailbox: fmt.Sprintf("%d@own", i), Counts: mwi.Counts{New: 2}, EID: eidA, Publisher: "a@x.test/r"})
	}
	a.Resync(items, boxes)
	if d, m := devicesHeld(a, eidFlood), mailboxesHeld(a, eidFlood); d != 50 || m != 50 {
		t.Fatalf("after the items the flooder holds %d devices, %d mailboxes; want 50, 50", d, m)
	}
	if ds, ms := a.OwnStates(); len(ds) != 100 || len(ms) != 100 {
		t.Fatalf("own states restored from the items: %d devices, %d mailboxes; want 100, 100", len(ds), len(ms))
	}

	// An answer from a second account, of more than its share.
	var answer []DeviceItem
	var answerBoxes []MailboxItem
	for i := range 80 {
		answer = append(answer, DeviceItem{Device: fmt.Sprintf("B2/%d", i), State: devstate.OnHold, EID: eidHonest})
		answerBoxes = append(answerBoxes, MailboxItem{Mailbox: fmt.Sprintf("%d@b2", i), Counts: mwi.Counts{Old: 1}, EID: eidHonest})
	}
	a.ApplyServerStates(a.StatesRequest(honest), answer, answerBoxes)
	if d, m := devicesHeld(a, eidHonest), mailboxesHeld(a, eidHonest); d != 50 || m != 50 {
		t.Fatalf("after its answer the second account holds %d devices, %d mailboxes; want 50, 50", d, m)
	}
	if refusedOf(a, "b2@x.test") != 60 || refusedOf(a, "evil@x.test") != 1900 {
		t.Fatalf("refused by source %v; want b2@x.test 60, evil@x.test 1900", a.Stats().RefusedBy)
	}
}

// Refusals are logged at most every refusalLogEvery per source, with the
// count since the last line and the share.
func TestRefusalsLoggedOnceAWhile(t *testing.T) {
	var buf lockedBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	a, _, clk := newTestCore(t, Config{MaxDevices: 10, Log: log})
	flood := func(from string, eid devstate.EID, n int) {
		for i := range n {
			a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("%s/%d", from, i), State: devstate.InUse, EID: eid, Publisher: from + "@x.test/r"})
		}
	}
	flood("evil", eidFlood, 1000)
	flood("b2", eidHonest, 6)
	if got := buf.Lines("remote states refused"); len(got) != 2 ||
		!strings.Contains(got[0], "source=evil@x.test") || !strings.Contains(got[0], "refused=1 ") || !strings.Contains(got[0], "share=5") ||
		!strings.Contains(got[1], "source=b2@x.test") {
		t.Fatalf("log lines:\n%s", strings.Join(got, "\n"))
	}
	clk.Advance(refusalLogEvery - time.Millisecond)
	flood("evil", eidFlood, 10)
	if got := buf.Lines("remote states refused"); len(got) != 2 {
		t.Fatalf("logged again within %v:\n%s", refusalLogEvery, strings.Join(got, "\n"))
	}
	clk.Advance(time.Millisecond)
	a.RemoteDevice(DeviceItem{Device: "evil/new", State: devstate.InUse, EID: eidFlood, Publisher: "evil@x.test/r"})
	got := buf.Lines("remote states refused")
	// 994 held back after the first line, 5 more (evil/5 to 9), this one.
	if len(got) != 3 || !strings.Contains(got[2], "source=evil@x.test") || !strings.Contains(got[2], "refused=1000 ") {
		t.Fatalf("log lines:\n%s", strings.Join(got, "\n"))
	}
	if !strings.Contains(got[2], "raise [agent] max_devices") {
		t.Fatalf("log line does not say what to do: %s", got[2])
	}
}

type lockedBuffer = testlog.Buffer

// The remote room bounds what remote servers hold together, own room
// unused or not: three accounts within their shares fill it at two.
func TestRemoteRoomFull(t *testing.T) {
	a, _, _ := newTestCore(t, Config{MaxDevices: 10})
	for _, acct := range []struct {
		jid string
		eid devstate.EID
	}{{flooder, eidFlood}, {honest, eidHonest}, {third, eidThird}} {
		for i := range 5 {
			a.RemoteDevice(DeviceItem{Device: fmt.Sprintf("%s/%d", acct.jid, i), State: devstate.InUse, EID: acct.eid, Publisher: acct.jid})
			a.RemoteMailbox(MailboxItem{Mailbox: fmt.Sprintf("%d@%s", i, acct.jid), Counts: mwi.Counts{New: 1}, EID: acct.eid, Publisher: acct.jid})
		}
	}
	if st := a.Stats(); st.Devices != 10 || st.Mailboxes != 10 || refusedOf(a, "c3@x.test") != 10 {
		t.Fatalf("%d devices, %d mailboxes, refused %v; want 10, 10, c3@x.test 10", st.Devices, st.Mailboxes, st.RefusedBy)
	}
	for i := range 10 {
		if err := a.SetDeviceState(fmt.Sprintf("PJSIP/%d", i), devstate.InUse); err != nil {
			t.Fatal(err)
		}
	}
}
