package pubsub

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/busylamp/busylamp/devstate"
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
	Address  string // serverhost[:port]; empty: the JID's domain; port 5222 when missing
	Service  string // pubsub_node, e.g. pubsub.example.org

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

	EID devstate.EID // this server's entity id; must not be zero

	IQTimeout    time.Duration // every IQ (default 10 s)
	PingInterval time.Duration // XEP-0199 ping to the server (default 10 s)
	// PublishWindow is the number of unanswered publishes after which
	// further publishes are coalesced per device or mailbox (default 32).
	PublishWindow int

	Logger *slog.Logger // default slog.Default()
	Trace  bool         // log every stanza at debug level ("xmpp set debug on")

	// OwnStates returns this server's own states; they are republished
	// after every (re)connect. Called without any pubsub lock held. May be nil.
	OwnStates func() ([]DeviceItem, []MailboxItem)
}

// DefaultConfig returns the defaults Asterisk's xmpp.conf implies.
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
		PublishWindow: 32,
	}
}

// DeviceItem is one server's state of one device, as published or received.
type DeviceItem struct {
	Device    string
	State     devstate.State
	Cachable  bool
	EID       devstate.EID
	Publisher string // the publishing JID when the server exposes it, else ""
}

// MailboxItem is one server's counts of one mailbox.
type MailboxItem struct {
	Mailbox   string
	Counts    mwi.Counts
	EID       devstate.EID
	Publisher string
}

// Limits on what is accepted from the wire; anything beyond is logged and
// dropped.
const (
	MaxNameLen  = 256       // bytes of a device name, mailbox or item id
	MaxCount    = 1_000_000 // NEWMSGS / OLDMSGS
	maxStanza   = 4 << 20   // bytes of one incoming stanza
	maxStateLen = 32        // bytes of a state name
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
}

func (cfg Config) validate() (*settings, error) {
	s := &settings{Config: cfg}
	j, err := parseJID(cfg.JID)
	if err != nil {
		return nil, fmt.Errorf("username %q: %w", cfg.JID, err)
	}
	if j.local == "" {
		return nil, fmt.Errorf("username %q: want user@domain/resource", cfg.JID)
	}
	if j.resource == "" {
		j.resource = "busylamp"
	}
	s.bare, s.domain, s.resource = j.bare(), j.domain, j.resource
	s.JID = j.full()
	if cfg.Service == "" {
		return nil, errors.New("pubsub_node: missing (the PubSub service, e.g. pubsub." + j.domain + ")")
	}
	if _, err := parseJID(cfg.Service); err != nil {
		return nil, fmt.Errorf("pubsub_node %q: %w", cfg.Service, err)
	}
	s.addr = cfg.Address
	if s.addr == "" {
		s.addr = j.domain
	}
	if _, _, err := net.SplitHostPort(s.addr); err != nil {
		s.addr = net.JoinHostPort(strings.Trim(s.addr, "[]"), "5222")
	}
	if _, p, _ := net.SplitHostPort(s.addr); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return nil, fmt.Errorf("serverhost/port %q: bad port", cfg.Address)
		}
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
		bj, err := parseJID(b)
		if err != nil {
			return nil, fmt.Errorf("buddy %q: %w", b, err)
		}
		if !seen[bj.bare()] {
			seen[bj.bare()] = true
			s.buddies = append(s.buddies, bj.bare())
		}
	}
	if s.IQTimeout <= 0 {
		s.IQTimeout = 10 * time.Second
	}
	if s.PingInterval <= 0 {
		s.PingInterval = 10 * time.Second
	}
	if s.PublishWindow <= 0 {
		s.PublishWindow = 32
	}
	s.subCheck = time.Minute
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("jid", s.JID)
	return s, nil
}

// jid is a parsed JID. Only the checks busylamp needs are made: the parts
// are non-empty where required and within RFC 7622's lengths.
type jid struct{ local, domain, resource string }

func parseJID(s string) (jid, error) {
	var j jid
	rest := s
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		j.resource = rest[i+1:]
		rest = rest[:i]
		if j.resource == "" {
			return j, errors.New("empty resource")
		}
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		j.local = rest[:i]
		rest = rest[i+1:]
		if j.local == "" {
			return j, errors.New("empty local part")
		}
	}
	j.domain = strings.ToLower(strings.TrimSuffix(rest, "."))
	if j.domain == "" {
		return j, errors.New("empty domain")
	}
	if len(j.local) > 1023 || len(j.domain) > 1023 || len(j.resource) > 1023 {
		return j, errors.New("part longer than 1023 bytes")
	}
	if strings.ContainsAny(j.local, "\"&'/:<>@ ") || strings.ContainsAny(j.domain, "@/ ") {
		return j, errors.New("bad character")
	}
	// Local parts compare case-insensitively (nodeprep), so keep them
	// lower-case; resources are case-sensitive.
	j.local = strings.ToLower(j.local)
	return j, nil
}

func (j jid) bare() string {
	if j.local == "" {
		return j.domain
	}
	return j.local + "@" + j.domain
}

func (j jid) full() string {
	if j.resource == "" {
		return j.bare()
	}
	return j.bare() + "/" + j.resource
}

// bareOf returns the bare form of s, or "" when s is not a JID.
func bareOf(s string) string {
	j, err := parseJID(s)
	if err != nil {
		return ""
	}
	return j.bare()
}
