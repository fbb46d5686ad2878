// Package web owns busylamp's two HTTP faces: the live lamp field that the
// config's http section binds (one embedded page, its Server-Sent Events
// stream and a JSON snapshot, read-only, optionally behind HTTP Basic auth)
// and the Prometheus exposition that its metrics section binds (Metrics,
// on a registry of its own). It reads the agent's state through Source and
// hears of changes through Hub's non-blocking methods; it holds no state
// of its own beyond what each connected page has not been sent yet.
package web

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// Source is what the page shows, read when a page connects, when a page
// asks for one device's detail, and for /api/state. Every method may be
// called from any goroutine, never while the Hub holds a lock the agent
// could wait on.
type Source interface {
	// Devices lists every device with its cluster-wide state; Servers may
	// be left empty (the page asks Device for the detail).
	Devices() []core.Device
	// Device is one device with its per-server detail.
	Device(name string) (core.Device, bool)
	// Mailboxes lists every mailbox with its cluster-wide counts.
	Mailboxes() []core.Mailbox
	// Buddies lists the configured XMPP buddies.
	Buddies() []Buddy
	// Members lists the gossip members.
	Members() []Member
}

// Buddy is one XMPP buddy as the page shows it.
type Buddy struct {
	JID          string   `json:"jid"`          // bare JID
	Online       bool     `json:"online"`       // any resource available
	Subscription string   `json:"subscription"` // roster subscription: none, to, from, both
	Resources    []string `json:"resources"`    // connected resources
}

// Member is one gossip member as the page shows it.
type Member struct {
	Name  string    `json:"name"`
	Addr  string    `json:"addr"`  // host:port it gossips on
	State string    `json:"state"` // alive, suspect, dead, left
	JID   string    `json:"jid"`   // the XMPP account it speaks for, if known
	Since time.Time `json:"since"`
}

// Config configures a Hub. Start from DefaultConfig.
type Config struct {
	// Auth, when set, makes every request present HTTP Basic credentials
	// that it accepts. It is called with the user and secret as sent;
	// comparing them in constant time is its job. Nil leaves the page open
	// (what a loopback bind wants).
	Auth func(user, secret string) bool
	// MaxClients bounds the event streams open at once; past it a page
	// gets 503.
	MaxClients int
	// Heartbeat is how often an idle stream gets an SSE comment, so that
	// proxies keep it open.
	Heartbeat time.Duration
	// WriteTimeout bounds one write to a page; a page that does not read
	// for that long is dropped (it reconnects and gets a snapshot).
	WriteTimeout time.Duration
	// MaxPending bounds the changes held for one slow page, per kind;
	// past it the page is sent a full snapshot instead.
	MaxPending int
	Log        *slog.Logger
}

// DefaultConfig is an open page, 64 streams, a heartbeat every 15 s.
func DefaultConfig() Config {
	return Config{
		MaxClients:   64,
		Heartbeat:    15 * time.Second,
		WriteTimeout: 10 * time.Second,
		MaxPending:   4096,
		Log:          slog.Default(),
	}
}

// Hub is the live lamp field: an http.Handler for "/", "/events",
// "/api/state" and "/api/device", and the agent's side of the event
// stream. Its change methods never block: each connected page keeps only
// the latest change per device and per mailbox until its writer sends it.
// Hub satisfies core.Sink.
type Hub struct {
	cfg Config
	src Source
	log *slog.Logger
	mux *http.ServeMux

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // the streams

	mu      sync.Mutex
	clients map[*client]struct{}
	closed  bool
}

var _ core.Sink = (*Hub)(nil)

// NewHub makes a hub that reads src. Zero fields of cfg are taken from
// DefaultConfig.
func NewHub(src Source, cfg Config) *Hub {
	def := DefaultConfig()
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = def.MaxClients
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = def.Heartbeat
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = def.WriteTimeout
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = def.MaxPending
	}
	if cfg.Log == nil {
		cfg.Log = def.Log
	}
	h := &Hub{
		cfg:     cfg,
		src:     src,
		log:     cfg.Log,
		done:    make(chan struct{}),
		clients: make(map[*client]struct{}),
	}
	h.mux = h.routes()
	return h
}

// Close ends every event stream, refuses new ones and waits for their
// handlers to return (at most Config.WriteTimeout, for a stream stuck in
// a write). Call it before the http.Server's Shutdown: a stream is never
// idle, so Shutdown would wait for it otherwise. The page itself keeps
// being served.
func (h *Hub) Close() {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		close(h.done)
	})
	h.wg.Wait()
}

// Clients is the number of event streams open.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// DeviceChanged tells every page that device's cluster-wide state is now s.
// It does not block.
func (h *Hub) DeviceChanged(device string, s devstate.State) {
	h.each(func(c *client) { c.device(device, s, h.cfg.MaxPending) })
}

// MailboxChanged tells every page that mailbox's cluster-wide counts are
// now c. It does not block.
func (h *Hub) MailboxChanged(mailbox string, counts mwi.Counts) {
	h.each(func(c *client) { c.mailbox(mailbox, counts, h.cfg.MaxPending) })
}

// BuddiesChanged tells every page to read Source.Buddies again. It does
// not block.
func (h *Hub) BuddiesChanged() { h.each((*client).buddies) }

// MembersChanged tells every page to read Source.Members again. It does
// not block.
func (h *Hub) MembersChanged() { h.each((*client).members) }

func (h *Hub) each(f func(*client)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		f(c)
	}
}

// join registers a stream, or says why it may not open.
func (h *Hub) join() (*client, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, http.StatusServiceUnavailable
	}
	if len(h.clients) >= h.cfg.MaxClients {
		return nil, http.StatusServiceUnavailable
	}
	c := newClient()
	h.clients[c] = struct{}{}
	h.wg.Add(1)
	return c, 0
}

func (h *Hub) leave(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
	h.wg.Done()
}

// client is one connected page's pending changes: the latest state per
// device and counts per mailbox not yet written, bounded by MaxPending,
// past which the page is sent a full snapshot instead.
type client struct {
	wake chan struct{} // capacity 1: something is pending

	mu        sync.Mutex
	devices   map[string]devstate.State
	mailboxes map[string]mwi.Counts
	buddy     bool // buddies changed
	member    bool // members changed
	resync    bool // too much pending: send a snapshot
}

func newClient() *client {
	return &client{
		wake:      make(chan struct{}, 1),
		devices:   make(map[string]devstate.State),
		mailboxes: make(map[string]mwi.Counts),
	}
}

func (c *client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *client) device(name string, s devstate.State, limit int) {
	c.mu.Lock()
	if !c.resync {
		if _, ok := c.devices[name]; ok || len(c.devices) < limit {
			c.devices[name] = s
		} else {
			c.overflowLocked()
		}
	}
	c.mu.Unlock()
	c.notify()
}

func (c *client) mailbox(name string, counts mwi.Counts, limit int) {
	c.mu.Lock()
	if !c.resync {
		if _, ok := c.mailboxes[name]; ok || len(c.mailboxes) < limit {
			c.mailboxes[name] = counts
		} else {
			c.overflowLocked()
		}
	}
	c.mu.Unlock()
	c.notify()
}

func (c *client) overflowLocked() {
	c.resync = true
	clear(c.devices)
	clear(c.mailboxes)
}

func (c *client) buddies() {
	c.mu.Lock()
	c.buddy = true
	c.mu.Unlock()
	c.notify()
}

func (c *client) members() {
	c.mu.Lock()
	c.member = true
	c.mu.Unlock()
	c.notify()
}

// batch is what a client's writer takes out in one go.
type batch struct {
	devices   map[string]devstate.State
	mailboxes map[string]mwi.Counts
	buddies   bool
	members   bool
	resync    bool
}

func (b batch) empty() bool {
	return !b.resync && !b.buddies && !b.members && len(b.devices) == 0 && len(b.mailboxes) == 0
}

// take empties the pending changes; the maps handed out are replaced, so
// the writer reads them without the lock.
func (c *client) take() batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := batch{buddies: c.buddy, members: c.member, resync: c.resync}
	if len(c.devices) > 0 {
		b.devices = c.devices
		c.devices = make(map[string]devstate.State)
	}
	if len(c.mailboxes) > 0 {
		b.mailboxes = c.mailboxes
		c.mailboxes = make(map[string]mwi.Counts)
	}
	c.buddy, c.member, c.resync = false, false, false
	return b
}
