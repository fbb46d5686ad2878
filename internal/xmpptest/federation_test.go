package xmpptest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A user of b.test uses pubsub.a.test over s2s: a whitelist node lets in
// the remote JIDs its owner lists, and no others; a cut path bounces the
// remote user's requests, and after Restore they go through again.
func TestFederation(t *testing.T) {
	t.Parallel()
	for _, tls := range []bool{false, true} {
		name := "dialback"
		if tls {
			name = "certificates"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testFederation(t, StartFederationT(t, Options{Memory: true, TLS: tls}), tls)
		})
	}
}

func testFederation(t *testing.T, f *Federation, tls bool) {
	if f.A.Domain != DomainA || f.B.Domain != DomainB || f.A.Service != ServiceA || f.B.Service != ServiceA {
		t.Fatalf("fields: A %+v B %+v", f.A, f.B)
	}
	boss := mustLogin(t, f.A, cr(f.A.Admin("boss")), false)
	bob := mustLogin(t, f.B, cr(f.B.User("bob")), false)
	carol := mustLogin(t, f.B, cr(f.B.User("carol")), false)
	for _, c := range []*client{boss, bob} { // events go to available resources
		if err := c.send("<presence/>"); err != nil {
			t.Fatal(err)
		}
	}

	const node = "device_state"
	e, err := boss.iq("set", ServiceA, "<pubsub xmlns='"+nsPubSub+"'><create node='"+node+"'/><configure><x xmlns='jabber:x:data' type='submit'>"+
		"<field var='FORM_TYPE' type='hidden'><value>"+nsPubSub+"#node_config</value></field>"+
		"<field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub>")
	wantResult(t, "create whitelist node", e, err)
	e, err = boss.iq("set", ServiceA, "<pubsub xmlns='"+nsPubSub+"#owner'><affiliations node='"+node+"'>"+
		"<affiliation jid='bob@b.test' affiliation='owner'/></affiliations></pubsub>")
	wantResult(t, "remote JID made owner", e, err)

	subscribe := func(c *client, jid string) (element, error) {
		return c.iq("set", ServiceA, "<pubsub xmlns='"+nsPubSub+"'><subscribe node='"+node+"' jid='"+jid+"'/></pubsub>")
	}
	e, err = subscribe(bob, "bob@b.test")
	wantResult(t, "remote owner subscribes over s2s", e, err)
	e, err = subscribe(carol, "carol@b.test")
	if err != nil || e.attr("type") != "error" {
		t.Fatalf("remote JID off the whitelist subscribes: %s %v", e, err)
	}
	t.Logf("off the whitelist: %s", e)
	e, err = carol.publish(ServiceA, node, "Custom:x", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:03'>BUSY</state>")
	if err != nil || e.attr("type") != "error" {
		t.Fatalf("remote JID off the whitelist publishes: %s %v", e, err)
	}

	e, err = boss.publish(ServiceA, node, "Custom:a", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:01'>INUSE</state>")
	wantResult(t, "local publish", e, err)
	wantEvent(t, bob, "Custom:a", "INUSE")
	e, err = subscribe(boss, "boss@a.test")
	wantResult(t, "local subscribe", e, err)
	e, err = bob.publish(ServiceA, node, "Custom:b", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:02'>RINGING</state>")
	wantResult(t, "remote publish over s2s", e, err)
	ev := wantEvent(t, boss, "Custom:b", "RINGING")
	if !bytes.Contains(ev.Inner, []byte("publisher='bob@b.test'")) && !bytes.Contains(ev.Inner, []byte(`publisher="bob@b.test"`)) {
		t.Errorf("event of a remote publish names no publisher bob@b.test (expose_publisher): %s", ev)
	}

	// A stanza written to the s2s stream before the server has read its
	// end is lost without an error (Prosody 0.12 has no stream management
	// on s2s): wait until b.test has closed its stream to the service.
	bLog := filepath.Join(f.B.Dir, "logs", "prosody.log")
	closed := func() int {
		b, _ := os.ReadFile(bLog)
		return strings.Count(string(b), "Destroying outgoing session b.test->pubsub.a.test")
	}
	before := closed()
	f.Cut()
	deadline := time.Now().Add(answerWait)
	for closed() == before {
		if time.Now().After(deadline) {
			t.Fatalf("b.test did not close its s2s stream within %v", answerWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e, err = bob.publish(ServiceA, node, "Custom:b", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:02'>BUSY</state>")
	wantError(t, "remote publish while cut", "remote-server-not-found", e, err)
	t.Logf("cut: %s", e)
	if err := S2SStreamOpens(f.S2SA, DomainA, probeTimeout); err != nil {
		t.Fatalf("A's own s2s port during the cut: %v", err)
	}
	if err := f.Restore(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	e, err = bob.publish(ServiceA, node, "Custom:b", "<state xmlns='http://asterisk.org' eid='00:00:00:00:00:02'>BUSY</state>")
	wantResult(t, "remote publish after Restore", e, err)
	wantEvent(t, boss, "Custom:b", "BUSY")
	t.Logf("after Restore: publish on b.test to its event on a.test in %v", time.Since(begin).Round(time.Millisecond))
	if tls { // s2s went over TLS, authenticated by certificate
		b, _ := os.ReadFile(bLog)
		for _, want := range []string{"TLS handshake complete", "certificate chain validation result: valid", "certificate identity validation result: valid"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("b.test's log does not say %q", want)
			}
		}
	}

	// An admin of b.test is one of pubsub.a.test too (listed in A's
	// admins, reloaded while it runs); a plain remote user is not.
	e, err = bob.createNode(ServiceA, "bobs_node")
	wantError(t, "remote user creates node", "forbidden", e, err)
	boss2 := mustLogin(t, f.B, cr(f.B.Admin("boss2")), false)
	e, err = boss2.createNode(ServiceA, "message_waiting")
	wantResult(t, "remote admin creates node", e, err)
}

// wantEvent reads c's stanzas until a PubSub event of item id with state.
func wantEvent(t *testing.T, c *client, id, state string) element {
	t.Helper()
	deadline := time.Now().Add(answerWait)
	for time.Now().Before(deadline) {
		e, err := c.event(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for the event of %s: %v", id, err)
		}
		if e.XMLName.Local == "message" && (bytes.Contains(e.Inner, []byte("id='"+id+"'")) || bytes.Contains(e.Inner, []byte(`id="`+id+`"`))) {
			if !strings.Contains(string(e.Inner), ">"+state+"<") {
				t.Fatalf("event of %s: want %s: %s", id, state, e)
			}
			return e
		}
	}
	t.Fatalf("no event of %s within %v", id, answerWait)
	return element{}
}
