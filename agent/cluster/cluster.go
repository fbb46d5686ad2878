// Package cluster owns gossip membership: which busylamp agents are in the
// cluster, with each one's JID, EID and version (its Meta, in memberlist's
// node meta), whether each is alive, suspect, dead or left, and when one
// joins, leaves or dies. It wraps hashicorp/memberlist and knows nothing of
// XMPP or of the device tables; the agent acts on its events.
//
// It uses memberlist's public API only: its event, ping and conflict
// delegates, its gossip queue for user messages, Join, Leave, Ping and
// SendToAddress. What memberlist does not tell through that API is derived
// here: a leave from a failure by a leave intent each member gossips
// before it leaves (leave.go), suspect by this member's own probes
// (probe.go). Nothing depends on memberlist's locking: the callbacks take
// only this package's lock, which is never held while calling memberlist.
//
// Why memberlist and not hashicorp/serf, which is built on it and has leave
// intents, failed vs left, reaping and Lamport clocks: serf turns a failed
// member into a left one on any member's leave intent about it (that is
// its force-leave), which busylamp must not allow; it has no suspect state; it would replace the binary Meta, which
// members of the running version exchange, by its msgpack tags, so a
// cluster could not be upgraded one member at a time; it sends events on a
// channel from memberlist's callbacks, blocking them when the reader is
// slow, so the queue here would stay; and it brings its own keyring,
// queries, snapshots and network coordinates, which busylamp does not use
// (a program that starts serf is 11.7 MB, one that starts memberlist alone
// 8.5 MB, with go1.26 on linux/amd64).
// It also pins the memberlist it is built on (serf v0.11.0: memberlist
// v0.7.0, today's), so upgrading memberlist would wait for serf. What serf
// does that busylamp needs is small: the leave intent, and the reconnect
// to failed members, which joinLoop does.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/hashicorp/memberlist"
)

// Config is one member's gossip settings.
type Config struct {
	Name      string   // member name, unique in the cluster; default JID
	Bind      string   // IP:port for TCP and UDP; port 0 picks a free one
	Advertise string   // IP:port others should use, if not Bind's
	Join      []string // host:port of any members; one reachable is enough
	SecretKey []byte   // AES key, 16, 24 or 32 bytes; nil only if Bind and Advertise are loopback
	Profile   string   // "lan" (default), "wan" or "local": memberlist's timings
	JID       string   // this node's full JID
	EID       devstate.EID
	Version   string // busylamp version
	Logger    *slog.Logger
	// Direct receives the bodies of other members' direct messages
	// (direct.go); its capacity bounds how many wait. Nil refuses them.
	Direct chan<- []byte

	// WrapTransport, when set, stands between memberlist and the sockets:
	// the WAN timing tests put delay and loss there (internal/wanpath).
	// For tests only: no config key sets it.
	WrapTransport func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
}

// DefaultConfig is membership's configuration when nothing else is said:
// the LAN profile on 127.0.0.1:7946, joining nobody. A zero Profile is
// the LAN one too.
func DefaultConfig() Config {
	return Config{Bind: "127.0.0.1:7946", Profile: ProfileLAN, Logger: slog.Default()}
}

// The profiles, named for memberlist's DefaultLANConfig, DefaultWANConfig
// and DefaultLocalConfig.
const (
	ProfileLAN   = "lan"
	ProfileWAN   = "wan"
	ProfileLocal = "local"
)

// Member states, as `show members` prints them.
const (
	StateAlive   = "alive"
	StateSuspect = "suspect" // this member's probes of it go unanswered (probe.go)
	StateDead    = "dead"    // failed: stopped answering
	StateLeft    = "left"    // left gracefully
)

// Member is one member as this node sees it.
type Member struct {
	Name  string
	Addr  string // host:port it gossips on
	State string // StateAlive, StateSuspect, StateDead or StateLeft
	Meta  Meta   // zero when the member's meta could not be decoded
	Since time.Time
}

// EventKind says what happened to a member.
type EventKind int

// The event kinds.
const (
	EventJoin   EventKind = iota + 1 // joined, or came back after dead or left
	EventLeave                       // left gracefully
	EventDead                        // declared failed by the cluster
	EventUpdate                      // its meta changed
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	case EventUpdate:
		return "update"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

func (k EventKind) gone() bool { return k == EventLeave || k == EventDead }

// Event is a change of another member. The local member's own join and
// leave are not reported.
type Event struct {
	Kind   EventKind
	Member Member
}

// ErrClosed is returned by Leave after Close.
var ErrClosed = errors.New("cluster closed")

const (
	// closeLeaveTimeout bounds Close's leave broadcast.
	closeLeaveTimeout = 5 * time.Second
	// goneRetention is how long a dead or left member stays listed after
	// memberlist has forgotten it; maxGone bounds how many are kept.
	goneRetention = 24 * time.Hour
	maxGone       = 1024

	joinBackoffMin = 500 * time.Millisecond
	joinBackoffMax = 30 * time.Second
	idlePoll       = time.Second // how often joinLoop checks it is not alone
	maxSyncs       = 16          // members to sync state with after a join
)

// Cluster is this node's membership in the gossip cluster.
type Cluster struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	addr   string
	meta   []byte // this member's Meta, encoded
	events chan<- Event
	q      *queue
	direct directCounters

	// broadcasts holds the leave intents to gossip (leave.go).
	broadcasts *memberlist.TransmitLimitedQueue
	leavingNow atomic.Bool // set once this member announces its leave

	propagateDelay    time.Duration
	reconnectInterval time.Duration

	ctx    context.Context // ends at Close: stops goroutines and dials
	cancel context.CancelFunc
	wg     sync.WaitGroup

	joinedOnce sync.Once
	joined     chan struct{}
	// returned has a token when a dead or left member came back: joinLoop
	// then syncs state with the members, as after a join of its own.
	returned chan struct{}

	// mu guards members, intents and ownSeq. memberlist's callbacks take
	// it, maybe under memberlist's own locks; so it is never held while
	// calling memberlist.
	mu      sync.Mutex
	members map[string]*entry
	intents map[string]intentRecord // newest leave intent heard per live member
	ownSeq  uint64                  // highest intent number seen about this member

	life    sync.Mutex // serializes Leave and Close
	left    bool
	leaving chan struct{} // closed at Leave: stop joining
	closed  bool
}

type entry struct {
	Member
	raw  []byte // meta as received, to decode (and log a bad one) once
	seen bool

	acked   time.Time // last heard from: joined, updated or answered a probe
	suspect time.Time // since when its probes go unanswered; zero if they don't
}

// Start binds, starts gossip and joins the cluster in the background (see
// joinLoop): it returns before any join address answers; Joined tells when
// one has. Events about other members go to events (which may be nil). They
// are sent from a goroutine of the Cluster, so a slow reader delays events
// but never memberlist, and none is dropped: a reader that falls behind
// gets, per member, the newest "gone" event followed by the newest
// "present" one.
func Start(cfg Config, events chan<- Event) (*Cluster, error) {
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = cfg.JID
	}
	meta, err := Meta{JID: cfg.JID, EID: cfg.EID, Version: cfg.Version}.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:      cfg,
		log:      cfg.Logger.With("member", cfg.Name),
		meta:     meta,
		events:   events,
		q:        newQueue(),
		ctx:      ctx,
		cancel:   cancel,
		joined:   make(chan struct{}),
		returned: make(chan struct{}, 1),
		members:  make(map[string]*entry),
		intents:  make(map[string]intentRecord),
		leaving:  make(chan struct{}),
		// Two gossip rounds, and time for a probe in flight to be acked.
		propagateDelay:    min(time.Second, max(2*mc.GossipInterval, mc.ProbeTimeout)),
		reconnectInterval: mc.PushPullInterval,
	}
	mc.Name = cfg.Name
	mc.Logger = newStdLogger(c.log)
	c.broadcasts = &memberlist.TransmitLimitedQueue{
		NumNodes:       c.numAlive,
		RetransmitMult: mc.RetransmitMult,
	}
	mc.Delegate = (*delegate)(c)
	mc.Events = (*eventDelegate)(c)
	mc.Conflict = (*eventDelegate)(c)
	mc.Ping = (*eventDelegate)(c)
	t, err := newTransport(ctx, mc.BindAddr, mc.BindPort, mc.Logger)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = t.GetAutoBindPort()
		if cfg.Advertise == "" {
			mc.AdvertisePort = mc.BindPort
		}
	}
	var nt memberlist.NodeAwareTransport = t
	if cfg.WrapTransport != nil {
		nt = cfg.WrapTransport(t)
	}
	mc.Transport = nt
	ml, err := memberlist.Create(mc)
	if err != nil {
		cancel()
		_ = nt.Shutdown()
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	c.ml = ml
	c.addr = ml.LocalNode().Address()
	c.log.Info("cluster started", "addr", c.addr, "profile", cfg.profile(), "encrypted", len(cfg.SecretKey) > 0)

	if len(cfg.Join) == 0 {
		c.markJoined() // the first member: nothing to join
	}
	c.wg.Add(3)
	go c.deliver()
	go c.joinLoop()
	go c.probeLoop(mc.ProbeInterval, mc.ProbeTimeout)
	return c, nil
}

func (cfg Config) profile() string {
	if cfg.Profile == "" {
		return ProfileLAN
	}
	return cfg.Profile
}

// memberlistConfig validates cfg and returns memberlist's config for it.
func (cfg Config) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch cfg.profile() {
	case ProfileLAN:
		mc = memberlist.DefaultLANConfig()
	case ProfileWAN:
		mc = memberlist.DefaultWANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		// memberlist's local timing sends each gossip message to only two
		// members; in clusters of five or more a join then often misses
		// someone until the next push-pull, 15 s later. LAN's four don't.
		mc.RetransmitMult = memberlist.DefaultLANConfig().RetransmitMult
	default:
		return nil, fmt.Errorf("cluster: profile %q: want lan, wan or local", cfg.Profile)
	}
	if cfg.JID == "" {
		return nil, errors.New("cluster: JID is required")
	}
	if cfg.EID.IsZero() {
		return nil, errors.New("cluster: EID is required")
	}
	name := cfg.Name
	if name == "" {
		name = cfg.JID
	}
	if len(name) > 255 {
		return nil, fmt.Errorf("cluster: member name is %d bytes, over 255", len(name))
	}
	if err := printable(name, false); err != nil {
		return nil, fmt.Errorf("cluster: member name %q: %w", name, err)
	}
	ip, port, err := splitIPPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: bind %q: %w", cfg.Bind, err)
	}
	mc.BindAddr, mc.BindPort = ip.String(), port
	mc.AdvertisePort = port
	loopback := ip.IsLoopback()
	if cfg.Advertise != "" {
		aip, aport, err := splitIPPort(cfg.Advertise)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertise %q: %w", cfg.Advertise, err)
		}
		if aport == 0 {
			return nil, fmt.Errorf("cluster: advertise %q: port 0", cfg.Advertise)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = aip.String(), aport
		loopback = loopback && aip.IsLoopback()
	}
	switch len(cfg.SecretKey) {
	case 0:
		if !loopback {
			return nil, fmt.Errorf("cluster: bind %s is not a loopback address: a secret key is required", cfg.Bind)
		}
	case 16, 24, 32:
		mc.SecretKey = append([]byte(nil), cfg.SecretKey...)
	default:
		return nil, fmt.Errorf("cluster: secret key is %d bytes: want 16, 24 or 32", len(cfg.SecretKey))
	}
	// Keeps busylamp's gossip apart from other memberlist users (Consul,
	// Serf, Nomad) that might share a network or, by mistake, a key.
	mc.Label = "busylamp"
	return mc, nil
}

func splitIPPort(s string) (net.IP, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return nil, 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, errors.New("want an IP address and a port")
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port %q", p)
	}
	return ip, int(port), nil
}

// Name is this member's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Addr is the address this member gossips on, as others see it.
func (c *Cluster) Addr() string { return c.addr }

// Joined is closed once this node has seen another live member, or at once
// when it was given no join addresses (it is the first).
func (c *Cluster) Joined() <-chan struct{} { return c.joined }

func (c *Cluster) markJoined() { c.joinedOnce.Do(func() { close(c.joined) }) }

// Members lists every member this node knows, itself included, and the dead
// and left ones for a while, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	c.pruneLocked(time.Now())
	out := make([]Member, 0, len(c.members))
	for _, e := range c.members {
		m := e.Member
		if !e.suspect.IsZero() && m.State == StateAlive {
			m.State, m.Since = StateSuspect, e.suspect
		}
		out = append(out, m)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pruneLocked forgets dead and left members after goneRetention, and the
// oldest ones past maxGone.
func (c *Cluster) pruneLocked(now time.Time) {
	var gone []*entry
	for name, e := range c.members {
		if e.State != StateDead && e.State != StateLeft {
			continue
		}
		if now.Sub(e.Since) > goneRetention {
			delete(c.members, name)
			continue
		}
		gone = append(gone, e)
	}
	if len(gone) <= maxGone {
		return
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].Since.Before(gone[j].Since) })
	for _, e := range gone[:len(gone)-maxGone] {
		delete(c.members, e.Name)
	}
}

// Leave tells the cluster this member is leaving, waiting up to timeout for
// the message to go out, and stops joining. Gossip goes on until Close so
// that the news spreads; others see a Leave event, not Dead.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return ErrClosed
	}
	return c.leaveLocked(timeout)
}

func (c *Cluster) leaveLocked(timeout time.Duration) error {
	if c.left {
		return nil
	}
	c.left = true
	close(c.leaving)
	// Half the time for the intent, which must come first (leave.go), the
	// rest for memberlist's leave; a lost intent only makes the leave look
	// like a failure, so memberlist's leave goes out regardless.
	start := time.Now()
	ierr := c.announceLeave(start.Add(timeout / 2))
	if ierr != nil {
		c.log.Warn("cluster: leave intent", "err", ierr)
	}
	if err := c.ml.Leave(max(timeout-time.Since(start), time.Millisecond)); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Close leaves the cluster (if Leave was not called), stops gossip and
// waits for the Cluster's goroutines to end. Events not yet taken are
// dropped. Safe to call more than once.
func (c *Cluster) Close() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return nil
	}
	alone := c.ml.NumMembers() <= 1
	err := c.leaveLocked(closeLeaveTimeout)
	if !alone {
		// memberlist's Leave returns once the leave message is queued for
		// its last transmission, not once it is sent; stay up a moment so
		// the packets go out and probes in flight get their acks.
		time.Sleep(c.propagateDelay)
	}
	c.stopLocked()
	return err
}

// kill stops gossip without leaving, as if the process were killed; for
// tests of failure detection.
func (c *Cluster) kill() {
	c.life.Lock()
	defer c.life.Unlock()
	if !c.closed {
		c.stopLocked()
	}
}

func (c *Cluster) stopLocked() {
	c.closed = true
	c.cancel()
	if err := c.ml.Shutdown(); err != nil {
		c.log.Warn("cluster: shutdown", "err", err)
	}
	c.wg.Wait()
}

// joinLoop keeps this member in the cluster. It joins the configured
// addresses until one answers and another member is seen, retrying with
// backoff: a member that others joined first is not thereby in the rest of
// the cluster. After that it joins them again whenever this member is alone
// (the member it knew restarted, say), and, like Serf, tries the addresses
// of dead members once per push-pull interval, so that the two sides of a
// network partition find each other again when it ends: memberlist itself
// never probes a member it has declared dead.
//
// After each successful join it also syncs state with the members it
// knows, twice (antiEntropy). Gossip tells each news to only a few random
// members, and when several members join at once some miss a join until
// the next push-pull, 30 s later on the LAN profile; in tests starting six
// members at once, one run in ten took over 30 s to converge without this.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	joined := len(c.cfg.Join) == 0
	backoff := joinBackoffMin
	lastReconnect := time.Now()
	var syncs []time.Time
	wait := time.Duration(0)
	for {
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return
		case <-c.leaving:
			t.Stop()
			return
		case <-c.returned:
			// A member back from the dead may have heard of this one only
			// through the gossip that revived it (its refutation of our
			// dead message, say), not through a join, and so not know of
			// us: push state to it rather than wait for the next push-pull.
			t.Stop()
			syncs = antiEntropy(time.Now())
			wait = time.Until(syncs[0])
			continue
		case <-t.C:
		}
		wait = idlePoll
		if len(syncs) > 0 && !time.Now().Before(syncs[0]) {
			syncs = syncs[1:]
			if addrs := c.aliveAddrs(maxSyncs); len(addrs) > 0 {
				n, err := c.ml.Join(addrs)
				c.log.Debug("cluster: synced state", "contacted", n, "err", oneLine(err))
			}
		}
		alone := c.ml.NumMembers() <= 1
		var dead []string
		if time.Since(lastReconnect) >= c.reconnectInterval {
			lastReconnect = time.Now()
			dead = c.deadAddrs()
		}
		if (joined && !alone) || len(c.cfg.Join) == 0 {
			backoff = joinBackoffMin
			if len(dead) > 0 {
				n, err := c.ml.Join(dead)
				c.log.Debug("cluster: reconnect to dead members", "addrs", dead, "contacted", n, "err", oneLine(err))
				if n > 0 {
					syncs = antiEntropy(time.Now())
				}
			}
			continue
		}
		n, err := c.ml.Join(append(dead, c.cfg.Join...))
		if n > 0 && c.ml.NumMembers() > 1 {
			c.log.Debug("cluster: joined", "contacted", n)
			joined = true
			backoff = joinBackoffMin
			syncs = antiEntropy(time.Now())
			continue
		}
		if c.ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("no other member answered")
		}
		// Jitter keeps a cluster restarted at once from joining in lockstep.
		wait = backoff/2 + rand.N(backoff/2+1)
		c.log.Warn("cluster: join failed; retrying", "join", c.cfg.Join, "retry_in", wait.Round(time.Millisecond), "err", oneLine(err))
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// oneLine flattens memberlist's multi-line join errors ("2 errors
// occurred:\n\t* ...") for a log line.
func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s := strings.TrimSpace(err.Error())
	if i := strings.Index(s, ":\n\t* "); i >= 0 && strings.HasSuffix(s[:i], "occurred") {
		s = s[i+len(":\n\t* "):]
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n\t* ", "; ")), " ")
}

// antiEntropy is when to sync state after a join at now: once the joins
// around it have likely happened, and once more after their gossip.
func antiEntropy(now time.Time) []time.Time {
	return []time.Time{now.Add(time.Second), now.Add(5 * time.Second)}
}

// aliveAddrs lists up to max other live members' addresses, at random.
func (c *Cluster) aliveAddrs(max int) []string {
	c.mu.Lock()
	var out []string
	for _, e := range c.members {
		if e.State == StateAlive && e.Name != c.cfg.Name {
			out = append(out, e.Addr)
		}
	}
	c.mu.Unlock()
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out[:min(max, len(out))]
}

// deadAddrs lists the addresses of members that failed (not those that
// left: they meant it).
func (c *Cluster) deadAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.members {
		if e.State == StateDead && e.Name != c.cfg.Name {
			out = append(out, e.Addr)
		}
	}
	sort.Strings(out)
	return out
}

// deliver hands queued events to the owner's channel.
func (c *Cluster) deliver() {
	defer c.wg.Done()
	for {
		ev, ok := c.q.pop()
		if !ok {
			select {
			case <-c.q.wake:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		if c.events == nil {
			continue
		}
		select {
		case c.events <- ev:
		case <-c.ctx.Done():
			return
		}
	}
}

// delegate gives memberlist this member's meta, carries the leave intents
// over gossip and takes in direct messages (direct.go).
type delegate Cluster

func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil // Start checked the size; memberlist's limit is fixed
	}
	return d.meta
}

// NotifyMsg runs in memberlist's packet loop: it must not block, and b is
// reused after it returns (parseIntent copies what it keeps).
func (d *delegate) NotifyMsg(b []byte) {
	if len(b) > 0 && b[0] == msgDirect {
		(*Cluster)(d).receiveDirect(b[1:])
		return
	}
	in, err := parseIntent(b)
	if err != nil {
		if err != errNotIntent {
			d.log.Debug("cluster: bad intent ignored", "err", err)
		}
		return
	}
	(*Cluster)(d).receiveIntent(in)
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.broadcasts.GetBroadcasts(overhead, limit)
}

func (*delegate) LocalState(join bool) []byte            { return nil }
func (*delegate) MergeRemoteState(buf []byte, join bool) {}

// numAlive is the cluster's size, as the gossip queue wants it to scale its
// retransmissions. It reads this package's list, not memberlist's, so that
// the queue never calls back into memberlist.
func (c *Cluster) numAlive() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, e := range c.members {
		if e.State == StateAlive {
			n++
		}
	}
	return n
}

// eventDelegate receives memberlist's notifications, from memberlist's own
// goroutines and maybe under its locks: it only updates the member list
// and queues an event, and never calls memberlist.
type eventDelegate Cluster

func (d *eventDelegate) NotifyJoin(n *memberlist.Node)   { (*Cluster)(d).observe(EventJoin, n) }
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Cluster)(d).observe(EventUpdate, n) }

// NotifyLeave is memberlist's one call for both ends; the member's leave
// intent tells them apart (n.State does not: see leave.go).
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	(*Cluster)(d).observe(EventDead, n) // observe makes it a leave if announced
}

func (d *eventDelegate) NotifyConflict(existing, other *memberlist.Node) {
	d.log.Warn("cluster: two members claim one name", "name", existing.Name,
		"addr", existing.Address(), "other_addr", other.Address())
}

func (c *Cluster) observe(kind EventKind, n *memberlist.Node) {
	now := time.Now()
	state := StateAlive
	switch kind {
	case EventLeave:
		state = StateLeft
	case EventDead:
		state = StateDead
	}
	c.mu.Lock()
	if kind == EventDead {
		if n.Name == c.cfg.Name {
			if c.leavingNow.Load() {
				kind = EventLeave
			}
		} else if c.takeIntentLocked(n.Name, now) {
			kind = EventLeave
		}
		if kind == EventLeave {
			state = StateLeft
		}
	}
	m := Member{Name: n.Name, Addr: n.Address(), State: state, Since: now}
	e := c.members[n.Name]
	back := e != nil && kind == EventJoin && (e.State == StateDead || e.State == StateLeft)
	if e == nil {
		e = &entry{}
		c.members[n.Name] = e
	} else if e.State == state {
		m.Since = e.Since
	}
	badMeta := false
	var metaErr error
	if e.seen && string(e.raw) == string(n.Meta) {
		m.Meta = e.Meta // same bytes as before: decoded (or rejected) then
	} else if metaErr = m.Meta.UnmarshalBinary(n.Meta); metaErr != nil {
		badMeta = true
	}
	e.Member = m
	e.raw = append(e.raw[:0], n.Meta...)
	e.seen = true
	e.suspect = time.Time{}
	switch kind {
	case EventJoin, EventUpdate:
		e.acked = now
	}
	if kind == EventJoin {
		delete(c.intents, n.Name) // a restart: its last run's intents are void
	}
	c.pruneLocked(now)
	c.mu.Unlock()

	if badMeta {
		c.log.Warn("cluster: member meta rejected; listing it without JID", "name", n.Name, "addr", m.Addr, "err", metaErr)
	}
	if n.Name == c.cfg.Name {
		return
	}
	if kind == EventJoin {
		c.markJoined()
	}
	if back {
		select {
		case c.returned <- struct{}{}:
		default:
		}
	}
	if kind != EventUpdate {
		c.log.Info("cluster member "+kind.String(), "name", m.Name, "addr", m.Addr,
			"jid", m.Meta.JID, "eid", m.Meta.EID.String(), "version", m.Meta.Version)
	} else {
		c.log.Debug("cluster member update", "name", m.Name, "jid", m.Meta.JID, "version", m.Meta.Version)
	}
	c.q.push(Event{Kind: kind, Member: m})
}
