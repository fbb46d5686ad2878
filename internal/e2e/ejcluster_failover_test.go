package e2e

// serverhost as an ordered list of targets (issue 14 item 1): the next
// target tried on a disconnect, the preferred one taken again when it is
// back.

import (
	"testing"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Four agents, two preferring each ejabberd node, each with both nodes in
// serverhost. Node 1 stops: its agents move to node 2 within 10 s and no
// state is lost; node 1 comes back: its agents return to it. Through
// both, no agent's AMI shows a device or mailbox other than it was.
func TestEjabberdClusterFailover(t *testing.T) {
	c, ej := newEjabberdCluster(t, 4, func(ej *xmpptest.EjabberdCluster, i int) nodeOpts {
		p, q := ej.Nodes[0].Addr, ej.Nodes[1].Addr
		if i >= 2 {
			p, q = q, p
		}
		// A server away for the failover must not lose its states
		// meanwhile: stale_grace above the failover time.
		return nodeOpts{serverhost: p + ", " + q, staleGrace: 30}
	})
	runFailover(t, c, ej,
		func() error { return ej.Stop(0) },
		func() error { return ej.Start(0) })
}
