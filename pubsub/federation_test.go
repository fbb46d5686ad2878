package pubsub

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// A client on b.test uses pubsub.a.test over s2s. While the path between
// the servers is cut its publishes are bounced (remote-server-not-found)
// and the service's notifications to it are lost; once the service
// answers again it reconnects, and so gets what it missed (the fetched
// items) and republishes its own states.
func TestFederatedServiceUnreachable(t *testing.T) {
	f := xmpptest.StartFederationT(t, xmpptest.Options{Memory: true})
	aj, apw := f.A.Admin("pbx")
	bj, bpw := f.B.User("pbx")
	ca := peerConfig(f.A, aj, apw, "pbx")
	ca.Buddies = []string{bj + "/pbx"} // a remote buddy: an owner of the nodes a creates
	a := startPeer(t, "A", ca)
	a.connected(connectWait)

	devA, devB := uniq(t, "SIP/a"), uniq(t, "SIP/b")
	var mu sync.Mutex
	ownB := devstate.InUse
	cb := peerConfig(f.B, bj, bpw, "pbx")
	cb.Buddies = []string{aj + "/pbx"}
	// A publish written just as the path is cut may be lost without a
	// bounce (Prosody has no stream management on s2s): it is retried
	// after the IQ timeout.
	cb.IQTimeout = 2 * time.Second
	cb.OwnStates = func() ([]DeviceItem, []MailboxItem) {
		mu.Lock()
		defer mu.Unlock()
		return []DeviceItem{{Device: devB, State: ownB, Cachable: true}}, nil
	}
	b := startPeer(t, "B", cb, func(s *settings) { s.subCheck = time.Second })
	b.connected(connectWait)

	a.c.PublishDevice(devA, devstate.Ringing, true)
	b.device(eventWait, devA, devstate.Ringing)
	b.c.PublishDevice(devB, devstate.InUse, true)
	a.device(eventWait, devB, devstate.InUse)

	f.Cut()
	mu.Lock()
	ownB = devstate.Busy
	mu.Unlock()
	b.c.PublishDevice(devB, devstate.Busy, true)
	waitIdle(t, b.c) // refused: remote-server-not-found
	if st := b.c.Stats(); st.Errors == 0 {
		t.Fatalf("publish through a cut path did not fail: %+v", st)
	}
	a.c.PublishDevice(devA, devstate.OnHold, true)
	waitIdle(t, a.c)
	bs, err := b.c.session()
	if err != nil {
		t.Fatal(err)
	}
	if !bs.unreachable.Load() {
		t.Fatal("B's session did not note the service unreachable")
	}

	if err := f.Restore(); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	b.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
	conn := b.connected(connectWait)
	if !hasDevice(conn.Devices, devA, devstate.OnHold) {
		t.Errorf("Connected devices %+v lack %s=ONHOLD, set during the cut", conn.Devices, devA)
	}
	a.device(eventWait, devB, devstate.Busy) // B's republished own state
	t.Logf("converged %v after the path came back", time.Since(restored).Round(time.Millisecond))
}

// A path that dies without a word (a black hole: nothing bounced, nothing
// answered): the client's check of the remote service times out, which
// counts as unreachable; when the path heals and the service answers, the
// client reconnects and resyncs.
func TestFederatedServiceBlackholed(t *testing.T) {
	f := xmpptest.StartFederationT(t, xmpptest.Options{Memory: true})
	aj, apw := f.A.Admin("pbx")
	bj, bpw := f.B.User("pbx")
	ca := peerConfig(f.A, aj, apw, "pbx")
	ca.Buddies = []string{bj + "/pbx"}
	a := startPeer(t, "A", ca)
	a.connected(connectWait)

	devA, devB := uniq(t, "SIP/a"), uniq(t, "SIP/b")
	cb := peerConfig(f.B, bj, bpw, "pbx")
	cb.Buddies = []string{aj + "/pbx"}
	cb.IQTimeout = time.Second
	cb.OwnStates = func() ([]DeviceItem, []MailboxItem) {
		return []DeviceItem{{Device: devB, State: devstate.Busy, Cachable: true}}, nil
	}
	unreachable := make(chan struct{})
	var once sync.Once
	b := startPeer(t, "B", cb, func(s *settings) {
		s.subCheck = time.Second
		s.onCheck = func(err error) {
			if errors.Is(err, errUnreachable) {
				once.Do(func() { close(unreachable) })
			}
		}
	})
	b.connected(connectWait)
	a.c.PublishDevice(devA, devstate.Ringing, true)
	b.device(eventWait, devA, devstate.Ringing)

	f.Blackhole(true)
	a.c.PublishDevice(devA, devstate.OnHold, true)
	select {
	case <-unreachable:
	case <-time.After(eventWait):
		t.Fatal("B's check did not find the service unreachable")
	}
	f.Blackhole(false)
	healed := time.Now()
	// What was held is delivered now, and B reconnects: it has A's
	// change one way or the other, and A gets B's republished state.
	var sawA, reconnected bool
	b.waitFor(eventWait, "A's change and a reconnect", func(ev Event) bool {
		switch ev := ev.(type) {
		case DeviceEvent:
			sawA = sawA || (ev.Item.Device == devA && ev.Item.State == devstate.OnHold)
		case Connected:
			reconnected = true
			sawA = sawA || hasDevice(ev.Devices, devA, devstate.OnHold)
		}
		return sawA && reconnected
	})
	a.device(eventWait, devB, devstate.Busy)
	t.Logf("converged %v after the path healed", time.Since(healed).Round(time.Millisecond))
}

func TestRemoteService(t *testing.T) {
	for _, tc := range []struct {
		domain, service string
		remote          bool
	}{
		{"a.test", "pubsub.a.test", false},
		{"a.test", "a.test", false},
		{"a.test", "PubSub.A.Test", false},
		{"b.test", "pubsub.a.test", true},
		{"a.test", "pubsub.xa.test", true},
		{"a.test", "pubsub.a.test.example", true},
	} {
		c := &Client{s: &settings{domain: tc.domain}}
		if got := c.remoteService(tc.service); got != tc.remote {
			t.Errorf("account on %s, service %s: remote = %v, want %v", tc.domain, tc.service, got, tc.remote)
		}
	}
}
