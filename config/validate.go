package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/busylamp/busylamp/internal/jid"
)

// Validate checks what no single key can: required keys and the rules
// between keys, and the range of every value (for a Config built in code).
// Errors name the file and line when the Config came from a file; the error
// is an Errors with every problem.
func (c *Config) Validate() error {
	r := &report{file: c.File}
	if r.file == "" {
		r.file = "config"
	}
	v := validator{c: c, r: r}
	v.general()
	v.client()
	v.agent()
	v.manager()
	v.binds()
	v.cluster()
	var files map[string]int
	if c.src != nil {
		files = c.src.files
	}
	r.errs = sortIssues(r.errs, files)
	return r.err()
}

type validator struct {
	c *Config
	r *report
}

// sectionAt is where section name starts; the zero pos when the Config
// was not read from a file or has no such section.
func (v validator) sectionAt(name string) pos {
	if v.c.src == nil {
		return pos{}
	}
	if s := v.c.src.lookup(name); s != nil {
		return s.pos
	}
	for _, s := range v.c.src.sections {
		if strings.EqualFold(s.name, name) {
			return s.pos
		}
	}
	return pos{}
}

// keyAt is where key was last set in section name, else where the section
// starts.
func (v validator) keyAt(name, key string) pos {
	if v.c.src != nil {
		for _, s := range v.c.src.sections {
			if strings.EqualFold(s.name, name) {
				if occ := s.keys[key]; len(occ) > 0 {
					return occ[len(occ)-1].pos
				}
			}
		}
	}
	return v.sectionAt(name)
}

func (v validator) hasKey(name, key string) bool {
	if v.c.src == nil {
		return false
	}
	s := v.c.src.lookup(name)
	return s != nil && len(s.keys[key]) > 0
}

// badValue reports whether the file set key in section name to a value
// that the reading already refused (and reported).
func (v validator) badValue(name, key string) bool {
	if v.c.src == nil {
		return false
	}
	s := v.c.src.lookup(name)
	if s == nil {
		return false
	}
	occ := s.keys[key]
	return len(occ) > 0 && occ[len(occ)-1].value != ""
}

func (v validator) general() {
	// "" is text, for a Config built in code without DefaultConfig.
	switch f := v.c.General.LogFormat; f {
	case "", LogText, LogJSON:
	default:
		v.r.errorf(v.keyAt("general", "log_format"), "log_format", "bad value %q: want text or json", f)
	}
}

// binds checks [metrics] and [http]: off (""), or IP:port.
func (v validator) binds() {
	for _, b := range []struct{ sec, val string }{{"metrics", v.c.Metrics.Bind}, {"http", v.c.HTTP.Bind}} {
		if b.val == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(b.val); err != nil {
			v.r.errorf(v.keyAt(b.sec, "bind"), "bind", "bad address %q: want IP:port", b.val)
		} else if _, err := hostPort(b.val, 0, true); err != nil {
			v.r.errorf(v.keyAt(b.sec, "bind"), "bind", "%v", err)
		}
	}
}

func (v validator) client() {
	cl := v.c.Client
	if cl.Name == "" {
		v.r.errorf(pos{}, "", "no client section with distribute_events=yes: busylamp needs one to connect with")
		return
	}
	at := v.sectionAt(cl.Name)
	missing := func(key string) {
		if !v.badValue(cl.Name, key) {
			v.r.errorf(at, key, "missing: client section [%s] needs it", cl.Name)
		}
	}
	if cl.ServerHost == "" {
		missing("serverhost")
	} else if _, err := jid.SplitServers(cl.ServerHost); err != nil {
		v.r.errorf(v.keyAt(cl.Name, "serverhost"), "serverhost", "bad server host %q: %v", cl.ServerHost, err)
	}
	if cl.Username == "" {
		missing("username")
	} else if _, err := jid.ParseAccount(cl.Username); err != nil {
		v.r.errorf(v.keyAt(cl.Name, "username"), "username", "%v", err)
	}
	if !cl.Secret.IsSet() {
		if v.hasKey(cl.Name, "refresh_token") {
			v.r.errorf(at, "secret", "missing: client section [%s] needs it (busylamp does not log in with refresh_token)", cl.Name)
		} else {
			missing("secret")
		}
	}
	if err := checkPort(cl.Port); err != nil {
		v.r.errorf(v.keyAt(cl.Name, "port"), "port", "%v", err)
	}
	if cl.Priority < -128 || cl.Priority > 127 {
		v.r.errorf(v.keyAt(cl.Name, "priority"), "priority", "bad priority %d: want -128 to 127", cl.Priority)
	}
	for _, b := range cl.Buddies {
		if _, err := jid.ParseAccount(b); err != nil {
			v.r.errorf(v.keyAt(cl.Name, "buddy"), "buddy", "%v", err)
		}
	}
	if _, ok := parseStatus(cl.Status); !ok {
		v.r.errorf(v.keyAt(cl.Name, "status"), "status", "bad status %q", cl.Status)
	}
	for _, p := range []AuthPolicy{cl.AuthPolicy, v.c.General.AuthPolicy} {
		if p != AuthAccept && p != AuthDeny {
			v.r.errorf(v.keyAt(cl.Name, "auth_policy"), "auth_policy", "bad auth_policy %q: want accept or deny", p)
		}
	}
}

func (v validator) agent() {
	a := v.c.Agent
	if a.Stale != StaleExpire && a.Stale != StaleKeep {
		v.r.errorf(v.keyAt("agent", "stale"), "stale", "bad value %q: want expire or keep", a.Stale)
	}
	if a.StaleGrace < 0 || a.StaleGrace > maxStaleGrace {
		v.r.errorf(v.keyAt("agent", "stale_grace"), "stale_grace", "bad value %v: want 0 to %v", a.StaleGrace, maxStaleGrace)
	}
	if a.StaleGrace%time.Second != 0 {
		v.r.errorf(v.keyAt("agent", "stale_grace"), "stale_grace", "bad value %v: want whole seconds", a.StaleGrace)
	}
	if a.MWIMerge != MWILatest && a.MWIMerge != MWISum {
		v.r.errorf(v.keyAt("agent", "mwi_merge"), "mwi_merge", "bad value %q: want latest or sum", a.MWIMerge)
	}
	if a.MaxDevices < 1 || a.MaxDevices > maxMaxDevices {
		v.r.errorf(v.keyAt("agent", "max_devices"), "max_devices", "bad value %d: want 1 to %d", a.MaxDevices, maxMaxDevices)
	}
	if err := checkStateDir(a.StateDir); err != nil {
		v.r.errorf(v.keyAt("agent", "state_dir"), "state_dir", "%v", err)
	}
}

// checkStateDir wants an absolute path: the agent's working directory is
// no place to look for its states.
func checkStateDir(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) || strings.ContainsAny(dir, "\x00\n") {
		return fmt.Errorf("bad value %q: want an absolute directory path", dir)
	}
	return nil
}

func (v validator) manager() {
	m := v.c.Manager
	if net.ParseIP(m.BindAddr) == nil {
		v.r.errorf(v.keyAt("manager", "bindaddr"), "bindaddr", "bad address %q: want an IP address", m.BindAddr)
	}
	if err := checkPort(m.Port); err != nil {
		v.r.errorf(v.keyAt("manager", "port"), "port", "%v", err)
	}
	switch {
	case m.Username != "" && !m.Secret.IsSet() && !v.badValue("manager", "secret"):
		v.r.errorf(v.keyAt("manager", "username"), "secret", "missing: [manager] has a username, so it needs a secret")
	case m.Username == "" && m.Secret.IsSet():
		v.r.errorf(v.keyAt("manager", "secret"), "username", "missing: [manager] has a secret, so it needs a username")
	}
	if m.Secret.IsSet() && !v.badValue("manager", "secret") {
		checkSecret(value{key: "secret", pos: v.keyAt("manager", "secret"), value: m.Secret.Reveal()}, v.r)
	}
	switch {
	case m.TLSCert != "" && m.TLSKey == "":
		v.r.errorf(v.keyAt("manager", "tls_cert"), "tls_key", "missing: [manager] has tls_cert, so it needs tls_key")
	case m.TLSCert == "" && m.TLSKey != "":
		v.r.errorf(v.keyAt("manager", "tls_key"), "tls_cert", "missing: [manager] has tls_key, so it needs tls_cert")
	}
	if m.AuthTimeout < time.Second || m.AuthTimeout > maxAuthTimeout || m.AuthTimeout%time.Second != 0 {
		v.r.errorf(v.keyAt("manager", "authtimeout"), "authtimeout", "bad value %v: want whole seconds, 1 s to %v", m.AuthTimeout, maxAuthTimeout)
	}
	if m.AuthLimit < 1 || m.AuthLimit > maxAuthLimit {
		v.r.errorf(v.keyAt("manager", "authlimit"), "authlimit", "bad value %d: want 1 to %d", m.AuthLimit, maxAuthLimit)
	}
	if len(m.ACL) > maxACLLines {
		v.r.errorf(v.keyAt("manager", "permit"), "permit", "%d permit and deny lines: at most %d", len(m.ACL), maxACLLines)
	}
	for _, a := range m.ACL {
		if !a.Net.IsValid() || a.Net != a.Net.Masked() {
			v.r.errorf(v.keyAt("manager", "permit"), "permit", "bad network %v", a.Net)
		}
	}
}

func (v validator) cluster() {
	c := v.c.Cluster
	if c.Profile != ProfileLAN && c.Profile != ProfileWAN {
		v.r.errorf(v.keyAt("cluster", "profile"), "profile", "bad profile %q: want lan or wan", c.Profile)
	}
	if n := len(c.Secret); n != 0 && n != 16 && n != 24 && n != 32 {
		v.r.errorf(v.keyAt("cluster", "secret"), "secret", "key is %d bytes: want 32 (or 16 or 24)", n)
	}
	if !c.Enabled() {
		if len(c.Join) > 0 {
			v.r.errorf(v.keyAt("cluster", "join"), "join", "needs bind: gossip is off without it")
		}
		if c.Advertise != "" {
			v.r.errorf(v.keyAt("cluster", "advertise"), "advertise", "needs bind: gossip is off without it")
		}
		return
	}
	for _, a := range []struct{ key, val string }{{"bind", c.Bind}, {"advertise", c.Advertise}} {
		if a.val == "" {
			continue
		}
		if _, err := hostPort(a.val, DefaultClusterPort, true); err != nil {
			v.r.errorf(v.keyAt("cluster", a.key), a.key, "%v", err)
		}
	}
	for _, j := range c.Join {
		if _, err := hostPort(j, DefaultClusterPort, false); err != nil {
			v.r.errorf(v.keyAt("cluster", "join"), "join", "%v", err)
		}
	}
	switch {
	case c.Secret.IsSet():
	case !isLoopback(c.Bind):
		v.r.errorf(v.keyAt("cluster", "bind"), "secret", "missing: bind %s is not a loopback address, so gossip must be encrypted", c.Bind)
	case c.Advertise != "" && !isLoopback(c.Advertise):
		v.r.errorf(v.keyAt("cluster", "advertise"), "secret", "missing: advertise %s is not a loopback address, so gossip must be encrypted", c.Advertise)
	}
}

// String summarises the config without secrets, for logs.
func (c *Config) String() string {
	svc := c.Client.PubSubNode
	if svc == "" {
		svc = "(discovered)"
	}
	return fmt.Sprintf("config %s: client [%s] %s at %s, pubsub %s, %d buddies, manager %s, cluster %v",
		c.File, c.Client.Name, c.Client.FullJID(), c.Client.Addr(), svc,
		len(c.Client.Buddies), c.Manager.Addr(), c.Cluster.Enabled())
}
