package manager

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// selfSigned is a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "busylamp test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTLSSocket: with TLS set the socket speaks only TLS; the package's
// client logs in over it with the certificate as its CA.
func TestTLSSocket(t *testing.T) {
	cert, pool := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ts := startServer(t, cfg, newFakeBackend())

	ctx := context.Background()
	c, err := DialTLS(ctx, ts.addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(ctx, testUser, testSecret); err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Action(ctx, "Ping"); err != nil || resp.Get("Ping") != "Pong" {
		t.Fatalf("Ping over TLS: %v %v", resp, err)
	}

	// Plain text gets no greeting and no session.
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := Dial(dctx, ts.addr); err == nil {
		t.Fatal("a plain-text client got a session on the TLS socket")
	}
	// A client that does not trust the certificate does not connect.
	if _, err := DialTLS(ctx, ts.addr, &tls.Config{RootCAs: x509.NewCertPool()}); err == nil {
		t.Fatal("TLS without the CA connected")
	}
}

// TestPlainOffLoopbackWarns: a socket off loopback without TLS says so
// loudly at start.
func TestPlainOffLoopbackWarns(t *testing.T) {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal("cannot listen on 0.0.0.0:", err)
	}
	logs := &logBuffer{}
	srv := New(testConfig(), newFakeBackend(), slog.New(slog.NewTextHandler(logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	waitFor(t, "the listening log line", func() bool { return strings.Contains(logs.String(), "manager listening") })
	cancel()
	<-done
	if !strings.Contains(logs.String(), "level=WARN msg=\"MANAGER SOCKET IS NOT ON LOOPBACK AND NOT ENCRYPTED") {
		t.Fatalf("no warning:\n%s", logs)
	}

	// On loopback: no warning.
	ts := startServer(t, testConfig(), newFakeBackend())
	waitFor(t, "the listening log line", func() bool { return strings.Contains(ts.logs.String(), "manager listening") })
	if strings.Contains(ts.logs.String(), "NOT ON LOOPBACK") {
		t.Fatal("warned on loopback")
	}
}

// TestSecretNeverLogged runs every kind of login the socket logs (good,
// wrong, MD5, throttled, banned, not permitted) with the agent's log at
// debug, and greps it for the secret.
func TestSecretNeverLogged(t *testing.T) {
	const secret = "Zq9-very-SECRET-value"
	clk := newFakeClock()
	cfg := guardConfig(clk)
	cfg.Secret = secret
	cfg.BanAfter = 3
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: " + secret + "\r\nEvents: on\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	rc.expectRE(fullyBootedRE)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: " + secret + "\r\n\r\n")
	rc.expectRE(`Already authenticated`)
	rc.send("Action: Logoff\r\n\r\n")
	rc.expectRE(`Goodbye`)

	rc = dialRaw(t, ts.addr)
	rc.send("Action: Challenge\r\nAuthType: MD5\r\n\r\n")
	rc.expectRE(`Challenge: `)
	rc.send("Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: " + md5hex("0"+secret) + "\r\n\r\n")
	rc.expectRE(`Authentication failed`)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: " + secret + "x\r\n\r\n") // throttled
	rc.expectRE(`Authentication failed`)
	for range 2 { // the second bans
		clk.Advance(2 * time.Minute)
		rc.send("Action: Login\r\nUsername: " + secret + "\r\nSecret: " + secret + "y\r\n\r\n")
		rc.expectRE(`Authentication failed`)
	}
	c, err := net.Dial("tcp", ts.addr) // banned
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	cfg.ACL = ACL{{Permit: false, Net: mustPrefix("127.0.0.0/8")}}
	ts2 := startServer(t, cfg, newFakeBackend())
	rc = dialRaw(t, ts2.addr)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: " + secret + "\r\n\r\n")
	rc.expectRE(`Authentication failed`)

	waitFor(t, "the refusal logged", func() bool { return strings.Contains(ts.logs.String(), "manager session refused") })
	for _, l := range []string{ts.logs.String(), ts2.logs.String()} {
		if strings.Contains(l, secret) || strings.Contains(l, md5hex("0"+secret)) {
			t.Fatalf("the secret is in the log:\n%s", l)
		}
	}
}
