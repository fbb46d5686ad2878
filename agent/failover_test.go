package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/config"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// amiEvents logs in to an agent's AMI socket and returns its events,
// one map of headers each, until the test ends.
func amiEvents(t *testing.T, a *realAgent) <-chan map[string]string {
	t.Helper()
	c, err := net.Dial("tcp", a.ManagerAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "Action: Login\r\nUsername: admin\r\nSecret: test-secret\r\n\r\n")
	ch := make(chan map[string]string, 1024)
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		defer close(ch)
		r := bufio.NewReader(c)
		msg := map[string]string{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				if len(msg) > 0 {
					select {
					case ch <- msg:
					default: // the test reads what it needs; never block the socket
					}
				}
				msg = map[string]string{}
				continue
			}
			if k, v, ok := strings.Cut(line, ": "); ok {
				msg[k] = v
			}
		}
	}()
	// The agent sends events to a session once it is logged in: wait for
	// the answer, or a change made right after this returns may come
	// before the login and never reach it.
	m := nextMessage(t, ch, "the login's answer", func(m map[string]string) bool { return m["Response"] != "" })
	if m["Response"] != "Success" {
		t.Fatalf("AMI login: %v", m)
	}
	return ch
}

// nextMessage reads ev until a message that match takes, for at most 60 s.
func nextMessage(t *testing.T, ev <-chan map[string]string, what string, match func(map[string]string) bool) map[string]string {
	t.Helper()
	tm := time.NewTimer(60 * time.Second)
	defer tm.Stop()
	for {
		select {
		case m, ok := <-ev:
			if !ok {
				t.Fatalf("AMI connection closed before %s", what)
			}
			if match(m) {
				return m
			}
		case <-tm.C:
			t.Fatalf("no %s within 60 s", what)
		}
	}
}

// nextState reads ev until device's next DeviceStateChange.
func nextState(t *testing.T, ev <-chan map[string]string, device string) string {
	t.Helper()
	return nextMessage(t, ev, "DeviceStateChange of "+device, func(m map[string]string) bool {
		return m["Event"] == "DeviceStateChange" && m["Device"] == device
	})["State"]
}

// Two agents on two Prosody servers listed in serverhost: when the first
// server stops, both move to the second, and the remote agent's lamp
// stays lit through the switch (no DeviceStateChange until the next real
// change, which arrives through the second server); 'show connected'
// names the second server as target 2 of 2.
func TestFailoverKeepsRemoteLamps(t *testing.T) {
	first := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{Memory: true})
	second := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{Memory: true})
	list := first.Addr + ", " + second.Addr
	onBoth := func(name string) func(*Config) {
		return func(c *Config) {
			second.CopyAccount(first, name)
			c.XMPP.Address = list
			// The grace a deployment has (stale_grace's default): the
			// switch must fit in it.
			c.Core.StaleGrace = config.DefaultStaleGrace
		}
	}
	a := startRealAgent(t, first, "fo-a", []string{"fo-b@busylamp.test/test"}, nil, onBoth("fo-a"))
	b := startRealAgent(t, first, "fo-b", []string{"fo-a@busylamp.test/test"}, nil, onBoth("fo-b"))
	a.booted(t)
	b.booted(t)
	ev := amiEvents(t, b)
	const dev = "SIP/failover"
	a.set(t, dev, devstate.InUse)
	if st := nextState(t, ev, dev); st != "INUSE" {
		t.Fatalf("B saw %s, want INUSE", st)
	}

	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*realAgent{a, b} {
		waitUntil(t, r.jid+" on the second server", func() bool {
			st := r.xmpp.Status()
			return st.State == "connected" && st.Server == second.Addr
		})
	}
	a.set(t, dev, devstate.Ringing)
	// Nothing between: INUSE was never blanked (UNKNOWN, UNAVAILABLE).
	if st := nextState(t, ev, dev); st != "RINGING" {
		t.Fatalf("B's next state of %s is %s, want RINGING", dev, st)
	}
	out, err := b.Command(context.Background(), "show connected")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Server: " + second.Addr + "  PubSub:", "Target: 2 of 2, via serverhost\n", " - Connected\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("show connected lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(b.logs.String(), "server states expired") {
		t.Errorf("B expired A's states during the switch:\n%s", b.logs.String())
	}
}
