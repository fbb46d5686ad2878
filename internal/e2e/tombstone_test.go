package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// itemsOf connects a stand-in for an Asterisk node on account and returns
// the mailbox items it fetched on connect (what Asterisk reads at start).
func itemsOf(t *testing.T, c *cluster, account, buddy string) map[devstate.EID]map[string]mwi.Counts {
	t.Helper()
	s := startStandIn(t, c, account, buddy)
	defer s.stop()
	tm := time.NewTimer(bootWait)
	defer tm.Stop()
	for {
		select {
		case ev := <-s.ev:
			if cn, ok := ev.(pubsub.Connected); ok {
				out := map[devstate.EID]map[string]mwi.Counts{}
				for _, it := range cn.Mailboxes {
					if out[it.EID] == nil {
						out[it.EID] = map[string]mwi.Counts{}
					}
					out[it.EID][it.Mailbox] = it.Counts
				}
				return out
			}
		case <-tm.C:
			t.Fatalf("stand-in on %s not connected within %v", account, bootWait)
		}
	}
}

// An MWIDelete acknowledged just before a SIGKILL, whose zero counts
// never reached the XMPP server (node1's path to it holds them, then dies
// with them), is not undone by the restart: neither the PubSub item nor
// node2 (which missed the delete and keeps node1's counts: stale=keep)
// brings the mailbox back; node1 shows it deleted, node2 converges to
// zero or nothing, and the item holds zero counts again, for an Asterisk
// node that reads it.
func TestDeletedMailboxNotResurrected(t *testing.T) {
	rl := newRelay(t)
	// node3's agent never runs: its account is the Asterisk stand-in's.
	c := newCluster(t, 3, nodeOpts{xmppAddr: rl.addr()}, nodeOpts{stale: "keep"})
	rl.setTarget(c.srv.Addr)
	n1, n2 := c.nodes[0], c.nodes[1]
	n1.start()
	n2.start()
	a1, a2 := n1.waitBooted(), n2.waitBooted()
	eid1 := devstate.EID{2, 0, 0, 0, 0, 1} // node1's, as writeConf gives it
	const mb = "77@tomb"
	counts := func(a *amiConn) string { n, o := a.mailbox(mb); return n + "/" + o }

	if m := a1.action("MWIUpdate", "Mailbox", mb, "NewMessages", "3", "OldMessages", "1"); m.Get("Response") != "Success" {
		t.Fatalf("MWIUpdate: %v", m)
	}
	// node2 was notified: the publish reached the server, and the item.
	eventually(t, settle, "node2 has node1's counts", func() (bool, string) {
		got := counts(a2)
		return got == "3/1", got
	})

	rl.hole(true)
	if m := a1.action("MWIDelete", "Mailbox", mb); m.Get("Response") != "Success" {
		t.Fatalf("MWIDelete: %v", m)
	}
	if got := counts(a1); got != "/" {
		t.Fatalf("node1 after the delete: %s, want no mailbox", got)
	}
	n1.kill()
	rl.cut() // the zero counts die on the path
	rl.hole(false)

	// The fault is there: the item and node2 still hold the old counts.
	if got := itemsOf(t, c, "node3", n1.jid)[eid1][mb]; got != (mwi.Counts{New: 3, Old: 1}) {
		t.Fatalf("item of node1's %s before the restart: %+v, want 3/1 (the delete must not have reached the server)", mb, got)
	}
	if got := counts(a2); got != "3/1" {
		t.Fatalf("node2 before node1's restart: %s, want 3/1 (it must have missed the delete)", got)
	}

	t0 := time.Now()
	n1.start()
	a1 = n1.waitBooted()
	booted := time.Since(t0)
	if got := counts(a1); got != "/" {
		t.Fatalf("node1 at FullyBooted after the kill: %s, want no mailbox (deleted, acknowledged)\nlog:\n%s", got, n1.log())
	}
	eventually(t, settle, "node2 sees node1's mailbox deleted", func() (bool, string) {
		got := counts(a2)
		return got == "/" || got == "0/0", got
	})
	converged := time.Since(t0)
	var item mwi.Counts
	eventually(t, settle, "the item holds zero counts", func() (bool, string) {
		var ok bool
		item, ok = itemsOf(t, c, "node3", n1.jid)[eid1][mb]
		return !ok || item == (mwi.Counts{}), fmt.Sprintf("%+v", item)
	})
	itemZero := time.Since(t0)
	// Settled: node1 still shows it deleted.
	if got := counts(a1); got != "/" {
		t.Fatalf("node1 after convergence: %s, want no mailbox", got)
	}
	t.Logf("after the restart: node1 booted in %v, node2 converged in %v, the item read zero within %v",
		booted.Round(time.Millisecond), converged.Round(time.Millisecond), itemZero.Round(time.Millisecond))
}
