package manager

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestReloadAction(t *testing.T) {
	b := newFakeBackend()
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr)
	rc.login()
	b.reload = func(context.Context) ([]string, error) {
		return []string{"buddies: +c@x.test", "needs a restart: [manager] port"}, nil
	}
	rc.send("Action: Reload\r\nActionID: 1\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: 1\r\nMessage: Module Reloaded.\r\nOutput: buddies: +c@x.test\r\nOutput: needs a restart: [manager] port\r\n\r\n")
	rc.send("Action: Reload\r\nActionID: 2\r\nModule: res_xmpp.so\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nActionID: 2\r\n`)
	rc.send("Action: Reload\r\nActionID: 3\r\nModule: chan_sip.so\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 3\r\nMessage: No such module\r\n\r\n")
	// A config that does not load: every problem on its own line, and
	// nothing an error text holds can forge a frame.
	b.reload = func(context.Context) ([]string, error) {
		return nil, errors.New("a.conf:3: [agent] stale: bad value\nb.conf:9: unknown key \"x\"\r\n\r\nEvent: forged")
	}
	rc.send("Action: Reload\r\nActionID: 4\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 4\r\nMessage: Config not reloaded: the running one is kept\r\n" +
		"Output: a.conf:3: [agent] stale: bad value\r\nOutput: b.conf:9: unknown key \"x\"\r\nOutput: \r\nOutput: Event: forged\r\n\r\n")
	// The session goes on.
	rc.send("Action: Ping\r\nActionID: 5\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nActionID: 5\r\nPing: Pong\r\n`)
}

func TestSetUsersTakesEffectAtNextLogin(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	old := dialRaw(t, ts.addr)
	old.login()
	ts.SetUsers("operator", "new-secret", nil)
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: " + testUser + "\r\nSecret: " + testSecret + "\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	rc.send("Action: Login\r\nUsername: OPERATOR\r\nSecret: new-secret\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nMessage: Authentication accepted\r\n`)
	// A session logged in before stays logged in.
	old.send("Action: Ping\r\nActionID: p\r\n\r\n")
	old.expectRE(`^Response: Success\r\nActionID: p\r\nPing: Pong\r\n`)
	// An ACL that leaves loopback out refuses the next login.
	ts.SetUsers("operator", "new-secret", ACL{{Permit: false, Net: netip.MustParsePrefix("0.0.0.0/0")}})
	rc2 := dialRaw(t, ts.addr)
	rc2.send("Action: Login\r\nUsername: operator\r\nSecret: new-secret\r\n\r\n")
	rc2.expectRE(`^Response: Error\r\n`)
}
