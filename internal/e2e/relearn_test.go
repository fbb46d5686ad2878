package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/pubsub"
)

// standIn is a plain XMPP client that behaves as an Asterisk node does on
// the wire: it sends its presence, subscribes to the nodes, never
// answers a states request, and learns a state only from a notification
// (it ignores the items it is handed on connect).
type standIn struct {
	t      *testing.T
	ev     chan pubsub.Event
	cancel context.CancelFunc
	done   chan error
}

func startStandIn(t *testing.T, c *cluster, account string, buddy string) *standIn {
	t.Helper()
	bare, pw := c.srv.Admin(account)
	cfg := pubsub.DefaultConfig()
	cfg.JID, cfg.Password = bare+"/asterisk", pw
	cfg.Address, cfg.Service, cfg.UseTLS = c.srv.Addr, c.srv.Service, false
	cfg.EID = devstate.DeriveEID(cfg.JID)
	cfg.Buddies = []string{jid.Bare(buddy)}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s := &standIn{t: t, ev: make(chan pubsub.Event, 1024), done: make(chan error, 1)}
	cl, err := pubsub.New(cfg, s.ev)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- cl.Run(ctx) }()
	t.Cleanup(s.stop)
	return s
}

func (s *standIn) stop() {
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
		<-s.done
	}
}

// notified waits until a notification has told every device its state;
// the items fetched on connect do not count.
func (s *standIn) notified(d time.Duration, want map[string]devstate.State) time.Duration {
	s.t.Helper()
	t0 := time.Now()
	left := map[string]devstate.State{}
	for k, v := range want {
		left[k] = v
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	for len(left) > 0 {
		select {
		case ev := <-s.ev:
			if de, ok := ev.(pubsub.DeviceEvent); ok && left[de.Item.Device] == de.Item.State {
				delete(left, de.Item.Device)
			}
		case <-tm.C:
			s.t.Fatalf("no notification of %v within %v", left, d)
		}
	}
	return time.Since(t0)
}

func (s *standIn) connected(d time.Duration) {
	s.t.Helper()
	tm := time.NewTimer(d)
	defer tm.Stop()
	for {
		select {
		case ev := <-s.ev:
			if _, ok := ev.(pubsub.Connected); ok {
				return
			}
		case <-tm.C:
			s.t.Fatalf("stand-in not connected within %v", d)
		}
	}
}

// An Asterisk node that was away (and missed publications) learns this
// node's current states when it comes back: the agent republishes them
// once the buddy's subscription can exist, since the buddy does not ask.
func TestAsteriskBuddyRelearns(t *testing.T) {
	c := newCluster(t, 2) // node2's account is the stand-in's; its agent never runs
	n1 := c.nodes[0]
	n1.start()
	a := n1.waitBooted()
	devA, devB := "Custom:relearn-a", "Custom:relearn-b"
	a.setDevice(devA, "INUSE")

	ast := startStandIn(t, c, "node2", n1.jid)
	ast.connected(bootWait)
	took := ast.notified(settle, map[string]devstate.State{devA: devstate.InUse})
	t.Logf("first connect: notified %v after Connected", took.Round(time.Millisecond))
	ast.stop()

	// Missed while away: published, and answered by the server, before
	// the stand-in comes back (the values are in the publisher once
	// Setvar is answered).
	a.setDevice(devA, "BUSY")
	a.setDevice(devB, "RINGING")
	a.publishesAnswered()

	ast = startStandIn(t, c, "node2", n1.jid)
	ast.connected(bootWait)
	took = ast.notified(settle, map[string]devstate.State{devA: devstate.Busy, devB: devstate.Ringing})
	t.Logf("reconnect: notified %v after Connected", took.Round(time.Millisecond))
}

// Three agents and a restart of their server (which keeps PubSub in
// memory: the nodes are gone): every agent is back, has re-created the
// nodes, re-subscribed, resynced and republished, and shows the states
// the others set while the server was down, within seconds of the
// server accepting connections again. The time is logged.
func TestAgentsConvergeAfterServerRestart(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	amis := make([]*amiConn, len(c.nodes))
	for i, n := range c.nodes {
		amis[i] = n.ami()
		amis[i].setDevice(fmt.Sprintf("Custom:restart-%d", i), "INUSE")
	}
	if err := c.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, a := range amis { // every agent has seen the stream end
		eventually(t, settle, a.n.name+" sees the server gone", func() (bool, string) {
			out := strings.Join(a.action("Command", "Command", "show connected").Values("Output"), "\n")
			return !strings.Contains(out, "- Connected"), out
		})
	}
	for i, a := range amis {
		a.setDevice(fmt.Sprintf("Custom:restart-%d", i), "BUSY")
	}
	// From when the server serves again (see xmpptest.StartServing).
	up, probed, err := c.srv.StartServing()
	defer probed()
	if err != nil {
		t.Fatal(err)
	}
	took := make([]time.Duration, len(amis))
	for i, a := range amis {
		eventually(t, settle, fmt.Sprintf("node%d converged", i+1), func() (bool, string) {
			ds := a.devices()
			for j := range amis {
				if ds[fmt.Sprintf("Custom:restart-%d", j)] != "BUSY" {
					return false, fmt.Sprint(ds)
				}
			}
			return true, ""
		})
		took[i] = time.Since(up)
	}
	t.Logf("prosody restart: every agent converged within %v of the server serving again (%v)", took[len(took)-1].Round(time.Millisecond), took)
}
