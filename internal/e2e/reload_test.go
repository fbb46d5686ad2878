package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// appendConf adds lines to a node's config file.
func (n *node) appendConf(text string) {
	n.t.Helper()
	f, err := os.OpenFile(n.conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		n.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		n.t.Fatal(err)
	}
}

// A reload (busylamp reload, then SIGHUP) applies a publish filter to a
// running agent without a new XMPP session or any state lost; a config
// with errors is refused with its file:line and the running one kept;
// lifting the filter publishes what it held back.
func TestReloadFilterLive(t *testing.T) {
	c := newCluster(t, 2)
	c.startAll()
	a, b := c.nodes[0].waitBooted(), c.nodes[1].waitBooted()
	a.setDevice("PJSIP/r1", "INUSE")
	a.setDevice("SIP/r1", "BUSY")
	eventually(t, settle, "node2 sees node1's states", func() (bool, string) {
		d := b.devices()
		return d["PJSIP/r1"] == "INUSE" && d["SIP/r1"] == "BUSY", d["PJSIP/r1"] + " " + d["SIP/r1"]
	})
	orig, err := os.ReadFile(c.nodes[0].conf)
	if err != nil {
		t.Fatal(err)
	}

	// The filter, added with Asterisk's (+) to the [agent] section.
	c.nodes[0].appendConf("\n[agent](+)\ndevice_state_filter = ^pjsip/\n")
	out, code := c.nodes[0].cli("reload")
	if code != 0 || !strings.Contains(out, "filters: device_state_filter=^pjsip/") {
		t.Fatalf("busylamp reload: exit %d\n%s", code, out)
	}
	a.setDevice("SIP/r2", "BUSY") // held back by the filter
	a.setDevice("PJSIP/r2", "RINGING")
	eventually(t, settle, "node2 sees PJSIP/r2", func() (bool, string) {
		s := b.device("PJSIP/r2")
		return s == "RINGING", s
	})
	// One publisher, one stream: had SIP/r2 been published it would be
	// here before PJSIP/r2.
	if s := b.device("SIP/r2"); s != "UNKNOWN" {
		t.Fatalf("node2 has the filtered SIP/r2 as %s", s)
	}
	if s := a.device("SIP/r2"); s != "BUSY" {
		t.Fatalf("node1's own SIP/r2 is %s, want BUSY (filtered from the cluster, not from the node)", s)
	}
	stats := strings.Join(a.action("Command", "Command", "show stats").Values("Output"), "\n")
	if !strings.Contains(stats, "Sessions:1 ") || !strings.Contains(stats, "Filtered out (not published): 1 devices") {
		t.Fatalf("after the reload, want the first XMPP session still and one device filtered:\n%s", stats)
	}
	if d := a.devices(); d["PJSIP/r1"] != "INUSE" || d["SIP/r1"] != "BUSY" {
		t.Fatalf("states lost over the reload: %v", d)
	}

	// A config with an error is refused, naming file and line.
	broken := string(orig) + "\n[agent](+)\nstale = sometimes\n"
	if err := os.WriteFile(c.nodes[0].conf, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	line := strings.Count(broken[:strings.Index(broken, "stale = sometimes")], "\n") + 1
	out, code = c.nodes[0].cli("reload")
	if code != 1 || !strings.Contains(out, c.nodes[0].conf+":"+strconv.Itoa(line)) {
		t.Fatalf("reload of a broken config: exit %d, want 1 and %s:%d\n%s", code, c.nodes[0].conf, line, out)
	}
	// The running config (with the filter) is kept.
	a.setDevice("SIP/r3", "BUSY")
	a.setDevice("PJSIP/r3", "ONHOLD")
	eventually(t, settle, "node2 sees PJSIP/r3", func() (bool, string) {
		s := b.device("PJSIP/r3")
		return s == "ONHOLD", s
	})
	if s := b.device("SIP/r3"); s != "UNKNOWN" {
		t.Fatalf("after a refused reload node2 has SIP/r3 as %s: the filter was dropped", s)
	}

	// SIGHUP with the filter gone: what it held back is published now.
	if err := os.WriteFile(c.nodes[0].conf, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	c.nodes[0].cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, settle, "node2 sees the states the filter held back", func() (bool, string) {
		d := b.devices()
		return d["SIP/r2"] == "BUSY" && d["SIP/r3"] == "BUSY", d["SIP/r2"] + " " + d["SIP/r3"]
	})
	if !strings.Contains(c.nodes[0].log(), "config reloaded") {
		t.Fatalf("no reload in node1's log:\n%s", c.nodes[0].log())
	}
}

// A reload that changes the client section makes a new XMPP session with
// the new settings (here the presence's status message, which buddies
// see); the states held and published stay.
func TestReloadNewSession(t *testing.T) {
	c := newCluster(t, 2)
	c.startAll()
	a, b := c.nodes[0].waitBooted(), c.nodes[1].waitBooted()
	a.setDevice("PJSIP/s1", "INUSE")
	b.setDevice("PJSIP/s2", "BUSY")
	eventually(t, settle, "both see both", func() (bool, string) {
		return a.device("PJSIP/s2") == "BUSY" && b.device("PJSIP/s1") == "INUSE", ""
	})
	c.nodes[0].appendConf("\n[pbx](+)\nstatusmessage = moved by a reload\n")
	out, code := c.nodes[0].cli("reload")
	if code != 0 || !strings.Contains(out, "new XMPP session: status/statusmessage/priority changed") {
		t.Fatalf("busylamp reload: exit %d\n%s", code, out)
	}
	eventually(t, settle, "node1 on its second session", func() (bool, string) {
		out := strings.Join(a.action("Command", "Command", "show stats").Values("Output"), "\n")
		conn := strings.Join(a.action("Command", "Command", "show connected").Values("Output"), "\n")
		return strings.Contains(out, "Sessions:2 ") && strings.Contains(conn, "- Connected"), out + "\n" + conn
	})
	eventually(t, settle, "node2 sees node1's new status message", func() (bool, string) {
		out := strings.Join(b.action("Command", "Command", "show buddies").Values("Output"), "\n")
		return strings.Contains(out, "moved by a reload"), out
	})
	a.setDevice("PJSIP/s3", "RINGING")
	b.setDevice("PJSIP/s4", "ONHOLD")
	eventually(t, settle, "states flow both ways after the new session, none lost", func() (bool, string) {
		da, db := a.devices(), b.devices()
		ok := da["PJSIP/s2"] == "BUSY" && da["PJSIP/s4"] == "ONHOLD" && db["PJSIP/s1"] == "INUSE" && db["PJSIP/s3"] == "RINGING"
		return ok, fmt.Sprint(da, db)
	})
}
