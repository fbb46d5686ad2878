package xmppstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/internal/dnstest"
)

const srvName = "_xmpp-client._tcp.example.com."
const srvsName = "_xmpps-client._tcp.example.com."

func resolveTest(t *testing.T, d *dnstest.Server, useTLS bool, intn func(int) int) ([]Target, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return resolve(ctx, Config{Addr: "example.com", UseTLS: useTLS, Resolver: d.Resolver(), Logger: slog.New(slog.DiscardHandler)}, intn)
}

func addrs(ts []Target) string {
	var b []string
	for _, t := range ts {
		b = append(b, t.String())
	}
	return strings.Join(b, ", ")
}

// SRV records are tried by priority, lowest first, and by a weighted draw
// within a priority (RFC 2782): the draw picks the first record whose
// running weight sum reaches it.
func TestResolveSRVOrder(t *testing.T) {
	d := dnstest.Start(t)
	d.Set(t,
		srvName+" 60 IN SRV 20 0 5222 d.example.com.",
		srvName+" 60 IN SRV 10 0 5222 a.example.com.",
		srvName+" 60 IN SRV 5 60 5222 b.example.com.",
		srvName+" 60 IN SRV 5 40 5223 c.example.com.",
	)
	for _, tc := range []struct {
		name string
		draw func(n int) int
		want string
	}{
		// Priority 5's sums: b 60, c 100. A draw of 70 passes b.
		{"draw high", func(n int) int { return min(70, n-1) }, "c.example.com:5223, b.example.com:5222, a.example.com:5222, d.example.com:5222"},
		{"draw low", func(n int) int { return 0 }, "b.example.com:5222, c.example.com:5223, a.example.com:5222, d.example.com:5222"},
		{"draw at b's sum", func(n int) int { return min(60, n-1) }, "b.example.com:5222, c.example.com:5223, a.example.com:5222, d.example.com:5222"},
		{"draw past b's sum", func(n int) int { return min(61, n-1) }, "c.example.com:5223, b.example.com:5222, a.example.com:5222, d.example.com:5222"},
	} {
		ts, err := resolveTest(t, d, false, tc.draw)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := addrs(ts); got != tc.want {
			t.Errorf("%s: %s\nwant %s", tc.name, got, tc.want)
		}
		for _, tg := range ts {
			if tg.DirectTLS || tg.Via != "SRV _xmpp-client._tcp.example.com" {
				t.Errorf("%s: target %+v", tc.name, tg)
			}
		}
	}
	// The real draw: b (weight 60) first about 60% of the time.
	bFirst := 0
	const n = 400
	for range n {
		ts, err := Resolve(context.Background(), Config{Addr: "example.com", Resolver: d.Resolver()})
		if err != nil {
			t.Fatal(err)
		}
		if ts[0].Addr == "b.example.com:5222" {
			bFirst++
		}
	}
	if bFirst < n*40/100 || bFirst > n*80/100 {
		t.Errorf("b first %d times of %d, want about 60%%", bFirst, n)
	}
}

// Without SRV records the name itself is tried at 5222; a "." target
// says there is no service; a server list and a name with a port are
// taken as they are, without DNS.
func TestResolveFallbackAndNoService(t *testing.T) {
	d := dnstest.Start(t)
	ts, err := resolveTest(t, d, true, nil)
	if err != nil || addrs(ts) != "example.com:5222" || !strings.Contains(ts[0].Via, "no SRV records") {
		t.Fatalf("no records: %v %+v", err, ts)
	}

	d.Set(t, srvName+" 60 IN SRV 0 0 0 .")
	if _, err := resolveTest(t, d, false, nil); !errors.Is(err, ErrNoService) {
		t.Errorf("\".\" target: %v, want ErrNoService", err)
	}
	// A "." for direct TLS only says no direct TLS.
	d.Set(t, srvName+" 60 IN SRV 0 0 5222 a.example.com.", srvsName+" 60 IN SRV 0 0 0 .")
	if ts, err := resolveTest(t, d, true, func(int) int { return 0 }); err != nil || addrs(ts) != "a.example.com:5222" {
		t.Errorf("xmpps \".\": %v %s", err, addrs(ts))
	}
	// No STARTTLS service, but direct TLS: the direct TLS records only.
	d.Set(t, srvName+" 60 IN SRV 0 0 0 .", srvsName+" 60 IN SRV 0 0 5223 t.example.com.")
	if ts, err := resolveTest(t, d, true, func(int) int { return 0 }); err != nil || addrs(ts) != "t.example.com:5223 (direct TLS)" {
		t.Errorf(`xmpp ".", xmpps records: %v %s`, err, addrs(ts))
	}
	if _, err := resolveTest(t, d, false, nil); !errors.Is(err, ErrNoService) {
		t.Errorf(`xmpp ".", usetls=no: %v, want ErrNoService`, err)
	}
	d.Set(t, srvsName+" 60 IN SRV 0 0 0 .")
	// Both ".": no service, and no A/AAAA fallback (XEP-0368 §5).
	d.Set(t, srvName+" 60 IN SRV 0 0 0 .")
	if _, err := resolveTest(t, d, true, nil); !errors.Is(err, ErrNoService) {
		t.Errorf("both \".\": %v, want ErrNoService", err)
	}

	before := d.Queries("example.com", "SRV") + d.Queries(srvName, "SRV")
	for addr, want := range map[string]string{
		"example.com:5300":                  "example.com:5300",
		"127.0.0.1":                         "127.0.0.1:5222",
		"::1":                               "[::1]:5222",
		"127.0.0.1:5223, 127.0.0.1:5224":    "127.0.0.1:5223, 127.0.0.1:5224",
		"a.example.com:5222, b.example.com": "a.example.com:5222, b.example.com:5222",
	} {
		ts, err := resolve(context.Background(), Config{Addr: addr, Resolver: d.Resolver()}, nil)
		if err != nil || addrs(ts) != want || ts[0].Via != "serverhost" {
			t.Errorf("%s: %v %s, want %s", addr, err, addrs(ts), want)
		}
	}
	if after := d.Queries("example.com", "SRV") + d.Queries(srvName, "SRV"); after != before {
		t.Errorf("a server list was looked up in DNS")
	}
	if _, err := resolve(context.Background(), Config{Addr: "a.example.com,,b"}, nil); err == nil {
		t.Error("empty list entry accepted")
	}
}

// With usetls=yes the _xmpps-client records (direct TLS) are mixed with
// the _xmpp-client ones by priority and weight, as one set (XEP-0368).
func TestResolveDirectTLSMerged(t *testing.T) {
	d := dnstest.Start(t)
	d.Set(t,
		srvName+" 60 IN SRV 10 0 5222 plain1.example.com.",
		srvName+" 60 IN SRV 30 0 5222 plain2.example.com.",
		srvsName+" 60 IN SRV 20 0 5223 tls1.example.com.",
		srvsName+" 60 IN SRV 5 0 5223 tls0.example.com.",
	)
	ts, err := resolveTest(t, d, true, func(int) int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	want := "tls0.example.com:5223 (direct TLS), plain1.example.com:5222, tls1.example.com:5223 (direct TLS), plain2.example.com:5222"
	if got := addrs(ts); got != want {
		t.Errorf("%s\nwant %s", got, want)
	}
	if ts[0].Via != "SRV _xmpps-client._tcp.example.com" {
		t.Errorf("via %q", ts[0].Via)
	}
	// Without TLS the direct TLS records are not asked for.
	ts, err = resolveTest(t, d, false, func(int) int { return 0 })
	if err != nil || addrs(ts) != "plain1.example.com:5222, plain2.example.com:5222" {
		t.Errorf("usetls=no: %v %s", err, addrs(ts))
	}
	if d.Queries(srvsName, "SRV") != 1 {
		t.Errorf("_xmpps-client asked %d times, want 1", d.Queries(srvsName, "SRV"))
	}
}

// At most MaxTargets targets come out of DNS.
func TestResolveBounded(t *testing.T) {
	d := dnstest.Start(t)
	var recs []string
	for i := range 50 {
		recs = append(recs, srvName+" 60 IN SRV "+strconv.Itoa(i)+" 0 5222 h"+strconv.Itoa(i)+".example.com.")
	}
	d.Set(t, recs...)
	ts, err := resolveTest(t, d, false, func(int) int { return 0 })
	if err != nil || len(ts) != MaxTargets || ts[0].Addr != "h0.example.com:5222" {
		t.Errorf("%v: %d targets, first %v", err, len(ts), ts)
	}
}

// loginScript plays a server that logs any account in with PLAIN and
// binds it; with tlsCfg it speaks direct TLS first, and reports the
// client's hello on hello.
func loginScript(tlsCfg *tls.Config) func(nc net.Conn, x *xmlReader) {
	return func(nc net.Conn, x *xmlReader) {
		var rw net.Conn = nc
		if tlsCfg != nil {
			tc := tls.Server(nc, tlsCfg)
			if tc.Handshake() != nil {
				return
			}
			rw = tc
			x = newXMLReader(bufio.NewReader(tc))
		}
		_ = rw.SetDeadline(time.Now().Add(20 * time.Second))
		if x.header() != nil {
			return
		}
		_, _ = rw.Write([]byte(serverHeader + saslFeatures))
		if _, err := x.next(); err != nil {
			return
		}
		_, _ = rw.Write([]byte(`<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`))
		if x.header() != nil {
			return
		}
		_, _ = rw.Write([]byte(serverHeader + `<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>`))
		if _, err := x.next(); err != nil {
			return
		}
		_, _ = rw.Write([]byte(`<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>a@example.com/r</jid></bind></iq>`))
		for {
			if _, err := x.next(); err != nil {
				return
			}
		}
	}
}

// testCert is a certificate for example.com and 127.0.0.1 (httptest's),
// and a CA file that trusts it.
func testCert(t *testing.T) (tls.Certificate, string) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	cert := srv.TLS.Certificates[0]
	leaf := srv.Certificate()
	srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, ca
}

func portOf(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Dial goes through the targets in order: a dead first one (nothing
// listens) is passed over for the next, a direct TLS one, which gets the
// TLS handshake at once with SNI and the certificate checked against the
// XMPP domain (not the SRV target's name) and ALPN xmpp-client.
func TestDialSRVSkipsDeadAndSpeaksDirectTLS(t *testing.T) {
	cert, ca := testCert(t)
	hellos := make(chan *tls.ClientHelloInfo, 4)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"xmpp-client"},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			select {
			case hellos <- h:
			default:
			}
			return nil, nil
		}}
	direct := scripted(t, loginScript(tlsCfg))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	d := dnstest.Start(t)
	d.Set(t,
		srvName+" 60 IN SRV 0 0 "+portOf(t, dead)+" dead.example.com.",
		srvsName+" 60 IN SRV 10 0 "+portOf(t, direct)+" tls.example.com.",
		"dead.example.com. 60 IN A 127.0.0.1",
		"tls.example.com. 60 IN A 127.0.0.1",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Dial(ctx, Config{Addr: "example.com", JID: "a@example.com/r", Password: "pw", UseTLS: true, TLSCAFile: ca,
		Resolver: d.Resolver(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close(errors.New("test done")); st.Wait() }()
	tg := st.Target()
	if !tg.DirectTLS || tg.Addr != "tls.example.com:"+portOf(t, direct) || tg.Via != "SRV _xmpps-client._tcp.example.com" {
		t.Errorf("target %+v", tg)
	}
	if st.TLS() == nil || st.TLS().NegotiatedProtocol != "xmpp-client" || st.TLS().ServerName != "example.com" {
		t.Errorf("TLS state %+v", st.TLS())
	}
	h := <-hellos
	if h.ServerName != "example.com" || len(h.SupportedProtos) != 1 || h.SupportedProtos[0] != "xmpp-client" {
		t.Errorf("client hello: SNI %q ALPN %v", h.ServerName, h.SupportedProtos)
	}
	if st.JID() != "a@example.com/r" {
		t.Errorf("bound %q", st.JID())
	}

	// Probe: the direct TLS target serves, the dead one does not.
	cfg := Config{JID: "a@example.com/r", UseTLS: true, TLSCAFile: ca, Resolver: d.Resolver(), Logger: slog.New(slog.DiscardHandler)}
	if err := Probe(ctx, cfg, tg); err != nil {
		t.Errorf("probe of %v: %v", tg, err)
	}
	if err := Probe(ctx, cfg, Target{Addr: dead}); err == nil {
		t.Errorf("probe of dead %s succeeded", dead)
	}
}

// A direct TLS target whose certificate names only the SRV target, not
// the XMPP domain, is refused (RFC 6125: the domain is the reference).
func TestDirectTLSVerifiesTheDomain(t *testing.T) {
	cert, ca := testCert(t) // example.com, not example.org
	direct := scripted(t, loginScript(&tls.Config{Certificates: []tls.Certificate{cert}}))
	d := dnstest.Start(t)
	d.Set(t,
		"_xmpps-client._tcp.example.org. 60 IN SRV 0 0 "+portOf(t, direct)+" example.com.",
		"example.com. 60 IN A 127.0.0.1",
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Dial(ctx, Config{Addr: "example.org", JID: "a@example.org/r", Password: "pw", UseTLS: true, TLSCAFile: ca,
		Resolver: d.Resolver(), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "direct TLS") || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Dial: %v, want a certificate error", err)
	}
}
