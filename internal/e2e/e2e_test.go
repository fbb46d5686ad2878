package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
)

// settle bounds propagation in these tests: well under a second on an idle
// machine, many times that on a busy one (eventually ends when it holds).
const settle = 60 * time.Second

func TestPropagationBothWays(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	a1, a3 := c.nodes[0].ami(), c.nodes[2].ami()
	a1.setDevice("Custom:e2e", "INUSE")
	for _, n := range c.nodes[1:] {
		a := n.ami()
		eventually(t, settle, n.name+" sees INUSE", func() (bool, string) {
			s := a.device("Custom:e2e")
			return s == "INUSE", s
		})
	}
	// And back, observed as an event on node 1.
	a3.setDevice("Custom:back", "BUSY")
	m := a1.waitEvent(settle, func(m manager.Message) bool {
		return m.Get("Event") == "DeviceStateChange" && m.Get("Device") == "Custom:back"
	})
	if m.Get("State") != "BUSY" {
		t.Fatalf("event %v", m)
	}
	// The CLI shows the per-server view.
	out, code := c.nodes[1].cli("devstate", "get", "Custom:e2e")
	if code != 0 || !strings.Contains(out, "INUSE") || !strings.Contains(out, "02:00:00:00:00:01") {
		t.Fatalf("devstate get: exit %d\n%s", code, out)
	}
}

// Asterisk's merge across two nodes for every pair of states, read on a third.
func TestMergeEveryPair(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	a1, a2, a3 := c.nodes[0].ami(), c.nodes[1].ami(), c.nodes[2].ami()
	want := make(map[string]string)
	for _, s1 := range devstate.States {
		for _, s2 := range devstate.States {
			dev := fmt.Sprintf("Custom:%s-%s", s1, s2)
			a1.setDevice(dev, s1.String())
			a2.setDevice(dev, s2.String())
			want[dev] = devstate.Merge(s1, s2).String()
		}
	}
	eventually(t, settle, "node3 shows every merge", func() (bool, string) {
		got := a3.devices()
		for dev, w := range want {
			if got[dev] != w {
				return false, fmt.Sprintf("%s = %q, want %s", dev, got[dev], w)
			}
		}
		return true, ""
	})
	// Spot checks against the rule written out.
	for dev, w := range map[string]string{"Custom:INUSE-RINGING": "RINGINUSE", "Custom:NOT_INUSE-UNAVAILABLE": "NOT_INUSE", "Custom:INVALID-UNKNOWN": "UNKNOWN"} {
		if got := a3.device(dev); got != w {
			t.Errorf("%s = %s, want %s", dev, got, w)
		}
	}
}

func TestMWILatestAndSum(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{mwiMerge: "latest"}, nodeOpts{mwiMerge: "latest"}, nodeOpts{mwiMerge: "sum"})
	c.startAll()
	a1, a2, a3 := c.nodes[0].ami(), c.nodes[1].ami(), c.nodes[2].ami()
	a1.action("MWIUpdate", "Mailbox", "1000@default", "NewMessages", "2", "OldMessages", "0")
	eventually(t, settle, "node2 sees node1's counts", func() (bool, string) {
		n, o := a2.mailbox("1000@default")
		return n == "2" && o == "0", n + "/" + o
	})
	a2.action("MWIUpdate", "Mailbox", "1000@default", "NewMessages", "3", "OldMessages", "1")
	eventually(t, settle, "latest on node1", func() (bool, string) {
		n, o := a1.mailbox("1000@default")
		return n == "3" && o == "1", n + "/" + o
	})
	eventually(t, settle, "sum on node3", func() (bool, string) {
		n, o := a3.mailbox("1000@default")
		return n == "5" && o == "1", n + "/" + o
	})
	// MessageWaiting reaches a listening session.
	a2.action("MWIUpdate", "Mailbox", "1000@default", "NewMessages", "0", "OldMessages", "4")
	m := a3.waitEvent(settle, func(m manager.Message) bool {
		return m.Get("Event") == "MessageWaiting" && m.Get("Mailbox") == "1000@default" && m.Get("Old") == "4"
	})
	if m.Get("Waiting") != "1" || m.Get("New") != "2" {
		t.Fatalf("event %v", m)
	}
	out, code := c.nodes[0].cli("mwi", "get", "1000@default")
	if code != 0 || !strings.Contains(out, "0/4") {
		t.Fatalf("mwi get: exit %d\n%s", code, out)
	}
}

func TestKilledAgentExpires(t *testing.T) {
	c := newCluster(t, 3) // stale_grace=2
	c.startAll()
	a1, a2, a3 := c.nodes[0].ami(), c.nodes[1].ami(), c.nodes[2].ami()
	a1.setDevice("Custom:k", "INUSE")
	a2.setDevice("Custom:k", "RINGING")
	a2.setDevice("Custom:only2", "BUSY")
	a2.action("MWIUpdate", "Mailbox", "9@x", "NewMessages", "1", "OldMessages", "0")
	eventually(t, settle, "node3 merged", func() (bool, string) {
		s := a3.device("Custom:k")
		n, _ := a3.mailbox("9@x")
		return s == "RINGINUSE" && n == "1", s
	})
	killed := time.Now()
	c.nodes[1].kill()
	for _, a := range []*amiConn{a1, a3} {
		eventually(t, settle, a.n.name+" expires node2", func() (bool, string) {
			s, only := a.device("Custom:k"), a.devices()["Custom:only2"]
			n, _ := a.mailbox("9@x")
			return s == "INUSE" && only == "" && (n == "" || n == "0"), s + " " + only + " " + n
		})
	}
	took := time.Since(killed)
	if took < 2*time.Second {
		t.Fatalf("expired after %v, before the 2 s grace", took)
	}
	t.Logf("node2's states expired %v after SIGKILL (grace 2 s)", took.Round(10*time.Millisecond))
}

// A restarted agent has the full cluster state, devices set on two other
// nodes included, before FullyBooted; its own states come back and are
// published again.
func TestRestartedAgentResyncs(t *testing.T) {
	c := newCluster(t, 3, nodeOpts{staleGrace: 1}, nodeOpts{staleGrace: 1}, nodeOpts{staleGrace: 1})
	c.startAll()
	a1, a2 := c.nodes[0].ami(), c.nodes[1].ami()
	a3 := c.nodes[2].ami()
	a3.setDevice("Custom:own3", "BUSY")
	eventually(t, settle, "node1 sees node3's state", func() (bool, string) {
		s := a1.device("Custom:own3")
		return s == "BUSY", s
	})
	c.nodes[2].stop()
	// While node3 is down: both others set the same devices, more than
	// Prosody's default 256 items per node; node3's own state expires on
	// them (grace 1 s).
	const shared = 300
	for i := 0; i < shared; i++ {
		a1.setDevice(fmt.Sprintf("Custom:two-%d", i), "INUSE")
		a2.setDevice(fmt.Sprintf("Custom:two-%d", i), "RINGING")
	}
	// node3 comes back to a server that has answered all of it: what is
	// tested is what it learns, not how fast a busy server drains 600
	// publishes (on a loaded machine that took longer than the states
	// requests may wait).
	a1.publishesAnswered()
	a2.publishesAnswered()
	eventually(t, settle, "node3's state expired on node1", func() (bool, string) {
		s := a1.devices()["Custom:own3"]
		return s == "", s
	})
	c.nodes[2].start()
	a3 = c.nodes[2].waitBooted()
	got := a3.devices()
	for i := 0; i < shared; i++ {
		dev := fmt.Sprintf("Custom:two-%d", i)
		if got[dev] != "RINGINUSE" {
			t.Fatalf("at FullyBooted %s = %q, want RINGINUSE\nlog:\n%s", dev, got[dev], c.nodes[2].log())
		}
	}
	if got["Custom:own3"] != "BUSY" {
		t.Fatalf("own state not recovered: %q", got["Custom:own3"])
	}
	eventually(t, settle, "node1 hears node3's own state again", func() (bool, string) {
		s := a1.device("Custom:own3")
		return s == "BUSY", s
	})
}

func TestXMPPServerRestart(t *testing.T) {
	c := newCluster(t, 3)
	c.startAll()
	a1, a2, a3 := c.nodes[0].ami(), c.nodes[1].ami(), c.nodes[2].ami()
	a1.setDevice("Custom:r", "INUSE")
	a2.setDevice("Custom:r", "RINGING")
	eventually(t, settle, "merged before", func() (bool, string) {
		s := a3.device("Custom:r")
		return s == "RINGINUSE", s
	})
	if err := c.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// A change made while the server is away (node 1 saw it go) reaches
	// the others after.
	eventually(t, settle, "node 1 sees the server gone", func() (bool, string) {
		out := strings.Join(a1.action("Command", "Command", "show connected").Values("Output"), "\n")
		return !strings.Contains(out, "- Connected"), out
	})
	a1.setDevice("Custom:during", "ONHOLD")
	if err := c.srv.Start(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*amiConn{a1, a2, a3} {
		eventually(t, bootWait, a.n.name+" converges", func() (bool, string) {
			r, d := a.device("Custom:r"), a.device("Custom:during")
			return r == "RINGINUSE" && d == "ONHOLD", r + " " + d
		})
	}
	// And the cluster keeps working.
	a3.setDevice("Custom:after", "BUSY")
	eventually(t, settle, "node1 hears node3 after the restart", func() (bool, string) {
		s := a1.device("Custom:after")
		return s == "BUSY", s
	})
}

// An AMI client library's view: raw bytes on the socket of a real agent.
func TestRawAMI(t *testing.T) {
	c := newCluster(t, 2)
	c.startAll()
	c.nodes[1].ami().setDevice("Custom:raw", "RINGING")
	eventually(t, settle, "node1 has the device", func() (bool, string) {
		s := c.nodes[0].ami().device("Custom:raw")
		return s == "RINGING", s
	})
	conn, err := net.DialTimeout("tcp", c.nodes[0].amiAddr, answerWait)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(answerWait))
	r := bufio.NewReader(conn)
	greeting, _ := r.ReadString('\n')
	if !strings.HasPrefix(greeting, "Asterisk Call Manager/") || !strings.HasSuffix(greeting, "\r\n") {
		t.Fatalf("greeting %q", greeting)
	}
	send := func(s string) {
		if _, err := conn.Write([]byte(strings.ReplaceAll(s, "\n", "\r\n"))); err != nil {
			t.Fatal(err)
		}
	}
	readMsg := func() map[string]string {
		m := map[string]string{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v (so far %v)", err, m)
			}
			if !strings.HasSuffix(line, "\r\n") {
				t.Fatalf("line without CRLF: %q", line)
			}
			line = strings.TrimSuffix(line, "\r\n")
			if line == "" {
				return m
			}
			k, v, _ := strings.Cut(line, ": ")
			m[k] = v
		}
	}
	send("Action: Login\nUsername: " + amiUser + "\nSecret: " + amiSecret + "\nActionID: L1\n\n")
	if m := readMsg(); m["Response"] != "Success" || m["ActionID"] != "L1" {
		t.Fatalf("login: %v", m)
	}
	send("Action: DeviceStateList\nActionID: D7\n\n")
	sawStart, items := false, 0
	for {
		m := readMsg()
		if m["Event"] == "FullyBooted" || m["Event"] == "BuddyStatus" {
			continue
		}
		if m["ActionID"] != "D7" {
			t.Fatalf("message without our ActionID: %v", m)
		}
		switch {
		case m["Response"] == "Success":
			sawStart = m["EventList"] == "start"
		case m["Event"] == "DeviceStateChange":
			items++
			if m["Device"] == "Custom:raw" && m["State"] != "RINGING" {
				t.Fatalf("item %v", m)
			}
		case m["Event"] == "DeviceStateListComplete":
			if !sawStart || m["EventList"] != "Complete" || m["ListItems"] != fmt.Sprint(items) || items < 1 {
				t.Fatalf("complete %v after %d items (start seen: %v)", m, items, sawStart)
			}
			return
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
}

// Without pubsub_node the agents discover the PubSub service (XEP-0030),
// share states through it, and 'show connected' names it; the service
// lacks nothing busylamp uses, so there is no Missing line.
func TestServiceDiscovered(t *testing.T) {
	c := newCluster(t, 2, nodeOpts{discover: true}, nodeOpts{discover: true})
	c.startAll()
	a1, a2 := c.nodes[0].ami(), c.nodes[1].ami()
	a1.setDevice("Custom:disco", "INUSE")
	eventually(t, settle, "node2 sees INUSE", func() (bool, string) {
		s := a2.device("Custom:disco")
		return s == "INUSE", s
	})
	for _, a := range []*amiConn{a1, a2} {
		out := strings.Join(a.action("Command", "Command", "show connected").Values("Output"), "\n")
		if !strings.Contains(out, "- Connected") || !strings.Contains(out, "PubSub: "+c.srv.Service+" ") ||
			strings.Contains(out, "Missing:") {
			t.Errorf("%s: show connected:\n%s", a.n.name, out)
		}
	}
}
