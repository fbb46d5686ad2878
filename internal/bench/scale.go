package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/agent"
	gossip "github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/pubsub"
)

// The scale test: 4 agents (in this process) publish total devices
// between them; then a fifth agent joins in a child process, so that its
// memory is its own, and reports how long its resync took.

const childArg = "-scale-child"

// scaleGossip puts the five agents in one gossip cluster (memberlist on
// 127.0.0.1, with a key), so that the own-states exchange of the joining
// agent's resync goes over gossip; -scale-gossip=false measures it
// through the XMPP server.
var scaleGossip = flag.Bool("scale-gossip", true, "scale: the agents share a gossip cluster (own states over memberlist)")

type scaleResult struct {
	devices     int
	publish     time.Duration // until every publisher held every device
	resync      time.Duration // child: Run started → booted with every device
	fetched     int           // items the child fetched on connect
	rssKB       int64         // child VmRSS after the resync
	hwmKB       int64         // child VmHWM (peak RSS)
	heapInuse   uint64        // child runtime.MemStats.HeapInuse after a GC
	listTime    time.Duration // DeviceStateList of every device on the child's socket
	listDevices int
	held        int           // devices the publishers held (each: its own and what PubSub brought)
	pubErrors   uint64        // publishes the server refused
	gossip      bool          // resync: the joining agent was in gossip
	resyncXMPP  time.Duration // with gossip: a second child's resync without it
}

// childReport is what the child prints on stdout, one JSON line.
type childReport struct {
	AMI       string `json:"ami"`
	ResyncNS  int64  `json:"resync_ns"`
	Devices   int    `json:"devices"`
	Fetched   int    `json:"fetched"`
	RSSKB     int64  `json:"rss_kb"`
	HWMKB     int64  `json:"hwm_kb"`
	HeapInuse uint64 `json:"heap_inuse"`
	Err       string `json:"err,omitempty"`
	// From 'show stats': how the own states came.
	GossipAnswers int    `json:"gossip_answers"`
	XMPPAnswers   int    `json:"xmpp_answers"`
	Fallbacks     int    `json:"fallbacks"`
	Phases        string `json:"phases"`

	listTime    time.Duration // the parent's DeviceStateList of the child
	listDevices int
}

var scaleStates = []string{"NOT_INUSE", "INUSE", "BUSY", "RINGING", "ONHOLD", "UNAVAILABLE"}

func measureScale(ctx context.Context, srv *xmpptest.Server, total int, o *options) (scaleResult, error) {
	res := scaleResult{devices: total}
	names := []string{"agent1", "agent2", "agent3", "agent4"}
	logf("%s: scale, %d devices published by %d agents", srv.Kind, total, len(names))
	var key []byte
	var join string
	var edit func(i int, cfg *agent.Config)
	if *scaleGossip {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		edit = func(i int, cfg *agent.Config) {
			cfg.Cluster = &gossip.Config{Bind: "127.0.0.1:0", SecretKey: key, Profile: gossip.ProfileLAN}
			if i > 0 {
				cfg.Cluster.Join = []string{join}
			}
		}
	}
	cl, err := startClusterWith(ctx, srv, names, []string{"agent5"}, o, edit, func(n *agent.Agent) error {
		if join != "" || !*scaleGossip {
			return nil
		}
		// Run starts gossip first: wait until it lists this node.
		var err error
		waitFor(ctx, 60*time.Second, func() bool {
			join, err = gossipAddr(ctx, n)
			return err == nil
		})
		return err
	})
	if err != nil {
		return res, err
	}
	defer cl.close()
	t0 := time.Now()
	per := total / len(names)
	errc := make(chan error, len(names))
	for i, node := range cl.nodes {
		go func() {
			s, err := dialSender(ctx, node.ManagerAddr())
			if err != nil {
				errc <- err
				return
			}
			defer s.close()
			for k := range per {
				s.setvar(fmt.Sprintf("Custom:S%d-%d", i, k), scaleStates[k%len(scaleStates)])
			}
			errc <- s.waitAnswered(ctx)
		}()
	}
	for range names {
		if err := <-errc; err != nil {
			return res, err
		}
	}
	// Publishing is over when every publisher has nothing pending or in
	// flight; then each holds every device, unless the server refused
	// publishes (Prosody's memory store keeps at most
	// storage_archive_item_limit items per node, 1000 by default).
	held := func() int {
		m := -1
		for _, n := range cl.nodes {
			if d := n.Core().Stats().Devices; m < 0 || d < m {
				m = d
			}
		}
		return m
	}
	drained := func() bool {
		res.pubErrors = 0
		for _, n := range cl.nodes {
			st, err := publishStats(ctx, n)
			if err != nil || st.Pending > 0 || st.InFlight > 0 {
				return false
			}
			res.pubErrors += st.Errors
		}
		return true
	}
	last := time.Now()
	ok := waitFor(ctx, 15*time.Minute, func() bool {
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			logf("  publishers hold at least %d of %d devices", held(), per*len(names))
		}
		if held() < per*len(names) && !drained() {
			return false
		}
		time.Sleep(100 * time.Millisecond) // the last notifications
		return drained()
	})
	if !ok {
		return res, fmt.Errorf("publishers hold %d of %d devices after 15 min", held(), per*len(names))
	}
	res.held = held()
	res.publish = time.Since(t0)

	jid, pw := srv.Admin("agent5")
	var buddies []string
	for _, n := range names {
		b, _ := srv.Admin(n)
		buddies = append(buddies, b+"/bench")
	}
	// With gossip, a second child joins without it (its own states through
	// the server), on the same publishers: the two figures of one run.
	joins := []string{join}
	if join != "" {
		joins = append(joins, "")
	}
	for i, j := range joins {
		rep, err := runScaleChild(ctx, srv, jid, pw, buddies, per, names, key, j)
		if err != nil {
			return res, err
		}
		if i == 0 {
			res.resync, res.fetched = time.Duration(rep.ResyncNS), rep.Fetched
			res.rssKB, res.hwmKB, res.heapInuse = rep.RSSKB, rep.HWMKB, rep.HeapInuse
			res.listTime, res.listDevices = rep.listTime, rep.listDevices
			res.gossip = j != ""
		} else {
			res.resyncXMPP = time.Duration(rep.ResyncNS)
		}
	}
	return res, nil
}

// runScaleChild runs the joining agent in a child process (in gossip
// when join is set), checks every device on its socket and stops it.
func runScaleChild(ctx context.Context, srv *xmpptest.Server, jid, pw string, buddies []string, per int, names []string,
	key []byte, join string) (rep childReport, err error) {
	exe, err := os.Executable()
	if err != nil {
		return rep, err
	}
	cmd := exec.CommandContext(ctx, exe, childArg, "-addr", srv.Addr, "-service", srv.Service, "-jid", jid+"/bench",
		"-password", pw, "-buddies", strings.Join(buddies, ","), "-expect", fmt.Sprint(per*len(names)),
		"-gossip-key", base64.StdEncoding.EncodeToString(key), "-gossip-join", join)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return rep, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return rep, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return rep, fmt.Errorf("start the joining agent: %w", err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	if err := json.NewDecoder(stdout).Decode(&rep); err != nil {
		return rep, fmt.Errorf("joining agent: %w", err)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("joining agent: %s", rep.Err)
	}
	logf("  joining agent (gossip %v) booted in %s (%s): own states answered over gossip %d, over XMPP %d, fallbacks %d",
		join != "", time.Duration(rep.ResyncNS).Round(time.Millisecond), rep.Phases, rep.GossipAnswers, rep.XMPPAnswers, rep.Fallbacks)
	l, err := listen(ctx, rep.AMI)
	if err != nil {
		return rep, err
	}
	defer l.close()
	devs, took, err := l.devices(ctx)
	if err != nil {
		return rep, fmt.Errorf("DeviceStateList: %w", err)
	}
	rep.listTime, rep.listDevices = took, len(devs)
	if len(devs) != per*len(names) {
		return rep, fmt.Errorf("DeviceStateList listed %d devices, want %d", len(devs), per*len(names))
	}
	for i := range names {
		for k := range per {
			if st := devs[fmt.Sprintf("Custom:S%d-%d", i, k)]; st != scaleStates[k%len(scaleStates)] {
				return rep, fmt.Errorf("joining agent: Custom:S%d-%d is %q, want %s", i, k, st, scaleStates[k%len(scaleStates)])
			}
		}
	}
	return rep, nil
}

// childMain runs the joining agent: it reports once it has booted with
// every device, then serves its AMI socket until stdin closes.
func childMain(args []string) int {
	fs := flag.NewFlagSet("scale-child", flag.ContinueOnError)
	addr := fs.String("addr", "", "")
	service := fs.String("service", "", "")
	jid := fs.String("jid", "", "")
	pw := fs.String("password", "", "")
	buddies := fs.String("buddies", "", "")
	expect := fs.Int("expect", 0, "")
	gossipKey := fs.String("gossip-key", "", "")
	gossipJoin := fs.String("gossip-join", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		_ = out.Encode(childReport{Err: err.Error()})
		return 1
	}
	level := slog.LevelWarn
	if v := os.Getenv("BENCH_CHILD_LOG"); v != "" { // debug, info: to chase a resync
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fail(fmt.Errorf("BENCH_CHILD_LOG: %w", err))
		}
	}
	capt := &capture{inner: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}), fetched: new(atomic.Int64),
		start: time.Now(), phases: new(atomic.Value)}
	x := pubsub.DefaultConfig()
	x.JID, x.Password, x.Address, x.Service, x.UseTLS = *jid, *pw, *addr, *service, false
	x.EID = devstate.DeriveEID("bench\x00agent5")
	x.Buddies = strings.Split(*buddies, ",")
	m := manager.DefaultConfig()
	m.Username, m.Secret = amiUser, amiSecret
	cfg := agent.Config{Name: "agent5", Version: "bench", XMPP: x, Manager: m,
		ManagerAddr: "127.0.0.1:0", Log: slog.New(capt).With("agent", "agent5")}
	if *gossipJoin != "" {
		key, err := base64.StdEncoding.DecodeString(*gossipKey)
		if err != nil {
			return fail(fmt.Errorf("-gossip-key: %w", err))
		}
		cfg.Cluster = &gossip.Config{Bind: "127.0.0.1:0", Join: []string{*gossipJoin}, SecretKey: key, Profile: gossip.ProfileLAN}
	}
	node, err := agent.New(cfg)
	if err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	t0 := time.Now()
	go func() {
		defer wg.Done()
		if err := node.Run(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "joining agent:", err)
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	// Booted short of devices: what is missing comes within a minute, or
	// never (the fail message says which).
	var bootedAt time.Time
	booted := waitFor(ctx, 10*time.Minute, func() bool {
		select {
		case <-node.Core().Booted():
			if bootedAt.IsZero() {
				bootedAt = time.Now()
			}
			return node.Core().Stats().Devices >= *expect || time.Since(bootedAt) > time.Minute
		default:
			return false
		}
	}) && node.Core().Stats().Devices >= *expect
	took := time.Since(t0)
	if !booted {
		return fail(fmt.Errorf("not booted with %d devices (booted: %v; holds %d; %s)", *expect, !bootedAt.IsZero(), node.Core().Stats().Devices,
			missingByPublisher(node, *expect)))
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, hwm := procStatusKB("VmRSS"), procStatusKB("VmHWM")
	rep := childReport{AMI: node.ManagerAddr(), ResyncNS: int64(took), Devices: node.Core().Stats().Devices,
		Fetched: int(capt.fetched.Load()), RSSKB: rss, HWMKB: hwm, HeapInuse: ms.HeapInuse}
	rep.Phases, _ = capt.phases.Load().(string)
	if stats, err := node.Command(ctx, "show stats"); err == nil {
		rep.GossipAnswers = statLine(stats, "States answers over gossip")
		rep.XMPPAnswers = statLine(stats, "States answers over XMPP")
		rep.Fallbacks = statLine(stats, "States requests fallen back to XMPP")
	}
	if err := out.Encode(rep); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// missingByPublisher says, for a joiner short of devices, how many of
// each publisher's (Custom:S<i>-<k>) it lacks and the first few missing.
func missingByPublisher(node *agent.Agent, expect int) string {
	held := make(map[string]bool)
	for _, d := range node.Core().Devices(false) {
		held[d.Device] = true
	}
	var b strings.Builder
	per := expect / 4
	for i := range 4 {
		var miss []int
		for k := range per {
			if !held[fmt.Sprintf("Custom:S%d-%d", i, k)] {
				miss = append(miss, k)
			}
		}
		fmt.Fprintf(&b, "agent%d lacks %d", i+1, len(miss))
		if len(miss) > 0 {
			fmt.Fprintf(&b, " (first %v, last %d)", miss[:min(len(miss), 5)], miss[len(miss)-1])
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// procStatusKB reads a kB field of /proc/self/status.
func procStatusKB(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), &kb)
			return kb
		}
	}
	return 0
}

// capture passes records on to inner at its level, and notes how many
// items the agent fetched when it connected.
type capture struct {
	inner   slog.Handler
	fetched *atomic.Int64
	start   time.Time
	phases  *atomic.Value // string: when the first resync started and how long it took
}

func (c *capture) Enabled(context.Context, slog.Level) bool { return true }

func (c *capture) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "resync complete" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "took" {
				c.phases.CompareAndSwap(nil, fmt.Sprintf("connected+fetched at %s, resync took %s", time.Since(c.start).Round(time.Millisecond)-a.Value.Duration().Round(time.Millisecond), a.Value.Duration().Round(time.Millisecond)))
			}
			return true
		})
	}
	if strings.HasPrefix(r.Message, "booted from the members' states over gossip") {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "took" {
				c.phases.CompareAndSwap(nil, fmt.Sprintf("booted over gossip before XMPP connected, the asks took %s", a.Value.Duration().Round(time.Millisecond)))
			}
			return true
		})
	}
	if r.Message == "xmpp connected" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "devices" {
				c.fetched.Store(a.Value.Int64())
			}
			return true
		})
	}
	if c.inner.Enabled(ctx, r.Level) {
		return c.inner.Handle(ctx, r)
	}
	return nil
}

func (c *capture) WithAttrs(as []slog.Attr) slog.Handler {
	return &capture{inner: c.inner.WithAttrs(as), fetched: c.fetched, start: c.start, phases: c.phases}
}

func (c *capture) WithGroup(name string) slog.Handler {
	return &capture{inner: c.inner.WithGroup(name), fetched: c.fetched, start: c.start, phases: c.phases}
}

func runQuiet(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return "", errors.New("no output")
	}
	return s, nil
}

// statLine reads the number after "line: " in 'show stats' output; -1
// when the line is missing (gossip off).
func statLine(stats, line string) int {
	_, rest, ok := strings.Cut(stats, line+": ")
	if !ok {
		return -1
	}
	n := -1
	fmt.Sscan(rest, &n)
	return n
}

// gossipAddr is the address the agent gossips on, from 'show members'.
func gossipAddr(ctx context.Context, n *agent.Agent) (string, error) {
	out, err := n.Command(ctx, "show members")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		// NAME (this node) ADDRESS STATE ...
		if f := strings.Fields(l); len(f) > 3 && f[1] == "(this" {
			return f[3], nil
		}
	}
	return "", fmt.Errorf("show members: no address of this node in %q", out)
}
