package xmpptest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// EjabberdCluster is a cluster of ejabberd nodes on loopback: each node
// its own Erlang node name (NAME@localhost), data, logs and c2s port, all
// serving the one domain and PubSub service; one epmd of the cluster's own
// on a loopback port, one cookie. Node 1 is started first and the others
// join it (`ejabberdctl join_cluster`), so mnesia replicates every table
// (accounts, PubSub nodes, items, subscriptions) to every node.
//
// A node may be stopped, killed and started again: a node started again
// rejoins the running ones on its own (its mnesia schema names them), and
// Start returns once ejabberd lists it among the running cluster nodes.
type EjabberdCluster struct {
	Nodes []*Server // Nodes[0] is node 1; each Addr is that node's c2s
	Dir   string    // holds each node's dir and the epmd's

	as       runAs
	cookie   string
	epmdPort int

	mu     sync.Mutex // serializes account changes and Close
	epmd   *group
	closed bool
}

// ejabberdNode is the ejabberd driver for a node of an EjabberdCluster:
// distribution through the cluster's epmd instead of a port of its own.
type ejabberdNode struct {
	ejabberd
	c *EjabberdCluster
}

type clusterConfigData struct {
	configData
	Cookie string
}

func (e ejabberdNode) writeConfig(s *Server) error {
	d := clusterConfigData{configData: s.configData(), Cookie: e.c.cookie}
	// The single server's config, plus mod_admin_extra for the ctl
	// commands that say which node a session is on.
	var yml bytes.Buffer
	if err := configTemplates.ExecuteTemplate(&yml, "ejabberd.yml", d.configData); err != nil {
		return err
	}
	withAdmin := bytes.Replace(yml.Bytes(), []byte("\nmodules:\n"), []byte("\nmodules:\n  mod_admin_extra: {}\n"), 1)
	if bytes.Equal(withAdmin, yml.Bytes()) {
		return errors.New("ejabberd.yml template: no modules: section to add mod_admin_extra to")
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "ejabberd.yml"), withAdmin, 0o644); err != nil {
		return err
	}
	if err := writeTemplate("ejabberdctl-cluster.cfg", filepath.Join(s.Dir, "ejabberdctl.cfg"), d); err != nil {
		return err
	}
	for _, sub := range []string{"spool", "modules"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o750); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 {
		return e.writeUnprivilegedCtl(s)
	}
	return nil
}

func (e ejabberdNode) env(s *Server) []string {
	return append(e.ejabberd.env(s), "ERL_EPMD_PORT="+strconv.Itoa(e.c.epmdPort))
}

func (e ejabberdNode) command(s *Server) *exec.Cmd {
	cmd := exec.Command(e.ctlPath(s), e.args(s, "foreground")...)
	cmd.Dir = s.Dir
	cmd.Env = e.env(s)
	return cmd
}

func (e ejabberdNode) ctlOut(s *Server, args ...string) (string, error) {
	return runCtl(s.impl.as, filepath.Join(s.Dir, "spool"), e.env(s), e.ctlPath(s), e.args(s, args...)...)
}

func (e ejabberdNode) ctl(s *Server, args ...string) error {
	_, err := e.ctlOut(s, args...)
	return err
}

func (e ejabberdNode) stop(s *Server) error { return e.ctl(s, "stop") }

func (e ejabberdNode) register(s *Server, name, password string) error {
	return e.ctl(s, "register", name, s.Domain, password)
}

func (e ejabberdNode) reloadAdmins(s *Server) error { return e.ctl(s, "reload_config") }

// StartEjabberdCluster starts n ejabberd nodes (n >= 2) joined into one
// cluster and waits until every node lists all of them. The caller must
// Close it.
func StartEjabberdCluster(n int) (*EjabberdCluster, error) {
	if n < 2 {
		return nil, fmt.Errorf("ejabberd cluster: %d nodes; want at least 2", n)
	}
	for _, bin := range (ejabberd{}).binaries() {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w: ejabberd: %s not found (sh internal/xmpptest/install.sh as root)", ErrNotInstalled, bin)
		}
	}
	epmdBin, err := exec.LookPath("epmd")
	if err != nil {
		return nil, fmt.Errorf("%w: ejabberd cluster: epmd not found", ErrNotInstalled)
	}
	as, err := lookupRunAs((ejabberd{}).sysUser())
	if err != nil {
		return nil, fmt.Errorf("start ejabberd cluster: %w", err)
	}
	dir, err := os.MkdirTemp(tempBase(), "xmpptest-ejcluster-")
	if err != nil {
		return nil, fmt.Errorf("start ejabberd cluster: %w", err)
	}
	// The nodes run as the server's user, which must reach their dirs.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c := &EjabberdCluster{Dir: dir, as: as, cookie: "xt" + randomHex(16)}
	if err := c.startEpmd(epmdBin); err != nil {
		c.Close()
		return nil, err
	}
	for i := range n {
		s := &Server{
			Kind: Ejabberd, Domain: Domain, Service: Service, Dir: filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			impl: &instance{drv: ejabberdNode{c: c}, as: as, node: fmt.Sprintf("xt%d%s", i+1, randomHex(5)), accounts: map[string]*account{}},
		}
		if err := os.Mkdir(s.Dir, 0o750); err != nil {
			c.Close()
			return nil, err
		}
		if err := s.prepare(); err != nil {
			c.Close()
			return nil, fmt.Errorf("start ejabberd cluster node %d: %w", i+1, err)
		}
		register(s)
		c.Nodes = append(c.Nodes, s)
		if err := startOnFreePort(s); err != nil {
			c.Close()
			return nil, fmt.Errorf("ejabberd cluster node %d: %w", i+1, err)
		}
	}
	first := c.Nodes[0].ErlangNode()
	for i, s := range c.Nodes[1:] {
		if err := s.impl.drv.(ejabberdNode).ctl(s, "join_cluster", first); err != nil {
			c.Close()
			return nil, fmt.Errorf("ejabberd cluster: node %d joins %s: %w%s", i+2, first, err, tail(30, s.impl.drv.logs(s)...))
		}
		// join_cluster restarts ejabberd on the joining node.
		if err := waitReadyAddr(s.Addr, s.Domain, startTimeout); err != nil {
			c.Close()
			return nil, fmt.Errorf("ejabberd cluster: node %d after the join: %w%s", i+2, err, tail(30, s.impl.drv.logs(s)...))
		}
	}
	for i := range c.Nodes {
		if err := c.waitMembers(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// startOnFreePort starts s on a free c2s port, trying another when the
// port was taken between the probe and the bind.
func startOnFreePort(s *Server) error {
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err == nil {
			s.impl.port = port
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			err = s.Start()
		}
		if err == nil {
			return nil
		}
		if attempt == 3 || !addrInUse(s) {
			return err
		}
		s.clearLogs()
	}
}

// startEpmd runs the cluster's epmd in the foreground on a free loopback
// port, in a reaper group like a server.
func (c *EjabberdCluster) startEpmd(bin string) error {
	home := filepath.Join(c.Dir, "epmd")
	if err := os.Mkdir(home, 0o755); err != nil {
		return err
	}
	if err := c.as.chownTree(home); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		cmd := exec.Command(bin, "-port", strconv.Itoa(port), "-address", "127.0.0.1")
		cmd.Dir = home
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + home}
		out, err := os.OpenFile(filepath.Join(home, "epmd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = out, out
		g, err := startGroup(cmd, c.as, home)
		out.Close()
		if err != nil {
			return err
		}
		deadline := time.Now().Add(startTimeout)
		for !g.exited() && time.Now().Before(deadline) {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), probeTimeout)
			if err == nil {
				conn.Close()
				c.epmd, c.epmdPort = g, port
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		g.kill()
		if attempt == 3 {
			return fmt.Errorf("ejabberd cluster: epmd on port %d did not start%s", port, tail(10, filepath.Join(home, "epmd.log")))
		}
	}
}

// waitReadyAddr waits until addr answers a client stream for domain.
func waitReadyAddr(addr, domain string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = StreamOpens(addr, domain, probeTimeout); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not serving after %v: %v", timeout, last)
}

// ErlangNode is the Erlang node name of an ejabberd server (NAME@localhost).
func (s *Server) ErlangNode() string { return s.impl.node + "@localhost" }

// Members lists the cluster's running nodes as node i sees them
// (`ejabberdctl list_cluster`).
func (c *EjabberdCluster) Members(i int) ([]string, error) {
	s := c.Nodes[i]
	out, err := s.impl.drv.(ejabberdNode).ctlOut(s, "list_cluster")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, f := range strings.Fields(out) {
		if f = strings.Trim(f, "'[],"); strings.Contains(f, "@") {
			names = append(names, f)
		}
	}
	return names, nil
}

// Sessions lists the cluster's client sessions as node i sees them
// (`ejabberdctl connected_users_info`): each full JID and the Erlang node
// its session is on.
func (c *EjabberdCluster) Sessions(i int) (map[string]string, error) {
	s := c.Nodes[i]
	out, err := s.impl.drv.(ejabberdNode).ctlOut(s, "connected_users_info")
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, n := range c.Nodes {
		names[n.ErlangNode()] = true
	}
	sessions := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.TrimSpace(line), "\t")
		for _, x := range f[1:] {
			if names[x] {
				sessions[f[0]] = x
			}
		}
	}
	return sessions, nil
}

// running reports whether node i's server process runs.
func (c *EjabberdCluster) running(i int) bool {
	in := c.Nodes[i].impl
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.g != nil && !in.g.exited()
}

// waitMembers waits until node i lists every running node of the
// cluster, itself included.
func (c *EjabberdCluster) waitMembers(i int) error {
	deadline := time.Now().Add(startTimeout)
	for {
		var want []string
		for j, s := range c.Nodes {
			if c.running(j) {
				want = append(want, s.ErlangNode())
			}
		}
		got, err := c.Members(i)
		missing := ""
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing = w
			}
		}
		if err == nil && missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			s := c.Nodes[i]
			return fmt.Errorf("ejabberd cluster: node %d lists %v (missing %s, err %v) after %v%s", i+1, got, missing, err, startTimeout, tail(30, s.impl.drv.logs(s)...))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Start starts node i again (stopped or killed) and waits until it is
// back in the cluster: serving, and listed by itself and every other
// running node.
func (c *EjabberdCluster) Start(i int) error {
	if err := c.Nodes[i].Start(); err != nil {
		return err
	}
	for j := range c.Nodes {
		if c.running(j) {
			if err := c.waitMembers(j); err != nil {
				return err
			}
		}
	}
	return nil
}

// Stop stops node i gracefully; the others go on serving.
func (c *EjabberdCluster) Stop(i int) error { return c.Nodes[i].Stop() }

// Kill kills node i with SIGKILL.
func (c *EjabberdCluster) Kill(i int) error { return c.Nodes[i].Kill() }

// Admin returns an account that may create PubSub nodes, registered once
// (on a running node; mnesia has it everywhere) and in every node's admin
// list. It panics like Server.Admin.
func (c *EjabberdCluster) Admin(name string) (jid, password string) { return c.account(name, true) }

// User returns a plain account, registered once. It panics like Server.User.
func (c *EjabberdCluster) User(name string) (jid, password string) { return c.account(name, false) }

func (c *EjabberdCluster) account(name string, admin bool) (string, string) {
	if !localpart.MatchString(name) {
		panic(fmt.Sprintf("xmpptest: account name %q: want lower-case letters, digits, '.', '_', '-'", name))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	jid := name + "@" + Domain
	for _, s := range c.Nodes {
		s.impl.mu.Lock()
		defer s.impl.mu.Unlock()
	}
	if a := c.Nodes[0].impl.accounts[name]; a != nil {
		if a.admin != admin {
			panic(fmt.Sprintf("xmpptest: %s is already registered as %s", jid, role(a.admin)))
		}
		return jid, a.password
	}
	password := "pw-" + randomHex(8)
	var at *Server
	for _, s := range c.Nodes {
		if in := s.impl; in.g != nil && !in.g.exited() && at == nil {
			at = s
		}
	}
	if at == nil {
		panic(fmt.Sprintf("xmpptest: register %s: no cluster node runs", jid))
	}
	for _, s := range c.Nodes {
		s.impl.accounts[name] = &account{password: password, admin: admin, registered: true}
	}
	undo := func(s *Server, err error) {
		for _, s := range c.Nodes {
			delete(s.impl.accounts, name)
		}
		panic(fmt.Sprintf("xmpptest: register %s %s on the ejabberd cluster: %v%s", role(admin), jid, err, tail(30, s.impl.drv.logs(s)...)))
	}
	if err := at.impl.drv.register(at, name, password); err != nil {
		undo(at, err)
	}
	if !admin {
		return jid, password
	}
	for _, s := range c.Nodes {
		in := s.impl
		if err := in.drv.writeConfig(s); err != nil {
			undo(s, err)
		}
		if err := in.as.chownTree(s.Dir); err != nil {
			undo(s, err)
		}
		if in.g != nil && !in.g.exited() {
			if err := in.drv.reloadAdmins(s); err != nil {
				undo(s, err)
			}
		}
	}
	return jid, password
}

// Close kills every node and the epmd and removes the cluster's dir.
func (c *EjabberdCluster) Close() error { return c.shutdown(false) }

func (c *EjabberdCluster) shutdown(keep bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var first error
	for _, s := range c.Nodes {
		if err := s.shutdown(true); err != nil && first == nil {
			first = err
		}
	}
	if c.epmd != nil {
		c.epmd.kill()
	}
	if !keep {
		if err := os.RemoveAll(c.Dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// StartEjabberdClusterT starts a cluster of n nodes for one test and
// closes it when the test ends (its logs kept if the test failed); it
// fails or skips the test like Shared.
func StartEjabberdClusterT(t testing.TB, n int) *EjabberdCluster {
	t.Helper()
	begin := time.Now()
	c, err := StartEjabberdCluster(n)
	if err != nil {
		fail(t, err)
	}
	var addrs []string
	for _, s := range c.Nodes {
		addrs = append(addrs, s.Addr)
	}
	t.Logf("xmpptest: ejabberd cluster of %d ready at %s in %v (dir %s)", n, strings.Join(addrs, ", "), time.Since(begin).Round(time.Millisecond), c.Dir)
	t.Cleanup(func() {
		keep := t.Failed()
		if err := c.shutdown(keep); err != nil {
			t.Errorf("xmpptest: %v", err)
		}
		if keep {
			t.Logf("xmpptest: ejabberd cluster logs kept in %s/node*/logs", c.Dir)
		}
	})
	return c
}
