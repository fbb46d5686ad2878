package pubsub

import (
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// STARTTLS against the real servers: verified with the test CA, refused
// without it, accepted without verification only when told so.
func TestSTARTTLS(t *testing.T) {
	for _, kind := range xmpptest.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			srv := xmpptest.StartT(t, kind, xmpptest.Options{TLS: true, Memory: true})
			aj, apw := srv.Admin("tls")
			cfg := peerConfig(srv, aj, apw, "tls")
			cfg.UseTLS = true
			cfg.TLSCAFile = srv.CAFile
			p := startPeer(t, "A", cfg)
			p.connected(connectWait)
			if st := p.c.Status(); !st.TLS || !strings.HasPrefix(st.TLSName, "TLS 1.") {
				t.Errorf("status %+v", st)
			}
			p.stop()

			cfg.TLSCAFile = ""
			p = startPeer(t, "B", cfg)
			waitStatus(t, p, "certificate")
			p.stop()

			cfg.UseTLS = false // the server requires TLS
			p = startPeer(t, "C", cfg)
			waitStatus(t, p, "usetls=yes")
			p.stop()

			cfg.UseTLS, cfg.TLSInsecure = true, true
			p = startPeer(t, "D", cfg)
			p.connected(connectWait)
		})
	}
}

// waitStatus waits until the status's last error mentions want.
func waitStatus(t *testing.T, p *peer, want string) {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for !strings.Contains(p.c.Status().LastError, want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %+v, want an error about %q", p.name, p.c.Status(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every SASL mechanism busylamp speaks that the server offers (SCRAM-SHA-1
// and PLAIN everywhere; SCRAM-SHA-256 where the stored passwords allow);
// a wrong password is an AuthError in the status.
func TestSASLMechanisms(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"} {
			cfg := peerConfig(srv, aj, apw, "sasl")
			p := startPeer(t, mech, cfg, func(s *settings) { s.onlyMech = mech })
			var conn Connected
			ok := false
			deadline := time.Now().Add(connectWait)
			for !ok && !strings.Contains(p.c.Status().LastError, "no common mechanism") {
				if time.Now().After(deadline) {
					t.Fatalf("%s: status %+v", mech, p.c.Status())
				}
				select {
				case ev := <-p.ev:
					conn, ok = ev.(Connected)
				case <-time.After(20 * time.Millisecond):
				}
			}
			p.stop()
			switch {
			case !ok && mech == "SCRAM-SHA-256":
				t.Logf("%s: %s not offered", srv.Kind, mech)
			case !ok:
				t.Errorf("%s: %s not offered", srv.Kind, mech)
			case conn.JID != cfg.JID:
				t.Errorf("%s: bound %s", mech, conn.JID)
			}
		}
		cfg := peerConfig(srv, aj, "wrong-"+apw, "sasl")
		p := startPeer(t, "wrong", cfg)
		waitStatus(t, p, "authentication failed")
	})
}
