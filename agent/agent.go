// Package agent is the busylamp process: it wires the config to the XMPP
// client (seen through the small XMPP interface), the core (agent/core: the
// tables and their rules), the AMI-style socket (agent/manager) and gossip
// membership (agent/cluster). This node's own states come in from the AMI
// socket, are kept on disk (agent/store) and go out to XMPP PubSub; every
// other server's publications come in from PubSub into the core; every
// change of a cluster-wide state goes out to the AMI sessions.
//
// One goroutine, Run's event loop, hands the XMPP client's and
// membership's events to the core in order. Whatever waits on the network
// runs beside it, bounded: the answers to buddies' states requests on one
// goroutine with a bounded queue, the requests to buddies and the roster
// changes membership asks for on a fixed set of workers with a bounded,
// deduplicated queue, the resync after each connect on at most eight
// requests at a time.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/agent/store"
	"github.com/busylamp/busylamp/agent/web"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// XMPP is the XMPP client as the agent uses it: *pubsub.Client, or a fake
// in the agent's in-memory tests. Its events reach the agent on the
// channel given when it was made. PublishDevice and PublishMailbox must
// not block (the client coalesces).
type XMPP interface {
	Run(ctx context.Context) error
	Status() pubsub.ConnStatus
	Stats() pubsub.Stats
	Buddies() []pubsub.Buddy
	AddBuddy(ctx context.Context, jid string) error
	RemoveBuddy(ctx context.Context, jid string) error
	SetTrace(on bool)
	RequestOwnStates(ctx context.Context, fullJID string, chunkWait time.Duration) ([]pubsub.DeviceItem, []pubsub.MailboxItem, error)
	AnswerOwnStates(req pubsub.OwnStatesRequest, devices []pubsub.DeviceItem, mailboxes []pubsub.MailboxItem) error
	PublishDevice(device string, s devstate.State, cachable bool)
	PublishMailbox(mailbox string, c mwi.Counts)
	Purge(ctx context.Context, node string) error
	DeleteNode(ctx context.Context, node string) error
	CreateCollection(ctx context.Context, node string) error
	CreateLeaf(ctx context.Context, collection, node string) error
}

var _ XMPP = (*pubsub.Client)(nil)

// Config is everything a running agent needs. Start from DefaultConfig.
type Config struct {
	Name        string // the client section's name, as 'show connected' prints it
	Version     string
	XMPP        pubsub.Config
	Core        core.Config // EID and JID are taken from XMPP
	Manager     manager.Config
	ManagerAddr string // host:port of the AMI-style socket
	// ResyncTimeout bounds the wait for each chunk of a directed states
	// request (a buddy that does not answer: an Asterisk node).
	ResyncTimeout time.Duration
	// BootTimeout bounds how long FullyBooted waits for the first resync;
	// after it the node boots with what it has (the XMPP server may be down).
	BootTimeout time.Duration
	Log         *slog.Logger
	// Cluster, when set, joins gossip membership (the [cluster] section).
	Cluster *cluster.Config
	// StateDir keeps this node's own states across crashes (agent/store);
	// "" keeps them in memory only.
	StateDir string

	// Load reads the config file again, for Reload (SIGHUP, 'busylamp
	// reload', AMI Reload); nil refuses reloads. Its error lists the
	// file's problems one per line.
	Load func() (Config, error)
	// Level is the log handler's level, when it is a LevelVar: Reload
	// sets it to LogLevel, 'debug on' to debug.
	Level    *slog.LevelVar
	LogLevel slog.Level
	// LogFormat, MetricsAddr and HTTPAddr are only compared by Reload
	// (they take a restart); the caller set the log up.
	LogFormat   string
	MetricsAddr string // [metrics] bind; "" off
	HTTPAddr    string // [http] bind; "" off
}

// DefaultConfig is the agent's configuration when nothing else is said.
// New takes a zero ResyncTimeout, BootTimeout or Log from it.
func DefaultConfig() Config {
	return Config{
		XMPP:          pubsub.DefaultConfig(),
		Core:          core.DefaultConfig(),
		Manager:       manager.DefaultConfig(),
		ManagerAddr:   "127.0.0.1:5039",
		ResyncTimeout: 10 * time.Second,
		BootTimeout:   30 * time.Second,
		Log:           slog.Default(),
	}
}

// ErrConfig marks an error of New that a corrected configuration cures
// (as against a socket that could not be opened).
var ErrConfig = errors.New("configuration")

// Bounds on work that buddies and members can queue.
const (
	maxWaitingAnswers = 256  // states requests held until synced
	maxAsks           = 4096 // buddies waiting to be asked or added
	askWorkers        = 4    // buddies asked at once outside a resync
	resyncParallel    = 8    // buddies asked at once in a resync
)

// Agent is a running busylamp node: the core, its XMPP client, its AMI
// socket and, when configured, gossip membership.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	clock  core.Clock
	core   *core.Core
	xmpp   XMPP
	ami    *manager.Server
	ln     net.Listener
	events chan pubsub.Event

	// store keeps the own states; nil without a StateDir. ownMu keeps the
	// store's order of writes the core's (two sessions setting one device).
	store *store.Store
	ownMu sync.Mutex

	cluster  *cluster.Cluster
	members  <-chan cluster.Event // membership's events: from the cluster, or a test
	answers  chan heldRequest     // states requests to answer, in arrival order
	asks     *askQueue
	synced   chan struct{} // closed when the first items resync is done
	syncOnce sync.Once

	askDone func(jid string) // tests: called when a buddy's asked work is done

	relearn relearn      // buddies that came back (resync.go)
	gossip  gossipStates // the own-states exchange over gossip

	lastResync atomic.Int64 // how long the last complete resync took, ns
	// settled: the first resync after a connect is done (or booting
	// stopped waiting for it). Booted alone is not enough for a buddy's
	// presence to be news: an early resync boots before the connect.
	settled     atomic.Bool
	bootedEarly atomic.Bool // booted by earlyResync
	eventsIn    eventCounts // notifications taken in, per buddy

	web webParts // [http] and [metrics] (webpage.go)
	// newSession, when set, replaces the XMPP client by one with these
	// settings (a reload that changed the client section); the agent
	// built on a test's fake has none.
	newSession func(pubsub.Config) error

	reloadMu sync.Mutex // one Reload or SetDebug at a time; guards live
	live     live

	resyncMu     sync.Mutex
	resyncCancel context.CancelFunc
	wg           sync.WaitGroup
}

// New checks cfg, opens the AMI socket and prepares the XMPP client; Run
// starts them.
func New(cfg Config) (*Agent, error) {
	events := make(chan pubsub.Event, 4096)
	// The metrics read the agent's counters when scraped; the client's
	// two timings are observed as they happen.
	var a *Agent
	metrics := web.NewMetrics(func() web.Snapshot { return a.metricsSnapshot() })
	client := func(pc pubsub.Config) (XMPP, error) {
		pc.Logger = cfg.Log
		if pc.Logger == nil {
			pc.Logger = slog.Default()
		}
		// Own states are republished by the agent after each resync, not
		// by the client on connect: the resync may first restore them.
		pc.OwnStates = nil
		if cfg.MetricsAddr != "" {
			pc.ObservePublish, pc.ObserveEcho = metrics.ObserveIQ, metrics.ObserveLag
		}
		x, err := pubsub.New(pc, events)
		if err != nil {
			return nil, fmt.Errorf("%w: xmpp client: %w", ErrConfig, err)
		}
		return x, nil
	}
	x, err := client(cfg.XMPP)
	if err != nil {
		return nil, err
	}
	sw := newXMPPSwitch(x, events)
	a, err = newAgent(cfg, sw, events)
	if err != nil {
		return nil, err
	}
	a.web.metrics = metrics
	a.newSession = func(pc pubsub.Config) error {
		nx, err := client(pc)
		if err != nil {
			return err
		}
		sw.Replace(nx)
		return nil
	}
	if err := a.openWeb(); err != nil {
		a.ln.Close()
		a.closeStore()
		return nil, err
	}
	return a, nil
}

// newAgent builds the agent around an XMPP client that sends its events
// on events.
func newAgent(cfg Config, x XMPP, events chan pubsub.Event) (*Agent, error) {
	def := DefaultConfig()
	if cfg.Log == nil {
		cfg.Log = def.Log
	}
	if cfg.ResyncTimeout <= 0 {
		cfg.ResyncTimeout = def.ResyncTimeout
	}
	if cfg.BootTimeout <= 0 {
		cfg.BootTimeout = def.BootTimeout
	}
	if cfg.Core.Clock == nil {
		cfg.Core.Clock = def.Core.Clock
	}
	cfg.Core.Log = cfg.Log
	cfg.Core.JID = cfg.XMPP.JID
	cfg.Core.EID = cfg.XMPP.EID
	a := &Agent{
		cfg:     cfg,
		log:     cfg.Log,
		clock:   cfg.Core.Clock,
		core:    core.New(cfg.Core),
		xmpp:    x,
		events:  events,
		answers: make(chan heldRequest, maxWaitingAnswers),
		asks:    newAskQueue(maxAsks),
		synced:  make(chan struct{}),
		live:    liveOf(cfg),
	}
	a.ami = manager.New(cfg.Manager, backend{a}, cfg.Log)
	a.newHub()
	ln, err := net.Listen("tcp", cfg.ManagerAddr)
	if err != nil {
		return nil, fmt.Errorf("manager socket: %w", err)
	}
	a.ln = ln
	if cfg.StateDir != "" {
		sc := store.DefaultConfig()
		sc.Dir, sc.Log = cfg.StateDir, cfg.Log
		st, err := store.Open(sc)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("state_dir: %w", err)
		}
		a.store = st
		a.restoreOwn()
	}
	// Restored before the core publishes anything: the core holds them as
	// set by the PBX, and they are republished after the first resync.
	a.core.Attach(x, a.sink())
	return a, nil
}

// restoreOwn hands the stored own states to the core as this node's PBX
// set them (so no item or buddy's copy overrides them), and the own
// mailboxes it deleted (so no item or buddy's copy brings them back).
func (a *Agent) restoreOwn() {
	devices, mailboxes := a.store.Devices(), a.store.Mailboxes()
	refused := 0
	for _, d := range devices {
		if !devstate.State(d.State).Valid() || a.core.SetDeviceState(d.Name, devstate.State(d.State)) != nil {
			refused++
		}
	}
	for _, m := range mailboxes {
		if a.core.SetMailbox(m.Name, mwi.Counts{New: m.New, Old: m.Old}) != nil {
			refused++
		}
	}
	if refused > 0 {
		a.log.Warn("stored own states refused (bad or past max_devices)", "refused", refused)
	}
	// Deleted before the restart: the cluster may still hold their old
	// counts (the delete's zero counts may not have left), which no resync
	// may take back; their zeros go out again after the first resync.
	deleted := a.store.DeletedMailboxes()
	a.core.ForgetOwnMailboxes(deleted)
	a.log.Info("own states restored from the store", "devices", len(devices), "mailboxes", len(mailboxes),
		"deleted_mailboxes", len(deleted))
}

// Core is the agent's state.
func (a *Agent) Core() *core.Core { return a.core }

// ManagerAddr is the address the AMI-style socket listens on.
func (a *Agent) ManagerAddr() string { return a.ln.Addr().String() }

// Run runs the agent until ctx ends, then stops everything it started and
// waits for it.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer a.closeStore() // runs after everything that writes to it has stopped
	// Membership first: the AMI socket's 'show members' reads it.
	if err := a.startCluster(ctx); err != nil {
		a.ln.Close()
		a.closeWeb()
		return err
	}
	a.serveWeb(ctx)
	errc := make(chan error, 2)
	a.goRun(func() {
		if err := a.ami.Serve(ctx, a.ln); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("manager: %w", err)
		}
	})
	a.goRun(func() {
		if err := a.xmpp.Run(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("xmpp: %w", err)
		}
	})
	a.goRun(func() { a.answerLoop(ctx) })
	if a.store != nil {
		a.goRun(func() {
			select {
			case <-a.core.Booted():
			case <-ctx.Done():
			}
			if !a.booted() {
				return
			}
			// Booted and stopping at once: still keep them.
			early := !a.isSynced()
			a.keepRestored()
			if early {
				// Booted over gossip before the items: they may restore
				// more.
				select {
				case <-a.synced:
					a.keepRestored()
				case <-ctx.Done():
				}
			}
		})
	}
	if a.cluster != nil {
		a.goRun(func() { a.earlyResync(ctx) })
	}
	for range askWorkers {
		a.goRun(func() { a.askLoop(ctx) })
	}
	bootTimer := a.clock.AfterFunc(a.cfg.BootTimeout, func() {
		select {
		case <-a.core.Booted():
		default:
			a.log.Warn("booting without a complete resync", "waited", a.cfg.BootTimeout)
			a.settled.Store(true)
			a.core.MarkBooted()
		}
	})
	defer bootTimer.Stop()
	a.log.Info("busylamp running", "version", a.cfg.Version, "jid", a.cfg.XMPP.JID,
		"eid", a.cfg.XMPP.EID.String(), "manager", a.ManagerAddr())
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-errc:
			break loop
		case ev := <-a.events:
			a.handle(ctx, ev)
		case ev := <-a.members:
			a.memberEvent(ev)
		}
	}
	cancel()
	a.asks.close()
	// Keep draining events until the client has stopped, so it never blocks.
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	for {
		select {
		case <-a.events:
		case <-done:
			a.core.Stop()
			return err
		}
	}
}

// keepRestored writes to the store the own states the first resync
// restored from the cluster (items, buddies' copies) rather than from the
// store: after a damaged store was set aside, or a power loss took its
// last changes, so that the next restart has them even if the XMPP server
// lost every item. What the store holds already is not written again.
func (a *Agent) keepRestored() {
	a.ownMu.Lock()
	defer a.ownMu.Unlock()
	before := a.store.Stats().Records
	ds, ms := a.core.OwnStates()
	for _, d := range ds {
		if err := a.store.PutDevice(d.Device, uint8(d.State), d.Cachable); err != nil {
			a.log.Error("own state not saved", "name", d.Device, "err", err)
			return
		}
	}
	for _, m := range ms {
		if err := a.store.PutMailbox(m.Mailbox, m.Counts.New, m.Counts.Old); err != nil {
			a.log.Error("own state not saved", "name", m.Mailbox, "err", err)
			return
		}
	}
	if n := a.store.Stats().Records - before; n > 0 {
		a.log.Info("own states restored from the cluster saved to the store", "saved", n)
	}
}

// closeStore syncs and closes the store once nothing writes to it any more.
func (a *Agent) closeStore() {
	if a.store == nil {
		return
	}
	if err := a.store.Close(); err != nil {
		a.log.Error("state store close", "err", err)
	}
}

// goRun runs f on a goroutine that Run waits for before it returns.
func (a *Agent) goRun(f func()) {
	a.wg.Add(1)
	go func() { defer a.wg.Done(); f() }()
}

func (a *Agent) handle(ctx context.Context, ev pubsub.Event) {
	switch ev := ev.(type) {
	case pubsub.DeviceEvent:
		a.eventsIn.add(ev.Item.Publisher)
		a.core.RemoteDevice(ev.Item)
	case pubsub.MailboxEvent:
		a.eventsIn.add(ev.Item.Publisher)
		a.core.RemoteMailbox(ev.Item)
	case pubsub.Presence:
		if a.core.Presence(ev.JID, ev.Online) && ev.Online && a.booted() && a.settled.Load() {
			// A buddy came (back): what it holds now is exact only from it;
			// and if it does not answer (Asterisk), it learns ours only
			// from notifications.
			a.asks.add(ev.JID, askStates)
			a.buddyBack(ctx, ev.JID)
		}
		status := "unavailable"
		if ev.Available {
			status = "available"
			if ev.Show != "" {
				status = ev.Show
			}
		}
		a.buddiesChanged()
		a.ami.Emit(manager.BuddyStatus(
			manager.Header{Key: "JID", Value: bareJID(ev.JID)},
			manager.Header{Key: "Resource", Value: resourceOf(ev.JID)},
			manager.Header{Key: "Status", Value: status},
			manager.Header{Key: "Priority", Value: fmt.Sprint(ev.Priority)},
		))
	case pubsub.Connected:
		a.log.Info("xmpp connected", "jid", ev.JID, "devices", len(ev.Devices), "mailboxes", len(ev.Mailboxes))
		a.core.Resync(ev.Devices, ev.Mailboxes)
		a.buddiesChanged()
		a.syncOnce.Do(func() { close(a.synced) })
		a.startResync(ctx)
	case pubsub.Disconnected:
		a.log.Warn("xmpp disconnected", "err", ev.Err)
		a.cancelResync()
		a.core.Disconnected()
		a.buddiesChanged()
	case pubsub.OwnStatesRequest:
		// Answered off this loop: the answer is written to the socket,
		// and may first wait for our own states to be restored.
		select {
		case a.answers <- heldRequest{req: ev, until: a.clock.Now().Add(a.cfg.ResyncTimeout / 2)}:
		default:
			a.log.Warn("states request dropped: too many waiting", "from", ev.From, "max", maxWaitingAnswers)
		}
	case pubsub.Retracted:
		a.log.Debug("item retracted", "node", ev.Node, "id", ev.ID) // routine on ejabberd: an item is retracted before another account overwrites it
	case pubsub.Purged:
		// Someone (Asterisk's 'xmpp purge nodes') removed every item: our
		// own states are in no item any more.
		a.log.Info("node purged; republishing own states", "node", ev.Node)
		if a.booted() && ev.Kind != pubsub.KindUnknown {
			a.core.Republish()
		}
	case pubsub.Deleted:
		a.log.Warn("node deleted", "node", ev.Node)
	}
}

func (a *Agent) booted() bool {
	select {
	case <-a.core.Booted():
		return true
	default:
		return false
	}
}

// amiSink turns cluster-wide changes into AMI events.
type amiSink struct {
	s    *manager.Server
	hops hop.Func
}

func (s amiSink) DeviceChanged(device string, st devstate.State) {
	if s.hops != nil {
		s.hops(hop.Merged, device, time.Now())
	}
	s.s.Emit(manager.DeviceStateChange(device, st))
}

func (s amiSink) MailboxChanged(mailbox string, c mwi.Counts) {
	s.s.Emit(manager.MessageWaiting(mailbox, c))
}
