package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/pubsub"
)

// ErrNoReload is Reload's error when the agent was not told how to read
// its config again (Config.Load is nil: an agent built by a test).
var ErrNoReload = errors.New("reload: no config file to read again")

// live is what a reload changes while the agent runs; reloadMu guards it.
type live struct {
	buddies  []string // the config's buddies, bare, sorted
	filters  core.Filters
	stale    core.Stale
	grace    time.Duration
	level    slog.Level
	trace    bool // the config's debug=; 'debug on' overrides it
	debugOn  bool // 'debug on' is in force
	username string
	secret   string
	acl      string        // fmt of the ACL, to tell a change
	session  pubsub.Config // the XMPP client's settings in force
}

func liveOf(c Config) live {
	return live{
		buddies: bareSet(c.XMPP.Buddies),
		filters: c.Core.Filters,
		stale:   c.Core.Stale, grace: c.Core.StaleGrace,
		level: c.LogLevel, trace: c.XMPP.Trace,
		username: c.Manager.Username, secret: c.Manager.Secret, acl: fmt.Sprint(c.Manager.ACL),
		session: c.XMPP,
	}
}

func bareSet(l []string) []string {
	out := make([]string, 0, len(l))
	for _, j := range l {
		if b := jid.Bare(j); b != "" {
			out = append(out, b)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Reload reads the config again (Config.Load) and applies it without a
// restart: buddies, filters, the stale policy, the log level, the stanza
// trace and the manager account change now; the XMPP session, the tables
// and the AMI sessions are kept. Settings that only a restart can apply
// (the XMPP account and server, the sockets' addresses, the cluster, the
// state directory) keep their running values, and the notes say so. A
// config that does not load changes nothing: the error lists its problems,
// one per line.
func (a *Agent) Reload(ctx context.Context) (notes []string, err error) {
	if a.cfg.Load == nil {
		return nil, ErrNoReload
	}
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	nc, err := a.cfg.Load()
	if err != nil {
		a.log.Error("reload refused: the running config is kept", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return nil, err
	}
	old, now := a.live, liveOf(nc)
	if old.debugOn {
		now.debugOn = true
	}
	// A changed client section takes a new XMPP session; the account
	// (username) and the EID take a restart.
	changed := sessionDiff(old.session, nc.XMPP)
	sameAccount := old.session.JID == nc.XMPP.JID && old.session.EID == nc.XMPP.EID
	if len(changed) > 0 && (a.newSession == nil || !sameAccount) {
		for _, k := range changed {
			notes = append(notes, "needs a restart, running value kept: "+k)
		}
		now.session = old.session
		changed = nil
	}

	// Buddies: new ones are added, removed ones dropped unless gossip
	// still has them as live members (membership made them buddies).
	added, removed := diffSorted(old.buddies, now.buddies)
	members := a.memberJIDs()
	for _, j := range added {
		if err := a.xmpp.AddBuddy(ctx, j); err != nil {
			notes = append(notes, fmt.Sprintf("buddy %s: %v", j, err))
			continue
		}
		notes = append(notes, "buddy added: "+j)
	}
	for _, j := range removed {
		if members[j] {
			notes = append(notes, "buddy kept as a gossip member: "+j)
			continue
		}
		if err := a.xmpp.RemoveBuddy(ctx, j); err != nil {
			notes = append(notes, fmt.Sprintf("buddy %s: %v", j, err))
			continue
		}
		notes = append(notes, "buddy removed: "+j)
	}
	if filtersText(old.filters) != filtersText(now.filters) {
		a.core.SetFilters(now.filters)
		notes = append(notes, "filters: "+filtersText(now.filters))
	}
	if old.stale != now.stale || old.grace != now.grace {
		a.core.SetStale(now.stale, now.grace)
		notes = append(notes, fmt.Sprintf("stale policy: %s, grace %s", staleName(now.stale), now.grace))
	}
	if old.level != now.level && a.cfg.Level != nil {
		if !now.debugOn {
			a.cfg.Level.Set(now.level)
		}
		notes = append(notes, "log level: "+now.level.String())
	}
	if old.trace != now.trace {
		if !now.debugOn {
			a.xmpp.SetTrace(now.trace)
		}
		notes = append(notes, fmt.Sprintf("stanza trace (debug): %v", now.trace))
	}
	if old.username != now.username || old.secret != now.secret || old.acl != now.acl {
		a.ami.SetUsers(nc.Manager.Username, nc.Manager.Secret, nc.Manager.ACL)
		notes = append(notes, "manager account and permit/deny changed (at the next login)")
	}
	if len(changed) > 0 {
		pc := nc.XMPP
		pc.Hops = a.cfg.XMPP.Hops
		pc.Trace = now.trace || now.debugOn
		// Membership's buddies stay buddies of the new session.
		for j := range members {
			pc.Buddies = append(pc.Buddies, j)
		}
		if err := a.newSession(pc); err != nil {
			notes = append(notes, "client section not applied, the session kept: "+err.Error())
			now.session = old.session
		} else {
			notes = append(notes, "new XMPP session: "+strings.Join(changed, ", ")+" changed")
		}
	}
	for _, k := range restartOnly(a.cfg, nc) {
		notes = append(notes, "needs a restart, running value kept: "+k)
	}
	a.live = now
	if len(notes) == 0 {
		notes = []string{"nothing changed"}
	}
	a.log.Info("config reloaded", "changes", strings.Join(notes, "; "))
	return notes, nil
}

// SetDebug is 'busylamp debug on|off': the stanza trace and debug-level
// logs, until 'debug off' (which goes back to the config's debug= and
// log level) or a restart.
func (a *Agent) SetDebug(on bool) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	a.live.debugOn = on
	trace, level := on, slog.LevelDebug
	if !on {
		trace, level = a.live.trace, a.live.level
	}
	a.xmpp.SetTrace(trace)
	if a.cfg.Level != nil {
		a.cfg.Level.Set(level)
	}
	a.log.Info("debug", "on", on, "trace", trace, "level", level.String())
}

func (a *Agent) memberJIDs() map[string]bool {
	out := map[string]bool{}
	if a.cluster == nil {
		return out
	}
	for _, m := range a.cluster.Members() {
		if m.Meta.JID != "" && m.State == cluster.StateAlive {
			out[jid.Bare(m.Meta.JID)] = true
		}
	}
	return out
}

// diffSorted is what b adds to a and what it drops of it (both sorted).
func diffSorted(a, b []string) (added, removed []string) {
	for _, s := range b {
		if _, found := slices.BinarySearch(a, s); !found {
			added = append(added, s)
		}
	}
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			removed = append(removed, s)
		}
	}
	return added, removed
}

func filtersText(f core.Filters) string {
	show := func(m core.Matcher) string {
		if m == nil {
			return "(all)"
		}
		return fmt.Sprint(m)
	}
	return fmt.Sprintf("device_state_filter=%s mailbox_state_filter=%s device_state_accept=%s mailbox_state_accept=%s",
		show(f.PublishDevice), show(f.PublishMailbox), show(f.AcceptDevice), show(f.AcceptMailbox))
}

func staleName(s core.Stale) string {
	if s == core.StaleKeep {
		return "keep"
	}
	return "expire"
}

// restartOnly names the settings that differ between the running config
// and c but that only a restart applies.
func restartOnly(run, c Config) []string {
	var out []string
	diff := func(changed bool, key string) {
		if changed {
			out = append(out, key)
		}
	}
	x, y := run.XMPP, c.XMPP
	diff(run.Name != c.Name, "client section name")
	diff(x.JID != y.JID, "username")
	diff(x.EID != y.EID, "[agent] eid")
	diff(run.Core.MaxDevices != c.Core.MaxDevices, "[agent] max_devices")
	diff(run.Core.MWIMerge != c.Core.MWIMerge, "[agent] mwi_merge")
	diff(run.StateDir != c.StateDir, "[agent] state_dir")
	diff(run.ManagerAddr != c.ManagerAddr, "[manager] bindaddr/port")
	diff(run.Manager.AuthTimeout != c.Manager.AuthTimeout || run.Manager.MaxUnauthSessions != c.Manager.MaxUnauthSessions, "[manager] authtimeout/authlimit")
	diff((run.Manager.TLS == nil) != (c.Manager.TLS == nil), "[manager] tls")
	diff(clusterText(run) != clusterText(c), "[cluster]")
	diff(run.MetricsAddr != c.MetricsAddr, "[metrics] bind")
	diff(run.HTTPAddr != c.HTTPAddr, "[http] bind")
	diff(run.LogFormat != c.LogFormat, "[general] log_format")
	return out
}

// sessionDiff names the client section's settings that differ: a new
// XMPP session applies them (buddies and debug change on the running
// one).
func sessionDiff(x, y pubsub.Config) []string {
	var out []string
	diff := func(changed bool, key string) {
		if changed {
			out = append(out, key)
		}
	}
	diff(x.Password != y.Password, "secret")
	diff(x.Address != y.Address, "serverhost/port")
	diff(x.Service != y.Service, "pubsub_node")
	diff(x.UseTLS != y.UseTLS || x.TLSCAFile != y.TLSCAFile || x.TLSInsecure != y.TLSInsecure, "usetls/tls settings")
	diff(x.Status != y.Status || x.StatusMessage != y.StatusMessage || x.Priority != y.Priority, "status/statusmessage/priority")
	diff(x.AutoRegister != y.AutoRegister || x.AutoPrune != y.AutoPrune || x.AuthPolicy != y.AuthPolicy, "autoregister/autoprune/auth_policy")
	diff(x.CollectionNodes != y.CollectionNodes || x.AutoCreate != y.AutoCreate || x.NoItems != y.NoItems,
		"collection_nodes/pubsub_autocreate/pubsub_persist_items")
	return out
}

func clusterText(c Config) string {
	if c.Cluster == nil {
		return ""
	}
	cc := *c.Cluster
	cc.Logger, cc.Direct = nil, nil
	return fmt.Sprintf("%+v", cc)
}
