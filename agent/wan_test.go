package agent

import (
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/wanpath"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Agents whose gossip crosses a WAN (profile wan; every gossip packet and
// stream delayed and dropped as a 100 ms round trip with 1% loss each way
// would, internal/wanpath): a joining agent still gets its buddy's own
// states over the memberlist stream, well within the gossip wait, without
// falling back to XMPP; and a change made after reaches it over XMPP.
func TestGossipOverWAN(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	aj, _ := srv.Admin("wan-a")
	path := wanpath.Path{RTT: 100 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.01, Seed: 1400}
	wan := func(seed uint64) func(*Config) {
		return func(cfg *Config) {
			p := path
			p.Seed += seed
			cfg.Cluster.Profile = cluster.ProfileWAN
			cfg.Cluster.WrapTransport = p.Wrap(nil)
		}
	}
	b := startRealAgent(t, srv, "wan-b", []string{aj + "/test"}, []string{}, wan(1))
	b.booted(t)
	b.set(t, "Wan:b", devstate.Busy)
	b.set(t, "Wan:shared", devstate.InUse)

	start := time.Now()
	a := startRealAgent(t, srv, "wan-a", []string{b.jid}, []string{b.cluster.Addr()}, wan(2))
	a.booted(t)
	bootedIn := time.Since(start)
	for dev, want := range map[string]devstate.State{"Wan:b": devstate.Busy, "Wan:shared": devstate.InUse} {
		if st, ok := a.Core().DeviceState(dev); !ok || st != want {
			t.Errorf("%s = %s after the resync, want %s", dev, st, want)
		}
	}
	if n := a.stat(t, "States answers over gossip"); n < 1 {
		t.Errorf("states answers over gossip: %d, want 1", n)
	}
	if n := a.stat(t, "States requests fallen back to XMPP"); n != 0 {
		t.Errorf("fallbacks to XMPP: %d, want 0", n)
	}
	if _, ok := b.memberOf(a.jid); !ok {
		waitUntil(t, "B sees A in gossip", func() bool { _, ok := b.memberOf(a.jid); return ok })
	}

	changed := time.Now()
	b.set(t, "Wan:b", devstate.Ringing)
	waitUntil(t, "A sees B's change", func() bool {
		st, _ := a.Core().DeviceState("Wan:b")
		return st == devstate.Ringing
	})
	t.Logf("A booted (resync over gossip included) in %v; B's change reached A in %v",
		bootedIn.Round(time.Millisecond), time.Since(changed).Round(time.Millisecond))
}
