package agent

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/internal/dnstest"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// 'show connected' names the server in use and how it was found: here a
// real Prosody found through an _xmpp-client._tcp SRV record of the
// domain, the record's target resolved by the same DNS server.
func TestShowConnectedNamesSRVTarget(t *testing.T) {
	srv := xmpptest.Shared(t, xmpptest.Prosody)
	_, port, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	d := dnstest.Start(t)
	d.Set(t,
		"_xmpp-client._tcp.busylamp.test. 60 IN SRV 0 0 "+port+" xmpp1.busylamp.test.",
		"xmpp1.busylamp.test. 60 IN A 127.0.0.1",
	)
	a := startRealAgent(t, srv, "srv-target", nil, nil, func(c *Config) {
		c.XMPP.Address = "busylamp.test"
		c.XMPP.Resolver = d.Resolver()
	})
	a.booted(t)
	out, err := a.Command(context.Background(), "show connected")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		" - Connected\n",
		"Server: xmpp1.busylamp.test:" + port + "  PubSub: " + srv.Service,
		"Target: 1 of 1, via SRV _xmpp-client._tcp.busylamp.test\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show connected lacks %q:\n%s", want, out)
		}
	}
}
