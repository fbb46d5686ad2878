package agent

import (
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/pubsub"
)

// waitTimers waits until n timers are armed on the manual clock.
func (m *memAgent) waitTimers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for m.clock.Pending() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d timers armed, want %d", m.clock.Pending(), n)
		}
		select {
		case <-m.clock.Started():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func noPublish(t *testing.T, m *memAgent) {
	t.Helper()
	select {
	case p := <-m.x.publishCh:
		t.Fatalf("published %s", p)
	case <-time.After(50 * time.Millisecond):
	}
}

// A buddy that comes back and does not answer our states request (an
// Asterisk node) gets our own states republished relearnGrace after its
// presence (on the injected clock); one that answers (busylamp) does not.
func TestBuddyBackRelearnsInMemory(t *testing.T) {
	m := startMemAgent(t, func(c *Config) { c.XMPP.Buddies = []string{"b@x.test", "c@x.test"} })
	m.x.silent[jidB] = true
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	if err := m.Core().SetDeviceState("SIP/a", devstate.InUse); err != nil {
		t.Fatal(err)
	}
	recv(t, m.x.publishCh, "publish")
	base := m.clock.Pending()

	m.x.send(t, pubsub.Presence{JID: jidB, Available: true, Online: true})
	recv(t, m.x.asked, "states request to B")
	m.waitTimers(t, base+1)
	m.clock.Advance(relearnGrace - time.Millisecond)
	noPublish(t, m)
	m.clock.Advance(time.Millisecond)
	if got := recv(t, m.x.publishCh, "republish for B"); got != "SIP/a=INUSE" {
		t.Fatalf("republished %s", got)
	}

	m.x.send(t, pubsub.Presence{JID: jidC, Available: true, Online: true})
	recv(t, m.x.asked, "states request to C")
	recv(t, m.asked, "C's answer applied")
	m.waitTimers(t, base+1)
	m.clock.Advance(relearnGrace)
	noPublish(t, m)
}
