// Package config owns busylamp's configuration file: an Asterisk xmpp.conf
// or jabber.conf (which must load unchanged) plus busylamp's own [agent],
// [manager], [metrics], [http] and [cluster] sections. One reader takes the
// file apart by Asterisk's own syntax (scan.go: every line with its file
// and line, through #include, #tryinclude, #exec and templates, whose
// rules include.go and scan.go give), the values become typed structs in
// one place (Parse), then the whole is checked (Validate), and every
// problem is reported at once as FILE:LINE errors. Keys lists every key of
// every section with its default; the readers accept exactly those.
// Secrets never appear in any message or printed form.
//
// Which section is what follows Asterisk's res_xmpp: [general] holds the
// global keys, and every other section is a client (or, with
// type=component, a component); busylamp reserves the names [agent],
// [manager], [metrics], [http] and [cluster], and a template ([name](!))
// is no section at all. busylamp uses the one client with
// distribute_events=yes. Keys Asterisk knows but busylamp does not use are
// warnings; a key nobody knows is an error.
//
// The package does no network I/O. Load and Locate read the file system,
// and so do Load and Parse for the files a config #includes; #exec runs a
// command, and only when the top-level file's [general] has
// execincludes = yes.
package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
)

// Config is everything busylamp reads from its file.
type Config struct {
	File    string // the path it was read from; "" when built in code
	General General
	Client  Client // the client section with distribute_events=yes
	Agent   Agent
	Manager Manager
	Metrics Metrics
	HTTP    HTTP
	Cluster Cluster

	src *scanned // where each section and key stands, for Validate
}

// General is Asterisk's [general] section.
type General struct {
	Debug            bool
	AutoPrune        bool
	AutoRegister     bool
	CollectionNodes  bool // XEP-0248 collection nodes
	PubSubAutoCreate bool
	// PubSubNoItems is pubsub_persist_items = no: nodes are created
	// keeping no items.
	PubSubNoItems bool
	AuthPolicy    AuthPolicy
	// ExecIncludes is whether #exec ran commands: execincludes = yes in
	// [general] of the top-level file itself (include.go).
	ExecIncludes bool
	LogFormat    string // LogText or LogJSON
}

// The log_format values.
const (
	LogText = "text"
	LogJSON = "json"
)

// AuthPolicy says what to do with a subscription request from a stranger.
type AuthPolicy string

// The auth_policy values.
const (
	AuthAccept AuthPolicy = "accept"
	AuthDeny   AuthPolicy = "deny"
)

// Client is the client section busylamp connects with. Debug, AutoPrune,
// AutoRegister and AuthPolicy are the effective values: the section's own,
// else [general]'s, as Asterisk merges them (Debug is on if either says so).
type Client struct {
	Name             string // the section name, e.g. "asterisk"
	ServerHost       string // one server or a list, "host1:port1, host2" (see Addr)
	Port             int
	PortSet          bool   // port was given: no SRV lookup
	Username         string // user@domain[/resource], as written; see FullJID
	Secret           Secret
	PubSubNode       string // the PubSub service, e.g. pubsub.example.org
	Priority         int
	UseTLS           bool // STARTTLS
	UseSASL          bool
	TLSCAFile        string // busylamp: CA file to verify the server with
	TLSInsecure      bool   // busylamp: do not verify the server's certificate
	Buddies          []string
	Status           string // available, chat, away, xa, dnd or unavailable
	StatusMessage    string
	DistributeEvents bool
	Debug            bool
	AutoPrune        bool
	AutoRegister     bool
	AuthPolicy       AuthPolicy
}

// FullJID is the JID to bind: Username, with Asterisk's default resource
// "asterisk-xmpp" when it has none.
func (c Client) FullJID() string {
	if c.Username == "" || strings.Contains(c.Username, "/") {
		return c.Username
	}
	return c.Username + "/" + defaultResource
}

// Addr is where busylamp connects, in pubsub.Config.Address's form:
// serverhost's servers, each with port's value when it names no port of
// its own. A single host name without a port, and no port key, stays
// alone: its SRV records are looked up at every connect (SRV reports
// this), else the name is tried at the default port.
func (c Client) Addr() string {
	hs, err := jid.SplitServers(c.ServerHost)
	if err != nil {
		return net.JoinHostPort(strings.Trim(c.ServerHost, "[]"), strconv.Itoa(c.Port))
	}
	if c.SRV() {
		return hs[0].Host
	}
	parts := make([]string, len(hs))
	for i, h := range hs {
		if h.Port == 0 {
			h.Port = c.Port
		}
		parts[i] = h.String()
	}
	return strings.Join(parts, ", ")
}

// SRV reports whether the server is found through DNS SRV records:
// serverhost is one host name (not an address) without a port, and port
// is not set.
func (c Client) SRV() bool {
	hs, err := jid.SplitServers(c.ServerHost)
	return err == nil && len(hs) == 1 && hs[0].Port == 0 && !hs[0].IsIP() && !c.PortSet
}

// Agent is busylamp's [agent] section.
type Agent struct {
	EID        EID // zero: derive one from the host (devstate.DeriveEID)
	Stale      Stale
	StaleGrace time.Duration
	MWIMerge   MWIMerge
	MaxDevices int    // own room, remote room, twice an account's share; the same for mailboxes (agent/core/room.go)
	StateDir   string // this node's own states, kept across crashes (an absolute path)
	// The filters are res_pjsip_publish_asterisk's: a device or mailbox
	// this node publishes must match the *Filter pattern, one another
	// server published must match the *Accept pattern to be taken in. A
	// nil Pattern lets everything pass.
	DeviceStateFilter  *Pattern
	MailboxStateFilter *Pattern
	DeviceStateAccept  *Pattern
	MailboxStateAccept *Pattern
}

// Stale says what happens to a server's states when it leaves.
type Stale string

// The stale values.
const (
	StaleExpire Stale = "expire"
	StaleKeep   Stale = "keep"
)

// MWIMerge says how one mailbox's counts from several servers combine.
type MWIMerge string

// The mwi_merge values.
const (
	MWILatest MWIMerge = "latest"
	MWISum    MWIMerge = "sum"
)

// Manager is busylamp's [manager] section: the AMI-style socket.
type Manager struct {
	BindAddr string // an IP address
	Port     int
	Username string
	Secret   Secret
	// ACL is the permit= and deny= lines, in file order; the socket
	// applies them as Asterisk's manager.conf does (the last matching
	// line decides; an address no line matches is permitted).
	ACL []ACLRule
	// TLSCert and TLSKey are PEM files; with both set the socket speaks
	// TLS. TLSCA is for the client commands: the CA file they verify the
	// agent's certificate with; empty means TLSCert itself (a
	// self-signed certificate).
	TLSCert string
	TLSKey  string
	TLSCA   string
	// AuthTimeout and AuthLimit are Asterisk's manager.conf authtimeout
	// (seconds a connection may take to log in) and authlimit
	// (connections not logged in at once).
	AuthTimeout time.Duration
	AuthLimit   int
}

// ACLRule is one permit= or deny= line.
type ACLRule struct {
	Permit bool
	Net    netip.Prefix
}

// TLS reports whether the socket speaks TLS.
func (m Manager) TLS() bool { return m.TLSCert != "" && m.TLSKey != "" }

// CAFile is the file the client commands verify the agent with.
func (m Manager) CAFile() string {
	if m.TLSCA != "" {
		return m.TLSCA
	}
	return m.TLSCert
}

// Addr is bindaddr:port.
func (m Manager) Addr() string { return net.JoinHostPort(m.BindAddr, strconv.Itoa(m.Port)) }

// Metrics is busylamp's [metrics] section: Prometheus metrics over HTTP.
type Metrics struct {
	Bind string // IP:port; "" (the default) turns metrics off
}

// Enabled reports whether metrics are served.
func (m Metrics) Enabled() bool { return m.Bind != "" }

// HTTP is busylamp's [http] section: the live lamp field page.
type HTTP struct {
	// Bind is IP:port; "" (the default) turns the page off. Off
	// loopback the page asks for the [manager] login.
	Bind string
}

// Enabled reports whether the page is served.
func (h HTTP) Enabled() bool { return h.Bind != "" }

// Cluster is busylamp's [cluster] section: gossip membership.
type Cluster struct {
	Bind      string   // IP:port; "" turns gossip off
	Advertise string   // IP:port, or "" for memberlist's choice
	Join      []string // host:port of members to join
	Secret    SecretKey
	Profile   Profile
}

// Enabled reports whether gossip membership is configured.
func (c Cluster) Enabled() bool { return c.Bind != "" }

// Profile picks memberlist's timing defaults.
type Profile string

// The profile values.
const (
	ProfileLAN Profile = "lan"
	ProfileWAN Profile = "wan"
)

// Defaults that are not Asterisk's.
const (
	DefaultStaleGrace  = 10 * time.Second
	DefaultMaxDevices  = devstate.DefaultMaxDevices
	DefaultStateDir    = "/var/lib/busylamp"
	DefaultManagerPort = 5039
	DefaultAuthTimeout = 10 * time.Second // Asterisk's is 30; a client logs in at once
	DefaultAuthLimit   = 50               // Asterisk's authlimit

	maxAuthTimeout     = 5 * time.Minute
	maxAuthLimit       = 10000
	maxSecretLen       = 1024 // an AMI line is 8 KiB; a secret is far shorter
	maxACLLines        = 256
	DefaultClusterPort = 7946
	DefaultMetricsPort = 9638
	DefaultHTTPPort    = 8088
	DefaultXMPPPort    = 5222

	maxFileSize    = 1 << 20
	maxStaleGrace  = 24 * time.Hour
	maxMaxDevices  = 10000000
	defaultStatus  = "available"
	defaultMessage = "Online and Available"
)

// DefaultConfig returns the values of every key that the file leaves out:
// Asterisk's defaults for its keys, busylamp's for its own.
func DefaultConfig() *Config {
	return &Config{
		General: General{AutoRegister: true, AuthPolicy: AuthAccept, LogFormat: LogText},
		Client:  defaultClient(),
		Agent: Agent{
			Stale:      StaleExpire,
			StaleGrace: DefaultStaleGrace,
			MWIMerge:   MWILatest,
			MaxDevices: DefaultMaxDevices,
			StateDir:   DefaultStateDir,
		},
		Manager: Manager{BindAddr: "127.0.0.1", Port: DefaultManagerPort,
			AuthTimeout: DefaultAuthTimeout, AuthLimit: DefaultAuthLimit},
		Cluster: Cluster{Profile: ProfileLAN},
	}
}

func defaultClient() Client {
	return Client{
		Port:          DefaultXMPPPort,
		Priority:      1,
		UseTLS:        true,
		UseSASL:       true,
		Status:        defaultStatus,
		StatusMessage: defaultMessage,
		AutoRegister:  true,
		AuthPolicy:    AuthAccept,
	}
}

// Load reads, parses and validates the file at path. The warnings come back
// even when err is non-nil. err is an Errors listing every problem, each
// naming the file and line.
func Load(path string) (cfg *Config, warnings []Issue, err error) {
	src, err := readFile(path)
	if err != nil {
		return nil, nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(path, src)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the caller names the file
		}
		return nil, fmt.Errorf("cannot read: %w", err)
	}
	if len(src) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return src, nil
}

// Parse reads a config from src, then validates it; file names it in
// messages. The warnings come back even when err is non-nil; cfg is nil
// when err is.
//
// The file's #include, #tryinclude and #exec directives read the files
// they name (relative to file's directory) and run the commands (only with
// execincludes = yes); include.go has the rules.
func Parse(file string, src []byte) (cfg *Config, warnings []Issue, err error) {
	return parse(file, src, osSources(execTimeout))
}

func parse(file string, src []byte, so *sources) (cfg *Config, warnings []Issue, err error) {
	r := &report{file: file}
	cfg = read(file, src, r, so)
	if verr := cfg.Validate(); verr != nil {
		var list Errors
		if errors.As(verr, &list) {
			r.errs = append(r.errs, list...)
		}
	}
	r.errs = sortIssues(r.errs, cfg.src.files)
	r.warnings = sortIssues(r.warnings, cfg.src.files)
	if r.err() != nil {
		return nil, r.warnings, r.err()
	}
	return cfg, r.warnings, nil
}

// sortIssues orders by file, in the order the files were first read
// (files), then by line; issues about the whole file go last. An issue
// found twice (a template's bad line, copied into two sections) is listed
// once.
func sortIssues(l []Issue, files map[string]int) []Issue {
	rank := func(f string) int {
		if n, ok := files[f]; ok {
			return n
		}
		return len(files)
	}
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Line, l[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		if fa, fb := rank(l[i].File), rank(l[j].File); fa != fb {
			return fa < fb
		}
		return a < b
	})
	out := l[:0]
	seen := map[Issue]bool{}
	for _, is := range l {
		if !seen[is] {
			seen[is] = true
			out = append(out, is)
		}
	}
	return out
}

// value is one key's occurrence.
type value struct {
	key string
	pos
	value     string
	seq       int  // keyPos.seq
	inherited bool // copied from a template
}

// read is the one place where the file becomes a Config.
func read(file string, src []byte, r *report, so *sources) *Config {
	cfg := DefaultConfig()
	cfg.File = file
	s := scan(src, r, so)
	cfg.src = s

	// Asterisk applies [general] before the clients, wherever it stands.
	for _, sec := range s.sections {
		if strings.EqualFold(sec.name, "general") {
			readGeneral(&cfg.General, values(sec), r)
		}
	}
	cfg.General.ExecIncludes = s.execOK
	var clients []*clientSection
	for _, sec := range s.sections {
		vals := values(sec)
		switch sectionKind(sec.name) {
		case "general":
		case "agent":
			readAgent(&cfg.Agent, vals, r)
		case "manager":
			readManager(&cfg.Manager, vals, r)
		case "metrics":
			readBind(&cfg.Metrics.Bind, "metrics", DefaultMetricsPort, vals, r)
		case "http":
			readBind(&cfg.HTTP.Bind, "http", DefaultHTTPPort, vals, r)
		case "cluster":
			readCluster(&cfg.Cluster, vals, r)
		default:
			clients = append(clients, readClient(sec, vals, cfg.General, r))
		}
	}
	if c := chooseClient(clients, r); c != nil {
		cfg.Client = c.Client
		if cfg.Client.PubSubNode == "" && cfg.Client.Username != "" {
			if j, err := jid.ParseAccount(cfg.Client.Username); err == nil {
				r.warnf(c.pos, "pubsub_node", "not set in [%s]; the PubSub service is discovered on %s at every connect (XEP-0030)", c.Name, j.Domain)
			}
		}
	} else {
		cfg.Client = Client{}
	}
	return cfg
}

// values lists a section's keys in order of first appearance, each
// occurrence in file order.
func values(sec *sectionPos) []value {
	var out []value
	for _, k := range sec.order {
		for _, o := range sec.keys[k] {
			out = append(out, value{key: k, pos: o.pos, value: o.value, seq: o.seq, inherited: o.inherited})
		}
	}
	return out
}

// last keeps the last occurrence of every key except those in multi, as
// Asterisk's last assignment wins, and warns about each repeat (but not
// about a line that overrides a template's).
func last(vals []value, multi string, r *report) []value {
	seen := map[string]int{}
	var out []value
	for _, v := range vals {
		if v.key == multi {
			out = append(out, v)
			continue
		}
		if i, ok := seen[v.key]; ok {
			if !v.inherited && !out[i].inherited {
				r.warnf(v.pos, v.key, "repeated (also on %s); the last one is used", where(out[i].pos, v.pos))
			}
			out[i] = v
			continue
		}
		seen[v.key] = len(out)
		out = append(out, v)
	}
	return out
}

func boolKey(v value, dst *bool, r *report) bool {
	b, ok := parseBool(v.value)
	if !ok {
		r.errorf(v.pos, v.key, "bad boolean %q: want yes or no", v.value)
		return false
	}
	*dst = b
	return true
}

func authPolicy(v value, dst *AuthPolicy, r *report) bool {
	switch p := AuthPolicy(strings.ToLower(v.value)); p {
	case AuthAccept, AuthDeny:
		*dst = p
		return true
	}
	r.errorf(v.pos, v.key, "bad auth_policy %q: want accept or deny", v.value)
	return false
}

// Keys of [general], which Asterisk also takes in a client section (there
// they override [general] for that client) except the two PubSub ones.
func readGeneral(g *General, vals []value, r *report) {
	for _, v := range last(vals, "", r) {
		if _, ok := accept("general", "[general]", v, r); !ok {
			continue
		}
		switch v.key {
		case "debug":
			boolKey(v, &g.Debug, r)
		case "autoprune":
			boolKey(v, &g.AutoPrune, r)
		case "autoregister":
			boolKey(v, &g.AutoRegister, r)
		case "collection_nodes":
			boolKey(v, &g.CollectionNodes, r)
		case "pubsub_autocreate":
			boolKey(v, &g.PubSubAutoCreate, r)
		case "pubsub_persist_items":
			keep := true
			if boolKey(v, &keep, r) {
				g.PubSubNoItems = !keep
			}
		case "auth_policy":
			authPolicy(v, &g.AuthPolicy, r)
		case "execincludes":
			// Only checked here: scan has read it from the top-level
			// file already (read sets General.ExecIncludes).
			var on bool
			boolKey(v, &on, r)
		case "log_format":
			switch f := strings.ToLower(v.value); f {
			case LogText, LogJSON:
				g.LogFormat = f
			default:
				r.errorf(v.pos, v.key, "bad value %q: want text or json", v.value)
			}
		default:
			unread(v, r)
		}
	}
}

// clientSection is one client (or component) section as read.
type clientSection struct {
	Client
	pos       // the section's first header
	component bool
}

func readClient(sec *sectionPos, vals []value, g General, r *report) *clientSection {
	c := &clientSection{Client: defaultClient(), pos: sec.pos}
	c.Name = sec.name
	var debug bool
	var setPrune, setRegister, setPolicy bool
	seenBuddy := map[string]pos{} // canonical JID → where
	var buddies []buddyLine
	label := fmt.Sprintf("client section [%s]", c.Name)
	for _, v := range last(vals, "buddy", r) {
		d, ok := accept(ClientSection, label, v, r)
		if !ok {
			continue
		}
		if d.Ignored {
			r.warnf(v.pos, v.key, "%s", d.Doc)
			continue
		}
		switch v.key {
		case "type":
			switch strings.ToLower(v.value) {
			case "client":
			case "component":
				c.component = true
			default:
				r.errorf(v.pos, v.key, "bad type %q: want client", v.value)
			}
		case "serverhost":
			if _, err := jid.SplitServers(v.value); err != nil {
				r.errorf(v.pos, v.key, "bad server host %q: %v", v.value, err)
			} else {
				c.ServerHost = v.value
			}
		case "port":
			if p, err := parsePort(v.value); err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				c.Port, c.PortSet = p, true
			}
		case "username":
			if _, err := jid.ParseAccount(v.value); err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				c.Username = v.value
			}
		case "secret":
			if checkSecret(v, r) {
				c.Secret = Secret(v.value)
			}
		case "pubsub_node":
			if v.value == "" {
				break
			}
			if err := jid.CheckHost(v.value); err != nil {
				r.errorf(v.pos, v.key, "bad PubSub service %q: %v", v.value, err)
			} else {
				c.PubSubNode = v.value
			}
		case "priority":
			p, err := strconv.Atoi(v.value)
			if err != nil || p < -128 || p > 127 {
				r.errorf(v.pos, v.key, "bad priority %q: want -128 to 127", v.value)
			} else {
				c.Priority = p
			}
		case "usetls":
			boolKey(v, &c.UseTLS, r)
		case "usesasl":
			boolKey(v, &c.UseSASL, r)
		case "tls_ca":
			c.TLSCAFile = v.value
		case "tls_insecure":
			boolKey(v, &c.TLSInsecure, r)
		case "buddy":
			j, err := jid.ParseAccount(v.value)
			if err != nil {
				r.errorf(v.pos, v.key, "%v", err)
				break
			}
			// Compared in canonical form, so that one account is not
			// bound twice under two spellings (NODE2@example.org.).
			if first, dup := seenBuddy[j.String()]; dup {
				r.warnf(v.pos, v.key, "buddy %q repeated (first on %s); listed once", v.value, where(first, v.pos))
				break
			}
			seenBuddy[j.String()] = v.pos
			buddies = append(buddies, buddyLine{v, j})
		case "status":
			if st, ok := parseStatus(v.value); ok {
				c.Status = st
				if st == "unavailable" {
					r.warnf(v.pos, v.key, "buddies will see this node as offline and may expire its states")
				}
			} else {
				r.errorf(v.pos, v.key, "bad status %q: want available, chat, away, xaway, dnd or unavailable", v.value)
			}
		case "statusmessage":
			c.StatusMessage = unquote(v.value)
		case "distribute_events":
			boolKey(v, &c.DistributeEvents, r)
		case "debug":
			boolKey(v, &debug, r)
		case "autoprune":
			setPrune = boolKey(v, &c.AutoPrune, r)
		case "autoregister":
			setRegister = boolKey(v, &c.AutoRegister, r)
		case "auth_policy":
			setPolicy = authPolicy(v, &c.AuthPolicy, r)
		default:
			unread(v, r)
		}
	}
	c.Buddies = otherBuddies(buddies, c.Username, r)
	c.Debug = g.Debug || debug
	if !setPrune {
		c.AutoPrune = g.AutoPrune
	}
	if !setRegister {
		c.AutoRegister = g.AutoRegister
	}
	if !setPolicy {
		c.AuthPolicy = g.AuthPolicy
	}
	if !c.UseTLS && (c.TLSCAFile != "" || c.TLSInsecure) {
		r.warnf(c.pos, "usetls", "tls_ca and tls_insecure have no effect in [%s] with usetls=no", c.Name)
	}
	if !c.UseSASL {
		r.warnf(c.pos, "usesasl", "busylamp always authenticates with SASL in [%s]; usesasl=no is ignored", c.Name)
	}
	return c
}

// buddyLine is one buddy= line that parsed.
type buddyLine struct {
	v   value
	jid jid.JID
}

// otherBuddies lists the buddies as written, except those that are the
// client's own account in any spelling (another resource, capitals, a
// trailing dot): the client never binds its own account as a buddy, so
// such a line is warned about and left out rather than passed on. username
// may come after the buddy lines, so this runs once the section is read.
func otherBuddies(buddies []buddyLine, username string, r *report) []string {
	self, err := jid.ParseAccount(username)
	var out []string
	for _, b := range buddies {
		if username != "" && err == nil && b.jid.Bare() == self.Bare() {
			r.warnf(b.v.pos, b.v.key, "buddy %q is this client's own account (username %q); ignored", b.v.value, username)
			continue
		}
		out = append(out, b.v.value)
	}
	return out
}

// parseStatus reads the presence status as Asterisk's res_xmpp does and
// returns its XMPP <show> name ("available" and "unavailable" for none).
func parseStatus(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "available", "online":
		return "available", true
	case "chat", "chatty":
		return "chat", true
	case "away":
		return "away", true
	case "xa", "xaway":
		return "xa", true
	case "dnd", "invisible": // Asterisk builds without invisible use dnd
		return "dnd", true
	case "unavailable":
		return "unavailable", true
	}
	return "", false
}

// unquote drops one pair of double quotes around a status message, which
// Asterisk's sample writes (statusmessage="I am available").
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// chooseClient picks the first client with distribute_events=yes.
func chooseClient(cs []*clientSection, r *report) *clientSection {
	var chosen *clientSection
	for _, c := range cs {
		switch {
		case c.component && c.DistributeEvents:
			r.errorf(c.pos, "type", "section [%s] is a component; busylamp distributes events only over type=client", c.Name)
		case c.component:
			r.warnf(c.pos, "type", "section [%s] is a component; busylamp supports only clients and ignores it", c.Name)
		case !c.DistributeEvents:
			r.warnf(c.pos, "", "client section [%s] does not have distribute_events=yes; busylamp ignores it", c.Name)
		case chosen != nil:
			r.warnf(c.pos, "distribute_events", "client section [%s] also distributes events; busylamp uses only [%s]", c.Name, chosen.Name)
		default:
			chosen = c
		}
	}
	return chosen
}

func readAgent(a *Agent, vals []value, r *report) {
	for _, v := range last(vals, "", r) {
		if _, ok := accept("agent", "[agent]", v, r); !ok {
			continue
		}
		switch v.key {
		case "eid":
			e, err := ParseEID(v.value)
			if err == nil && e.IsZero() {
				err = fmt.Errorf("bad EID %q: all zeros means unset; leave eid out to derive one", v.value)
			}
			if err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				a.EID = e
			}
		case "stale":
			switch s := Stale(strings.ToLower(v.value)); s {
			case StaleExpire, StaleKeep:
				a.Stale = s
			default:
				r.errorf(v.pos, v.key, "bad value %q: want expire or keep", v.value)
			}
		case "stale_grace":
			n, err := strconv.Atoi(v.value)
			d := time.Duration(n) * time.Second
			if err != nil || n < 0 || d > maxStaleGrace {
				r.errorf(v.pos, v.key, "bad value %q: want seconds, 0 to %d", v.value, int(maxStaleGrace/time.Second))
			} else {
				a.StaleGrace = d
			}
		case "mwi_merge":
			switch m := MWIMerge(strings.ToLower(v.value)); m {
			case MWILatest, MWISum:
				a.MWIMerge = m
			default:
				r.errorf(v.pos, v.key, "bad value %q: want latest or sum", v.value)
			}
		case "max_devices":
			n, err := strconv.Atoi(v.value)
			if err != nil || n < 1 || n > maxMaxDevices {
				r.errorf(v.pos, v.key, "bad value %q: want 1 to %d", v.value, maxMaxDevices)
			} else {
				a.MaxDevices = n
			}
		case "state_dir":
			if err := checkStateDir(v.value); err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				a.StateDir = filepath.Clean(v.value)
			}
		case "device_state_filter", "mailbox_state_filter", "device_state_accept", "mailbox_state_accept":
			p, err := ParsePattern(v.value)
			if err != nil {
				r.errorf(v.pos, v.key, "%v", err)
				break
			}
			switch v.key {
			case "device_state_filter":
				a.DeviceStateFilter = p
			case "mailbox_state_filter":
				a.MailboxStateFilter = p
			case "device_state_accept":
				a.DeviceStateAccept = p
			default:
				a.MailboxStateAccept = p
			}
		default:
			unread(v, r)
		}
	}
}

func readManager(m *Manager, vals []value, r *report) {
	var permits, denies int
	var aclAt []pos // where each ACL line stands
	var tlsAt, bindAt pos
	for _, v := range lastACL(vals, r) {
		if _, ok := accept("manager", "[manager]", v, r); !ok {
			continue
		}
		switch v.key {
		case "bindaddr":
			if net.ParseIP(v.value) == nil {
				r.errorf(v.pos, v.key, "bad address %q: want an IP address", v.value)
			} else {
				m.BindAddr = v.value
				bindAt = v.pos
			}
		case "port":
			if p, err := parsePort(v.value); err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				m.Port = p
			}
		case "username":
			if v.value == "" || hasSpaceOrControl(v.value) {
				r.errorf(v.pos, v.key, "bad username %q", v.value)
			} else {
				m.Username = v.value
			}
		case "secret":
			if checkSecret(v, r) {
				m.Secret = Secret(v.value)
			}
		case "permit", "deny":
			if len(m.ACL) >= maxACLLines {
				r.errorf(v.pos, v.key, "more than %d permit and deny lines", maxACLLines)
				break
			}
			p, err := parseACL(v.value)
			if err != nil {
				r.errorf(v.pos, v.key, "%v", err)
				break
			}
			if p != p.Masked() {
				r.warnf(v.pos, v.key, "%s has bits set past its mask; read as %s", v.value, p.Masked())
				p = p.Masked()
			}
			m.ACL = append(m.ACL, ACLRule{Permit: v.key == "permit", Net: p})
			aclAt = append(aclAt, v.pos)
			if v.key == "permit" {
				permits++
			} else {
				denies++
			}
		case "tls_cert":
			m.TLSCert, tlsAt = v.value, v.pos
		case "tls_key":
			m.TLSKey = v.value
		case "tls_ca":
			m.TLSCA = v.value
			if tlsAt == (pos{}) {
				tlsAt = v.pos
			}
		case "authtimeout":
			n, err := strconv.Atoi(v.value)
			d := time.Duration(n) * time.Second
			if err != nil || n < 1 || d > maxAuthTimeout {
				r.errorf(v.pos, v.key, "bad value %q: want seconds, 1 to %d", v.value, int(maxAuthTimeout/time.Second))
			} else {
				m.AuthTimeout = d
			}
		case "authlimit":
			n, err := strconv.Atoi(v.value)
			if err != nil || n < 1 || n > maxAuthLimit {
				r.errorf(v.pos, v.key, "bad value %q: want 1 to %d", v.value, maxAuthLimit)
			} else {
				m.AuthLimit = n
			}
		default:
			unread(v, r)
		}
	}
	if permits > 0 && denies == 0 {
		r.warnf(aclAt[0], "permit", "permit without a deny lets every address in (as in Asterisk, an address no line matches is permitted); add deny=0.0.0.0/0.0.0.0 before it")
	}
	// The last matching line decides, so a deny after a permit that
	// covers it undoes the permit: the usual slip when the lines are
	// written in firewall order.
	for i, a := range m.ACL {
		for j := i + 1; j < len(m.ACL); j++ {
			b := m.ACL[j]
			if a.Permit && !b.Permit && b.Net.Bits() <= a.Net.Bits() && b.Net.Contains(a.Net.Addr()) {
				r.warnf(aclAt[j], "deny", "undoes permit=%s on %s: the last matching line decides, so put deny lines first", a.Net, where(aclAt[i], aclAt[j]))
				break
			}
		}
	}
	if m.TLSCA != "" && m.TLSCert == "" {
		r.warnf(tlsAt, "tls_ca", "has no effect without tls_cert and tls_key: the socket does not speak TLS")
	}
	if ip := net.ParseIP(m.BindAddr); ip != nil && !ip.IsLoopback() && !m.TLS() {
		r.warnf(bindAt, "bindaddr", "%s is not a loopback address and [manager] has no tls_cert and tls_key: the secret and every action cross the network in clear", m.BindAddr)
	}
}

// lastACL is last for [manager]: permit and deny lines all count, in
// file order (values lists each key's lines together, so they are put
// back in line order), the other keys' last line wins.
func lastACL(vals []value, r *report) []value {
	var acl, other []value
	for _, v := range vals {
		if v.key == "permit" || v.key == "deny" {
			acl = append(acl, v)
		} else {
			other = append(other, v)
		}
	}
	sort.SliceStable(acl, func(i, j int) bool { return acl[i].seq < acl[j].seq })
	return append(last(other, "", r), acl...)
}

// parseACL reads an ACL line's network as Asterisk does: an address alone
// (one host), address/prefix-length, or an IPv4 address/dotted netmask.
func parseACL(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, mask, hasMask := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("bad address %q: want IP, IP/bits or IPv4/netmask", s)
	}
	ip = ip.Unmap()
	if !hasMask {
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	if n, err := strconv.Atoi(mask); err == nil {
		if n < 0 || n > ip.BitLen() {
			return netip.Prefix{}, fmt.Errorf("bad mask in %q: want 0 to %d bits", s, ip.BitLen())
		}
		return netip.PrefixFrom(ip, n), nil
	}
	m, err := netip.ParseAddr(mask)
	if err != nil || !m.Is4() || !ip.Is4() {
		return netip.Prefix{}, fmt.Errorf("bad mask in %q: want bits, or a dotted netmask for IPv4", s)
	}
	b := m.As4()
	bits := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for n < 32 && bits&(1<<(31-n)) != 0 {
		n++
	}
	if n < 32 && bits<<n != 0 {
		return netip.Prefix{}, fmt.Errorf("bad mask in %q: the netmask is not contiguous", s)
	}
	return netip.PrefixFrom(ip, n), nil
}

// checkSecret is the rule for a secret's value: no control character
// (nobody could type it, and it would end or break the AMI line or the
// SASL exchange) and at most maxSecretLen bytes. The value is never put in
// the message.
func checkSecret(v value, r *report) bool {
	for i, c := range v.value {
		if unicode.IsControl(c) {
			r.errorf(v.pos, v.key, "contains a control character (U+%04X at byte %d); the secret is not shown", c, i)
			return false
		}
	}
	if len(v.value) > maxSecretLen {
		r.errorf(v.pos, v.key, "longer than %d bytes", maxSecretLen)
		return false
	}
	return true
}

// readBind reads a section whose one key is bind = IP[:port] (port def);
// an empty value, like no line, leaves it off.
func readBind(dst *string, sec string, def int, vals []value, r *report) {
	for _, v := range last(vals, "", r) {
		if _, ok := accept(sec, "["+sec+"]", v, r); !ok {
			continue
		}
		switch v.key {
		case "bind":
			if v.value == "" {
				*dst = ""
				break
			}
			if hp, err := hostPort(v.value, def, true); err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else {
				*dst = hp
			}
		default:
			unread(v, r)
		}
	}
}

func readCluster(c *Cluster, vals []value, r *report) {
	for _, v := range last(vals, "", r) {
		if _, ok := accept("cluster", "[cluster]", v, r); !ok {
			continue
		}
		switch v.key {
		case "bind", "advertise":
			if v.value == "" {
				break
			}
			hp, err := hostPort(v.value, DefaultClusterPort, true)
			if err != nil {
				r.errorf(v.pos, v.key, "%v", err)
			} else if v.key == "bind" {
				c.Bind = hp
			} else {
				c.Advertise = hp
			}
		case "join":
			c.Join = nil
			for _, m := range strings.Split(v.value, ",") {
				if m = strings.TrimSpace(m); m == "" {
					continue
				}
				hp, err := hostPort(m, DefaultClusterPort, false)
				if err != nil {
					r.errorf(v.pos, v.key, "%v", err)
					continue
				}
				c.Join = append(c.Join, hp)
			}
		case "secret":
			// Never echoed, not even when it is malformed.
			k, err := base64.StdEncoding.DecodeString(v.value)
			if err != nil {
				r.errorf(v.pos, v.key, "not valid base64")
			} else if len(k) != 16 && len(k) != 24 && len(k) != 32 {
				r.errorf(v.pos, v.key, "key is %d bytes: want 32 (or 16 or 24), base64-encoded", len(k))
			} else {
				c.Secret = SecretKey(k)
			}
		case "profile":
			switch p := Profile(strings.ToLower(v.value)); p {
			case ProfileLAN, ProfileWAN:
				c.Profile = p
			default:
				r.errorf(v.pos, v.key, "bad profile %q: want lan or wan", v.value)
			}
		default:
			unread(v, r)
		}
	}
}
