package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// In memory, on the fake XMPP client: the logic of resync, boot, states
// requests, membership and expiry. Each of these is also proven against a
// real server (internal/e2e, pubsub's integration tests).

// A (re)connect resyncs from the items, then from each busylamp buddy's
// own answer (exact: it drops what the buddy no longer holds and restores
// what the buddy holds of ours), republishes our own states and boots. A
// buddy's states request waits until our own states are restored.
func TestResyncInMemory(t *testing.T) {
	m := startMemAgent(t, func(c *Config) { c.XMPP.Buddies = []string{jidB} })
	m.x.answers[jidB] = []pubsub.DeviceItem{
		{Device: "SIP/b", State: devstate.InUse, EID: eidB},
		{Device: "SIP/lost", State: devstate.Busy, EID: eidA}, // B's copy of ours beats the stale item
	}
	m.x.mailboxes[jidB] = []pubsub.MailboxItem{{Mailbox: "1@c", Counts: mwi.Counts{New: 2}, EID: eidB}}

	// Asked before we are synced: held.
	m.x.send(t, pubsub.OwnStatesRequest{From: jidC, ID: "q1"})
	select {
	case req := <-m.x.answerCh:
		t.Fatalf("answered %v before our own states were restored", req)
	default:
	}
	m.x.send(t, pubsub.Connected{JID: selfJID,
		Devices: []pubsub.DeviceItem{
			{Device: "SIP/old", State: devstate.InUse, EID: eidB, Publisher: "b@x.test"}, // B no longer holds it
			{Device: "SIP/lost", State: devstate.Ringing, EID: eidA, Publisher: "a@x.test"},
			{Device: "SIP/c", State: devstate.OnHold, EID: eidC, Publisher: "c@x.test"},
		}})
	if got := recv(t, m.x.asked, "states request"); got != jidB {
		t.Fatalf("asked %s, want %s", got, jidB)
	}
	recv(t, m.Core().Booted(), "boot")
	if got := recv(t, m.x.answerCh, "held answer"); got.ID != "q1" {
		t.Fatalf("answered %v", got)
	}
	for dev, want := range map[string]string{"SIP/b": "INUSE", "SIP/lost": "BUSY", "SIP/c": "ONHOLD", "SIP/old": "-"} {
		if got := m.state(dev); got != want {
			t.Errorf("%s = %s, want %s", dev, got, want)
		}
	}
	if c, _ := m.Core().MailboxCounts("1@c"); c.New != 2 {
		t.Errorf("1@c = %+v", c)
	}
	// Our own state, restored, went out again once booted.
	if got := recv(t, m.x.publishCh, "republish"); got != "SIP/lost=BUSY" {
		t.Errorf("republished %s, want SIP/lost=BUSY", got)
	}
	// The held answer carried our own state as restored from the items,
	// and what we hold of the asker's server.
	m.x.mu.Lock()
	out := m.x.answerOut[jidC]
	m.x.mu.Unlock()
	var own, ofC int
	for _, it := range out {
		switch {
		case it.Device == "SIP/lost" && it.EID == eidA:
			own++
		case it.Device == "SIP/c" && it.EID == eidC && it.State == devstate.OnHold:
			ofC++
		}
	}
	if own != 1 || ofC != 1 || len(out) != 2 {
		t.Errorf("answer to C: %v", out)
	}
}

// A buddy that never answers (an Asterisk node, a server that is down)
// does not hold the boot for longer than BootTimeout.
func TestBootTimeoutInMemory(t *testing.T) {
	m := startMemAgent(t, func(c *Config) {
		c.XMPP.Buddies = []string{jidB}
		c.BootTimeout = 30 * time.Second
		c.ResyncTimeout = time.Hour // the request itself does not give up first
	})
	m.x.silent[jidB] = true
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.x.asked, "states request")
	m.clock.Advance(29 * time.Second)
	select {
	case <-m.Core().Booted():
		t.Fatal("booted before BootTimeout")
	default:
	}
	m.clock.Advance(time.Second)
	recv(t, m.Core().Booted(), "boot after BootTimeout")
}

// A states request refused as from a stranger (the member has not heard
// of us through gossip yet), or an answer cut off after its first chunks
// (the buddy or the server busy), is asked again after a delay, not
// given up silently: the node is not booted on it.
func TestStatesRequestRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(x *fakeXMPP)
	}{
		{"forbidden", func(x *fakeXMPP) { x.refuse[jidB] = 1 }},
		{"cut off", func(x *fakeXMPP) { x.cut[jidB] = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMemAgent(t, func(c *Config) { c.XMPP.Buddies = []string{jidB} })
			tc.fail(m.x)
			m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/b", State: devstate.InUse, EID: eidB}}
			m.x.send(t, pubsub.Connected{JID: selfJID})
			recv(t, m.x.asked, "first request")
			// The retry waits on the clock: wait until its timer is armed.
			deadline := time.Now().Add(10 * time.Second)
			for m.clock.Pending() < 2 { // the boot timer, and the retry
				if time.Now().After(deadline) {
					t.Fatal("no retry timer armed")
				}
				recv(t, m.clock.Started(), "a timer")
			}
			select {
			case <-m.Core().Booted():
				t.Fatal("booted on the failed request")
			default:
			}
			m.clock.Advance(statesRetryDelay)
			recv(t, m.x.asked, "second request")
			recv(t, m.Core().Booted(), "boot")
			if got := m.state("SIP/b"); got != "INUSE" {
				t.Fatalf("SIP/b = %s after the retry", got)
			}
		})
	}
}

// Members: one that joins becomes a buddy and is asked for its states; one
// that dies or leaves has its states dropped at once (stale=expire), or
// kept (stale=keep). Whoever claims a member's EID from another account
// is refused.
func TestMembersInMemory(t *testing.T) {
	m := startMemAgent(t, nil)
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/b", State: devstate.InUse, EID: eidB}}
	m.x.answers[jidC] = []pubsub.DeviceItem{{Device: "SIP/c", State: devstate.Ringing, EID: eidC}}

	m.member(t, cluster.EventJoin, "b", jidB, eidB)
	if got := recv(t, m.asked, "member b added and asked"); got != jidB {
		t.Fatalf("asked %s", got)
	}
	m.member(t, cluster.EventJoin, "c", jidC, eidC)
	recv(t, m.asked, "member c added and asked")
	for dev, want := range map[string]string{"SIP/b": "INUSE", "SIP/c": "RINGING"} {
		if got := m.state(dev); got != want {
			t.Errorf("%s = %s, want %s", dev, got, want)
		}
	}
	m.x.mu.Lock()
	added := sortedStrings(m.x.added)
	m.x.mu.Unlock()
	if fmt.Sprint(added) != fmt.Sprint([]string{jidB, jidC}) {
		t.Errorf("buddies added %v", added)
	}

	// Spoofed: an account that is not b speaks with b's EID.
	m.x.send(t, pubsub.DeviceEvent{Item: pubsub.DeviceItem{Device: "SIP/b", State: devstate.NotInUse, EID: eidB, Publisher: "evil@x.test/r"}})
	if got := m.state("SIP/b"); got != "INUSE" {
		t.Fatalf("a spoofed payload changed SIP/b to %s", got)
	}
	if s := m.Core().Stats(); s.Spoofed != 1 {
		t.Fatalf("spoofed = %d", s.Spoofed)
	}
	m.x.send(t, pubsub.DeviceEvent{Item: pubsub.DeviceItem{Device: "SIP/b", State: devstate.Busy, EID: eidB, Publisher: jidB}})
	if got := m.state("SIP/b"); got != "BUSY" {
		t.Fatalf("b's own payload: SIP/b = %s", got)
	}

	m.member(t, cluster.EventDead, "b", jidB, eidB)
	if got := m.state("SIP/b"); got != "-" {
		t.Errorf("dead member's SIP/b = %s, want gone at once", got)
	}
	m.member(t, cluster.EventLeave, "c", jidC, eidC)
	if got := m.state("SIP/c"); got != "-" {
		t.Errorf("departed member's SIP/c = %s, want gone at once", got)
	}
}

func TestMemberGoneKeptWithStaleKeep(t *testing.T) {
	m := startMemAgent(t, func(c *Config) { c.Core.Stale = 1 /* keep */ })
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/b", State: devstate.InUse, EID: eidB}}
	m.member(t, cluster.EventJoin, "b", jidB, eidB)
	recv(t, m.asked, "member b added and asked")
	if got := m.state("SIP/b"); got != "INUSE" {
		t.Fatalf("SIP/b = %s", got)
	}
	m.member(t, cluster.EventDead, "b", jidB, eidB)
	if got := m.state("SIP/b"); got != "INUSE" {
		t.Errorf("stale=keep: SIP/b = %s after the member died", got)
	}
}

// A buddy whose presence goes has its states expire after the grace, not
// before; one that comes back in time keeps them. A buddy that comes back
// after boot is asked for its states.
func TestExpiryAfterGraceInMemory(t *testing.T) {
	m := startMemAgent(t, nil) // grace 10 s
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	// B answers what it holds: a buddy that comes back is asked again.
	m.x.answers[jidB] = []pubsub.DeviceItem{{Device: "SIP/b", State: devstate.InUse, EID: eidB}}
	up := pubsub.Presence{JID: jidB, Available: true, Online: true}
	down := pubsub.Presence{JID: jidB}
	m.x.send(t, up)
	recv(t, m.asked, "states request to the returning buddy, answered")
	m.x.send(t, pubsub.DeviceEvent{Item: pubsub.DeviceItem{Device: "SIP/b", State: devstate.InUse, EID: eidB, Publisher: jidB}})

	m.x.send(t, down)
	m.clock.Advance(9 * time.Second)
	m.x.send(t, up)
	recv(t, m.asked, "states request to the buddy back in time, answered")
	m.clock.Advance(time.Hour)
	if got := m.state("SIP/b"); got != "INUSE" {
		t.Fatalf("back within the grace: SIP/b = %s", got)
	}
	m.x.send(t, down)
	m.clock.Advance(10*time.Second - time.Nanosecond)
	if got := m.state("SIP/b"); got != "INUSE" {
		t.Fatalf("before the grace is over: SIP/b = %s", got)
	}
	m.clock.Advance(time.Nanosecond)
	if got := m.state("SIP/b"); got != "-" {
		t.Fatalf("after the grace: SIP/b = %s, want gone", got)
	}
}
