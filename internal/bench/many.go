package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/busylamp/busylamp/agent"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/pubsub"
)

// The many phase (issue 12, item 6): n agents on one server, each in its
// own child process (so that CPU and RSS are its own) with manyDevices own
// devices, XMPP buddies of each other (no gossip). The parent drives their
// AMI sockets and measures, per n:
//
//   - convergence: Setvar DEVICE_STATE on a random agent → the
//     DeviceStateChange on every other agent, at a modest rate, and every
//     agent's DeviceStateList holding every device in its last state;
//   - CPU per change per agent (utime+stime of /proc/PID/stat over the run)
//     and VmRSS; a second run where one agent sends every change tells the
//     publishing side from the receiving side;
//   - a full restart: every child killed (SIGKILL), all started again, until
//     each is booted holding every device of every agent.

const (
	manyChildArg = "-many-child"
	manyDevices  = 1000
)

// manyOptions are the phase's flags.
type manyOptions struct {
	sizes     []int
	rate      int
	dur       time.Duration
	iqTimeout time.Duration
}

func (m *manyOptions) flags(fs *flag.FlagSet) {
	m.sizes = []int{2, 8, 32}
	fs.Func("many-sizes", "many: cluster sizes, agents in their own processes (default 2,8,32)", func(s string) error {
		m.sizes = intList(s)
		if len(m.sizes) == 0 {
			return fmt.Errorf("no size in %q", s)
		}
		return nil
	})
	fs.IntVar(&m.rate, "many-rate", 40, "many: changes per second, each on a random agent")
	fs.DurationVar(&m.iqTimeout, "many-iq-timeout", 0, "many: the agents' XMPP IQ timeout, pings included (0: busylamp's default, 10s)")
	fs.DurationVar(&m.dur, "many-time", 10*time.Second, "many: duration of the random-agent run (the one-sender run takes half)")
}

// manyResult is one cluster size's figures.
type manyResult struct {
	agents   int
	setup    time.Duration // first start: every agent booted, then its own devices set, until each held every device
	conv     latencyResult // change → seen on every other agent (the slowest of them)
	each     latencyResult // change → seen on one other agent (every delivery)
	changes  int
	lost     int // changes not seen on every other agent
	cpuMean  time.Duration
	cpuPub   time.Duration // one-sender run: the sender's CPU per change
	cpuRecv  time.Duration // one-sender run: a receiver's CPU per change (mean)
	srvCPU   time.Duration // the server's CPU per change (random-agent run)
	idle     time.Duration // an agent's CPU per second with no change (mean)
	rssMean  int64         // kB, after the runs
	rssMax   int64
	restart  time.Duration // kill all → every agent booted holding every device
	booted   time.Duration // kill all → every agent booted
	resync   [2]int        // after the restart: states requests answered, asked (summed over agents)
	bootedBy int           // agents that booted on BootTimeout, without a complete resync
	wrong    int           // DeviceStateList entries not as set (after the runs, after the restart)
	srvBusy  [2]float64    // the server's CPU ÷ wall time over the setup, the restart
	load     string        // /proc/loadavg after the random-agent run: the machine is shared
	drops    int           // XMPP sessions the agents lost (ping or IQ timeouts, the server closing)
}

// runMany runs the phase for every size, each on a server of its own.
func runMany(ctx context.Context, kind xmpptest.Kind, o *options, r *report) error {
	for _, n := range o.many.sizes {
		err := withServer(kind, func(srv *xmpptest.Server) error {
			res, err := measureMany(ctx, srv, n, o)
			r.many = append(r.many, res)
			return err
		})
		if err != nil {
			return fmt.Errorf("many, %d agents: %w", n, err)
		}
	}
	return nil
}

// manyMsg is a line the child writes on stdout (JSON).
type manyMsg struct {
	Event       string `json:"event"` // "up": booted, AMI listening; "held": holds every device; "progress": every 5 s and at a disconnect
	AMI         string `json:"ami,omitempty"`
	Devices     int    `json:"devices,omitempty"`
	Asked       int    `json:"asked,omitempty"`    // "up": states requests of the first resync
	Answered    int    `json:"answered,omitempty"` //
	BootedLate  bool   `json:"booted_late,omitempty"`
	Disconnects int    `json:"disconnects,omitempty"` // XMPP sessions lost so far
	Err         string `json:"err,omitempty"`

	at time.Time // when the parent read it
}

// manyChild is one agent process.
type manyChild struct {
	name string
	cmd  *exec.Cmd
	pid  int
	done chan struct{} // closed once the process has been waited for

	mu      sync.Mutex
	events  map[string]manyMsg
	last    manyMsg // the latest report
	exitErr error   // set when the process ended
	killed  bool    // by us: not an error
}

// manyCluster is the agents' processes, their accounts and state dirs,
// and what the parent set on each.
type manyCluster struct {
	srv     *xmpptest.Server
	o       *options
	names   []string
	jids    []string
	pws     []string
	dirs    string // parent of every agent's state_dir
	exe     string
	expect  int
	kids    []*manyChild
	wake    chan struct{}
	want    [][]string // per agent, per own device: the state last set
	lis     []*listener
	lost    int // XMPP sessions the agents lost, over the children gone
	senders []*amiSender
}

func manyDevice(a, k int) string { return fmt.Sprintf("Custom:M%02d-%04d", a, k) }

func measureMany(ctx context.Context, srv *xmpptest.Server, n int, o *options) (res manyResult, err error) {
	res.agents = n
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	dirs, err := os.MkdirTemp("", "busylamp-many-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dirs)
	m := &manyCluster{srv: srv, o: o, dirs: dirs, exe: exe, expect: n * manyDevices, wake: make(chan struct{}, 1)}
	defer m.close()
	defer func() { res.drops = m.sessionsLost() }()
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("agent%d", i+1)
		jid, pw := srv.Admin(name)
		m.names, m.jids, m.pws = append(m.names, name), append(m.jids, jid), append(m.pws, pw)
		m.want = append(m.want, make([]string, manyDevices))
	}
	logf("%s: many, %d agents in their own processes, %d own devices each (accounts registered in %v)",
		srv.Kind, n, manyDevices, time.Since(t0).Round(time.Millisecond))

	// First start: every agent boots with nothing, then the parent sets
	// every agent's own devices at once.
	t0 = time.Now()
	_, srv0 := m.cpu()
	if err := m.startAll(); err != nil {
		return res, err
	}
	if _, err := m.await(ctx, "up", 5*time.Minute); err != nil {
		return res, err
	}
	logf("  %d agents booted in %v; setting %d own devices on each", n, time.Since(t0).Round(time.Millisecond), manyDevices)
	errc := make(chan error, n)
	for a, c := range m.kids {
		go func() {
			s, err := dialSender(ctx, c.event("up").AMI)
			if err != nil {
				errc <- fmt.Errorf("%s: %w", c.name, err)
				return
			}
			defer s.close()
			for k := range manyDevices {
				m.want[a][k] = scaleStates[(a+k)%len(scaleStates)]
				s.setvar(manyDevice(a, k), m.want[a][k])
			}
			if err := s.waitAnswered(ctx); err != nil {
				errc <- fmt.Errorf("%s: Setvar: %w", c.name, err)
				return
			}
			errc <- nil
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			return res, err
		}
	}
	if _, err := m.await(ctx, "held", 15*time.Minute); err != nil {
		return res, err
	}
	res.setup = time.Since(t0)
	_, srv1 := m.cpu()
	res.srvBusy[0] = float64(srv1-srv0) / float64(res.setup)
	logf("  every agent holds %d devices, %v after the start", m.expect, res.setup.Round(time.Millisecond))

	if err := m.connect(ctx); err != nil {
		return res, err
	}
	// What the agents burn with nothing to do (pings, timers, the runtime),
	// part of every CPU figure below.
	const idleFor = 5 * time.Second
	idle0, _ := m.cpu()
	time.Sleep(idleFor)
	idle1, _ := m.cpu()
	for i := range idle1 {
		res.idle += (idle1[i] - idle0[i]) * time.Second / idleFor
	}
	res.idle /= time.Duration(n)
	// Random agent: latency, and CPU per change averaged over the agents.
	logf("  random agent: %d changes/s for %v", o.many.rate, o.many.dur)
	run, err := m.drive(ctx, o.many.rate, o.many.dur, func(int) int { return rand.IntN(n) })
	if err != nil {
		return res, err
	}
	res.changes, res.lost = run.changes, run.lost
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	res.conv, res.each = pool(latencyResult{samples: run.conv}), pool(latencyResult{samples: run.each})
	var sum time.Duration
	for _, c := range run.cpu {
		sum += c
	}
	res.cpuMean = sum / time.Duration(n*run.changes)
	res.srvCPU = run.server / time.Duration(run.changes)
	// One sender: agent1 publishes, the others only receive.
	logf("  agent1 alone: %d changes/s for %v", o.many.rate, o.many.dur/2)
	one, err := m.drive(ctx, o.many.rate, o.many.dur/2, func(int) int { return 0 })
	if err != nil {
		return res, err
	}
	res.lost += one.lost
	res.cpuPub = one.cpu[0] / time.Duration(one.changes)
	sum = 0
	for _, c := range one.cpu[1:] {
		sum += c
	}
	res.cpuRecv = sum / time.Duration((n-1)*one.changes)
	for _, c := range m.kids {
		rss := procKB(c.pid, "VmRSS")
		res.rssMean += rss
		res.rssMax = max(res.rssMax, rss)
	}
	res.rssMean /= int64(n)
	bad, err := m.check(ctx)
	res.wrong += bad
	if err != nil {
		return res, err
	}

	// Full restart: kill every agent, start every one again.
	logf("  killing all %d agents (SIGKILL), starting them again", n)
	m.disconnect()
	if err := m.killAll(); err != nil {
		return res, err
	}
	t0 = time.Now()
	_, srv0 = m.cpu()
	if err := m.startAll(); err != nil {
		return res, err
	}
	up, err := m.await(ctx, "up", 10*time.Minute)
	if err != nil {
		return res, err
	}
	for i := range m.kids {
		res.booted = max(res.booted, up[i].at.Sub(t0))
		res.resync[0] += up[i].Answered
		res.resync[1] += up[i].Asked
		if up[i].BootedLate {
			res.bootedBy++
		}
	}
	held, err := m.await(ctx, "held", 15*time.Minute)
	_, srv1 = m.cpu()
	res.srvBusy[1] = float64(srv1-srv0) / float64(time.Since(t0))
	if err != nil {
		return res, err
	}
	for i := range m.kids {
		res.restart = max(res.restart, held[i].at.Sub(t0))
	}
	logf("  restart: every agent booted %v, holding every device %v after the start; states requests answered %d of %d",
		res.booted.Round(time.Millisecond), res.restart.Round(time.Millisecond), res.resync[0], res.resync[1])
	if err := m.connect(ctx); err != nil {
		return res, err
	}
	bad, err = m.check(ctx)
	res.wrong += bad
	if err != nil {
		return res, err
	}
	if res.lost > 0 || res.wrong > 0 {
		return res, fmt.Errorf("%d changes not seen on every agent, %d DeviceStateList entries not as set", res.lost, res.wrong)
	}
	return res, nil
}

// startAll starts every agent's process; each reports on stdout.
func (m *manyCluster) startAll() error {
	m.kids = nil
	for i, name := range m.names {
		var buddies []string
		for j, b := range m.jids {
			if j != i {
				buddies = append(buddies, b+"/bench")
			}
		}
		cmd := exec.Command(m.exe, manyChildArg, "-name", name, "-addr", m.srv.Addr, "-service", m.srv.Service,
			"-jid", m.jids[i]+"/bench", "-password", m.pws[i], "-buddies", strings.Join(buddies, ","),
			"-state-dir", filepath.Join(m.dirs, name), "-expect", strconv.Itoa(m.expect), "-iq-timeout", m.o.many.iqTimeout.String())
		// The child ends when its stdin closes (this process ended, however)
		// and, on Linux, when this process dies.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if _, err := cmd.StdinPipe(); err != nil {
			return err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		c := &manyChild{name: name, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), events: map[string]manyMsg{}}
		m.kids = append(m.kids, c)
		go m.read(c, stdout)
	}
	return nil
}

// read takes the child's reports until its stdout closes, then waits for it.
func (m *manyCluster) read(c *manyChild, stdout io.Reader) {
	defer close(c.done)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var msg manyMsg
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			msg = manyMsg{Event: "bad", Err: fmt.Sprintf("bad report %q: %v", sc.Text(), err)}
		}
		msg.at = time.Now()
		c.mu.Lock()
		if msg.Err != "" {
			c.exitErr = errors.New(msg.Err)
		}
		c.events[msg.Event] = msg
		c.last = msg
		c.mu.Unlock()
		m.poke()
	}
	err := c.cmd.Wait()
	c.mu.Lock()
	if c.exitErr == nil {
		c.exitErr = fmt.Errorf("exited: %v", err)
	}
	c.mu.Unlock()
	m.poke()
}

func (m *manyCluster) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (c *manyChild) event(name string) manyMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.events[name]
}

// await waits until every child has reported event, and returns the
// reports in the children's order. A child that ends or reports an error
// ends the wait.
func (m *manyCluster) await(ctx context.Context, event string, d time.Duration) ([]manyMsg, error) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	progress := time.NewTicker(15 * time.Second)
	defer progress.Stop()
	for {
		var got []manyMsg
		var missing []string
		for _, c := range m.kids {
			c.mu.Lock()
			msg, ok := c.events[event]
			err, killed := c.exitErr, c.killed
			c.mu.Unlock()
			if err != nil && !killed {
				return nil, fmt.Errorf("%s (pid %d): %w", c.name, c.pid, err)
			}
			if ok {
				got = append(got, msg)
			} else {
				missing = append(missing, c.name)
			}
		}
		if len(missing) == 0 {
			return got, nil
		}
		select {
		case <-m.wake:
		case <-progress.C:
			held := ""
			if event == "held" {
				held = m.holding()
			}
			logf("  %d of %d agents %s; waiting for %s%s (%d XMPP sessions lost so far)", len(got), len(m.kids), event, short(missing), held, m.sessionsLost())
		case <-deadline.C:
			return nil, fmt.Errorf("%d of %d agents not %s after %v: %s", len(missing), len(m.kids), event, d, short(missing))
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// holding is the range of devices the agents last reported holding on
// their way to every device.
func (m *manyCluster) holding() string {
	lo, hi := -1, 0
	for _, c := range m.kids {
		c.mu.Lock()
		d := c.events["progress"].Devices
		if _, ok := c.events["held"]; ok {
			d = m.expect
		}
		c.mu.Unlock()
		if lo < 0 || d < lo {
			lo = d
		}
		hi = max(hi, d)
	}
	return fmt.Sprintf(" (they hold %d to %d of %d devices)", lo, hi, m.expect)
}

func short(names []string) string {
	if len(names) > 6 {
		return strings.Join(names[:6], ", ") + fmt.Sprintf(" and %d more", len(names)-6)
	}
	return strings.Join(names, ", ")
}

// sessionsLost is how many XMPP sessions the agents lost so far (as last
// reported).
func (m *manyCluster) sessionsLost() int {
	n := m.lost
	for _, c := range m.kids {
		c.mu.Lock()
		n += c.last.Disconnects
		c.mu.Unlock()
	}
	return n
}

// killAll kills every child (SIGKILL) and waits for each to be gone.
func (m *manyCluster) killAll() error {
	m.lost = m.sessionsLost()
	for _, c := range m.kids {
		c.mu.Lock()
		c.killed = true
		c.mu.Unlock()
		_ = c.cmd.Process.Kill()
	}
	for _, c := range m.kids {
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			return fmt.Errorf("%s (pid %d) still running 30 s after SIGKILL", c.name, c.pid)
		}
	}
	return nil
}

func (m *manyCluster) close() {
	m.disconnect()
	if err := m.killAll(); err != nil {
		logf("many: %v", err)
	}
}

// connect opens an event listener and a sender on every agent's socket.
func (m *manyCluster) connect(ctx context.Context) error {
	for _, c := range m.kids {
		addr := c.event("up").AMI
		l, err := listen(ctx, addr)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		m.lis = append(m.lis, l)
		s, err := dialSender(ctx, addr)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		m.senders = append(m.senders, s)
	}
	return nil
}

func (m *manyCluster) disconnect() {
	for _, l := range m.lis {
		l.close()
	}
	for _, s := range m.senders {
		s.close()
	}
	m.lis, m.senders = nil, nil
}

// manyRun is what drive measured.
type manyRun struct {
	changes, lost int
	conv, each    []time.Duration
	cpu           []time.Duration // per agent, over the run
	server        time.Duration   // the server's CPU over the run
}

// manyChange is a change on its way to every other agent.
type manyChange struct {
	state  string
	sender int
	sentAt time.Time
	seen   []bool
	left   int
}

// drive sets rate changes per second for dur, change i on agent pick(i)'s
// own devices (round robin, so a device changes at most once in a run of
// fewer than manyDevices changes per agent), and waits until every other
// agent has shown each.
func (m *manyCluster) drive(ctx context.Context, rate int, dur time.Duration, pick func(i int) int) (manyRun, error) {
	n := len(m.kids)
	total := max(1, int(float64(rate)*dur.Seconds()))
	var mu sync.Mutex
	pending := make(map[string]*manyChange, total)
	run := manyRun{changes: total}
	var done int
	closed := false // the run is over: late events are not counted
	progress := make(chan struct{}, 1)
	for r, l := range m.lis {
		f := func(device, state string) {
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			c := pending[device]
			if closed || c == nil || c.state != state || r == c.sender || c.seen[r] {
				return
			}
			c.seen[r] = true
			run.each = append(run.each, at.Sub(c.sentAt))
			if c.left--; c.left == 0 {
				run.conv = append(run.conv, at.Sub(c.sentAt))
				delete(pending, device)
				done++
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}
		l.f.Store(&f)
	}
	defer func() {
		for _, l := range m.lis {
			l.f.Store(nil)
		}
	}()
	next := make([]int, n)
	cpu0, srv0 := m.cpu()
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return run, ctx.Err()
			}
		}
		a := pick(i)
		k := next[a] % manyDevices
		next[a]++
		state := "INUSE"
		if m.want[a][k] == "INUSE" {
			state = "NOT_INUSE"
		}
		m.want[a][k] = state
		device := manyDevice(a, k)
		mu.Lock()
		if pending[device] != nil {
			mu.Unlock()
			return run, fmt.Errorf("%s changed again before every agent showed its last change", device)
		}
		pending[device] = &manyChange{state: state, sender: a, sentAt: time.Now(), seen: make([]bool, n), left: n - 1}
		mu.Unlock()
		if err := m.senders[a].setvar(device, state); err != nil {
			return run, err
		}
		if err := m.senders[a].flush(); err != nil {
			return run, err
		}
	}
	deadline := time.After(time.Minute)
wait:
	for {
		mu.Lock()
		d := done
		mu.Unlock()
		if d == total {
			break wait
		}
		if err := m.alive(); err != nil {
			return run, err
		}
		select {
		case <-progress:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			break wait
		case <-ctx.Done():
			return run, ctx.Err()
		}
	}
	mu.Lock()
	closed = true
	run.lost = total - done
	mu.Unlock()
	if run.lost > 0 {
		logf("  %d of %d changes not seen on every other agent a minute after the last", run.lost, total)
	}
	cpu1, srv1 := m.cpu()
	for i := range cpu1 {
		run.cpu = append(run.cpu, cpu1[i]-cpu0[i])
	}
	run.server = srv1 - srv0
	for a, s := range m.senders {
		if err := s.waitAnswered(ctx); err != nil {
			return run, fmt.Errorf("%s: Setvar: %w", m.names[a], err)
		}
	}
	return run, nil
}

// alive returns the first child that has ended.
func (m *manyCluster) alive() error {
	for _, c := range m.kids {
		c.mu.Lock()
		err, killed := c.exitErr, c.killed
		c.mu.Unlock()
		if err != nil && !killed {
			return fmt.Errorf("%s (pid %d): %w", c.name, c.pid, err)
		}
	}
	return nil
}

// cpu reads every child's CPU time, and the server's.
func (m *manyCluster) cpu() ([]time.Duration, time.Duration) {
	out := make([]time.Duration, len(m.kids))
	for i, c := range m.kids {
		out[i] = procCPU(c.pid)
	}
	var srv time.Duration
	for _, pid := range serverPIDs(m.srv) {
		srv += procCPU(pid)
	}
	return out, srv
}

// check compares every agent's DeviceStateList with what was set: every
// device of every agent, each in its last state, and nothing else.
func (m *manyCluster) check(ctx context.Context) (int, error) {
	want := make(map[string]string, m.expect)
	for a := range m.want {
		for k, st := range m.want[a] {
			want[manyDevice(a, k)] = st
		}
	}
	bad := 0
	for i, l := range m.lis {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		have, _, err := l.devices(lctx)
		cancel()
		if err != nil {
			return bad, fmt.Errorf("%s: DeviceStateList: %w", m.names[i], err)
		}
		wrong, present := 0, 0
		for d, st := range want {
			got, ok := have[d]
			if ok {
				present++
			}
			if got != st {
				wrong++
			}
		}
		wrong += len(have) - present // devices nobody set
		if wrong > 0 {
			logf("  %s: DeviceStateList: %d of %d devices not as set (lists %d)", m.names[i], wrong, len(want), len(have))
		}
		bad += wrong
	}
	return bad, nil
}

// clockTick is the unit of /proc/PID/stat's utime and stime.
var clockTick = sync.OnceValue(func() time.Duration {
	if out, err := runQuiet("getconf", "CLK_TCK"); err == nil {
		if hz, err := strconv.Atoi(out); err == nil && hz > 0 {
			return time.Second / time.Duration(hz)
		}
	}
	return 10 * time.Millisecond
})

// procCPU is utime+stime of a process (0 if it is gone).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where field 3 (state) is the first.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * clockTick()
}

// procKB reads a kB field of /proc/PID/status.
func procKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// serverPIDs are the processes running from the server's dir (Prosody: one
// Lua process; ejabberd: beam and epmd-less helpers), not its reaper shell.
func serverPIDs(srv *xmpptest.Server) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), srv.Dir) {
			continue
		}
		if args := strings.Split(string(b), "\x00"); args[0] == "/bin/sh" || strings.HasSuffix(args[0], "prosodyctl") {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// printMany prints the phase's table.
func printMany(w io.Writer, rs []manyResult, o *options) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\nmany: n agents, each in its own process with %d own devices, XMPP buddies of all others (no gossip);\n"+
		"p50/p99: Setvar on a random agent → DeviceStateChange on every other agent (the last of them), %d changes/s for %v;\n"+
		"p50 each: the same to one other agent (every delivery);\n"+
		"CPU/change: utime+stime per agent ÷ changes (mean over agents; pub/recv: a run of %v where agent1 sends every change;\n"+
		"idle: CPU per agent per second with no change, included in the others);\n"+
		"server: the XMPP server's CPU ÷ changes; RSS: VmRSS per agent after the runs (mean/max);\n"+
		"setup: first start → every agent holds every device; restart: all killed (SIGKILL), started again → each booted\n"+
		"holding every device (booted: FullyBooted only); resync: states requests answered/asked after the restart;\n"+
		"XMPP drops: sessions the agents lost and reconnected (agents' IQ and ping timeout: %s)\n\n",
		manyDevices, o.many.rate, o.many.dur, o.many.dur/2, iqTimeoutName(o.many.iqTimeout))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "agents\tdevices\tp50\tp99\tp50 each\tCPU/change\tpub\trecv\tidle\tserver\tRSS\tsetup\trestart\tbooted\tresync\tlost\twrong\tXMPP drops\t\n")
	for _, r := range rs {
		late := ""
		if r.bootedBy > 0 {
			late = fmt.Sprintf(", %d on timeout", r.bootedBy)
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s/s\t%s\t%s / %s\t%s\t%s\t%s\t%d/%d%s\t%d\t%d\t%d\t\n",
			r.agents, r.agents*manyDevices, ms(r.conv.p50), ms(r.conv.p99), ms(r.each.p50),
			us(r.cpuMean), us(r.cpuPub), us(r.cpuRecv), us(r.idle), us(r.srvCPU),
			mib(r.rssMean<<10), mib(r.rssMax<<10), ms(r.setup), ms(r.restart), ms(r.booted),
			r.resync[0], r.resync[1], late, r.lost, r.wrong, r.drops)
	}
	tw.Flush()
	for _, r := range rs {
		fmt.Fprintf(w, "  %d agents: the server used %.0f%% of a CPU during the setup, %.0f%% during the restart; load average after the run %s\n",
			r.agents, 100*r.srvBusy[0], 100*r.srvBusy[1], r.load)
	}
}

func iqTimeoutName(d time.Duration) string {
	if d <= 0 {
		return "busylamp's default, " + pubsub.DefaultConfig().IQTimeout.String()
	}
	return d.String()
}

func us(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

// manyChildMain runs one agent of the many phase. It writes "up" once
// booted, "held" once it holds -expect devices, and runs until stdin
// closes.
func manyChildMain(args []string) int {
	fs := flag.NewFlagSet("many-child", flag.ContinueOnError)
	name := fs.String("name", "", "")
	addr := fs.String("addr", "", "")
	service := fs.String("service", "", "")
	jid := fs.String("jid", "", "")
	pw := fs.String("password", "", "")
	buddies := fs.String("buddies", "", "")
	stateDir := fs.String("state-dir", "", "")
	expect := fs.Int("expect", 0, "")
	iqTimeout := fs.Duration("iq-timeout", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		_ = out.Encode(manyMsg{Event: "error", Err: err.Error()})
		return 1
	}
	capt := &resyncCapture{inner: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}), st: &resyncSeen{disc: make(chan struct{}, 1)}}
	x := pubsub.DefaultConfig()
	x.JID, x.Password, x.Address, x.Service, x.UseTLS = *jid, *pw, *addr, *service, false
	x.EID = devstate.DeriveEID("bench\x00" + *name)
	if *iqTimeout > 0 {
		x.IQTimeout = *iqTimeout
	}
	if *buddies != "" {
		x.Buddies = strings.Split(*buddies, ",")
	}
	mc := manager.DefaultConfig()
	mc.Username, mc.Secret = amiUser, amiSecret
	cfg := agent.DefaultConfig()
	cfg.Name, cfg.Version, cfg.XMPP, cfg.Manager, cfg.ManagerAddr = *name, "bench", x, mc, "127.0.0.1:0"
	cfg.StateDir, cfg.Log = *stateDir, slog.New(capt).With("agent", *name)
	node, err := agent.New(cfg)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the parent ended, however
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	runErr := make(chan error, 1)
	go func() { runErr <- node.Run(ctx) }()
	select {
	case <-node.Core().Booted():
	case err := <-runErr:
		return fail(fmt.Errorf("run: %v", err))
	case <-ctx.Done():
		return 0
	}
	asked, answered, late := capt.st.get()
	if err := out.Encode(manyMsg{Event: "up", AMI: node.ManagerAddr(), Asked: asked, Answered: answered, BootedLate: late}); err != nil {
		return 1
	}
	// Until it holds every device: a look every 10 ms; then, and on the
	// way, a report every 5 s and at each disconnect.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	held, report := false, time.Now()
	for {
		devices := node.Core().Stats().Devices
		msg := manyMsg{Event: "progress", Devices: devices, Disconnects: capt.st.disconnects()}
		switch {
		case !held && devices >= *expect:
			held, msg.Event = true, "held"
			tick.Reset(5 * time.Second)
		case time.Since(report) < 5*time.Second:
			msg.Event = ""
		}
		if msg.Event != "" {
			report = time.Now()
			if err := out.Encode(msg); err != nil {
				return 1
			}
		}
		select {
		case <-tick.C:
		case <-capt.st.disc:
			report = time.Time{}
		case err := <-runErr:
			if err != nil {
				return fail(fmt.Errorf("run: %v", err))
			}
			return 0
		case <-ctx.Done():
			<-runErr
			return 0
		}
	}
}

// resyncSeen is what the agent logged of its first resync.
type resyncSeen struct {
	mu               sync.Mutex
	asked, answered  int
	done, bootedLate bool
	disc             chan struct{} // a token at each XMPP disconnect
	discN            int
}

func (s *resyncSeen) disconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discN
}

func (s *resyncSeen) get() (asked, answered int, late bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asked, s.answered, s.bootedLate
}

// resyncCapture passes records on to inner at its level, and notes the
// first resync's outcome ("resync complete", "booting without a complete
// resync"); it takes info records, not debug ones.
type resyncCapture struct {
	inner slog.Handler
	st    *resyncSeen
}

func (c *resyncCapture) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (c *resyncCapture) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "resync complete":
		c.st.mu.Lock()
		if !c.st.done {
			c.st.done = true
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case "asked":
					c.st.asked = int(a.Value.Int64())
				case "answered":
					c.st.answered = int(a.Value.Int64())
				}
				return true
			})
		}
		c.st.mu.Unlock()
	case "xmpp disconnected":
		c.st.mu.Lock()
		c.st.discN++
		c.st.mu.Unlock()
		select {
		case c.st.disc <- struct{}{}:
		default:
		}
	case "booting without a complete resync":
		c.st.mu.Lock()
		c.st.bootedLate = !c.st.done
		c.st.mu.Unlock()
	}
	if c.inner.Enabled(ctx, r.Level) {
		return c.inner.Handle(ctx, r)
	}
	return nil
}

func (c *resyncCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &resyncCapture{inner: c.inner.WithAttrs(as), st: c.st}
}

func (c *resyncCapture) WithGroup(name string) slog.Handler {
	return &resyncCapture{inner: c.inner.WithGroup(name), st: c.st}
}
