package pubsub

import (
	"net"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/dnstest"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A real Prosody found through DNS: the _xmpps-client record (direct TLS,
// XEP-0368) is preferred by its priority and connects with the domain's
// certificate; once DNS says no direct TLS, the next connect takes the
// _xmpp-client record and STARTTLS. States flow between the two.
func TestSRVAndDirectTLSWithProsody(t *testing.T) {
	srv := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{TLS: true, DirectTLS: true, Memory: true})
	d := dnstest.Start(t)
	d.Set(t,
		"_xmpps-client._tcp.busylamp.test. 60 IN SRV 0 0 "+port(t, srv.DirectTLSAddr)+" tls.busylamp.test.",
		"_xmpp-client._tcp.busylamp.test. 60 IN SRV 10 0 "+port(t, srv.Addr)+" xmpp.busylamp.test.",
		"tls.busylamp.test. 60 IN A 127.0.0.1",
		"xmpp.busylamp.test. 60 IN A 127.0.0.1",
	)
	aj, apw := srv.Admin("srv-a")
	bj, bpw := srv.Admin("srv-b")
	config := func(j, pw, res string) Config {
		cfg := peerConfig(srv, j, pw, res)
		cfg.Address = "busylamp.test"
		cfg.Resolver = d.Resolver()
		cfg.UseTLS, cfg.TLSCAFile = true, srv.CAFile
		return cfg
	}
	a := startPeer(t, "A", config(aj, apw, "a"))
	a.connected(connectWait)
	st := a.c.Status()
	if st.Server != "tls.busylamp.test:"+port(t, srv.DirectTLSAddr) || !st.DirectTLS || st.Target != 1 || st.Targets != 2 ||
		st.Via != "SRV _xmpps-client._tcp.busylamp.test" || !st.TLS {
		t.Errorf("A status %+v", st)
	}

	d.Set(t, "_xmpps-client._tcp.busylamp.test. 60 IN SRV 0 0 0 .")
	b := startPeer(t, "B", config(bj, bpw, "b"))
	b.connected(connectWait)
	st = b.c.Status()
	if st.Server != "xmpp.busylamp.test:"+port(t, srv.Addr) || st.DirectTLS || st.Target != 1 || st.Targets != 1 ||
		st.Via != "SRV _xmpp-client._tcp.busylamp.test" || !st.TLS {
		t.Errorf("B status %+v", st)
	}
	dev := uniq(t, "SIP/srv")
	a.c.PublishDevice(dev, devstate.InUse, true)
	b.device(eventWait, dev, devstate.InUse)
	b.c.PublishDevice(dev, devstate.Ringing, true)
	a.device(eventWait, dev, devstate.Ringing)
}

// Two Prosody servers of one domain, listed in serverhost in order: the
// clients use the first; when it stops they move to the second at once
// (Status names it) and states published there reach the other client;
// when the first serves again, the probes find it and both move back,
// and states flow there too.
func TestFailoverAndBack(t *testing.T) {
	first := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{Memory: true})
	second := xmpptest.StartT(t, xmpptest.Prosody, xmpptest.Options{Memory: true})
	pj, ppw := first.Admin("fo-pub")
	sj, spw := first.Admin("fo-sub")
	second.CopyAccount(first, "fo-pub")
	second.CopyAccount(first, "fo-sub")
	list := first.Addr + ", " + second.Addr
	fast := func(s *settings) { s.probeEvery = 200 * time.Millisecond }
	cp := peerConfig(first, pj, ppw, "pub")
	cp.Address, cp.Buddies = list, []string{sj}
	cs := peerConfig(first, sj, spw, "sub")
	cs.Address, cs.Buddies = list, []string{pj}
	pub := startPeer(t, "pub", cp, fast)
	sub := startPeer(t, "sub", cs, fast)
	pub.connected(connectWait)
	sub.connected(connectWait)
	on := func(want *xsrv, n int) {
		t.Helper()
		for _, p := range []*peer{pub, sub} {
			if st := p.c.Status(); st.Server != want.Addr || st.Target != n || st.Targets != 2 || st.Via != "serverhost" || st.State != "connected" {
				t.Fatalf("%s status %+v, want connected to %s (target %d of 2)", p.name, st, want.Addr, n)
			}
		}
	}
	on(first, 1)
	dev := uniq(t, "SIP/fo")
	pub.c.PublishDevice(dev, devstate.InUse, true)
	sub.device(eventWait, dev, devstate.InUse)

	stopped := time.Now()
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{pub, sub} {
		p.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
		p.connected(connectWait)
	}
	on(second, 2)
	t.Logf("moved to the second server %v after the first was told to stop", time.Since(stopped).Round(time.Millisecond))
	pub.c.PublishDevice(dev, devstate.Busy, true)
	sub.device(eventWait, dev, devstate.Busy)

	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	for _, p := range []*peer{pub, sub} {
		p.waitFor(eventWait, "Disconnected (failback)", func(ev Event) bool {
			dc, ok := ev.(Disconnected)
			_, fb := failbackTarget(dc.Err)
			return ok && fb
		})
		p.connected(connectWait)
	}
	on(first, 1)
	t.Logf("back on the first server %v after it served again (probe every 200 ms)", time.Since(started).Round(time.Millisecond))
	pub.c.PublishDevice(dev, devstate.NotInUse, true)
	sub.device(eventWait, dev, devstate.NotInUse)
	if n := pub.c.Stats().Sessions; n != 3 {
		t.Errorf("pub had %d sessions, want 3", n)
	}
}
