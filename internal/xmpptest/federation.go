package xmpptest

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// A federation is two Prosody servers, each its own domain on its own
// loopback address, that reach each other over s2s (RFC 6120 server to
// server, dialback without TLS). Only A serves PubSub: B's users reach
// pubsub.a.test through their own server, as a site without a PubSub
// service of its own would.
//
// Each federation takes a block of loopback addresses 127.x.y.1-4 of its
// own (x, y random; Linux routes all of 127.0.0.0/8 to lo), so that the
// federations of test binaries that run at once (go test ./... runs
// packages in parallel) do not meet on port 5269: a.test serves on .1,
// b.test on .2, both with s2s on the default port 5269 (no SRV records
// needed), and the relays between them listen on .3 (to A) and .4 (to B).
//
// Each server resolves names from its own hosts file (Prosody 0.12 with
// lua-unbound: the global option unbound = { hoststxt = FILE }), nothing
// else: no name goes to a real resolver and /etc/hosts is not touched.
// The hosts files point each server at the other through a relay the
// test owns, one per direction, so that Cut can sever the s2s path and
// Restore bring it back without touching either server or their clients.
const (
	DomainA  = "a.test"
	DomainB  = "b.test"
	ServiceA = "pubsub.a.test" // the federation's one PubSub service, on A

	s2sPortN = 5269 // the default port, on each address
)

// Federation is two running servers and the paths between them.
type Federation struct {
	A *Server // a.test on 127.x.y.1, with the PubSub service pubsub.a.test
	B *Server // b.test on 127.x.y.2; its Service names A's (its users' PubSub)
	// S2SA and S2SB are where each server accepts s2s streams.
	S2SA, S2SB string

	ipA, ipB string // the servers' addresses
	toA, toB *link  // the relays: B's path to A, A's path to B

	mu           sync.Mutex
	remoteAdmins []string // B's admin JIDs: admins of pubsub.a.test too
}

// site is the Prosody driver of one federation member: prosody's, with
// its own template, address and hosts file.
type site struct {
	prosody
	fed     *Federation
	ip      string
	hosts   string // the hosts file
	service string // "" on B
}

// siteData feeds prosody-federation.cfg.lua.
type siteData struct {
	Dir, Domain, Service, IP string
	Port, S2SPort            int
	Admins                   []string
	Memory, TLS              bool
	Cert, Key, CAFile        string
}

func (d site) writeConfig(s *Server) error {
	if err := os.WriteFile(filepath.Join(s.Dir, "hosts"), []byte(d.hosts), 0o644); err != nil {
		return err
	}
	admins := s.admins()
	if d.service == "" {
		d.fed.mu.Lock()
		d.fed.remoteAdmins = admins
		d.fed.mu.Unlock()
	} else {
		d.fed.mu.Lock()
		admins = append(admins, d.fed.remoteAdmins...)
		d.fed.mu.Unlock()
		slices.Sort(admins)
	}
	return writeTemplate("prosody-federation.cfg.lua", d.config(s), siteData{
		Dir: s.Dir, Domain: s.Domain, Service: d.service, IP: d.ip,
		Port: s.impl.port, S2SPort: s2sPortN, Admins: admins, Memory: s.impl.opts.Memory,
		TLS: s.impl.opts.TLS, Cert: s.impl.cert.Cert, Key: s.impl.cert.Key, CAFile: s.CAFile,
	})
}

// reloadAdmins on A is Prosody's; on B it hands B's admins to A (who
// serves the PubSub service they are admins of) and reloads A's. Called
// with B's lock held; A's is taken after it, never the other way round.
func (d site) reloadAdmins(s *Server) error {
	if d.service != "" {
		return d.prosody.reloadAdmins(s)
	}
	a := d.fed.A
	in := a.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.drv.writeConfig(a); err != nil {
		return err
	}
	if err := in.as.chownTree(a.Dir); err != nil {
		return err
	}
	if in.g == nil || in.g.exited() {
		return nil // its next Start reads the new config
	}
	return in.drv.reloadAdmins(a)
}

// StartFederation starts the two servers (Options.Memory applies to A's
// PubSub) and the relays between them, and waits until both serve
// clients and s2s streams. Without Options.TLS the servers authenticate
// each other with dialback over plain TCP; with it s2s requires TLS and
// certificates (s2s_secure_auth): each server has one for its names
// (A: a.test and pubsub.a.test; B: b.test) from a CA of its own, and
// trusts both CAs (Server.CAFile holds them). Clients may stay plain
// either way. The caller must Close it.
func StartFederation(opts Options) (*Federation, error) {
	for _, bin := range (prosody{}).binaries() {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: prosody: %s not found (sh internal/xmpptest/install.sh as root)", ErrNotInstalled, bin)
		}
	}
	f, err := reserveBlock()
	if err != nil {
		return nil, fmt.Errorf("start federation: %w", err)
	}
	f.A, err = f.newSite(DomainA, ServiceA, f.ipA, opts,
		fmt.Sprintf("%s %s %s\n%s %s\n", f.ipA, DomainA, ServiceA, f.toB.ip, DomainB), true)
	if err == nil {
		f.B, err = f.newSite(DomainB, ServiceA, f.ipB, opts,
			fmt.Sprintf("%s %s\n%s %s %s\n", f.ipB, DomainB, f.toA.ip, DomainA, ServiceA), false)
	}
	if err == nil && opts.TLS {
		err = f.shareCAs()
	}
	if err == nil {
		err = f.startSite(f.A)
	}
	if err == nil {
		err = f.startSite(f.B)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("start federation: %w", err)
	}
	return f, nil
}

// shareCAs writes both CAs into one file in each server's dir.
func (f *Federation) shareCAs() error {
	var both []byte
	for _, s := range []*Server{f.A, f.B} {
		b, err := os.ReadFile(s.impl.cert.CA)
		if err != nil {
			return err
		}
		both = append(both, b...)
	}
	for _, s := range []*Server{f.A, f.B} {
		s.CAFile = filepath.Join(s.Dir, "certs", "federation-ca.pem")
		if err := os.WriteFile(s.CAFile, both, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// reserveBlock picks a free block of addresses and brings the relays up
// on it (a block in use has its relay port taken).
func reserveBlock() (*Federation, error) {
	var last error
	for attempt := 0; attempt < 8; attempt++ {
		b := make([]byte, 2)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		base := fmt.Sprintf("127.%d.%d.", 1+int(b[0])%254, b[1])
		f := &Federation{ipA: base + "1", ipB: base + "2"}
		f.S2SA = net.JoinHostPort(f.ipA, strconv.Itoa(s2sPortN))
		f.S2SB = net.JoinHostPort(f.ipB, strconv.Itoa(s2sPortN))
		f.toA = &link{ip: base + "3", target: f.S2SA}
		f.toB = &link{ip: base + "4", target: f.S2SB}
		if last = f.Restore(); last == nil {
			return f, nil
		}
		f.Cut()
	}
	return nil, last
}

// newSite makes a server's dir (and certificates), not started yet.
func (f *Federation) newSite(domain, service, ip string, opts Options, hosts string, hasService bool) (*Server, error) {
	d := site{fed: f, ip: ip, hosts: hosts}
	names := []string{domain}
	if hasService {
		d.service = service
		names = append(names, service)
	}
	as, err := lookupRunAs(d.sysUser())
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tempBase(), "xmpptest-"+domain+"-")
	if err != nil {
		return nil, err
	}
	s := &Server{
		Kind: Prosody, Domain: domain, Service: service, Dir: dir,
		impl: &instance{drv: d, opts: opts, as: as, accounts: map[string]*account{}},
	}
	for _, sub := range []string{"data", "logs", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if opts.TLS {
		c, err := writeCerts(filepath.Join(dir, "certs", domain), names)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.impl.cert = c
	}
	register(s)
	port, err := freePortOn(ip)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.impl.port = port
	s.Addr = net.JoinHostPort(ip, strconv.Itoa(port))
	return s, nil
}

func (f *Federation) startSite(s *Server) error {
	if err := s.Start(); err != nil {
		return err
	}
	// Prosody opens every port before it serves the first client, so
	// this answers at once; it also checks the s2s host is served.
	ip, _, _ := net.SplitHostPort(s.Addr)
	s2s := net.JoinHostPort(ip, strconv.Itoa(s2sPortN))
	if err := S2SStreamOpens(s2s, s.Domain, probeTimeout); err != nil {
		return fmt.Errorf("%s: s2s on %s: %w%s", s.Domain, s2s, err, tail(30, s.impl.drv.logs(s)...))
	}
	return nil
}

// StartFederationT starts a federation for one test and closes it when the
// test ends (keeping the servers' logs if it failed); it fails or skips the
// test like Shared.
func StartFederationT(t testing.TB, opts Options) *Federation {
	t.Helper()
	begin := time.Now()
	f, err := StartFederation(opts)
	if err != nil {
		fail(t, err)
	}
	t.Logf("xmpptest: federation ready in %v: %s c2s %s s2s %s (dir %s); %s c2s %s s2s %s (dir %s)",
		time.Since(begin).Round(time.Millisecond), f.A.Domain, f.A.Addr, f.S2SA, f.A.Dir, f.B.Domain, f.B.Addr, f.S2SB, f.B.Dir)
	t.Cleanup(func() {
		keep := t.Failed()
		f.close(keep)
		if keep {
			t.Logf("xmpptest: federation logs kept in %s and %s", filepath.Join(f.A.Dir, "logs"), filepath.Join(f.B.Dir, "logs"))
		}
	})
	return f
}

// Cut severs the s2s path both ways, as a network between the sites that
// failed: every s2s connection is closed and new ones are refused, so
// each server bounces what it has for the other (remote-server-not-found)
// until Restore. Clients stay connected to their own server.
func (f *Federation) Cut() {
	f.toA.cut()
	f.toB.cut()
}

// Blackhole makes the s2s path stop moving bytes both ways (on) while
// closing nothing, as a path that died without a word: each server
// writes on, and hears nothing back, until its timeouts tell. Off, the
// bytes held meanwhile are delivered, as TCP delivers them once a path
// heals.
func (f *Federation) Blackhole(on bool) {
	f.toA.hole(on)
	f.toB.hole(on)
}

// Restore opens the s2s path again (idempotent); the servers connect
// again on their next stanza for the other domain.
func (f *Federation) Restore() error {
	if err := f.toA.up(); err != nil {
		return err
	}
	return f.toB.up()
}

// Close cuts the path for good and closes both servers.
func (f *Federation) Close() { f.close(false) }

func (f *Federation) close(keep bool) {
	f.Cut()
	for _, s := range []*Server{f.A, f.B} {
		if s != nil {
			if err := s.shutdown(keep); err != nil {
				fmt.Fprintf(os.Stderr, "xmpptest: %v\n", err)
			}
		}
	}
}

// S2SStreamOpens checks that a server at addr answers a server-to-server
// stream for domain with its stream features within d.
func S2SStreamOpens(addr, domain string, d time.Duration) error {
	return streamOpens(addr, domain, "jabber:server' xmlns:db='jabber:server:dialback", d)
}

// freePortOn returns a TCP port on ip that was free a moment ago.
func freePortOn(ip string) (int, error) {
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free port on %s: %w", ip, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// link relays TCP from ip:5269 to target while up.
type link struct {
	ip, target string

	mu    sync.Mutex
	open  *sync.Cond   // signalled when holed or ln changes
	holed bool         // bytes are held, not moved (a black hole)
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // the accept loop and every pipe
}

func (l *link) up() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return nil
	}
	listen := net.JoinHostPort(l.ip, strconv.Itoa(s2sPortN))
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return fmt.Errorf("relay %s → %s: %w", listen, l.target, err)
	}
	l.ln = ln
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
		l.open = sync.NewCond(&l.mu)
	}
	l.wg.Add(1)
	go l.accept(ln)
	return nil
}

func (l *link) cut() {
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for c := range l.conns {
		c.Close()
		delete(l.conns, c)
	}
	if l.open != nil {
		l.open.Broadcast()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// hole holds every byte (on) or moves them again, the held ones first.
func (l *link) hole(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holed = on
	if l.open != nil {
		l.open.Broadcast()
	}
}

// copy moves bytes from src to dst until either fails or ln is cut,
// holding them while the link is holed.
func (l *link) copy(ln net.Listener, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			for l.holed && l.ln == ln {
				l.open.Wait()
			}
			live := l.ln == ln
			l.mu.Unlock()
			if !live {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// track adds c to the open connections unless ln was cut meanwhile.
func (l *link) track(ln net.Listener, c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != ln {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *link) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

func (l *link) accept(ln net.Listener) {
	defer l.wg.Done()
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		if !l.track(ln, in) {
			continue
		}
		l.wg.Add(1)
		go l.pipe(ln, in)
	}
}

func (l *link) pipe(ln net.Listener, in net.Conn) {
	defer l.wg.Done()
	defer l.forget(in)
	out, err := net.DialTimeout("tcp4", l.target, probeTimeout)
	if err != nil {
		return
	}
	if !l.track(ln, out) {
		return
	}
	defer l.forget(out)
	done := make(chan struct{})
	go func() {
		l.copy(ln, out, in)
		out.Close() // the other direction ends too
		close(done)
	}()
	l.copy(ln, in, out)
	in.Close()
	<-done
}
