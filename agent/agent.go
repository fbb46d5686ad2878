package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// Config is everything a running node needs.
type Config struct {
	Name        string // the client section's name, as 'show connected' prints it
	Version     string
	XMPP        pubsub.Config
	Core        Options
	Manager     manager.Config
	ManagerAddr string // host:port of the AMI-style socket
	// ResyncTimeout bounds each directed states request after a connect.
	ResyncTimeout time.Duration
	// BootTimeout bounds how long FullyBooted waits for the first resync;
	// after it the node boots with what it has (the XMPP server may be down).
	BootTimeout time.Duration
	Log         *slog.Logger
	// Cluster, when set, joins gossip membership (the [cluster] section).
	Cluster *cluster.Config
}

// Node is a running agent: the core, its XMPP client and its AMI socket.
type Node struct {
	cfg    Config
	log    *slog.Logger
	core   *Agent
	xmpp   *pubsub.Client
	ami    *manager.Server
	ln     net.Listener
	events chan pubsub.Event

	cluster  *cluster.Cluster
	waiting  atomic.Int32  // states requests held until synced
	synced   chan struct{} // closed when the first items resync is done
	syncOnce sync.Once

	resyncMu     sync.Mutex
	resyncCancel context.CancelFunc
	wg           sync.WaitGroup
}

// NewNode checks cfg, opens the AMI socket and prepares the XMPP client;
// Run starts them.
func NewNode(cfg Config) (*Node, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ResyncTimeout <= 0 {
		cfg.ResyncTimeout = 10 * time.Second
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = 30 * time.Second
	}
	cfg.Core.Log = cfg.Log
	cfg.Core.JID = cfg.XMPP.JID
	cfg.Core.EID = cfg.XMPP.EID
	cfg.XMPP.Logger = cfg.Log
	n := &Node{cfg: cfg, log: cfg.Log, events: make(chan pubsub.Event, 4096), synced: make(chan struct{})}
	n.core = New(cfg.Core)
	// Own states are republished by the node after each resync, not by the
	// client on connect: the resync may first restore them.
	cfg.XMPP.OwnStates = nil
	x, err := pubsub.New(cfg.XMPP, n.events)
	if err != nil {
		return nil, fmt.Errorf("xmpp client: %w", err)
	}
	n.xmpp = x
	n.ami = manager.New(cfg.Manager, backend{n}, cfg.Log)
	n.core.Attach(x, amiSink{n.ami})
	ln, err := net.Listen("tcp", cfg.ManagerAddr)
	if err != nil {
		return nil, fmt.Errorf("manager socket: %w", err)
	}
	n.ln = ln
	return n, nil
}

// Core is the node's state.
func (n *Node) Core() *Agent { return n.core }

// ManagerAddr is the address the AMI-style socket listens on.
func (n *Node) ManagerAddr() string { return n.ln.Addr().String() }

// Run runs the node until ctx ends, then stops everything it started.
func (n *Node) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Membership first: the AMI socket's 'show members' reads it.
	members, err := n.startCluster(ctx)
	if err != nil {
		n.ln.Close()
		return err
	}
	errc := make(chan error, 2)
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := n.ami.Serve(ctx, n.ln); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("manager: %w", err)
		}
	}()
	go func() {
		defer n.wg.Done()
		if err := n.xmpp.Run(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("xmpp: %w", err)
		}
	}()
	bootTimer := time.AfterFunc(n.cfg.BootTimeout, func() {
		select {
		case <-n.core.Booted():
		default:
			n.log.Warn("booting without a complete resync", "waited", n.cfg.BootTimeout)
			n.core.MarkBooted()
		}
	})
	defer bootTimer.Stop()
	n.log.Info("busylamp running", "version", n.cfg.Version, "jid", n.cfg.XMPP.JID,
		"eid", n.cfg.XMPP.EID.String(), "manager", n.ManagerAddr())
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case ev := <-n.events:
			n.handle(ctx, ev)
		case ev := <-members:
			n.memberEvent(ctx, ev)
		}
	}
	cancel()
	// Keep draining events until the client has stopped, so it never blocks.
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	for {
		select {
		case <-n.events:
		case <-done:
			n.core.stopTimers()
			return err
		}
	}
}

func (n *Node) handle(ctx context.Context, ev pubsub.Event) {
	switch ev := ev.(type) {
	case pubsub.DeviceEvent:
		n.core.RemoteDevice(ev.Item)
	case pubsub.MailboxEvent:
		n.core.RemoteMailbox(ev.Item)
	case pubsub.Presence:
		if n.core.Presence(ev.JID, ev.Available) && ev.Available && n.booted() {
			// A buddy came (back): what it holds now is exact only from it.
			n.wg.Add(1)
			go func() { defer n.wg.Done(); n.requestStates(ctx, ev.JID) }()
		}
		status := "unavailable"
		if ev.Available {
			status = "available"
			if ev.Show != "" {
				status = ev.Show
			}
		}
		n.ami.Emit(manager.BuddyStatus(
			manager.Header{Key: "JID", Value: bareJID(ev.JID)},
			manager.Header{Key: "Resource", Value: resourceOf(ev.JID)},
			manager.Header{Key: "Status", Value: status},
			manager.Header{Key: "Priority", Value: fmt.Sprint(ev.Priority)},
		))
	case pubsub.Connected:
		n.log.Info("xmpp connected", "jid", ev.JID, "devices", len(ev.Devices), "mailboxes", len(ev.Mailboxes))
		n.core.Resync(ev.Devices, ev.Mailboxes)
		n.syncOnce.Do(func() { close(n.synced) })
		n.startResync(ctx)
	case pubsub.Disconnected:
		n.log.Warn("xmpp disconnected", "err", ev.Err)
		n.cancelResync()
		n.core.Disconnected()
	case pubsub.OwnStatesRequest:
		if n.isSynced() || n.waiting.Load() >= maxWaitingAnswers {
			n.answer(ev)
			break
		}
		// Our own states are not restored from the PubSub items yet, and
		// a partial answer would make the asker drop our real states.
		// Answer once they are (well within the asker's timeout). Not
		// "once booted": agents that start together would each wait for
		// the other's answer. What later answers restore is republished.
		n.waiting.Add(1)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer n.waiting.Add(-1)
			select {
			case <-n.synced:
			case <-time.After(n.cfg.ResyncTimeout / 2):
			case <-ctx.Done():
				return
			}
			n.answer(ev)
		}()
	case pubsub.Retracted:
		n.log.Debug("item retracted", "node", ev.Node, "id", ev.ID) // routine on ejabberd: an item is retracted before another account overwrites it
	case pubsub.Purged:
		n.log.Info("node purged", "node", ev.Node)
	case pubsub.Deleted:
		n.log.Warn("node deleted", "node", ev.Node)
	}
}

// maxWaitingAnswers bounds the states requests held until synced.
const maxWaitingAnswers = 256

func (n *Node) isSynced() bool {
	select {
	case <-n.synced:
		return true
	default:
		return false
	}
}

func (n *Node) booted() bool {
	select {
	case <-n.core.Booted():
		return true
	default:
		return false
	}
}

// answer answers a buddy's states request with our own states and what
// we hold of the asker's server.
func (n *Node) answer(req pubsub.OwnStatesRequest) {
	eid, _ := n.core.EIDOf(req.From)
	ds, ms := n.core.AnswerFor(eid)
	if err := n.xmpp.AnswerOwnStates(req, ds, ms); err != nil {
		n.log.Warn("answer states request", "from", req.From, "err", err)
	}
}

func (n *Node) cancelResync() {
	n.resyncMu.Lock()
	defer n.resyncMu.Unlock()
	if n.resyncCancel != nil {
		n.resyncCancel()
		n.resyncCancel = nil
	}
}

// startResync asks every busylamp buddy for its own states (what PubSub
// items cannot tell exactly), then republishes this node's own states and
// marks the node booted. Asterisk buddies simply do not answer.
func (n *Node) startResync(ctx context.Context) {
	n.cancelResync()
	rctx, cancel := context.WithCancel(ctx)
	n.resyncMu.Lock()
	n.resyncCancel = cancel
	n.resyncMu.Unlock()
	targets := n.resyncTargets()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer cancel()
		start := time.Now()
		var mu sync.Mutex
		answered := 0
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, jid := range targets {
			wg.Add(1)
			sem <- struct{}{}
			go func(jid string) {
				defer wg.Done()
				defer func() { <-sem }()
				if !n.requestStates(rctx, jid) {
					return
				}
				mu.Lock()
				answered++
				mu.Unlock()
			}(jid)
		}
		wg.Wait()
		if rctx.Err() != nil {
			return
		}
		n.core.Republish()
		n.core.MarkBooted()
		n.log.Info("resync complete", "asked", len(targets), "answered", answered,
			"took", time.Since(start).Round(time.Millisecond))
	}()
}

// resyncTargets are the full JIDs to ask: configured buddies with a
// resource, and every resource whose presence we know.
func (n *Node) resyncTargets() []string {
	seen := make(map[string]bool)
	var out []string
	add := func(j string) {
		if j == "" || seen[j] || bareJID(j) == bareJID(n.cfg.XMPP.JID) && resourceOf(j) == resourceOf(n.cfg.XMPP.JID) {
			return
		}
		seen[j] = true
		out = append(out, j)
	}
	for _, b := range n.cfg.XMPP.Buddies {
		if strings.Contains(b, "/") {
			add(b)
		}
	}
	for _, b := range n.xmpp.Buddies() {
		for _, r := range b.Resources {
			add(b.JID + "/" + r.Resource)
		}
	}
	if n.cluster != nil {
		for _, m := range n.cluster.Members() {
			if m.State == cluster.StateAlive && strings.Contains(m.Meta.JID, "/") {
				add(m.Meta.JID)
			}
		}
	}
	return out
}

// amiSink turns cluster-wide changes into AMI events.
type amiSink struct{ s *manager.Server }

func (a amiSink) DeviceChanged(device string, st devstate.State) {
	a.s.Emit(manager.DeviceStateChange(device, st))
}

func (a amiSink) MailboxChanged(mailbox string, c mwi.Counts) {
	a.s.Emit(manager.MessageWaiting(mailbox, c))
}

// backend is the node as the AMI socket sees it.
type backend struct{ n *Node }

func (b backend) DeviceState(_ context.Context, device string) (devstate.State, bool) {
	return b.n.core.DeviceState(device)
}

func (b backend) SetDeviceState(_ context.Context, device string, s devstate.State) error {
	return b.n.core.SetDeviceState(device, s)
}

func (b backend) Devices(context.Context) []manager.DeviceState {
	ds := b.n.core.Devices(false)
	out := make([]manager.DeviceState, len(ds))
	for i, d := range ds {
		out[i] = manager.DeviceState{Device: d.Device, State: d.State}
	}
	return out
}

func (b backend) Mailbox(_ context.Context, mailbox string) (mwi.Counts, bool) {
	return b.n.core.Mailbox(mailbox)
}

func (b backend) Mailboxes(context.Context) []manager.MailboxState {
	ms := b.n.core.Mailboxes(false)
	out := make([]manager.MailboxState, len(ms))
	for i, m := range ms {
		out[i] = manager.MailboxState{Mailbox: m.Mailbox, Counts: m.Counts}
	}
	return out
}

func (b backend) SetMailbox(_ context.Context, mailbox string, c mwi.Counts) error {
	return b.n.core.SetMailbox(mailbox, c)
}

func (b backend) DeleteMailbox(_ context.Context, mailbox string) error {
	return b.n.core.DeleteMailbox(mailbox)
}

func (b backend) Command(ctx context.Context, line string) (string, error) {
	return b.n.Command(ctx, line)
}

func (b backend) Booted() <-chan struct{} { return b.n.core.Booted() }
