// Package core holds the rules of one busylamp node: the per-server tables
// of device states and mailboxes, their cluster-wide merge, the binding of
// each server's EID to the account that speaks for it, the expiry of a
// departed server's states (the stale policy), and the bookkeeping of a
// resync (what PubSub items and a buddy's own-states answer restore). It
// does no I/O: its clock and timers are injected (Config.Clock), what it
// publishes goes to a Publisher and every cluster-wide change to a Sink,
// both non-blocking hand-offs.
//
// The tables are guarded by one mutex that is held only briefly and never
// across network I/O: publishing and emitting events are non-blocking
// hand-offs (the publisher coalesces, the AMI fan-out drops slow readers),
// so doing them under the lock keeps per-device order without ever waiting
// on the network.
package core

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/mwi"
)

// DeviceItem is one server's state of a device, as PubSub carries it;
// MailboxItem one server's counts of a mailbox.
type (
	DeviceItem  = devstate.Item
	MailboxItem = mwi.Item
)

// Stale says what happens to a server's states when it leaves.
type Stale int

const (
	// StaleExpire drops a departed server's states after the grace period.
	StaleExpire Stale = iota
	// StaleKeep keeps them, as Asterisk does.
	StaleKeep
)

// Config configures the core. Start from DefaultConfig.
type Config struct {
	EID        devstate.EID
	JID        string // this node's full JID
	Stale      Stale
	StaleGrace time.Duration
	MWIMerge   mwi.Merge
	MaxDevices int     // bound on own devices, on remote ones, and the same on mailboxes (see room.go)
	Filters    Filters // what is shared and taken in; SetFilters changes them
	Log        *slog.Logger
	Clock      Clock
}

// DefaultConfig is the core's configuration when nothing else is said:
// departed servers expire after 10 s, Asterisk's newest-wins MWI rule,
// 200,000 devices, the system clock.
func DefaultConfig() Config {
	return Config{
		Stale:      StaleExpire,
		StaleGrace: 10 * time.Second,
		MWIMerge:   mwi.Latest,
		MaxDevices: devstate.DefaultMaxDevices,
		Log:        slog.Default(),
		Clock:      SystemClock(),
	}
}

// Publisher sends this node's own states to the cluster. Both calls must not
// block: the PubSub client coalesces.
type Publisher interface {
	PublishDevice(device string, s devstate.State, cachable bool)
	PublishMailbox(mailbox string, c mwi.Counts)
}

// Republisher is a Publisher that queues a republish behind live changes
// (pubsub.Client does): Republish uses it when the Publisher has it, so
// that sending every own state again delays no change made meanwhile.
type Republisher interface {
	RepublishDevice(device string, s devstate.State, cachable bool)
	RepublishMailbox(mailbox string, c mwi.Counts)
}

// Sink receives every change of a cluster-wide state, in order per device
// and per mailbox, while the core holds its lock. It must not block.
type Sink interface {
	DeviceChanged(device string, s devstate.State)
	MailboxChanged(mailbox string, c mwi.Counts)
}

// Limits on what remote input may make the core hold.
const (
	maxServers     = 4096 // remote EIDs tracked
	maxEIDsPerJID  = 16   // EIDs one account may speak for
	unknownBuddyID = "(unknown)"
)

// Core holds the cluster state of one node.
type Core struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	self  jid.JID // this node's JID, parsed

	mu        sync.Mutex
	devices   *devstate.Table
	mailboxes *mwi.Table
	pub       Publisher
	sink      Sink
	servers   map[devstate.EID]*server // remote servers seen, by EID
	jids      map[string]*peer         // remote accounts, by bare JID
	spoofed   uint64                   // payloads dropped for claiming another JID's EID
	admitDev  devstate.Admit           // a.admitDevice, made once: no closure per Set
	admitBox  mwi.Admit                // a.admitMailbox
	refused   map[source]*refusal      // remote entries refused for want of room, by source; at most maxServers+1
	refusedN  uint64                   // their total
	warn      warnLimiter              // remote input may not flood the log
	lastStamp time.Time                // see stampLocked

	// Own states restored after a restart rather than set by the PBX:
	// from the PubSub items first, then from what buddies hold of ours,
	// which overrides the items (a buddy's copy is the last notification
	// it had; Prosody's memory store can hand out stale items). A set by
	// the PBX ends it. Bounded by the tables.
	restoredDev map[string]struct{}
	restoredBox map[string]struct{}
	// Own mailboxes the PBX deleted: see deletedBoxes.
	deletedBox deletedBoxes

	filters  Filters     // SetFilters
	filtered FilterStats // what they held back

	// Servers that answered a states request before the first items
	// were read (over gossip, while XMPP still connects): their answers
	// are exact, and the items, which may be older, do not override them.
	// Bounded by maxServers; itemsRead ends it for good.
	answeredEarly map[devstate.EID]struct{}
	itemsRead     bool

	booted   chan struct{}
	bootOnce sync.Once
}

// server is a remote server, known by its EID.
type server struct {
	eid       devstate.EID
	jid       string // bare JID it is bound to; "" until known
	publisher string // the publisher JID, as spelled, last accepted for it
	seen      time.Time
	member    bool // gossip says it is alive: presence does not expire it
}

// peer is a remote XMPP account (bare JID) and what we know of its
// presence. Which of its resources are online is the XMPP client's to
// know (its roster); the core keeps only whether any is.
type peer struct {
	jid    string
	online bool
	eids   map[devstate.EID]struct{}
	expiry Timer
	gen    uint64 // invalidates an expiry timer that fired late
}

// ErrBadName is returned for an empty or oversized device or mailbox name.
var ErrBadName = errors.New("bad name")

// New makes a core. Publisher and Sink are no-ops until Attach. A zero
// Log or Clock is taken from DefaultConfig; other zero values are used as
// they are (a zero StaleGrace expires at once).
func New(cfg Config) *Core {
	def := DefaultConfig()
	if cfg.Log == nil {
		cfg.Log = def.Log
	}
	if cfg.Clock == nil {
		cfg.Clock = def.Clock
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = def.MaxDevices
	}
	cfg.StaleGrace = max(cfg.StaleGrace, 0)
	self, _ := jid.Parse(cfg.JID) // checked by the config; a bad one matches nothing
	a := &Core{
		cfg:   cfg,
		log:   cfg.Log,
		clock: cfg.Clock,
		self:  self,
		// The hard bound: the own room and the remote room (room.go).
		devices:   devstate.NewTable(2 * cfg.MaxDevices),
		mailboxes: mwi.NewTable(cfg.MWIMerge, 2*cfg.MaxDevices),
		pub:       nopPublisher{},
		sink:      nopSink{},
		servers:   make(map[devstate.EID]*server),
		jids:      make(map[string]*peer),
		refused:   make(map[source]*refusal),
		booted:    make(chan struct{}),

		restoredDev: make(map[string]struct{}),
		restoredBox: make(map[string]struct{}),
		deletedBox:  newDeletedBoxes(min(cfg.MaxDevices, maxDeletedBoxes)),
		filters:     cfg.Filters,
	}
	a.admitDev, a.admitBox = a.admitDevice, a.admitMailbox
	return a
}

func (a *Core) now() time.Time { return a.clock.Now() }

// stampLocked is the time an update is held under: the clock's time, but
// always after the previous stamp. Which update is newer (Asterisk's MWI
// rule, a states answer against a publication that overtook it) is then
// the order in which they reached this node, whatever the clock does: a
// step backwards cannot make a later update look older. No remote
// host's clock is ever compared.
func (a *Core) stampLocked() time.Time {
	t := a.clock.Now()
	if !t.After(a.lastStamp) {
		t = a.lastStamp.Add(time.Nanosecond)
	}
	a.lastStamp = t
	return t
}

// Attach sets where own states are published and where changes go.
func (a *Core) Attach(p Publisher, s Sink) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p != nil {
		a.pub = p
	}
	if s != nil {
		a.sink = s
	}
}

// EID is this node's entity id.
func (a *Core) EID() devstate.EID { return a.cfg.EID }

// Booted is closed once the agent holds the full cluster state after start.
func (a *Core) Booted() <-chan struct{} { return a.booted }

// MarkBooted closes Booted; later calls do nothing.
func (a *Core) MarkBooted() { a.bootOnce.Do(func() { close(a.booted) }) }

// checkName applies the one rule for names (devstate.CheckName), so that
// what is accepted here can also be published.
func checkName(kind, name string) error {
	if err := devstate.CheckName(name); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrBadName, kind, name, err)
	}
	return nil
}

// SetDeviceState sets this node's state of device and publishes it.
func (a *Core) SetDeviceState(device string, s devstate.State) error {
	if err := checkName("device", device); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	agg, changed, err := a.devices.SetChecked(device, a.cfg.EID, s, true, a.stampLocked(), a.admitDev)
	if err != nil {
		return fmt.Errorf("set %s: %w", device, err)
	}
	delete(a.restoredDev, device)
	// The publish first: it is on the cluster's latency path, and the
	// local event's hand-over to the AMI writers wakes other threads.
	a.publishDeviceLocked(device, s, true)
	if changed {
		a.sink.DeviceChanged(device, agg)
	}
	return nil
}

// SetMailbox sets this node's counts of mailbox and publishes them.
func (a *Core) SetMailbox(mailbox string, c mwi.Counts) error {
	if err := checkName("mailbox", mailbox); err != nil {
		return err
	}
	if err := c.Check(); err != nil {
		return fmt.Errorf("mailbox %s: %w", mailbox, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	agg, changed, err := a.mailboxes.SetChecked(mailbox, a.cfg.EID, c, a.stampLocked(), a.admitBox)
	if err != nil {
		return fmt.Errorf("set %s: %w", mailbox, err)
	}
	delete(a.restoredBox, mailbox)
	if changed {
		a.sink.MailboxChanged(mailbox, agg)
	}
	a.publishMailboxLocked(mailbox, c)
	return nil
}

// DeleteMailbox drops this node's counts of mailbox. The cluster hears
// zero counts, which is what Asterisk nodes understand: under Asterisk's
// newest-wins rule a later zero must clear the lamp, so remote nodes keep
// it as this server's counts rather than forgetting the entry.
func (a *Core) DeleteMailbox(mailbox string) error {
	if err := checkName("mailbox", mailbox); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.holdsMailboxLocked(mailbox, a.cfg.EID) {
		return fmt.Errorf("mailbox %s: not set on this node", mailbox)
	}
	a.deleteMailboxLocked(mailbox, a.cfg.EID)
	delete(a.restoredBox, mailbox)
	// A reconnect's resync may find the old counts before these zeros
	// reach the server.
	a.deletedBox.add(mailbox, false)
	a.publishMailboxLocked(mailbox, mwi.Counts{})
	return nil
}

func (a *Core) deleteMailboxLocked(mailbox string, eid devstate.EID) {
	agg, changed, gone := a.mailboxes.Remove(mailbox, eid)
	if !changed {
		return
	}
	if gone {
		agg = mwi.Counts{}
	}
	a.sink.MailboxChanged(mailbox, agg)
}

// DeviceState is the cluster-wide state of device.
func (a *Core) DeviceState(device string) (devstate.State, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.devices.Get(device)
}

// MailboxCounts is the cluster-wide counts of mailbox.
func (a *Core) MailboxCounts(mailbox string) (mwi.Counts, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mailboxes.Get(mailbox)
}

// Device is one device as the CLI shows it: its cluster-wide state and
// each server's.
type Device struct {
	Device  string
	State   devstate.State
	Servers []DeviceServer
}

// DeviceServer is one server's state of a device.
type DeviceServer struct {
	EID      devstate.EID
	JID      string
	State    devstate.State
	Cachable bool
	Updated  time.Time
}

// Devices lists every device, sorted, with per-server detail when detail
// is set.
func (a *Core) Devices(detail bool) []Device {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := a.devices.List()
	out := make([]Device, 0, len(list))
	for _, d := range list {
		v := Device{Device: d.Device, State: d.State}
		if detail {
			for _, e := range a.devices.Entries(d.Device) {
				v.Servers = append(v.Servers, DeviceServer{EID: e.EID, JID: a.jidOfLocked(e.EID), State: e.State, Cachable: e.Cachable, Updated: e.Updated})
			}
		}
		out = append(out, v)
	}
	return out
}

// Device is one device with its per-server detail.
func (a *Core) Device(device string) (Device, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, ok := a.devices.Get(device)
	if !ok {
		return Device{}, false
	}
	v := Device{Device: device, State: st}
	for _, e := range a.devices.Entries(device) {
		v.Servers = append(v.Servers, DeviceServer{EID: e.EID, JID: a.jidOfLocked(e.EID), State: e.State, Cachable: e.Cachable, Updated: e.Updated})
	}
	return v, true
}

// Mailbox is one mailbox as the CLI shows it: its cluster-wide counts and
// each server's.
type Mailbox struct {
	Mailbox string
	Counts  mwi.Counts
	Servers []MailboxServer
}

// MailboxServer is one server's counts of a mailbox.
type MailboxServer struct {
	EID     devstate.EID
	JID     string
	Counts  mwi.Counts
	Updated time.Time
}

// Mailbox is one mailbox with its per-server counts.
func (a *Core) Mailbox(mailbox string) (Mailbox, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.mailboxes.Get(mailbox)
	if !ok {
		return Mailbox{}, false
	}
	v := Mailbox{Mailbox: mailbox, Counts: c}
	for _, e := range a.mailboxes.Entries(mailbox) {
		eid := e.EID
		v.Servers = append(v.Servers, MailboxServer{EID: eid, JID: a.jidOfLocked(eid), Counts: e.Counts, Updated: e.Updated})
	}
	return v, true
}

// Mailboxes lists every mailbox, sorted.
func (a *Core) Mailboxes(detail bool) []Mailbox {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := a.mailboxes.List()
	out := make([]Mailbox, 0, len(list))
	for _, m := range list {
		v := Mailbox{Mailbox: m.Mailbox, Counts: m.Counts}
		if detail {
			for _, e := range a.mailboxes.Entries(m.Mailbox) {
				eid := e.EID
				v.Servers = append(v.Servers, MailboxServer{EID: eid, JID: a.jidOfLocked(eid), Counts: e.Counts, Updated: e.Updated})
			}
		}
		out = append(out, v)
	}
	return out
}

func (a *Core) jidOfLocked(eid devstate.EID) string {
	if eid == a.cfg.EID {
		return bareJID(a.cfg.JID)
	}
	if s, ok := a.servers[eid]; ok && s.jid != "" {
		return s.jid
	}
	return unknownBuddyID
}

// OwnStates are this node's own device states and mailbox counts: what it
// republishes after (re)connecting and what it answers a buddy's request
// with.
func (a *Core) OwnStates() ([]DeviceItem, []MailboxItem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statesOfLocked(a.cfg.EID)
}

func (a *Core) statesOfLocked(eid devstate.EID) ([]DeviceItem, []MailboxItem) {
	des := a.devices.ServerEntries(eid)
	ds := make([]DeviceItem, 0, len(des))
	for _, e := range des {
		ds = append(ds, DeviceItem{Device: e.Device, State: e.State, Cachable: e.Cachable, EID: eid})
	}
	mes := a.mailboxes.ServerEntries(eid)
	ms := make([]MailboxItem, 0, len(mes))
	for _, e := range mes {
		ms = append(ms, MailboxItem{Mailbox: e.Mailbox, Counts: e.Counts, EID: eid})
	}
	return ds, ms
}

func (a *Core) holdsDeviceLocked(device string, eid devstate.EID) bool {
	for _, e := range a.devices.Entries(device) {
		if e.EID == eid {
			return true
		}
	}
	return false
}

func (a *Core) holdsMailboxLocked(mailbox string, eid devstate.EID) bool {
	for _, e := range a.mailboxes.Entries(mailbox) {
		if e.EID == eid {
			return true
		}
	}
	return false
}

// Republish sends all own states again (after a reconnect), and the zero
// counts still owed for own mailboxes deleted before a restart
// (ForgetOwnMailboxes).
func (a *Core) Republish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	ds, ms := a.ownSharedLocked(a.statesOfLocked(a.cfg.EID))
	if rp, ok := a.pub.(Republisher); ok {
		for _, d := range ds {
			rp.RepublishDevice(d.Device, d.State, d.Cachable)
		}
		for _, m := range ms {
			rp.RepublishMailbox(m.Mailbox, m.Counts)
		}
		a.republishDeletedLocked(rp.RepublishMailbox)
		return
	}
	for _, d := range ds {
		a.pub.PublishDevice(d.Device, d.State, d.Cachable)
	}
	for _, m := range ms {
		a.pub.PublishMailbox(m.Mailbox, m.Counts)
	}
	a.republishDeletedLocked(a.pub.PublishMailbox)
}

// Stats are counters for `show` commands and tests.
type Stats struct {
	Devices, Mailboxes, Servers int
	Spoofed                     uint64
	// Refused counts the remote states (devices and mailboxes) refused
	// for want of room: their source was past its share, or the remote
	// room was full. RefusedBy splits it per source, sorted.
	Refused   uint64
	RefusedBy []SourceRefused
}

// Stats reports table sizes and counters.
func (a *Core) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Devices: a.devices.Len(), Mailboxes: a.mailboxes.Len(), Servers: len(a.servers), Spoofed: a.spoofed,
		Refused: a.refusedN, RefusedBy: a.refusedBySourceLocked()}
}

// ServerInfo is one remote server as `show` commands list it.
type ServerInfo struct {
	EID  devstate.EID
	JID  string
	Seen time.Time
}

// Servers lists the remote servers seen, sorted by EID.
func (a *Core) Servers() []ServerInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ServerInfo, 0, len(a.servers))
	for _, s := range a.servers {
		out = append(out, ServerInfo{EID: s.eid, JID: s.jid, Seen: s.seen})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EID.String() < out[j].EID.String() })
	return out
}

type nopPublisher struct{}

func (nopPublisher) PublishDevice(string, devstate.State, bool) {}
func (nopPublisher) PublishMailbox(string, mwi.Counts)          {}

type nopSink struct{}

func (nopSink) DeviceChanged(string, devstate.State) {}
func (nopSink) MailboxChanged(string, mwi.Counts)    {}

// bareJID is the canonical bare form of a JID (local part and domain
// without case, no trailing dot), "" when it is not one.
func bareJID(s string) string { return jid.Bare(s) }
