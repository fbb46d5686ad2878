package xmpptest

import (
	"bytes"
	"slices"
	"testing"
	"time"
)

// Two ejabberd nodes in one cluster: an account registered once logs in
// on either, a PubSub item published on one is read on the other, node 1
// stopped leaves node 2 serving (and taking writes), node 1 started again
// rejoins and has what was written meanwhile.
func TestEjabberdCluster(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	c := StartEjabberdClusterT(t, 2)
	n1, n2 := c.Nodes[0], c.Nodes[1]
	if n1.Addr == n2.Addr || n1.ErlangNode() == n2.ErlangNode() {
		t.Fatalf("nodes share %s / %s", n1.Addr, n1.ErlangNode())
	}
	for i := range c.Nodes {
		m, err := c.Members(i)
		if err != nil || !slices.Contains(m, n1.ErlangNode()) || !slices.Contains(m, n2.ErlangNode()) {
			t.Fatalf("node %d lists %v (%v)", i+1, m, err)
		}
	}
	aj, apw := c.Admin("a")
	bj, bpw := c.User("b")
	a := mustLogin(t, n1, cr(aj, apw), false)
	e, err := a.createNode(n1.Service, "device_state")
	wantResult(t, "create on node 1", e, err)
	e, err = a.publish(n1.Service, "device_state", "Custom:one", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:01'>INUSE</state>")
	wantResult(t, "publish on node 1", e, err)
	b := mustLogin(t, n2, cr(bj, bpw), false)
	e, err = b.items(n2.Service, "device_state")
	wantResult(t, "items on node 2", e, err)
	if !bytes.Contains(e.Inner, []byte("Custom:one")) {
		t.Fatalf("node 2 does not have node 1's item: %s", e)
	}
	a.close()
	t.Logf("cluster up, accounts and an item replicated in %v", time.Since(begin).Round(time.Millisecond))

	t0 := time.Now()
	if err := c.Stop(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 1 stopped in %v", time.Since(t0).Round(time.Millisecond))
	wantDown(t, n1)
	// B's session on node 2 lives on; A logs in on node 2 and writes.
	e, err = b.items(n2.Service, "device_state")
	wantResult(t, "items on node 2 with node 1 down", e, err)
	a2 := mustLogin(t, n2, cr(aj, apw), false)
	e, err = a2.publish(n2.Service, "device_state", "Custom:two", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:01'>BUSY</state>")
	wantResult(t, "publish on node 2 with node 1 down", e, err)

	t0 = time.Now()
	if err := c.Start(0); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 1 back in the cluster in %v", time.Since(t0).Round(time.Millisecond))
	a = mustLogin(t, n1, cr(aj, apw), false)
	e, err = a.items(n1.Service, "device_state")
	wantResult(t, "items on node 1 after its restart", e, err)
	if !bytes.Contains(e.Inner, []byte("Custom:two")) {
		t.Fatalf("node 1 missed what node 2 took while it was down: %s", e)
	}
}
