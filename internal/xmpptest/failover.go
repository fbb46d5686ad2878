package xmpptest

import (
	"fmt"
	"net"
	"strconv"
)

// pickDirectTLSPort chooses the direct TLS port (Options.DirectTLS).
func (s *Server) pickDirectTLSPort(kind Kind, opts Options) error {
	if kind != Prosody || !opts.TLS {
		return fmt.Errorf("xmpptest: DirectTLS needs Prosody and TLS")
	}
	for {
		p, err := freePort()
		if err != nil {
			return err
		}
		if p != s.impl.port {
			s.impl.tlsPort = p
			s.DirectTLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
			return nil
		}
	}
}

// CopyAccount registers on s the account name of from, with the same
// password and role, and returns its bare JID and password: two servers
// of one domain serving the same accounts, as failover needs. It panics
// like Admin.
func (s *Server) CopyAccount(from *Server, name string) (jid, password string) {
	from.impl.mu.Lock()
	a := from.impl.accounts[name]
	from.impl.mu.Unlock()
	if a == nil {
		panic(fmt.Sprintf("xmpptest: copy %s: no such account on %s", name, from.Dir))
	}
	jid = name + "@" + s.Domain
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if b := in.accounts[name]; b != nil {
		if b.password != a.password || b.admin != a.admin {
			panic(fmt.Sprintf("xmpptest: copy %s: registered differently on %s", jid, s.Dir))
		}
		return jid, b.password
	}
	b := &account{password: a.password, admin: a.admin}
	in.accounts[name] = b
	if err := s.addAccountLocked(name, b); err != nil {
		delete(in.accounts, name)
		panic(fmt.Sprintf("xmpptest: copy %s to %s: %v%s", jid, s.Kind, err, tail(30, in.drv.logs(s)...)))
	}
	return jid, b.password
}
