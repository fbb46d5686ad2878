package e2e

import (
	"strings"
	"testing"
)

// The built binary with a serverhost list whose first server is dead
// (nothing listens there): the agents pass over it to the real server,
// 'show connected' names it as target 2 of 2, and states flow.
func TestServerListSkipsDeadServer(t *testing.T) {
	dead := freeAddr(t) // closed again: connections are refused
	o := nodeOpts{serverList: []string{dead}}
	c := newCluster(t, 2, o, o)
	c.startAll()
	a1, a2 := c.nodes[0].ami(), c.nodes[1].ami()
	out := strings.Join(a1.action("Command", "Command", "show connected").Values("Output"), "\n")
	for _, want := range []string{"- Connected", "Server: " + c.srv.Addr + "  PubSub:", "Target: 2 of 2, via serverhost"} {
		if !strings.Contains(out, want) {
			t.Errorf("show connected lacks %q:\n%s", want, out)
		}
	}
	a1.setDevice("Custom:list", "INUSE")
	eventually(t, settle, "node 2 hears node 1", func() (bool, string) {
		s := a2.device("Custom:list")
		return s == "INUSE", s
	})
}
