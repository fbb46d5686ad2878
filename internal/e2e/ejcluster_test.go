package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Issue 14 item 3: agents on a 2-node ejabberd cluster (Erlang
// distribution on loopback, join_cluster). The cluster is the distributed
// engine: mnesia replicates the accounts, the PubSub nodes, items and
// subscriptions, and routes each notification to the node its
// subscriber's session is on.

// newEjabberdCluster starts a 2-node ejabberd cluster and writes configs
// for n agents, each listing the others as buddies; opts(ej, i) gives
// agent i's options (which ejabberd node it connects to). Start them with
// startAll.
func newEjabberdCluster(t *testing.T, n int, opts func(ej *xmpptest.EjabberdCluster, i int) nodeOpts) (*cluster, *xmpptest.EjabberdCluster) {
	t.Helper()
	ej := xmpptest.StartEjabberdClusterT(t, 2)
	for i := range n {
		ej.Admin(fmt.Sprintf("node%d", i+1)) // on every node's admin list; declare finds it
	}
	c := &cluster{t: t, srv: ej.Nodes[0], dir: t.TempDir()}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, nd := range c.nodes {
			l := nd.log()
			if len(l) > 6000 {
				l = "…" + l[len(l)-6000:]
			}
			t.Logf("%s log:\n%s", nd.name, l)
		}
	})
	for range n {
		c.declare()
	}
	for i := range c.nodes {
		c.writeConf(i, opts(ej, i))
	}
	t.Cleanup(c.stopAll)
	return c, ej
}

// sessionsOn waits until every agent named has its session on the
// ejabberd node want says, as the cluster itself lists its sessions.
func sessionsOn(t *testing.T, ej *xmpptest.EjabberdCluster, d time.Duration, want map[*node]int) time.Time {
	t.Helper()
	var seenAt time.Time
	eventually(t, d, "agents' sessions on their ejabberd nodes", func() (bool, string) {
		var errs []string
		for i := range ej.Nodes {
			got, err := ej.Sessions(i)
			if err != nil {
				errs = append(errs, err.Error())
				continue // that node is down
			}
			seenAt = time.Now()
			for nd, j := range want {
				if got[nd.jid] != ej.Nodes[j].ErlangNode() {
					return false, fmt.Sprintf("%s on %q, want %s (sessions %v)", nd.jid, got[nd.jid], ej.Nodes[j].ErlangNode(), got)
				}
			}
			return true, ""
		}
		return false, "no node answers: " + strings.Join(errs, "; ")
	})
	return seenAt
}

// Four agents, two on each ejabberd node, share device states (merged
// across nodes) and MWI.
func TestEjabberdClusterShares(t *testing.T) {
	begin := time.Now()
	c, ej := newEjabberdCluster(t, 4, func(ej *xmpptest.EjabberdCluster, i int) nodeOpts {
		return nodeOpts{xmppAddr: ej.Nodes[i%2].Addr}
	})
	c.startAll()
	sessionsOn(t, ej, settle, map[*node]int{c.nodes[0]: 0, c.nodes[1]: 1, c.nodes[2]: 0, c.nodes[3]: 1})
	t.Logf("cluster and 4 agents up in %v", time.Since(begin).Round(time.Millisecond))
	var a []*amiConn
	for _, nd := range c.nodes {
		a = append(a, nd.ami())
	}
	t0 := time.Now()
	a[0].setDevice("Custom:shared", "INUSE")                                                    // through ejabberd node 1
	a[1].setDevice("Custom:shared", "RINGING")                                                  // through node 2
	a[2].setDevice("Custom:one", "BUSY")                                                        // node 1
	a[3].action("MWIUpdate", "Mailbox", "1000@default", "NewMessages", "2", "OldMessages", "1") // node 2
	for _, ac := range a {
		eventually(t, settle, ac.n.name+" sees the cluster-wide states", func() (bool, string) {
			got := ac.devices()
			nw, old := ac.mailbox("1000@default")
			s := fmt.Sprintf("%v mwi %s/%s", got, nw, old)
			return got["Custom:shared"] == "RINGINUSE" && got["Custom:one"] == "BUSY" && nw == "2" && old == "1", s
		})
	}
	t.Logf("every agent has every state in %v", time.Since(t0).Round(time.Millisecond))
	out, code := c.nodes[2].cli("devstate", "get", "Custom:shared")
	if code != 0 || !strings.Contains(out, "02:00:00:00:00:01") || !strings.Contains(out, "02:00:00:00:00:02") {
		t.Fatalf("devstate get on node 3: exit %d\n%s", code, out)
	}
}
