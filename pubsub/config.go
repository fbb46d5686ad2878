package pubsub

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"github.com/busylamp/busylamp/mwi"
)

// The PubSub nodes Asterisk's res_xmpp uses (PROTOCOL.md). In XEP-0248 mode
// they are collections and every device or mailbox is a leaf in one of them.
const (
	NodeDevices   = "device_state"
	NodeMailboxes = "message_waiting"
)

// Config is one XMPP client account and how it takes part in the cluster.
// The field comments name the xmpp.conf key each one comes from.
type Config struct {
	JID      string // username: full JID user@domain/resource (a missing resource becomes "busylamp")
	Password string // secret
	Address  string // serverhost[:port], or "host1:port1, host2" tried in order; one name without a port: DNS SRV (xmppstream.Resolve); empty: the JID's domain
	Service  string // pubsub_node, e.g. pubsub.example.org; empty: discovered at every connect (XEP-0030)

	UseTLS      bool   // usetls: STARTTLS, verified against the system roots and TLSCAFile
	UseSASL     bool   // usesasl: always true in effect (legacy XEP-0078 auth is not spoken)
	TLSCAFile   string // PEM file of extra trusted CAs
	TLSInsecure bool   // skip certificate verification (logged at every connect)

	Status        string // status: available, chat, away, xa (xaway), dnd
	StatusMessage string // statusmessage
	Priority      int    // priority, -128..127

	Buddies      []string // buddy: JIDs of the other servers (full or bare; compared bare)
	AutoRegister bool     // autoregister: add buddies to the roster and ask for their presence
	AutoPrune    bool     // autoprune: remove roster entries that are not buddies
	AuthPolicy   string   // auth_policy: "accept" (default) or "deny" incoming subscription requests

	// CollectionNodes selects XEP-0248 mode (collection_nodes).
	CollectionNodes bool
	// AutoCreate is pubsub_autocreate, accepted for compatibility: busylamp
	// always creates a missing node (at connect, and on item-not-found),
	// and makes every buddy an owner of both nodes at every connect.
	AutoCreate bool
	// NoItems is pubsub_persist_items = no: the nodes busylamp creates
	// keep no items (pubsub#persist_items 0, send_last_published_item
	// never). ejabberd lets only the account that created an item
	// overwrite it, and Asterisk's res_xmpp crashes on that refusal
	// (asterisk/asterisk#1236); on a node that keeps no items ejabberd
	// checks nothing and every publish is notified. A (re)connecting
	// agent then reads no items: it learns its busylamp buddies' states
	// from them, an Asterisk node's when they change.
	NoItems bool

	EID devstate.EID // this server's entity id; must not be zero

	IQTimeout    time.Duration // every IQ (default 10 s)
	PingInterval time.Duration // XEP-0199 ping to the server (default 10 s)
	// PublishWindow is the number of unanswered publishes after which
	// further publishes are coalesced per device or mailbox (default 32).
	PublishWindow int
	// Resolver looks up the SRV records and host names of Address; nil
	// is the system's (tests point it at a DNS server of their own).
	Resolver *net.Resolver

	Logger *slog.Logger // default slog.Default()
	Trace  bool         // log every stanza at debug level ("xmpp set debug on")
	// Hops, when set, is told when a device's publish was written and
	// when a device's notification was read (make bench's per-hop
	// breakdown).
	Hops hop.Func
	// ObservePublish, when set, is told each publish's round trip
	// (written → the service's answer); ObserveEcho the time from a
	// publish written to its notification read back (the end-to-end lag
	// through the service). Called on the client's goroutines; must not
	// block.
	ObservePublish func(time.Duration)
	ObserveEcho    func(time.Duration)

	// OwnStates returns this server's own states; they are republished
	// after every (re)connect. Called without any pubsub lock held. May be nil.
	OwnStates func() ([]DeviceItem, []MailboxItem)
}

// DefaultConfig returns the defaults Asterisk's xmpp.conf implies.
// DefaultPublishWindow is Config.PublishWindow's default.
const DefaultPublishWindow = 32

func DefaultConfig() Config {
	return Config{
		UseTLS:        true,
		UseSASL:       true,
		Status:        "available",
		Priority:      1,
		AutoRegister:  true,
		AuthPolicy:    "accept",
		IQTimeout:     10 * time.Second,
		PingInterval:  10 * time.Second,
		PublishWindow: DefaultPublishWindow,
	}
}

// DeviceItem is one server's state of one device, as published or
// received; MailboxItem one server's counts of one mailbox.
type (
	DeviceItem  = devstate.Item
	MailboxItem = mwi.Item
)

// Limits on what is accepted from the wire; anything beyond is logged and
// dropped.
const (
	MaxNameLen  = devstate.MaxNameLen // bytes of a device name, mailbox or item id (devstate's rule)
	MaxCount    = mwi.MaxCount        // NEWMSGS / OLDMSGS (mwi's rule)
	maxStateLen = 32                  // bytes of a state name
)

// settings is a validated Config with its derived values.
type settings struct {
	Config
	bare, domain, resource string
	addr                   string
	buddies                []string // bare, deduplicated, without self
	show                   string   // <show/> value, "" for available
	log                    *slog.Logger
	subCheck               time.Duration // how often the subscriptions are checked
	onlyMech               string        // tests: use this SASL mechanism only
	onCheck                func(error)   // tests: called with each subscription check's result
	probeEvery             time.Duration // how often more preferred targets are probed while on another
	trace                  atomic.Bool   // Trace, switched at run time by SetTrace
}

// streamConfig is what the stream needs of the settings.
func (s *settings) streamConfig() xmppstream.Config {
	return xmppstream.Config{
		Addr: s.addr, JID: s.JID, Password: s.Password,
		UseTLS: s.UseTLS, TLSCAFile: s.TLSCAFile, TLSInsecure: s.TLSInsecure, Mechanism: s.onlyMech,
		IQTimeout: s.IQTimeout, PingInterval: s.PingInterval, Resolver: s.Resolver,
		Logger: s.log, Trace: &s.trace,
	}
}

func (cfg Config) validate() (*settings, error) {
	s := &settings{Config: cfg}
	s.trace.Store(cfg.Trace)
	j, err := jid.Parse(cfg.JID)
	if err != nil {
		return nil, fmt.Errorf("username %q: %w", cfg.JID, err)
	}
	if j.Local == "" {
		return nil, fmt.Errorf("username %q: want user@domain/resource", cfg.JID)
	}
	if j.Resource == "" {
		j.Resource = "busylamp"
	}
	s.bare, s.domain, s.resource = j.Bare(), j.Domain, j.Resource
	s.JID = j.String()
	if _, err := jid.Parse(cfg.Service); cfg.Service != "" && err != nil {
		return nil, fmt.Errorf("pubsub_node %q: %w", cfg.Service, err)
	}
	s.addr = strings.TrimSpace(cfg.Address)
	if s.addr == "" {
		s.addr = j.Domain
	}
	if _, err := jid.SplitServers(s.addr); err != nil {
		return nil, fmt.Errorf("serverhost/port %q: %w", cfg.Address, err)
	}
	switch strings.ToLower(cfg.Status) {
	case "", "available":
	case "chat", "away", "dnd":
		s.show = strings.ToLower(cfg.Status)
	case "xa", "xaway":
		s.show = "xa"
	default:
		return nil, fmt.Errorf("status %q: want available, chat, away, xa or dnd", cfg.Status)
	}
	if cfg.Priority < -128 || cfg.Priority > 127 {
		return nil, fmt.Errorf("priority %d: want -128..127", cfg.Priority)
	}
	switch strings.ToLower(cfg.AuthPolicy) {
	case "", "accept":
		s.AuthPolicy = "accept"
	case "deny":
		s.AuthPolicy = "deny"
	default:
		return nil, fmt.Errorf("auth_policy %q: want accept or deny", cfg.AuthPolicy)
	}
	if cfg.EID.IsZero() {
		return nil, errors.New("eid: not set")
	}
	seen := map[string]bool{s.bare: true}
	for _, b := range cfg.Buddies {
		bj, err := jid.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("buddy %q: %w", b, err)
		}
		if !seen[bj.Bare()] {
			seen[bj.Bare()] = true
			s.buddies = append(s.buddies, bj.Bare())
		}
	}
	if s.IQTimeout <= 0 {
		s.IQTimeout = 10 * time.Second
	}
	if s.PingInterval <= 0 {
		s.PingInterval = 10 * time.Second
	}
	if s.PublishWindow <= 0 {
		s.PublishWindow = DefaultPublishWindow
	}
	s.subCheck = 5 * time.Second
	s.probeEvery = probeEvery
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("jid", s.JID)
	return s, nil
}
