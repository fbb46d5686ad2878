package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// An own change is what the driver sent; acked says the agent answered
// Success, so it must survive anything.
type ownChange struct {
	key   string // "dev:NAME" or "mbx:NAME"
	value string // a state, or "NEW/OLD"
}

// drive streams Setvars and MWIUpdates to c until an action fails (the
// agent died), telling acked how many were acknowledged. It returns what was acknowledged last per
// key and the one change in flight when it failed (its outcome
// unknown), if any.
func drive(c *manager.Client, acked chan<- int) (last map[string]string, inflight *ownChange) {
	states := []string{"INUSE", "BUSY", "RINGING", "ONHOLD", "NOT_INUSE", "UNAVAILABLE", "RINGINUSE"}
	last = make(map[string]string)
	for i := 0; ; i++ {
		var ch ownChange
		var action string
		var hs []manager.Header
		if i%5 == 4 {
			mb := fmt.Sprintf("%d@kill", i%7)
			ch = ownChange{"mbx:" + mb, fmt.Sprintf("%d/%d", i, i%3)}
			action = "MWIUpdate"
			hs = []manager.Header{{Key: "Mailbox", Value: mb}, {Key: "NewMessages", Value: fmt.Sprint(i)}, {Key: "OldMessages", Value: fmt.Sprint(i % 3)}}
		} else {
			dev := fmt.Sprintf("Custom:kill-%d", i%41)
			ch = ownChange{"dev:" + dev, states[(i/40)%len(states)]}
			action = "Setvar"
			hs = []manager.Header{{Key: "Variable", Value: "DEVICE_STATE(" + dev + ")"}, {Key: "Value", Value: ch.value}}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := c.Action(ctx, action, hs...)
		cancel()
		if err != nil || m.Get("Response") != "Success" {
			return last, &ch
		}
		last[ch.key] = ch.value
		select {
		case acked <- i + 1:
		default:
		}
	}
}

// observed is what an agent shows of the driven keys.
func observed(a *amiConn, keys map[string]string) map[string]string {
	out := make(map[string]string, len(keys))
	devs := a.devices()
	for k := range keys {
		name := k[4:]
		if strings.HasPrefix(k, "dev:") {
			out[k] = devs[name]
		} else {
			n, o := a.mailbox(name)
			out[k] = n + "/" + o
		}
	}
	return out
}

// mismatch names the first key whose observed value is neither the
// acknowledged one nor, for the change in flight, its value.
func mismatch(got, want map[string]string, inflight *ownChange) string {
	for k, w := range want {
		g := got[k]
		if g == w || (inflight != nil && inflight.key == k && g == inflight.value) {
			continue
		}
		return fmt.Sprintf("%s = %q, want %q", k, g, w)
	}
	if inflight != nil {
		if _, ok := want[inflight.key]; !ok && got[inflight.key] != "" && got[inflight.key] != "/" && got[inflight.key] != inflight.value {
			return fmt.Sprintf("%s = %q, never acknowledged", inflight.key, got[inflight.key])
		}
	}
	return ""
}

// Agent 1 is SIGKILLed while a driver streams acknowledged changes to it:
// after its restart every acknowledged change is back, on it and on the
// others (whatever was acknowledged last for each device and mailbox).
func TestKilledAgentKeepsAcknowledged(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	n1 := c.nodes[0]
	drv := n1.ami()
	acked := make(chan int, 1)
	type result struct {
		last     map[string]string
		inflight *ownChange
	}
	res := make(chan result, 1)
	go func() {
		l, f := drive(drv.c, acked)
		res <- result{l, f}
	}()
	// Kill mid-stream, once the driver has touched every key a few times.
	deadline := time.After(settle)
	for ops := 0; ops < 500; {
		select {
		case ops = <-acked:
		case <-deadline:
			t.Fatal("driver too slow")
		}
	}
	n1.kill()
	r := <-res
	if r.inflight == nil {
		t.Fatal("driver stopped without a failed action")
	}
	t.Logf("killed after %d keys; in flight: %+v", len(r.last), *r.inflight)

	n1.start()
	a1 := n1.waitBooted()
	if msg := mismatch(observed(a1, r.last), r.last, r.inflight); msg != "" {
		t.Fatalf("node1 at FullyBooted after the kill: %s\nlog:\n%s", msg, n1.log())
	}
	// The change in flight settles to one value: everyone must agree on it.
	want := r.last
	if got := observed(a1, r.last); r.inflight != nil && got[r.inflight.key] == r.inflight.value {
		want = make(map[string]string, len(r.last)+1)
		for k, v := range r.last {
			want[k] = v
		}
		want[r.inflight.key] = r.inflight.value
	}
	for _, n := range c.nodes {
		a := n.ami()
		eventually(t, settle, n.name+" holds every acknowledged change", func() (bool, string) {
			msg := mismatch(observed(a, want), want, nil)
			return msg == "", msg
		})
	}
}

// The whole cluster and its XMPP server restart (PubSub in memory: every
// item is gone): each agent's own states come back from its store, and
// every agent shows the whole cluster state again.
func TestClusterAndServerRestart(t *testing.T) {
	c := newClusterOn(t, xmpptest.Options{Memory: true}, 3)
	c.startAll()
	want := map[string]string{}
	for i, n := range c.nodes {
		a := n.ami()
		for d := range 20 {
			dev := fmt.Sprintf("Custom:n%d-%d", i+1, d)
			a.setDevice(dev, []string{"INUSE", "BUSY", "RINGING", "ONHOLD"}[(d+i)%4])
			want["dev:"+dev] = a.device(dev)
		}
		a.action("MWIUpdate", "Mailbox", fmt.Sprintf("%d@restart", i+1), "NewMessages", fmt.Sprint(i+2), "OldMessages", "1")
		want[fmt.Sprintf("mbx:%d@restart", i+1)] = fmt.Sprintf("%d/1", i+2)
	}
	// One device set by two nodes: the merge must come back too.
	c.nodes[0].ami().setDevice("Custom:both", "INUSE")
	c.nodes[1].ami().setDevice("Custom:both", "RINGING")
	want["dev:Custom:both"] = "RINGINUSE"
	for _, n := range c.nodes {
		a := n.ami()
		eventually(t, settle, n.name+" holds the cluster state", func() (bool, string) {
			msg := mismatch(observed(a, want), want, nil)
			return msg == "", msg
		})
	}

	t0 := time.Now()
	for _, n := range c.nodes {
		n.kill()
	}
	if err := c.srv.Kill(); err != nil { // in memory: every node and item goes
		t.Fatal(err)
	}
	if err := c.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	c.startAll()
	t.Logf("restart took %v, boot %v", t1.Sub(t0), time.Since(t1))
	for _, n := range c.nodes {
		a := n.ami()
		eventually(t, settle, n.name+" holds the cluster state after the restart", func() (bool, string) {
			msg := mismatch(observed(a, want), want, nil)
			return msg == "", msg
		})
	}
}
