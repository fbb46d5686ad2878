package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/config"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "busylamp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, BasicConstraintsValid: true, IsCA: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, "ami.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile = writeFile(t, "ami.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return certFile, keyFile
}

// stubBackend is enough of an agent for Login and Ping.
type stubBackend struct{ manager.Backend }

func (stubBackend) Booted() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// TestClientTLS: with tls_cert and tls_key in [manager], the agent's
// socket speaks TLS and the client commands, reading the same file,
// connect to it, trusting the certificate itself.
func TestClientTLS(t *testing.T) {
	certFile, keyFile := writeCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	conf := writeFile(t, "tls.conf", "[asterisk]\ntype=client\nserverhost=127.0.0.1\nusername=a@example.org/pbx\n"+
		"pubsub_node=pubsub.example.org\nsecret=x\ndistribute_events=yes\n\n[manager]\nbindaddr=0.0.0.0\nport="+port+
		"\nusername=admin\nsecret=s3cret\ntls_cert="+certFile+"\ntls_key="+keyFile+"\ndeny=0.0.0.0/0\npermit=127.0.0.0/8\n")
	cfg, _, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	c := &cli{stdout: &bytes.Buffer{}, stderr: &stderr, configFlag: conf}
	ac := agentConfig(cfg, c)
	if ac.Manager.TLS, err = managerServerTLS(cfg); err != nil || ac.Manager.TLS == nil {
		t.Fatalf("server TLS: %v", err)
	}
	if len(ac.Manager.ACL) != 2 || ac.Manager.MaxUnauthSessions != 50 || ac.Manager.AuthTimeout != 10*time.Second {
		t.Fatalf("manager config not mapped: %+v", ac.Manager)
	}
	srv := manager.New(ac.Manager, stubBackend{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	mc, err := c.dial(context.Background())
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, stderr.String())
	}
	defer mc.Close()
	if resp, err := mc.Action(context.Background(), "Ping"); err != nil || resp.Get("Ping") != "Pong" {
		t.Fatalf("Ping: %v %v", resp, err)
	}

	// Without TLS on the client's side there is no session.
	plain := writeFile(t, "plain.conf", strings.Replace(strings.Replace(mustRead(t, conf), "tls_cert=", ";", 1), "tls_key=", ";", 1))
	c2 := &cli{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, configFlag: plain}
	dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
	defer dcancel()
	if _, err := c2.dial(dctx); err == nil {
		t.Fatal("a plain-text client logged in to the TLS socket")
	}
	// A key that is not there is a config error, exit 1.
	broken := writeFile(t, "broken.conf", strings.Replace(mustRead(t, conf), keyFile, keyFile+".missing", 1))
	bcfg, _, err := config.Load(broken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := managerServerTLS(bcfg); err == nil || !strings.Contains(err.Error(), "tls_key") {
		t.Fatalf("missing key file: %v", err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
