package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// fedNode writes the config of an agent on one site of a federation: its
// own server, the one PubSub service on a.test, the other site's agent
// as its buddy by full JID.
func fedNode(t *testing.T, dir string, i int, srv *xmpptest.Server, admin bool, buddy string) *node {
	t.Helper()
	name := fmt.Sprintf("site-%s", srv.Domain)
	var bare, pw string
	if admin {
		bare, pw = srv.Admin("pbx")
	} else {
		bare, pw = srv.User("pbx")
	}
	nd := &node{t: t, name: name, jid: bare + "/agent", amiAddr: freeAddr(t),
		conf: filepath.Join(dir, name+".conf"), logPath: filepath.Join(dir, name+".log")}
	host, port, _ := net.SplitHostPort(srv.Addr)
	_, amiPort, _ := net.SplitHostPort(nd.amiAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "[general]\nautoregister=yes\n\n[pbx]\ntype=client\nserverhost=%s\nport=%s\n", host, port)
	fmt.Fprintf(&b, "pubsub_node=%s\nusername=%s\nsecret=%s\ndistribute_events=yes\nusetls=no\nusesasl=yes\nbuddy=%s\n", srv.Service, nd.jid, pw, buddy)
	fmt.Fprintf(&b, "\n[agent]\neid=02:00:00:00:0f:%02x\nstale=expire\nstale_grace=10\nmwi_merge=latest\nstate_dir=%s\n", i, filepath.Join(dir, name+"-state"))
	fmt.Fprintf(&b, "\n[manager]\nbindaddr=127.0.0.1\nport=%s\nusername=%s\nsecret=%s\n", amiPort, amiUser, amiSecret)
	if err := os.WriteFile(nd.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nd.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", nd.name, nd.log())
		}
	})
	return nd
}

// Two sites, each with its own XMPP server: the agent on a.test uses the
// PubSub service of its own server, the agent on b.test the same service
// over s2s. They share device states and MWI both ways; while the s2s
// path is cut each keeps changing its own, and once it is back they
// converge on what was set during the cut.
//
// The servers authenticate each other with dialback, or with TLS and
// certificates (s2s_secure_auth).
func TestFederation(t *testing.T) {
	for _, tls := range []bool{false, true} {
		name := "dialback"
		if tls {
			name = "certificates"
		}
		t.Run(name, func(t *testing.T) { testFederation(t, tls) })
	}
}

func testFederation(t *testing.T, tls bool) {
	f := xmpptest.StartFederationT(t, xmpptest.Options{Memory: true, TLS: tls})
	dir := t.TempDir()
	// Only the account on a.test may create nodes (an admin of its own
	// server); the remote one gets in through the whitelist: the agent on
	// a.test lists it as a buddy and so makes it an owner.
	na := fedNode(t, dir, 1, f.A, true, "pbx@b.test/agent")
	nb := fedNode(t, dir, 2, f.B, false, "pbx@a.test/agent")
	na.start()
	aa := na.waitBooted()
	nb.start()
	ab := nb.waitBooted()

	// Timed from the Setvar's answer to the AMI event on the other site.
	begin := time.Now()
	ab.setDevice("Custom:fed-b", "INUSE")
	t.Logf("device state b.test → a.test over s2s: %v", deviceEvent(aa, "Custom:fed-b", "INUSE").Sub(begin).Round(time.Millisecond))
	begin = time.Now()
	aa.setDevice("Custom:fed-a", "RINGING")
	t.Logf("device state a.test → b.test over s2s: %v", deviceEvent(ab, "Custom:fed-a", "RINGING").Sub(begin).Round(time.Millisecond))
	ab.action("MWIUpdate", "Mailbox", "100@fed", "NewMessages", "2", "OldMessages", "1")
	waitMailbox(aa, "100@fed", "2", "1")
	aa.action("MWIUpdate", "Mailbox", "200@fed", "NewMessages", "3", "OldMessages", "0")
	waitMailbox(ab, "200@fed", "3", "0")

	// The cut: each site changes what it owns. b.test's publishes are
	// bounced by its own server; a.test's go to the service, whose
	// notifications to b.test are bounced.
	f.Cut()
	cut := time.Now()
	ab.setDevice("Custom:fed-b", "BUSY")
	ab.action("MWIUpdate", "Mailbox", "100@fed", "NewMessages", "0", "OldMessages", "4")
	ab.setDevice("Custom:fed-b2", "RINGING") // a device new during the cut
	waitLogged(t, nb, "PubSub service unreachable from our XMPP server", settle)
	aa.setDevice("Custom:fed-a", "ONHOLD")
	aa.action("MWIUpdate", "Mailbox", "200@fed", "NewMessages", "5", "OldMessages", "1")
	aa.publishesAnswered()
	// Keep the path cut until b.test's server has failed to connect
	// three times (its log says each): for b's publishes, and for at
	// least two of its agent's checks of the service (one a second while
	// the service is unreachable).
	bLog := filepath.Join(f.B.Dir, "logs", "prosody.log")
	eventually(t, settle, "b.test's server failed to connect 3 times", func() (bool, string) {
		b, _ := os.ReadFile(bLog)
		n := strings.Count(string(b), "s2s connection attempt failed: connection refused")
		return n >= 3, fmt.Sprint(n)
	})
	if s := aa.device("Custom:fed-b"); s != "INUSE" {
		t.Fatalf("a.test heard Custom:fed-b=%s through a cut path", s)
	}
	t.Logf("cut for %v", time.Since(cut).Round(time.Millisecond))

	if err := f.Restore(); err != nil {
		t.Fatal(err)
	}
	restored := time.Now()
	t.Logf("after Restore: b.test's change on a.test in %v, a.test's on b.test in %v",
		deviceEvent(aa, "Custom:fed-b", "BUSY").Sub(restored).Round(time.Millisecond),
		deviceEvent(ab, "Custom:fed-a", "ONHOLD").Sub(restored).Round(time.Millisecond))
	waitDevice(aa, "Custom:fed-b", "BUSY")
	waitDevice(aa, "Custom:fed-b2", "RINGING")
	waitMailbox(aa, "100@fed", "0", "4")
	waitDevice(ab, "Custom:fed-a", "ONHOLD")
	waitMailbox(ab, "200@fed", "5", "1")
	t.Logf("after Restore, every change of the cut on both sites in %v", time.Since(restored).Round(time.Millisecond))

	// And live again, both ways.
	begin = time.Now()
	ab.setDevice("Custom:fed-b", "NOT_INUSE")
	t.Logf("device state b.test → a.test after Restore: %v", deviceEvent(aa, "Custom:fed-b", "NOT_INUSE").Sub(begin).Round(time.Millisecond))
	aa.setDevice("Custom:fed-a", "NOT_INUSE")
	waitDevice(ab, "Custom:fed-a", "NOT_INUSE")
}

// deviceEvent waits for the DeviceStateChange of dev to state and says
// when it came.
func deviceEvent(a *amiConn, dev, state string) time.Time {
	a.t.Helper()
	a.waitEvent(settle, func(m manager.Message) bool {
		return m.Get("Event") == "DeviceStateChange" && m.Get("Device") == dev && m.Get("State") == state
	})
	return time.Now()
}

func waitDevice(a *amiConn, dev, state string) {
	a.t.Helper()
	eventually(a.t, settle, a.n.name+" sees "+dev+"="+state, func() (bool, string) {
		s := a.device(dev)
		return s == state, s
	})
}

func waitMailbox(a *amiConn, mb, newMsgs, oldMsgs string) {
	a.t.Helper()
	eventually(a.t, settle, a.n.name+" sees "+mb+"="+newMsgs+"/"+oldMsgs, func() (bool, string) {
		n, o := a.mailbox(mb)
		return n == newMsgs && o == oldMsgs, n + "/" + o
	})
}

// waitLogged waits until the node's log holds s.
func waitLogged(t *testing.T, n *node, s string, d time.Duration) {
	t.Helper()
	eventually(t, d, n.name+" logs "+s, func() (bool, string) {
		b, _ := os.ReadFile(n.logPath)
		return strings.Contains(string(b), s), ""
	})
}

// The remote agent may not create the nodes (an account of b.test, not
// an admin of the PubSub server): started first, it waits, and once the
// agent on a.test has created them, with it as an owner, it gets in.
func TestFederationRemoteStartsFirst(t *testing.T) {
	f := xmpptest.StartFederationT(t, xmpptest.Options{Memory: true})
	dir := t.TempDir()
	na := fedNode(t, dir, 1, f.A, true, "pbx@b.test/agent")
	nb := fedNode(t, dir, 2, f.B, false, "pbx@a.test/agent")
	nb.start()
	waitLogged(t, nb, "may not create nodes there", settle)
	na.start()
	aa := na.waitBooted()
	ab := nb.waitBooted()
	begin := time.Now()
	ab.setDevice("Custom:first-b", "BUSY")
	waitDevice(aa, "Custom:first-b", "BUSY")
	aa.setDevice("Custom:first-a", "INUSE")
	waitDevice(ab, "Custom:first-a", "INUSE")
	t.Logf("both ways %v after the remote agent booted", time.Since(begin).Round(time.Millisecond))
}
