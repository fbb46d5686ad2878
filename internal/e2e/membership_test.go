package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/pubsub"
)

// Five agents with no buddy= lines, each knowing one other's gossip
// address, find each other and share state; a sixth started later with one
// join address gets the full state and its states reach the five; a
// SIGKILLed agent's states go as soon as gossip declares it dead; a payload
// published by another account with a member's EID changes nothing.
func TestMembership(t *testing.T) {
	const n = 5
	opts := make([]nodeOpts, n)
	for i := range opts {
		// stale_grace far beyond the test: only membership can expire.
		opts[i] = nodeOpts{gossip: true, join: []int{(i + 1) % n}, noBuddies: true, staleGrace: 600}
	}
	c := newCluster(t, n, opts...)
	c.startAll()
	amis := make([]*amiConn, n)
	for i, nd := range c.nodes {
		amis[i] = nd.ami()
	}
	for _, nd := range c.nodes {
		eventually(t, bootWait, nd.name+" sees 5 alive members", func() (bool, string) {
			out, _ := nd.cli("show", "members")
			return strings.Count(out, " alive ") == n, out
		})
	}
	for i, a := range amis {
		a.setDevice(fmt.Sprintf("Custom:from%d", i+1), "INUSE")
	}
	a1 := amis[0]
	amis[1].setDevice("Custom:shared", "RINGING")
	amis[2].setDevice("Custom:shared", "BUSY")
	want := map[string]string{"Custom:shared": "RINGINUSE"}
	for i := range amis {
		want[fmt.Sprintf("Custom:from%d", i+1)] = "INUSE"
	}
	for _, a := range amis {
		eventually(t, settle, a.n.name+" has every member's state", func() (bool, string) {
			return hasAll(a.devices(), want)
		})
	}

	// A sixth agent, one join address, no config edit on the five.
	six := c.add(nodeOpts{gossip: true, join: []int{2}, noBuddies: true, staleGrace: 600})
	six.start()
	a6 := six.waitBooted()
	eventually(t, settle, "node6 has the full state", func() (bool, string) { return hasAll(a6.devices(), want) })
	a6.setDevice("Custom:from6", "BUSY")
	for _, a := range amis {
		eventually(t, settle, a.n.name+" hears node6", func() (bool, string) {
			s := a.device("Custom:from6")
			return s == "BUSY", s
		})
	}

	// Spoofing: another account publishes with node2's EID.
	bare, pw := c.srv.Admin("mallory")
	spoofer := startPubSubClient(t, c, bare+"/x", pw, devstate.EID{2, 0, 0, 0, 0, 2})
	spoofer.PublishDevice("Custom:spoof", devstate.InUse, true)
	spoofer.PublishDevice("Custom:shared", devstate.NotInUse, true)
	amis[1].setDevice("Custom:marker", "BUSY") // published after the spoof
	for _, a := range amis {
		eventually(t, settle, a.n.name+" has the marker", func() (bool, string) {
			s := a.device("Custom:marker")
			return s == "BUSY", s
		})
		if d := a.devices(); d["Custom:spoof"] != "" || d["Custom:shared"] != "RINGINUSE" {
			t.Fatalf("%s: spoofed payload changed the table: spoof=%q shared=%q", a.n.name, d["Custom:spoof"], d["Custom:shared"])
		}
	}
	eventually(t, settle, "node1 logs who tried", func() (bool, string) {
		return strings.Contains(c.nodes[0].log(), "claimed_by="+bare), ""
	})
	out, _ := c.nodes[0].cli("show", "stats")
	if !strings.Contains(out, "Spoofed payloads refused: ") || strings.Contains(out, "Spoofed payloads refused: 0") {
		t.Fatalf("show stats:\n%s", out)
	}

	// SIGKILL node2: gossip declares it dead; XMPP presence could not
	// expire it within the test (stale_grace=600).
	killed := time.Now()
	c.nodes[1].kill()
	for _, a := range []*amiConn{a1, amis[2], a6} {
		eventually(t, bootWait, a.n.name+" drops node2", func() (bool, string) {
			d := a.devices()
			return d["Custom:from2"] == "" && d["Custom:shared"] == "BUSY", fmt.Sprint(d["Custom:from2"], d["Custom:shared"])
		})
	}
	t.Logf("LAN profile: node2's states dropped %v after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	out, _ = c.nodes[0].cli("show", "members")
	if !strings.Contains(out, " dead ") {
		t.Fatalf("show members after the kill:\n%s", out)
	}
}

func hasAll(got, want map[string]string) (bool, string) {
	for dev, w := range want {
		if got[dev] != w {
			return false, fmt.Sprintf("%s = %q, want %s", dev, got[dev], w)
		}
	}
	return true, ""
}

// startPubSubClient runs a bare busylamp XMPP client, for playing a
// misbehaving server.
func startPubSubClient(t *testing.T, c *cluster, jid, pw string, eid devstate.EID) *pubsub.Client {
	t.Helper()
	cfg := pubsub.DefaultConfig()
	cfg.JID, cfg.Password, cfg.Address, cfg.Service = jid, pw, c.srv.Addr, c.srv.Service
	cfg.UseTLS = false
	cfg.EID = eid
	events := make(chan pubsub.Event, 1024)
	cl, err := pubsub.New(cfg, events)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	connected := make(chan struct{})
	go func() {
		first := connected
		for {
			select {
			case ev := <-events:
				if _, ok := ev.(pubsub.Connected); ok && first != nil {
					close(first)
					first = nil
				}
			case <-done:
				return
			}
		}
	}()
	select {
	case <-connected:
	case <-time.After(bootWait):
		t.Fatal("spoofing client did not connect")
	}
	return cl
}
