package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/config"
)

// The AMI socket's TLS, from [manager]: the agent serves tls_cert and
// tls_key; the client commands, reading the same file, trust tls_ca, or
// the certificate itself when tls_ca is not set (a self-signed
// certificate), and check that it names the address they dial: bindaddr,
// or 127.0.0.1 (::1) when bindaddr is 0.0.0.0 (::).

// managerServerTLS is the agent's TLS config; nil without tls_cert.
func managerServerTLS(cfg *config.Config) (*tls.Config, error) {
	m := cfg.Manager
	if !m.TLS() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(m.TLSCert, m.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("%s: [manager] tls_cert %s, tls_key %s: %w", cfg.File, m.TLSCert, m.TLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// managerClientTLS is the client commands' TLS config; nil without
// tls_cert.
func managerClientTLS(cfg *config.Config) (*tls.Config, error) {
	m := cfg.Manager
	if !m.TLS() {
		return nil, nil
	}
	pem, err := os.ReadFile(m.CAFile())
	if err != nil {
		return nil, fmt.Errorf("%s: [manager] CA file: %w", cfg.File, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: [manager] CA file %s: no PEM certificate in it", cfg.File, m.CAFile())
	}
	host, _, _ := net.SplitHostPort(managerDialAddr(m))
	return &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}, nil
}

// managerDialAddr is where the client commands connect: bindaddr, or
// loopback when the agent listens on every address.
func managerDialAddr(m config.Manager) string {
	ip, err := netip.ParseAddr(m.BindAddr)
	if err == nil && ip.IsUnspecified() {
		lo := "127.0.0.1"
		if ip.Is6() {
			lo = "::1"
		}
		return net.JoinHostPort(lo, strconv.Itoa(m.Port))
	}
	return m.Addr()
}

// managerACL maps [manager]'s permit and deny lines.
func managerACL(m config.Manager) manager.ACL {
	var acl manager.ACL
	for _, r := range m.ACL {
		acl = append(acl, manager.ACLRule{Permit: r.Permit, Net: r.Net})
	}
	return acl
}
