package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/agent/store"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// storeAgent is an agent on the fake client with its own states in dir;
// stop ends its Run and waits for it.
func storeAgent(t *testing.T, dir string) (m *memAgent, run, stop func()) {
	t.Helper()
	x := newFakeXMPP()
	cfg := DefaultConfig()
	cfg.Name = "mem"
	cfg.XMPP.JID = selfJID
	cfg.XMPP.EID = eidA
	cfg.XMPP.Buddies = []string{jidB}
	cfg.ManagerAddr = "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Core.Clock = core.NewManualClock()
	cfg.StateDir = dir
	a, err := newAgent(cfg, x, x.events)
	if err != nil {
		t.Fatal(err)
	}
	m = &memAgent{Agent: a, x: x, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	started := false
	run = func() { started = true; go func() { m.done <- a.Run(ctx) }() }
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if !started {
			run()
		}
		if err := recv(t, m.done, "end of Run"); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return m, run, stop
}

// Own states set through the AMI backend come back from the store after a
// restart, before anything is published, as set by the PBX: neither a
// stale item nor a buddy's stale copy of ours overrides them, and they are
// republished after the resync.
func TestOwnStatesPersist(t *testing.T) {
	dir := t.TempDir()
	m, run, stop := storeAgent(t, dir)
	run()
	b := backend{m.Agent}
	ctx := context.Background()
	for _, err := range []error{
		b.SetDeviceState(ctx, "SIP/kept", devstate.Ringing),
		b.SetDeviceState(ctx, "SIP/kept", devstate.InUse),
		b.SetDeviceState(ctx, "SIP/idle", devstate.NotInUse),
		b.SetMailbox(ctx, "1@c", mwi.Counts{New: 3, Old: 1}),
		b.SetMailbox(ctx, "2@c", mwi.Counts{New: 1}),
		b.DeleteMailbox(ctx, "2@c"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	stop()

	m, run, _ = storeAgent(t, dir)
	// Restored before Run: held as own, nothing published yet.
	if got := m.state("SIP/kept"); got != "INUSE" {
		t.Fatalf("SIP/kept = %s before Run, want INUSE", got)
	}
	if c, ok := m.Core().MailboxCounts("1@c"); !ok || c != (mwi.Counts{New: 3, Old: 1}) {
		t.Fatalf("1@c = %+v %v", c, ok)
	}
	if _, ok := m.Core().MailboxCounts("2@c"); ok {
		t.Fatal("deleted mailbox 2@c came back")
	}
	ds, ms := m.Core().OwnStates()
	if len(ds) != 2 || len(ms) != 1 {
		t.Fatalf("own states %v %v", ds, ms)
	}
	m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/kept", State: devstate.Busy, EID: eidA}} // B's stale copy of ours
	run()
	select {
	case p := <-m.x.publishCh:
		t.Fatalf("published %s before the resync", p)
	default:
	}
	m.x.send(t, pubsub.Connected{JID: selfJID, Devices: []pubsub.DeviceItem{
		{Device: "SIP/kept", State: devstate.OnHold, EID: eidA, Publisher: "a@x.test"}, // a stale item of ours
	}})
	recv(t, m.x.asked, "states request")
	recv(t, m.Core().Booted(), "boot")
	got := map[string]bool{recv(t, m.x.publishCh, "republish"): true, recv(t, m.x.publishCh, "republish"): true}
	if !got["SIP/kept=INUSE"] || !got["SIP/idle=NOT_INUSE"] {
		t.Errorf("republished %v", got)
	}
	if s := m.state("SIP/kept"); s != "INUSE" {
		t.Errorf("SIP/kept = %s after the resync, want INUSE (the PBX's, from the store)", s)
	}
	out, err := m.Command(ctx, "show stats")
	if err != nil || !strings.Contains(out, "State store: "+dir+"/own-states.wal: 2 devices, 1 mailboxes") {
		t.Errorf("show stats: %v\n%s", err, out)
	}
}

// BenchmarkSetDeviceState is what an own change costs on the latency path
// (the AMI backend, before the Success is sent), without the store and
// with it (one record handed to the OS; the fsync is the syncer's), over
// 1,000 devices whose states alternate so every call is a change.
func BenchmarkSetDeviceState(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	devices := make([]string, 1000)
	for i := range devices {
		devices[i] = fmt.Sprintf("PJSIP/%d", i)
	}
	for _, withStore := range []bool{false, true} {
		name := "memory"
		if withStore {
			name = "store"
		}
		b.Run(name, func(b *testing.B) {
			a := &Agent{core: newBenchCore(log), log: log}
			if withStore {
				sc := store.DefaultConfig()
				sc.Dir, sc.Log = b.TempDir(), log
				st, err := store.Open(sc)
				if err != nil {
					b.Fatal(err)
				}
				defer st.Close()
				a.store = st
			}
			be := backend{a}
			ctx := context.Background()
			states := [2]devstate.State{devstate.InUse, devstate.NotInUse}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := be.SetDeviceState(ctx, devices[i%len(devices)], states[(i/len(devices))%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A damaged store is set aside: the agent starts, empty, and says so in
// show stats. A state_dir it cannot use fails New, and not as ErrConfig.
func TestDamagedStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.LogName), []byte("not a log at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, run, _ := storeAgent(t, dir)
	run()
	if ds, ms := m.Core().OwnStates(); len(ds)+len(ms) != 0 {
		t.Fatalf("own states from a damaged store: %v %v", ds, ms)
	}
	out, err := m.Command(context.Background(), "show stats")
	if err != nil || !strings.Contains(out, "State store damaged at start, set aside: "+filepath.Join(dir, store.LogName)+".corrupt-") {
		t.Errorf("show stats: %v\n%s", err, out)
	}
	if err := (backend{m.Agent}).SetDeviceState(context.Background(), "SIP/new", devstate.InUse); err != nil {
		t.Fatalf("set after the damage: %v", err)
	}

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	cfg := DefaultConfig()
	cfg.XMPP.JID, cfg.XMPP.EID = selfJID, eidA
	cfg.ManagerAddr = "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.StateDir = filepath.Join(file, "state")
	x := newFakeXMPP()
	_, err = newAgent(cfg, x, x.events)
	if err == nil || errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "state_dir") {
		t.Fatalf("New with an unusable state_dir: %v", err)
	}
}

// Own states the resync restores from the cluster (here a buddy's copy,
// the store being new) are saved once booted: the next start has them
// from the store, before any resync.
func TestRestoredOwnStatesSaved(t *testing.T) {
	dir := t.TempDir()
	m, run, stop := storeAgent(t, dir)
	m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/lost", State: devstate.Busy, EID: eidA}}
	m.x.mailboxes[jidB] = []pubsub.MailboxItem{{Mailbox: "9@c", Counts: mwi.Counts{New: 4, Old: 2}, EID: eidA}}
	run()
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	stop()

	m, _, _ = storeAgent(t, dir)
	if got := m.state("SIP/lost"); got != "BUSY" {
		t.Fatalf("SIP/lost = %s from the store, want BUSY", got)
	}
	if c, _ := m.Core().MailboxCounts("9@c"); c != (mwi.Counts{New: 4, Old: 2}) {
		t.Fatalf("9@c = %+v from the store", c)
	}
}

// An own mailbox deleted (acknowledged) before a crash stays deleted
// after the restart even though the cluster still holds its old counts
// (the delete's zero counts never left): neither the item nor a buddy
// that missed the delete brings it back, and its zero counts go out after
// the resync. Set again, it is kept as set.
func TestDeletedMailboxStaysDeleted(t *testing.T) {
	dir := t.TempDir()
	m, run, stop := storeAgent(t, dir)
	run()
	b := backend{m.Agent}
	ctx := context.Background()
	for _, err := range []error{
		b.SetMailbox(ctx, "9@c", mwi.Counts{New: 3, Old: 1}),
		b.SetMailbox(ctx, "8@c", mwi.Counts{New: 1}),
		b.DeleteMailbox(ctx, "9@c"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	stop()

	m, run, stop = storeAgent(t, dir)
	old := pubsub.MailboxItem{Mailbox: "9@c", Counts: mwi.Counts{New: 3, Old: 1}, EID: eidA, Publisher: "a@x.test"}
	m.x.mailboxes[jidB] = []pubsub.MailboxItem{old} // B missed the delete
	run()
	m.x.send(t, pubsub.Connected{JID: selfJID, Mailboxes: []pubsub.MailboxItem{old}}) // so did the item
	recv(t, m.x.asked, "states request")
	recv(t, m.Core().Booted(), "boot")
	if c, ok := m.Core().MailboxCounts("9@c"); ok {
		t.Fatalf("deleted mailbox 9@c came back from the cluster: %+v", c)
	}
	if _, ms := m.Core().OwnStates(); len(ms) != 1 || ms[0].Mailbox != "8@c" {
		t.Fatalf("own mailboxes %+v, want only 8@c", ms)
	}
	m.x.mu.Lock()
	pub9, pub8 := m.x.published["9@c"], m.x.published["8@c"]
	m.x.mu.Unlock()
	if pub9 != "0/0" || pub8 != "1/0" {
		t.Fatalf("published after the resync: 9@c %q, 8@c %q; want 0/0 and 1/0", pub9, pub8)
	}
	out, err := m.Command(ctx, "show stats")
	if err != nil || !strings.Contains(out, "1 mailboxes, 1 deleted mailboxes,") {
		t.Errorf("show stats: %v\n%s", err, out)
	}
	// A later MWIUpdate ends the tombstone, in the store too.
	if err := (backend{m.Agent}).SetMailbox(ctx, "9@c", mwi.Counts{New: 2, Old: 2}); err != nil {
		t.Fatal(err)
	}
	stop()

	m, _, _ = storeAgent(t, dir)
	if c, ok := m.Core().MailboxCounts("9@c"); !ok || c != (mwi.Counts{New: 2, Old: 2}) {
		t.Fatalf("9@c = %+v %v from the store, want 2/2", c, ok)
	}
	if n := m.store.Stats().Tombstones; n != 0 {
		t.Fatalf("%d tombstones after the mailbox was set again", n)
	}
}
