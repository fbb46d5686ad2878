// Package e2e runs busylamp as users do: separate processes of the built
// binary, a real XMPP server, and nothing but the AMI socket and the CLI
// to drive and observe them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

var binary string // the busylamp binary built once for the suite

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "busylamp-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "busylamp")
	out, err := exec.Command("go", "build", "-o", binary, "github.com/busylamp/busylamp/cmd/busylamp").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build busylamp: %v\n%s", err, out)
		os.Exit(1)
	}
	code := xmpptest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	amiUser   = "admin"
	amiSecret = "e2e-secret"
)

// Bounds on waits for what must happen. An idle machine boots an agent in
// about a second and answers an action in milliseconds; these are for a
// machine busy with other work, where everything runs many times slower.
// Each wait ends when what it waits for happens.
const (
	bootWait   = 120 * time.Second // an agent up: AMI login, then FullyBooted
	answerWait = 60 * time.Second  // one AMI action or list
	stopWait   = 30 * time.Second  // SIGTERM to exit, before SIGKILL
)

// node is one agent process and its config.
type node struct {
	t           *testing.T
	name        string
	jid         string
	conf        string
	amiAddr     string
	starts      int // times started: from the second on, a fresh AMI port
	gossipAddr  string
	logPath     string
	cmd         *exec.Cmd
	done        chan struct{}
	env         []string // added to the agent's environment
	httpAddr    string   // with nodeOpts.web: the lamp field
	metricsAddr string   // and the Prometheus endpoint
}

// cluster is a set of agents on one XMPP server.
type cluster struct {
	t     *testing.T
	srv   *xmpptest.Server
	dir   string
	nodes []*node
}

// nodeOpts tune one node's config.
type nodeOpts struct {
	mwiMerge   string
	staleGrace int
	stale      string
	gossip     bool   // a [cluster] section on 127.0.0.1
	join       []int  // with gossip: indexes of the nodes whose gossip address it knows
	noBuddies  bool   // no buddy= lines: buddies come from membership
	xmppAddr   string // host:port to reach the XMPP server at (a relay); the server's own by default
	maxDevices int    // [agent] max_devices; the default when 0
	logJSON    bool   // [general] log_format = json
	web        bool   // [http] and [metrics] on free loopback ports (node.httpAddr, node.metricsAddr)
	// serverList puts these servers before the XMPP server in a
	// serverhost list (no port key), tried in order.
	serverList []string
	serverhost string // the serverhost= value as written (a list of host:port), no port= line; xmppAddr's otherwise
	discover   bool   // no pubsub_node: the agent discovers the service (XEP-0030)
}

// newCluster starts a fresh Prosody and writes configs for n agents, each
// listing the others as buddies unless the options say otherwise; start
// them with startAll.
func newCluster(t *testing.T, n int, opts ...nodeOpts) *cluster {
	t.Helper()
	return newClusterOn(t, xmpptest.Options{}, n, opts...)
}

// newClusterOn is newCluster on a Prosody started with srvOpts.
func newClusterOn(t *testing.T, srvOpts xmpptest.Options, n int, opts ...nodeOpts) *cluster {
	t.Helper()
	srv, err := xmpptest.Start(xmpptest.Prosody, srvOpts)
	if err != nil {
		t.Fatalf("start prosody: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	c := &cluster{t: t, srv: srv, dir: t.TempDir()}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, nd := range c.nodes { // what each agent logged, for the failure
			l := nd.log()
			if len(l) > 6000 {
				l = "…" + l[len(l)-6000:]
			}
			t.Logf("%s log:\n%s", nd.name, l)
		}
	})
	for i := 0; i < n; i++ {
		c.declare()
	}
	for i := range c.nodes {
		var o nodeOpts
		if i < len(opts) {
			o = opts[i]
		}
		c.writeConf(i, o)
	}
	t.Cleanup(c.stopAll)
	return c
}

// declare adds a node (account, addresses) without a config yet.
func (c *cluster) declare() *node {
	i := len(c.nodes)
	name := fmt.Sprintf("node%d", i+1)
	bare, _ := c.srv.Admin(name)
	nd := &node{t: c.t, name: name, jid: bare + "/agent", amiAddr: freeAddr(c.t), gossipAddr: freeAddr(c.t),
		conf: filepath.Join(c.dir, name+".conf"), logPath: filepath.Join(c.dir, name+".log")}
	c.nodes = append(c.nodes, nd)
	return nd
}

// add declares one more node and writes its config.
func (c *cluster) add(o nodeOpts) *node {
	nd := c.declare()
	c.writeConf(len(c.nodes)-1, o)
	return nd
}

func (c *cluster) writeConf(i int, o nodeOpts) {
	t, nd := c.t, c.nodes[i]
	if o.mwiMerge == "" {
		o.mwiMerge = "latest"
	}
	if o.staleGrace == 0 {
		o.staleGrace = 2
	}
	if o.stale == "" {
		o.stale = "expire"
	}
	xmppAddr := c.srv.Addr
	if o.xmppAddr != "" {
		xmppAddr = o.xmppAddr
	}
	host, port, _ := net.SplitHostPort(xmppAddr)
	_, pw := c.srv.Admin(nd.name)
	_, amiPort, _ := net.SplitHostPort(nd.amiAddr)
	var b strings.Builder
	fmt.Fprintf(&b, "[general]\nautoregister=yes\n")
	if o.logJSON {
		b.WriteString("log_format=json\n")
	}
	if o.serverhost != "" {
		fmt.Fprintf(&b, "\n[pbx]\ntype=client\nserverhost=%s\n", o.serverhost)
	} else if len(o.serverList) > 0 {
		fmt.Fprintf(&b, "\n[pbx]\ntype=client\nserverhost=%s, %s\n", strings.Join(o.serverList, ", "), xmppAddr)
	} else {
		fmt.Fprintf(&b, "\n[pbx]\ntype=client\nserverhost=%s\nport=%s\n", host, port)
	}
	if !o.discover {
		fmt.Fprintf(&b, "pubsub_node=%s\n", c.srv.Service)
	}
	fmt.Fprintf(&b, "username=%s\nsecret=%s\ndistribute_events=yes\nusetls=no\nusesasl=yes\n", nd.jid, pw)
	if !o.noBuddies {
		for _, other := range c.nodes {
			if other != nd {
				fmt.Fprintf(&b, "buddy=%s\n", other.jid)
			}
		}
	}
	fmt.Fprintf(&b, "\n[agent]\neid=02:00:00:00:00:%02x\nstale=%s\nstale_grace=%d\nmwi_merge=%s\n", i+1, o.stale, o.staleGrace, o.mwiMerge)
	fmt.Fprintf(&b, "state_dir=%s\n", filepath.Join(c.dir, nd.name+"-state")) // each node its own
	if o.maxDevices > 0 {
		fmt.Fprintf(&b, "max_devices=%d\n", o.maxDevices)
	}
	fmt.Fprintf(&b, "\n[manager]\nbindaddr=127.0.0.1\nport=%s\nusername=%s\nsecret=%s\n", amiPort, amiUser, amiSecret)
	if o.gossip {
		var join []string
		for _, j := range o.join {
			join = append(join, c.nodes[j].gossipAddr)
		}
		fmt.Fprintf(&b, "\n[cluster]\nbind=%s\nprofile=lan\n", nd.gossipAddr)
		if len(join) > 0 {
			fmt.Fprintf(&b, "join=%s\n", strings.Join(join, ", "))
		}
	}
	if o.web {
		nd.httpAddr, nd.metricsAddr = freeAddr(t), freeAddr(t)
		fmt.Fprintf(&b, "\n[http]\nbind=%s\n\n[metrics]\nbind=%s\n", nd.httpAddr, nd.metricsAddr)
	}
	if err := os.WriteFile(nd.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startAll starts every agent and waits until each has booted.
func (c *cluster) startAll() {
	for _, n := range c.nodes {
		n.start()
	}
	for _, n := range c.nodes {
		n.waitBooted()
	}
}

func (c *cluster) stopAll() {
	for _, n := range c.nodes {
		n.stop()
	}
}

func (n *node) start() {
	n.t.Helper()
	if n.starts++; n.starts > 1 {
		n.freshAMIPort()
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	n.cmd = exec.Command(binary, "run", "-c", n.conf)
	if len(n.env) > 0 {
		n.cmd.Env = append(os.Environ(), n.env...)
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		n.t.Fatalf("start %s: %v", n.name, err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(done)
	}(n.cmd, n.done)
}

// freshAMIPort moves a node that starts again to a port of its own: the
// one it had was free when picked, but while the node was down anything
// could take it (the local port of an outgoing connection of a package
// tested beside this one: it is in the ephemeral range), and the agent
// then fails to bind (seen with both cores busy).
func (n *node) freshAMIPort() {
	n.t.Helper()
	_, oldPort, _ := net.SplitHostPort(n.amiAddr)
	b, err := os.ReadFile(n.conf)
	if err != nil {
		n.t.Fatal(err)
	}
	line := "\n[manager]\nbindaddr=127.0.0.1\nport=" + oldPort + "\n"
	if !bytes.Contains(b, []byte(line)) {
		return // a config of the test's own: leave it be
	}
	n.amiAddr = freeAddr(n.t)
	_, port, _ := net.SplitHostPort(n.amiAddr)
	b = bytes.Replace(b, []byte(line), []byte("\n[manager]\nbindaddr=127.0.0.1\nport="+port+"\n"), 1)
	if err := os.WriteFile(n.conf, b, 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// stop ends the agent with SIGTERM (SIGKILL after stopWait).
func (n *node) stop() { n.signal(syscall.SIGTERM) }

// kill ends the agent at once, as a crash would.
func (n *node) kill() { n.signal(syscall.SIGKILL) }

func (n *node) signal(sig syscall.Signal) {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(stopWait):
		n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}

// log is the agent's output so far, for failure messages.
func (n *node) log() string {
	b, _ := os.ReadFile(n.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// ami logs in to the node's socket, retrying while the agent starts.
func (n *node) ami() *amiConn {
	n.t.Helper()
	deadline := time.Now().Add(bootWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), answerWait)
		c, err := manager.Dial(ctx, n.amiAddr)
		if err == nil {
			err = c.Login(ctx, amiUser, amiSecret)
			cancel()
			if err == nil {
				a := &amiConn{t: n.t, n: n, c: c}
				n.t.Cleanup(func() { c.Close() })
				return a
			}
			c.Close()
		} else {
			cancel()
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: AMI login: %v\nlog:\n%s", n.name, err, n.log())
		}
		if n.cmd != nil && n.done != nil {
			select {
			case <-n.done: // it will not listen: say why at once
				n.t.Fatalf("%s exited while starting\nlog:\n%s", n.name, n.log())
			default:
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitBooted logs in and waits for FullyBooted.
func (n *node) waitBooted() *amiConn {
	n.t.Helper()
	a := n.ami()
	a.waitEvent(bootWait, func(m manager.Message) bool { return m.Get("Event") == "FullyBooted" })
	return a
}

// cli runs a busylamp client command against the node.
func (n *node) cli(args ...string) (string, int) {
	n.t.Helper()
	cmd := exec.Command(binary, append([]string{"-c", n.conf}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), code
}

// amiConn is a logged-in AMI session.
type amiConn struct {
	t  *testing.T
	n  *node
	c  *manager.Client
	mu sync.Mutex
}

func (a *amiConn) action(name string, kv ...string) manager.Message {
	a.t.Helper()
	var hs []manager.Header
	for i := 0; i+1 < len(kv); i += 2 {
		hs = append(hs, manager.Header{Key: kv[i], Value: kv[i+1]})
	}
	ctx, cancel := context.WithTimeout(context.Background(), answerWait)
	defer cancel()
	m, err := a.c.Action(ctx, name, hs...)
	if err != nil {
		a.t.Fatalf("%s: %s %v: %v", a.n.name, name, kv, err)
	}
	return m
}

func (a *amiConn) setDevice(dev, state string) {
	a.t.Helper()
	a.action("Setvar", "Variable", "DEVICE_STATE("+dev+")", "Value", state)
}

func (a *amiConn) device(dev string) string {
	a.t.Helper()
	return a.action("Getvar", "Variable", "DEVICE_STATE("+dev+")").Get("Value")
}

// devices is the node's DeviceStateList as device → state.
func (a *amiConn) devices() map[string]string {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), answerWait)
	defer cancel()
	_, evs, err := a.c.List(ctx, "DeviceStateList")
	if err != nil {
		a.t.Fatalf("DeviceStateList: %v", err)
	}
	out := make(map[string]string, len(evs))
	for _, e := range evs {
		if e.Get("Event") == "DeviceStateChange" {
			out[e.Get("Device")] = e.Get("State")
		}
	}
	return out
}

func (a *amiConn) mailbox(mb string) (string, string) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), answerWait)
	defer cancel()
	_, evs, err := a.c.List(ctx, "MWIGet", manager.Header{Key: "Mailbox", Value: mb})
	if err != nil {
		return "", ""
	}
	for _, e := range evs {
		if e.Get("Event") == "MWIGet" && e.Get("Mailbox") == mb {
			return e.Get("NewMessages"), e.Get("OldMessages")
		}
	}
	return "", ""
}

// waitEvent waits for an event that match accepts.
func (a *amiConn) waitEvent(d time.Duration, match func(manager.Message) bool) manager.Message {
	a.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-a.c.Events():
			if !ok {
				a.t.Fatalf("%s: event stream closed", a.n.name)
			}
			if match(m) {
				return m
			}
		case <-timer.C:
			a.t.Fatalf("%s: no matching event within %v\nlog:\n%s", a.n.name, d, a.n.log())
		}
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %s", what, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lines splits CLI output for matching.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// publishesAnswered waits until every publish this node's PBX made so
// far has been sent and answered by the server (its publisher holds
// nothing: a value is in it once Setvar is answered).
func (a *amiConn) publishesAnswered() {
	a.t.Helper()
	eventually(a.t, settle, a.n.name+"'s publishes answered", func() (bool, string) {
		out := strings.Join(a.action("Command", "Command", "show stats").Values("Output"), "\n")
		return strings.Contains(out, "Pending:0 InFlight:0"), out
	})
}
