// Package xmpptest starts real XMPP servers (Prosody and ejabberd from the
// system packages) for integration tests.
//
// Each server runs from its own temp directory (config, data, logs, pid) on
// a free 127.0.0.1 port, serves the domain busylamp.test with the PubSub
// service pubsub.busylamp.test, and lets only admin accounts create nodes.
// Nothing listens beyond loopback: no s2s, no HTTP, and ejabberd's Erlang
// distribution listens on a loopback port of its own without epmd.
// StartFederation runs two Prosody servers (a.test, b.test) on loopback
// addresses of their own, federated over s2s through relays the test can
// cut and restore.
// StartEjabberdCluster joins ejabberd nodes into one cluster, through an
// epmd of the cluster's own on a loopback port.
//
// Every server runs in a process group led by a reaper shell that kills the
// group as soon as the test binary exits, however it exits, so a panicking
// or killed test leaves no server behind.
package xmpptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Kind names a server implementation.
type Kind string

// Server kinds.
const (
	Prosody  Kind = "prosody"
	Ejabberd Kind = "ejabberd"
)

// Kinds lists every server kind, for table tests.
var Kinds = []Kind{Prosody, Ejabberd}

// Options tune a server.
type Options struct {
	// Memory keeps PubSub nodes and items in memory (Prosody only;
	// ejabberd ignores it). They are lost on Stop or Kill.
	Memory bool
	// NoPubSub serves no PubSub service (Prosody only; ejabberd ignores
	// it): what a client that discovers the service must meet. Admin
	// accounts cannot be used then (their reload goes through the
	// service); use User.
	NoPubSub bool
	// ExtraPubSub, when set, is the domain of a second PubSub service
	// (Prosody only), for clients that must choose one. Admin accounts
	// are admins of Service only.
	ExtraPubSub string
	// TLS offers STARTTLS, and requires it, with a certificate for the
	// domain, the service and 127.0.0.1 signed by a CA generated at start
	// (Server.CAFile). Without TLS, SASL PLAIN is allowed in the clear and
	// STARTTLS is not offered.
	TLS bool
	// DirectTLS also listens for direct TLS client connections (XEP-0368)
	// on a port of its own, Server.DirectTLSAddr (Prosody only; needs TLS).
	DirectTLS bool
}

// Domain and Service are the names every server serves.
const (
	Domain  = "busylamp.test"
	Service = "pubsub.busylamp.test"
)

// ErrNotInstalled is returned (wrapped) by Start when the server's binaries
// are missing.
var ErrNotInstalled = errors.New("xmpptest: server not installed")

// Server is one server instance, running or stopped. Its methods are safe
// for concurrent use.
type Server struct {
	Kind    Kind
	Domain  string // busylamp.test
	Service string // pubsub.busylamp.test
	Addr    string // 127.0.0.1:port of c2s, the same across Stop/Start
	CAFile  string // PEM of the CA that signed the server certificate ("" without TLS)
	// DirectTLSAddr is 127.0.0.1:port of direct TLS c2s (Options.DirectTLS).
	DirectTLSAddr string
	Dir           string // temp dir holding config, data and logs

	impl *instance
}

type instance struct {
	drv      driver
	opts     Options
	as       runAs
	port     int
	tlsPort  int    // direct TLS c2s port (Options.DirectTLS), 0 without
	node     string // ejabberd's Erlang node name, fixed for the mnesia data
	distPort int    // ejabberd: Erlang distribution port of the current run
	cert     certFiles

	mu       sync.Mutex
	g        *group // nil while stopped
	accounts map[string]*account
	closed   bool
	shared   bool
}

type account struct {
	password   string
	admin      bool
	registered bool
}

// driver is what differs between Prosody and ejabberd.
type driver interface {
	// binaries the driver needs, for the installed check.
	binaries() []string
	// sysUser is the system user the server runs as when we are root.
	sysUser() string
	// writeConfig writes the config files, admins included.
	writeConfig(s *Server) error
	// command returns the server in the foreground, output not yet set.
	command(s *Server) *exec.Cmd
	// stop asks the running server to stop; the caller waits for the exit.
	stop(s *Server) error
	// register creates an account on a running server.
	register(s *Server, name, password string) error
	// reloadAdmins makes a running server read the admin list again.
	reloadAdmins(s *Server) error
	// logs lists the log files worth showing on failure.
	logs(s *Server) []string
}

func newDriver(kind Kind) (driver, error) {
	switch kind {
	case Prosody:
		return prosody{}, nil
	case Ejabberd:
		return ejabberd{}, nil
	}
	return nil, fmt.Errorf("xmpptest: unknown server kind %q", kind)
}

// Start starts a server of the given kind in a new temp dir and waits until
// it accepts a client stream. The caller must Close it.
func Start(kind Kind, opts Options) (*Server, error) {
	drv, err := newDriver(kind)
	if err != nil {
		return nil, err
	}
	for _, bin := range drv.binaries() {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: %s: %s not found (sh internal/xmpptest/install.sh as root)", ErrNotInstalled, kind, bin)
		}
	}
	as, err := lookupRunAs(drv.sysUser())
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	dir, err := os.MkdirTemp(tempBase(), "xmpptest-"+string(kind)+"-")
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	s := &Server{
		Kind: kind, Domain: Domain, Service: Service, Dir: dir,
		impl: &instance{drv: drv, opts: opts, as: as, node: "xt" + randomHex(6), accounts: map[string]*account{}},
	}
	if err := s.prepare(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", kind, err)
	}
	register(s)
	// A free port can be taken between our probe and the server's bind:
	// try again on another port.
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err == nil {
			s.impl.port = port
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			if opts.DirectTLS {
				err = s.pickDirectTLSPort(kind, opts)
			}
		}
		if err == nil {
			err = s.Start()
		}
		if err == nil {
			return s, nil
		}
		if attempt == 3 || !addrInUse(s) {
			s.Close()
			return nil, err
		}
		s.clearLogs()
	}
}

// tempBase is where instance dirs go: the usual temp dir, unless we are
// root and the server users could not reach it (TMPDIR under /root).
func tempBase() string {
	base := os.TempDir()
	if os.Geteuid() != 0 {
		return base
	}
	for p := base; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if p == filepath.Dir(p) {
			return base
		}
	}
}

func (s *Server) prepare() error {
	in := s.impl
	for _, sub := range []string{"data", "logs", "certs"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o750); err != nil {
			return err
		}
	}
	if in.opts.TLS {
		c, err := writeCerts(filepath.Join(s.Dir, "certs", s.Domain), []string{s.Domain, s.Service, "localhost"})
		if err != nil {
			return err
		}
		in.cert = c
		s.CAFile = c.CA
	}
	return nil
}

// addrInUse tells from the logs whether the server failed to bind.
func addrInUse(s *Server) bool {
	re := regexp.MustCompile(`(?i)address already in use|eaddrinuse`)
	for _, f := range s.impl.drv.logs(s) {
		if b, err := os.ReadFile(f); err == nil && re.Match(b) {
			return true
		}
	}
	return false
}

func (s *Server) clearLogs() {
	for _, f := range s.impl.drv.logs(s) {
		os.Remove(f)
	}
}

// Start starts a stopped server again on the same port with the same data
// and registers accounts asked for while it was down.
func (s *Server) Start() error {
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return fmt.Errorf("start %s: server closed", s.Kind)
	}
	if in.g != nil && !in.g.exited() {
		return fmt.Errorf("start %s: already running", s.Kind)
	}
	if in.g != nil { // died on its own: clean up what is left
		in.g.kill()
		in.g = nil
	}
	if err := s.startLocked(); err != nil {
		return fmt.Errorf("start %s in %s: %w%s", s.Kind, s.Dir, err, tail(30, in.drv.logs(s)...))
	}
	for name, a := range in.accounts {
		if a.registered {
			continue
		}
		if err := in.drv.register(s, name, a.password); err != nil {
			return fmt.Errorf("start %s: %w%s", s.Kind, err, tail(30, in.drv.logs(s)...))
		}
		a.registered = true
	}
	return nil
}

func (s *Server) startLocked() error {
	in := s.impl
	if err := in.drv.writeConfig(s); err != nil {
		return err
	}
	if err := in.as.chownTree(s.Dir); err != nil {
		return fmt.Errorf("hand %s to the server's user: %w", s.Dir, err)
	}
	cmd := in.drv.command(s)
	out, err := os.OpenFile(filepath.Join(s.Dir, "logs", "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	g, err := startGroup(cmd, in.as, s.Dir)
	if err != nil {
		return err
	}
	if err := waitReady(g, s.Addr, s.Domain, startTimeout); err != nil {
		g.kill()
		return err
	}
	in.g = g
	return nil
}

// Stop stops the server gracefully (SIGKILL if that takes longer than
// stopTimeout); its data stays for Start.
func (s *Server) Stop() error {
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	in := s.impl
	g := in.g
	if g == nil {
		return nil
	}
	var err error
	if !g.exited() {
		err = in.drv.stop(s)
		if !g.wait(stopTimeout) && err == nil {
			err = fmt.Errorf("did not stop within %v; killed", stopTimeout)
		}
	}
	g.kill() // whatever is left in the group
	in.g = nil
	if err != nil {
		return fmt.Errorf("stop %s: %w%s", s.Kind, err, tail(30, in.drv.logs(s)...))
	}
	return nil
}

// Kill kills all the server's processes with SIGKILL and waits for them;
// Start brings it back with the data it had written. The accounts are the
// harness's, not what a crash test is about: ejabberd's mnesia commits
// asynchronously and was seen to lose an account registered 1.4 s before a
// SIGKILL, so Start registers every account again after a Kill.
func (s *Server) Kill() error {
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.g != nil {
		in.g.kill()
		in.g = nil
	}
	if _, single := in.drv.(ejabberd); single { // a cluster node gets them from the others
		for _, a := range in.accounts {
			a.registered = false
		}
	}
	return nil
}

// Close kills the server (its data is going anyway) and removes its
// directory. A shared server is closed by Main only.
func (s *Server) Close() error {
	if s.impl.isShared() {
		return fmt.Errorf("close %s: shared server, closed by Main", s.Kind)
	}
	return s.shutdown(false)
}

func (in *instance) isShared() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.shared
}

// shutdown kills the server and removes its dir unless keep (kept for a
// failed test's logs).
func (s *Server) shutdown(keep bool) error {
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return nil
	}
	in.closed = true
	unregister(s)
	if in.g != nil {
		in.g.kill()
		in.g = nil
	}
	if keep {
		return nil
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("close %s: %w", s.Kind, err)
	}
	return nil
}

// Admin returns the bare JID and password of an account that may create
// PubSub nodes, registering it on first use. It panics when the server
// cannot register the account (the test fails with the server's log).
func (s *Server) Admin(name string) (jid, password string) {
	return s.account(name, true)
}

// User returns the bare JID and password of a plain account (node creation
// is forbidden), registering it on first use. It panics like Admin.
func (s *Server) User(name string) (jid, password string) {
	return s.account(name, false)
}

var localpart = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (s *Server) account(name string, admin bool) (string, string) {
	if !localpart.MatchString(name) {
		panic(fmt.Sprintf("xmpptest: account name %q: want lower-case letters, digits, '.', '_', '-'", name))
	}
	jid := name + "@" + s.Domain
	in := s.impl
	in.mu.Lock()
	defer in.mu.Unlock()
	if a := in.accounts[name]; a != nil {
		if a.admin != admin {
			panic(fmt.Sprintf("xmpptest: %s is already registered as %s", jid, role(a.admin)))
		}
		return jid, a.password
	}
	if in.closed {
		panic(fmt.Sprintf("xmpptest: %s: server closed", jid))
	}
	a := &account{password: "pw-" + randomHex(8), admin: admin}
	in.accounts[name] = a
	if err := s.addAccountLocked(name, a); err != nil {
		delete(in.accounts, name)
		panic(fmt.Sprintf("xmpptest: register %s %s on %s: %v%s", role(admin), jid, s.Kind, err, tail(30, in.drv.logs(s)...)))
	}
	return jid, a.password
}

func (s *Server) addAccountLocked(name string, a *account) error {
	in := s.impl
	running := in.g != nil && !in.g.exited()
	if a.admin {
		if err := in.drv.writeConfig(s); err != nil {
			return err
		}
		if err := in.as.chownTree(s.Dir); err != nil {
			return err
		}
	}
	if !running {
		return nil // Start registers it
	}
	if err := in.drv.register(s, name, a.password); err != nil {
		return err
	}
	a.registered = true
	if a.admin {
		return in.drv.reloadAdmins(s)
	}
	return nil
}

// admins lists the admin JIDs, sorted, for the config templates.
func (s *Server) admins() []string {
	var out []string
	for name, a := range s.impl.accounts {
		if a.admin {
			out = append(out, name+"@"+s.Domain)
		}
	}
	slices.Sort(out)
	return out
}

func role(admin bool) string {
	if admin {
		return "admin"
	}
	return "user"
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Every server not yet closed, so Main can close what tests left behind.
var (
	liveMu sync.Mutex
	live   = map[*Server]bool{}
)

func register(s *Server) {
	liveMu.Lock()
	live[s] = true
	liveMu.Unlock()
}

func unregister(s *Server) {
	liveMu.Lock()
	delete(live, s)
	liveMu.Unlock()
}

// Servers shared by the tests of one binary.
var (
	sharedMu    sync.Mutex
	shared      = map[Kind]*sharedServer{}
	mainRunning bool
)

type sharedServer struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs the tests, then closes every server Shared started and any
// server a test left open. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(xmpptest.Main(m)) }
func Main(m *testing.M) int {
	sharedMu.Lock()
	mainRunning = true
	sharedMu.Unlock()
	code := m.Run()
	closeAll(code != 0)
	return code
}

// closeAll closes every live server; keep leaves their dirs for the logs.
func closeAll(keep bool) {
	liveMu.Lock()
	var all []*Server
	for s := range live {
		all = append(all, s)
	}
	liveMu.Unlock()
	for _, s := range all {
		if err := s.shutdown(keep); err != nil {
			fmt.Fprintf(os.Stderr, "xmpptest: %v\n", err)
		}
		if keep {
			fmt.Fprintf(os.Stderr, "xmpptest: %s logs kept in %s\n", s.Kind, filepath.Join(s.Dir, "logs"))
		}
	}
}

// Shared returns a server of the given kind (default Options) shared by all
// tests of the binary, starting it on first use; the binary's TestMain must
// call Main. When the server cannot start the test fails — or, outside CI
// (CI != "true"), is skipped if the server is not installed.
func Shared(t testing.TB, kind Kind) *Server {
	t.Helper()
	sharedMu.Lock()
	if !mainRunning {
		sharedMu.Unlock()
		t.Fatal("xmpptest.Shared needs a TestMain that calls xmpptest.Main")
	}
	e := shared[kind]
	if e == nil {
		e = &sharedServer{}
		shared[kind] = e
	}
	sharedMu.Unlock()
	e.once.Do(func() {
		e.srv, e.err = Start(kind, Options{})
		if e.err == nil {
			e.srv.impl.mu.Lock()
			e.srv.impl.shared = true
			e.srv.impl.mu.Unlock()
		}
	})
	if e.err != nil {
		fail(t, e.err)
	}
	return e.srv
}

// StartT starts a server for one test and closes it when the test ends;
// it fails or skips the test like Shared.
func StartT(t testing.TB, kind Kind, opts Options) *Server {
	t.Helper()
	begin := time.Now()
	s, err := Start(kind, opts)
	if err != nil {
		fail(t, err)
	}
	t.Logf("xmpptest: %s ready at %s in %v (dir %s)", kind, s.Addr, time.Since(begin).Round(time.Millisecond), s.Dir)
	t.Cleanup(func() {
		keep := t.Failed()
		if err := s.shutdown(keep); err != nil {
			t.Errorf("xmpptest: %v", err)
		}
		if keep {
			t.Logf("xmpptest: %s logs kept in %s", kind, filepath.Join(s.Dir, "logs"))
		}
	})
	return s
}

func fail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNotInstalled) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	t.Fatal(err)
}
