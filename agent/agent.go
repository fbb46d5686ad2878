// Package agent wires busylamp together: this node's own states come in
// from the AMI socket and the CLI and go out to XMPP PubSub; every other
// server's publications come in from PubSub and update the per-server
// tables; every change of a cluster-wide state goes out to the AMI
// sessions. It also decides when a departed server's states expire.
//
// The tables are owned by the Agent and guarded by one mutex that is held
// only briefly and never across network I/O: publishing and emitting events
// are non-blocking hand-offs (the publisher coalesces, the AMI fan-out drops
// slow readers), so doing them under the lock keeps per-device order without
// ever waiting on the network.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// DeviceItem and MailboxItem are one server's state of a device or a
// mailbox, as PubSub carries them.
type (
	DeviceItem  = pubsub.DeviceItem
	MailboxItem = pubsub.MailboxItem
)

// Stale says what happens to a server's states when it leaves.
type Stale int

const (
	// StaleExpire drops a departed server's states after the grace period.
	StaleExpire Stale = iota
	// StaleKeep keeps them, as Asterisk does.
	StaleKeep
)

// Options configure the agent core.
type Options struct {
	EID        devstate.EID
	JID        string // this node's full JID
	Stale      Stale
	StaleGrace time.Duration
	MWIMerge   mwi.Merge
	MaxDevices int // bound on devices, and on mailboxes
	Log        *slog.Logger
	Now        func() time.Time // for tests; time.Now when nil
}

// Publisher sends this node's own states to the cluster. Both calls must not
// block: the PubSub client coalesces.
type Publisher interface {
	PublishDevice(device string, s devstate.State, cachable bool)
	PublishMailbox(mailbox string, c mwi.Counts)
}

// Sink receives every change of a cluster-wide state, in order per device
// and per mailbox, while the agent holds its lock. It must not block.
type Sink interface {
	DeviceChanged(device string, s devstate.State)
	MailboxChanged(mailbox string, c mwi.Counts)
}

// Limits on what remote input may make the agent hold.
const (
	maxServers     = 4096            // remote EIDs tracked
	maxEIDsPerJID  = 16              // EIDs one account may speak for
	maxCount       = pubsub.MaxCount // NEWMSGS / OLDMSGS, as the wire takes them
	unknownBuddyID = "(unknown)"
)

// Agent holds the cluster state of one node.
type Agent struct {
	opt Options
	log *slog.Logger
	now func() time.Time

	mu        sync.Mutex
	devices   *devstate.Table
	mailboxes *mwi.Table
	pub       Publisher
	sink      Sink
	servers   map[devstate.EID]*server // remote servers seen, by EID
	jids      map[string]*peer         // remote accounts, by bare JID
	spoofed   uint64                   // payloads dropped for claiming another JID's EID
	warn      warnLimiter              // remote input may not flood the log

	// Own states restored after a restart rather than set by the PBX:
	// from the PubSub items first, then from what buddies hold of ours,
	// which overrides the items (a buddy's copy is the last notification
	// it had; Prosody's memory store can hand out stale items). A set by
	// the PBX ends it. Bounded by the tables.
	restoredDev map[string]struct{}
	restoredBox map[string]struct{}

	booted   chan struct{}
	bootOnce sync.Once
}

// server is a remote server, known by its EID.
type server struct {
	eid    devstate.EID
	jid    string // bare JID it is bound to; "" until known
	seen   time.Time
	member bool // gossip says it is alive: presence does not expire it
}

// peer is a remote XMPP account (bare JID) and what we know of its presence.
type peer struct {
	jid       string
	resources map[string]bool // available resources
	eids      map[devstate.EID]struct{}
	expiry    *time.Timer
	gen       uint64 // invalidates an expiry timer that fired late
}

// ErrBadName is returned for an empty or oversized device or mailbox name.
var ErrBadName = errors.New("bad name")

// New makes an agent core. Publisher and Sink may be nil (no-ops) and set
// later with Attach.
func New(opt Options) *Agent {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxDevices <= 0 {
		opt.MaxDevices = 200000
	}
	if opt.StaleGrace < 0 {
		opt.StaleGrace = 0
	}
	return &Agent{
		opt:       opt,
		log:       opt.Log,
		now:       opt.Now,
		devices:   devstate.NewTable(opt.MaxDevices),
		mailboxes: mwi.NewTable(opt.MWIMerge, opt.MaxDevices),
		pub:       nopPublisher{},
		sink:      nopSink{},
		servers:   make(map[devstate.EID]*server),
		jids:      make(map[string]*peer),
		booted:    make(chan struct{}),

		restoredDev: make(map[string]struct{}),
		restoredBox: make(map[string]struct{}),
	}
}

// Attach sets where own states are published and where changes go.
func (a *Agent) Attach(p Publisher, s Sink) {
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
func (a *Agent) EID() devstate.EID { return a.opt.EID }

// Booted is closed once the agent holds the full cluster state after start.
func (a *Agent) Booted() <-chan struct{} { return a.booted }

// MarkBooted closes Booted; later calls do nothing.
func (a *Agent) MarkBooted() { a.bootOnce.Do(func() { close(a.booted) }) }

// checkName applies the wire's rule for names (pubsub.CheckName), so that
// what is accepted here can also be published.
func checkName(kind, name string) error {
	if err := pubsub.CheckName(name); err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrBadName, kind, name, err)
	}
	return nil
}

// SetDeviceState sets this node's state of device and publishes it.
func (a *Agent) SetDeviceState(device string, s devstate.State) error {
	if err := checkName("device", device); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	agg, changed, err := a.devices.Set(device, a.opt.EID, s, true, a.now())
	if err != nil {
		return fmt.Errorf("set %s: %w", device, err)
	}
	delete(a.restoredDev, device)
	if changed {
		a.sink.DeviceChanged(device, agg)
	}
	a.pub.PublishDevice(device, s, true)
	return nil
}

// SetMailbox sets this node's counts of mailbox and publishes them.
func (a *Agent) SetMailbox(mailbox string, c mwi.Counts) error {
	if err := checkName("mailbox", mailbox); err != nil {
		return err
	}
	if c.New < 0 || c.Old < 0 || c.New > maxCount || c.Old > maxCount {
		return fmt.Errorf("mailbox %s: counts out of range (0 to %d)", mailbox, maxCount)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	agg, changed, err := a.mailboxes.Set(mailbox, a.opt.EID, c, a.now())
	if err != nil {
		return fmt.Errorf("set %s: %w", mailbox, err)
	}
	delete(a.restoredBox, mailbox)
	if changed {
		a.sink.MailboxChanged(mailbox, agg)
	}
	a.pub.PublishMailbox(mailbox, c)
	return nil
}

// DeleteMailbox drops this node's counts of mailbox. The cluster hears
// zero counts, which is what Asterisk nodes understand: under Asterisk's
// newest-wins rule a later zero must clear the lamp, so remote nodes keep
// it as this server's counts rather than forgetting the entry.
func (a *Agent) DeleteMailbox(mailbox string) error {
	if err := checkName("mailbox", mailbox); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.holdsMailboxLocked(mailbox, a.opt.EID) {
		return fmt.Errorf("mailbox %s: not set on this node", mailbox)
	}
	a.deleteMailboxLocked(mailbox, a.opt.EID)
	delete(a.restoredBox, mailbox)
	a.pub.PublishMailbox(mailbox, mwi.Counts{})
	return nil
}

func (a *Agent) deleteMailboxLocked(mailbox string, eid devstate.EID) {
	agg, changed, gone := a.mailboxes.Delete(mailbox, eid)
	if !changed {
		return
	}
	if gone {
		agg = mwi.Counts{}
	}
	a.sink.MailboxChanged(mailbox, agg)
}

// DeviceState is the cluster-wide state of device.
func (a *Agent) DeviceState(device string) (devstate.State, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.devices.Get(device)
}

// Mailbox is the cluster-wide counts of mailbox.
func (a *Agent) Mailbox(mailbox string) (mwi.Counts, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mailboxes.Get(mailbox)
}

// DeviceView is one device as the CLI shows it.
type DeviceView struct {
	Device  string
	State   devstate.State
	Servers []ServerState
}

// ServerState is one server's contribution to a device.
type ServerState struct {
	EID      devstate.EID
	JID      string
	State    devstate.State
	Cachable bool
	Updated  time.Time
}

// Devices lists every device, sorted, with per-server detail when detail
// is set.
func (a *Agent) Devices(detail bool) []DeviceView {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := a.devices.List()
	out := make([]DeviceView, 0, len(list))
	for _, d := range list {
		v := DeviceView{Device: d.Device, State: d.State}
		if detail {
			for _, e := range a.devices.Entries(d.Device) {
				v.Servers = append(v.Servers, ServerState{EID: e.EID, JID: a.jidOfLocked(e.EID), State: e.State, Cachable: e.Cachable, Updated: e.Updated})
			}
		}
		out = append(out, v)
	}
	return out
}

// Device is one device with its per-server detail.
func (a *Agent) Device(device string) (DeviceView, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, ok := a.devices.Get(device)
	if !ok {
		return DeviceView{}, false
	}
	v := DeviceView{Device: device, State: st}
	for _, e := range a.devices.Entries(device) {
		v.Servers = append(v.Servers, ServerState{EID: e.EID, JID: a.jidOfLocked(e.EID), State: e.State, Cachable: e.Cachable, Updated: e.Updated})
	}
	return v, true
}

// MailboxView is one mailbox as the CLI shows it.
type MailboxView struct {
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

// MailboxDetail is one mailbox with its per-server counts.
func (a *Agent) MailboxDetail(mailbox string) (MailboxView, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.mailboxes.Get(mailbox)
	if !ok {
		return MailboxView{}, false
	}
	v := MailboxView{Mailbox: mailbox, Counts: c}
	for _, e := range a.mailboxes.Entries(mailbox) {
		eid := devstate.EID(e.Server)
		v.Servers = append(v.Servers, MailboxServer{EID: eid, JID: a.jidOfLocked(eid), Counts: e.Counts, Updated: e.Updated})
	}
	return v, true
}

// Mailboxes lists every mailbox, sorted.
func (a *Agent) Mailboxes(detail bool) []MailboxView {
	a.mu.Lock()
	defer a.mu.Unlock()
	list := a.mailboxes.List()
	out := make([]MailboxView, 0, len(list))
	for _, m := range list {
		v := MailboxView{Mailbox: m.Mailbox, Counts: m.Counts}
		if detail {
			for _, e := range a.mailboxes.Entries(m.Mailbox) {
				eid := devstate.EID(e.Server)
				v.Servers = append(v.Servers, MailboxServer{EID: eid, JID: a.jidOfLocked(eid), Counts: e.Counts, Updated: e.Updated})
			}
		}
		out = append(out, v)
	}
	return out
}

func (a *Agent) jidOfLocked(eid devstate.EID) string {
	if eid == a.opt.EID {
		return bareJID(a.opt.JID)
	}
	if s, ok := a.servers[eid]; ok && s.jid != "" {
		return s.jid
	}
	return unknownBuddyID
}

// OwnStates are this node's own device states and mailbox counts: what it
// republishes after (re)connecting and what it answers a buddy's request
// with.
func (a *Agent) OwnStates() ([]DeviceItem, []MailboxItem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.statesOfLocked(a.opt.EID)
}

func (a *Agent) statesOfLocked(eid devstate.EID) ([]DeviceItem, []MailboxItem) {
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

func (a *Agent) holdsDeviceLocked(device string, eid devstate.EID) bool {
	for _, e := range a.devices.Entries(device) {
		if e.EID == eid {
			return true
		}
	}
	return false
}

func (a *Agent) holdsMailboxLocked(mailbox string, eid devstate.EID) bool {
	for _, e := range a.mailboxes.Entries(mailbox) {
		if devstate.EID(e.Server) == eid {
			return true
		}
	}
	return false
}

// Republish sends all own states again (after a reconnect).
func (a *Agent) Republish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	ds, ms := a.statesOfLocked(a.opt.EID)
	for _, d := range ds {
		a.pub.PublishDevice(d.Device, d.State, d.Cachable)
	}
	for _, m := range ms {
		a.pub.PublishMailbox(m.Mailbox, m.Counts)
	}
}

// Stats are counters for `show` commands and tests.
type Stats struct {
	Devices, Mailboxes, Servers int
	Spoofed                     uint64
}

// Stats reports table sizes and counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return Stats{Devices: a.devices.Len(), Mailboxes: a.mailboxes.Len(), Servers: len(a.servers), Spoofed: a.spoofed}
}

// ServerInfo is one remote server as `show` commands list it.
type ServerInfo struct {
	EID  devstate.EID
	JID  string
	Seen time.Time
}

// Servers lists the remote servers seen, sorted by EID.
func (a *Agent) Servers() []ServerInfo {
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

// bareJID strips the resource of a JID and folds its case: local part and
// domain compare without case (as the servers and pubsub's parser treat
// them), while a config may spell them with capitals.
func bareJID(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		jid = jid[:i]
	}
	return strings.ToLower(jid)
}

// resourceOf is the resource part of a JID, "" if none.
func resourceOf(jid string) string {
	if i := strings.IndexByte(jid, '/'); i >= 0 {
		return jid[i+1:]
	}
	return ""
}
