package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// Issue 11: one plain account floods device_state with more distinct
// devices than max_devices. The agents hold it to its share (half of
// max_devices), count and log what they refuse, and keep room for their
// own PBX's new devices and for the other agents' devices.
func TestRemoteFloodLeavesOwnRoom(t *testing.T) {
	const maxDevices, flood = 1000, 3000
	c := newClusterOn(t, xmpptest.Options{Memory: true}, 2, nodeOpts{maxDevices: maxDevices}, nodeOpts{maxDevices: maxDevices})
	c.startAll()
	a1, a2 := c.nodes[0].ami(), c.nodes[1].ami()

	// An admin account: the nodes let it publish, as they let any buddy.
	bare, pw := c.srv.Admin("flooder")
	fl := startPubSubClient(t, c, bare+"/flood", pw, devstate.EID{2, 0, 0, 0, 0xf1, 0x00})
	for i := range flood {
		fl.PublishDevice(fmt.Sprintf("Flood:%d", i), devstate.InUse, true)
	}
	eventually(t, bootWait, "the flooder's publishes answered", func() (bool, string) {
		st := fl.Stats()
		return st.Published+st.Errors >= flood && st.Pending == 0 && st.InFlight == 0, fmt.Sprintf("%+v", st)
	})
	if st := fl.Stats(); st.Errors != 0 {
		t.Fatalf("the server refused some of the flood (the test floods nothing then): %+v", st)
	}

	refused := fmt.Sprintf("Remote states refused (share/full): %d\n", flood-maxDevices/2)
	perSource := fmt.Sprintf("\n  %s: %d\n", bare, flood-maxDevices/2)
	for _, n := range c.nodes {
		eventually(t, settle, n.name+" refused all past the flooder's share", func() (bool, string) {
			out, _ := n.cli("show", "stats")
			return strings.Contains(out, refused) && strings.Contains(out, perSource), out
		})
	}
	for _, a := range []*amiConn{a1, a2} {
		held := 0
		for dev := range a.devices() {
			if strings.HasPrefix(dev, "Flood:") {
				held++
			}
		}
		if held != maxDevices/2 {
			t.Fatalf("%s holds %d of the flooder's devices, want its share of %d", a.n.name, held, maxDevices/2)
		}
	}
	if l := c.nodes[0].log(); !strings.Contains(l, "remote states refused") || !strings.Contains(l, "source="+bare) {
		t.Fatalf("node1 did not log the refusals with their source:\n%s", l)
	}

	// The own PBX sets a new device: Success, and the other agent hears it.
	if m := a1.action("Setvar", "Variable", "DEVICE_STATE(Custom:own-after-flood)", "Value", "INUSE"); m.Get("Response") != "Success" {
		t.Fatalf("node1's own new device after the flood: %v", m)
	}
	// Another agent's new device still crosses.
	if m := a2.action("Setvar", "Variable", "DEVICE_STATE(Custom:node2-after-flood)", "Value", "BUSY"); m.Get("Response") != "Success" {
		t.Fatalf("node2's own new device after the flood: %v", m)
	}
	eventually(t, settle, "node1 hears node2's new device", func() (bool, string) {
		s := a1.device("Custom:node2-after-flood")
		return s == "BUSY", s
	})
	eventually(t, settle, "node2 hears node1's new device", func() (bool, string) {
		s := a2.device("Custom:own-after-flood")
		return s == "INUSE", s
	})
}
