package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/agent"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/pubsub"
)

// AMI account of every benchmark agent.
const (
	amiUser   = "bench"
	amiSecret = "bench-secret"
)

// cluster is busylamp agents running in this process, each under the
// pprof label node=NAME so a CPU profile can be cut per agent.
type cluster struct {
	names  []string
	nodes  []*agent.Agent
	hops   []*hopRecorder // each node's stages (make bench's per-hop breakdown)
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// agentConfig is what cmd/busylamp's nodeConfig builds from a config
// file: an account on srv, every other name a buddy.
func agentConfig(srv *xmpptest.Server, name string, buddies []string, log *slog.Logger) agent.Config {
	jid, pw := srv.Admin(name)
	x := pubsub.DefaultConfig()
	x.JID = jid + "/bench"
	x.Password = pw
	x.Address = srv.Addr
	x.Service = srv.Service
	x.UseTLS = false
	x.EID = devstate.DeriveEID("bench\x00" + name)
	for _, b := range buddies {
		if b != name {
			bj, _ := srv.Admin(b)
			x.Buddies = append(x.Buddies, bj+"/bench")
		}
	}
	m := manager.DefaultConfig()
	m.Username, m.Secret = amiUser, amiSecret
	return agent.Config{
		Name: name, Version: "bench", XMPP: x, Manager: m, ManagerAddr: "127.0.0.1:0",
		Log: log.With("agent", name),
	}
}

// startCluster starts one agent per name (buddies: all names and extra)
// and waits until every one has booted.
func startCluster(ctx context.Context, srv *xmpptest.Server, names, extraBuddies []string, o *options) (*cluster, error) {
	return startClusterWith(ctx, srv, names, extraBuddies, o, nil, nil)
}

// startClusterWith is startCluster with each agent's config edited (when
// edit is set) and started one after another, started(n) called once
// each one runs (the scale test's gossip: the first one's address is what
// the others join).
func startClusterWith(ctx context.Context, srv *xmpptest.Server, names, extraBuddies []string, o *options,
	edit func(int, *agent.Config), started func(*agent.Agent) error) (*cluster, error) {
	ctx, cancel := context.WithCancel(ctx)
	c := &cluster{names: names, cancel: cancel, errs: make(chan error, len(names))}
	buddies := append(append([]string{}, names...), extraBuddies...)
	for i, name := range names {
		cfg := agentConfig(srv, name, buddies, o.log)
		if o.pubWindow > 0 {
			cfg.XMPP.PublishWindow = o.pubWindow
		}
		if o.maxDevices > 0 {
			cfg.Core.MaxDevices = o.maxDevices
		}
		rec := newHopRecorder()
		cfg.XMPP.Hops, cfg.Manager.Hops = rec.record, rec.record
		c.hops = append(c.hops, rec)
		if edit != nil {
			edit(i, &cfg)
		}
		n, err := agent.New(cfg)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("agent %s: %w", name, err)
		}
		c.nodes = append(c.nodes, n)
		c.wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("node", name), func(ctx context.Context) {
			defer c.wg.Done()
			if err := n.Run(ctx); err != nil {
				c.errs <- fmt.Errorf("agent %s: %w", name, err)
			}
		})
		if started != nil {
			if err := started(n); err != nil {
				c.close()
				return nil, fmt.Errorf("agent %s: %w", name, err)
			}
		}
	}
	deadline := time.After(60 * time.Second)
	for i, n := range c.nodes {
		select {
		case <-n.Core().Booted():
		case err := <-c.errs:
			c.close()
			return nil, err
		case <-deadline:
			c.close()
			return nil, fmt.Errorf("agent %s did not boot within 60 s", c.names[i])
		}
	}
	return c, nil
}

func (c *cluster) close() {
	c.cancel()
	c.wg.Wait()
}

// amiSender writes actions to an AMI socket without waiting for each
// answer (pipelined), the fastest a client can feed the socket; a reader
// counts the answers.
type amiSender struct {
	conn     net.Conn
	bw       *bufio.Writer
	sent     int64 // owned by the sending goroutine
	answered atomic.Int64
	failed   atomic.Int64
	lastErr  atomic.Pointer[string]
	notify   chan struct{}
	done     chan struct{}
}

func dialSender(ctx context.Context, addr string) (*amiSender, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial AMI %s: %w", addr, err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	s := &amiSender{conn: conn, bw: bufio.NewWriterSize(conn, 64<<10), notify: make(chan struct{}, 1), done: make(chan struct{})}
	fail := func(err error) (*amiSender, error) {
		conn.Close()
		return nil, fmt.Errorf("AMI %s: %w", addr, err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "Asterisk Call Manager/") {
		return fail(fmt.Errorf("greeting %q: %v", line, err))
	}
	// Login, and no events on this session: it only sends.
	for _, action := range []string{
		"Action: Login\r\nUsername: " + amiUser + "\r\nSecret: " + amiSecret + "\r\n\r\n",
		"Action: Events\r\nEventMask: off\r\n\r\n",
	} {
		s.bw.WriteString(action)
		if err := s.bw.Flush(); err != nil {
			return fail(err)
		}
		msg, err := readAMIMessage(br)
		for err == nil && !strings.HasPrefix(msg, "Response:") { // FullyBooted after the login
			msg, err = readAMIMessage(br)
		}
		if err != nil {
			return fail(err)
		}
		if !strings.HasPrefix(msg, "Response: Success") {
			return fail(fmt.Errorf("%q answered %q", strings.SplitN(action, "\r\n", 2)[0], msg))
		}
	}
	conn.SetReadDeadline(time.Time{})
	go s.readLoop(br)
	return s, nil
}

func readAMIMessage(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" || line == "\n" {
			if b.Len() == 0 {
				continue
			}
			return b.String(), nil
		}
		b.WriteString(line)
	}
}

func (s *amiSender) readLoop(br *bufio.Reader) {
	defer close(s.done)
	for {
		msg, err := readAMIMessage(br)
		if err != nil {
			return
		}
		if strings.HasPrefix(msg, "Response: Error") {
			s.failed.Add(1)
			s.lastErr.Store(&msg)
		}
		s.answered.Add(1)
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

func (s *amiSender) setvar(device, state string) error {
	s.sent++
	s.bw.WriteString("Action: Setvar\r\nVariable: DEVICE_STATE(")
	s.bw.WriteString(device)
	s.bw.WriteString(")\r\nValue: ")
	s.bw.WriteString(state)
	_, err := s.bw.WriteString("\r\n\r\n")
	return err
}

func (s *amiSender) flush() error { return s.bw.Flush() }

// waitAnswered waits until every action sent is answered; an error answer
// is reported.
func (s *amiSender) waitAnswered(ctx context.Context) error {
	if err := s.bw.Flush(); err != nil {
		return err
	}
	for s.answered.Load() < s.sent {
		select {
		case <-s.notify:
		case <-s.done:
			return errors.New("AMI connection closed before every action was answered")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n := s.failed.Load(); n > 0 {
		return fmt.Errorf("%d actions failed, last: %q", n, *s.lastErr.Load())
	}
	return nil
}

func (s *amiSender) close() { s.conn.Close(); <-s.done }

// listener watches one agent's socket: a raw session with events on,
// read and parsed on one goroutine (as lean as the baseline's reader),
// and a manager.Client with events off for actions.
type listener struct {
	c      *manager.Client
	conn   net.Conn
	f      atomic.Pointer[func(device, state string)]
	done   chan struct{}
	events atomic.Int64
}

func listen(ctx context.Context, addr string) (*listener, error) {
	c, err := manager.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := c.Login(ctx, amiUser, amiSecret); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.Action(ctx, "Events", manager.Header{Key: "EventMask", Value: "off"}); err != nil {
		c.Close()
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.Close()
		return nil, err
	}
	l := &listener{c: c, conn: conn, done: make(chan struct{})}
	br := bufio.NewReaderSize(conn, 64<<10)
	if _, err := br.ReadString('\n'); err != nil {
		l.closeConns()
		return nil, fmt.Errorf("AMI greeting: %w", err)
	}
	if _, err := io.WriteString(conn, "Action: Login\r\nUsername: "+amiUser+"\r\nSecret: "+amiSecret+"\r\n\r\n"); err != nil {
		l.closeConns()
		return nil, err
	}
	go l.readLoop(br)
	return l, nil
}

func (l *listener) readLoop(br *bufio.Reader) {
	defer close(l.done)
	readDeviceEvents(br, func(device, state string) {
		l.events.Add(1)
		if f := l.f.Load(); f != nil {
			(*f)(device, state)
		}
	})
}

func (l *listener) closeConns() {
	l.conn.Close()
	l.c.Close()
}

func (l *listener) close() { l.closeConns(); <-l.done }

// stopEvents turns the event session's events off.
func (l *listener) stopEvents() error {
	_, err := io.WriteString(l.conn, "Action: Events\r\nEventMask: off\r\n\r\n")
	return err
}

// startEvents turns them on again.
func (l *listener) startEvents() error {
	_, err := io.WriteString(l.conn, "Action: Events\r\nEventMask: on\r\n\r\n")
	return err
}

// devices is the agent's DeviceStateList, and how long it took.
func (l *listener) devices(ctx context.Context) (map[string]string, time.Duration, error) {
	t0 := time.Now()
	_, items, err := l.c.List(ctx, "DeviceStateList")
	took := time.Since(t0)
	if err != nil {
		return nil, took, err
	}
	out := make(map[string]string, len(items))
	for _, m := range items {
		out[m.Get("Device")] = m.Get("State")
	}
	return out, took, nil
}

// busySystem is a cluster driven through AMI: changes go into agent 0's
// socket, and come out of the other agents' sockets (and agent 0's too
// when withSender is set).
type busySystem struct {
	cl         *cluster
	sender     *amiSender
	listeners  []*listener // one per agent
	withSender bool
	onlySender bool // watch agent A's own socket only (no XMPP on the path)
	hops       atomic.Pointer[hopBreakdown]
}

func startBusy(ctx context.Context, srv *xmpptest.Server, n int, o *options) (*busySystem, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("agent%d", i+1)
	}
	cl, err := startCluster(ctx, srv, names, nil, o)
	if err != nil {
		return nil, err
	}
	b := &busySystem{cl: cl}
	for _, node := range cl.nodes {
		l, err := listen(ctx, node.ManagerAddr())
		if err != nil {
			b.close()
			return nil, err
		}
		b.listeners = append(b.listeners, l)
	}
	if b.sender, err = dialSender(ctx, cl.nodes[0].ManagerAddr()); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *busySystem) close() {
	if b.sender != nil {
		b.sender.close()
	}
	for _, l := range b.listeners {
		l.close()
	}
	b.cl.close()
}

func (b *busySystem) watched() []*listener {
	return b.listeners[b.firstWatched():][:b.receivers()]
}

// firstWatched is the index of the first watched agent.
func (b *busySystem) firstWatched() int {
	if b.onlySender || b.withSender {
		return 0
	}
	return 1
}

func (b *busySystem) receivers() int {
	if b.onlySender {
		return 1
	}
	return len(b.listeners) - b.firstWatched()
}

func (b *busySystem) onChange(f func(r int, device, state string)) {
	first := b.firstWatched()
	for i, l := range b.watched() {
		g := func(device, state string) {
			if h := b.hops.Load(); h != nil && first+i > 0 {
				h.received(b.cl.hops[0], b.cl.hops[first+i], device, time.Now())
			}
			f(i, device, state)
		}
		l.f.Store(&g)
	}
}

func (b *busySystem) send(device, state string) error {
	if h := b.hops.Load(); h != nil {
		h.sent(device, time.Now())
	}
	return b.sender.setvar(device, state)
}

// traceHops records the per-hop breakdown until the returned func is
// called, which returns it.
func (b *busySystem) traceHops(ctx context.Context) func() *hopBreakdown {
	waited := func() uint64 {
		st, _ := publishStats(ctx, b.cl.nodes[0])
		return st.Waited
	}
	h := newHopBreakdown()
	w0 := waited()
	for _, r := range b.cl.hops {
		r.on.Store(true)
	}
	b.hops.Store(h)
	return func() *hopBreakdown {
		b.hops.Store(nil)
		for _, r := range b.cl.hops {
			r.on.Store(false)
		}
		h.waited = waited() - w0
		return h
	}
}
func (b *busySystem) flush() error { return b.sender.flush() }
func (b *busySystem) sentAll(ctx context.Context) error {
	return b.sender.waitAnswered(ctx)
}

// check compares every watched agent's DeviceStateList with want (only
// the devices named in want); it returns how many differ.
func (b *busySystem) check(ctx context.Context, want map[string]string) (int, error) {
	bad := 0
	for _, l := range b.watched() {
		have, _, err := l.devices(ctx)
		if err != nil {
			return 0, err
		}
		for d, st := range want {
			if have[d] != st {
				bad++
			}
		}
	}
	return bad, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// pendingPublishes is what agent A has still to publish: values waiting
// and publishes unanswered ('show stats').
func (b *busySystem) pendingPublishes(ctx context.Context) int {
	st, err := publishStats(ctx, b.cl.nodes[0])
	if err != nil {
		return 0
	}
	return st.Pending + st.InFlight
}
