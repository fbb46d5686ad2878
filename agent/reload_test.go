package agent

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/config"
	"github.com/busylamp/busylamp/devstate"
)

func TestReloadAppliesLiveSettings(t *testing.T) {
	var level slog.LevelVar
	base := func(c *Config) {
		c.XMPP.Buddies = []string{"b@x.test", "c@x.test/r"}
		c.Level = &level
		c.LogLevel = slog.LevelInfo
		c.Manager.Username, c.Manager.Secret = "admin", "s1"
	}
	next := DefaultConfig()
	var loadErr error
	m := startMemAgent(t, func(c *Config) {
		base(c)
		c.Load = func() (Config, error) { return next, loadErr }
	})
	next = m.cfg
	next.XMPP.Buddies = []string{"b@x.test", "d@x.test"}
	pjsipOnly, err := config.ParsePattern("^pjsip/")
	if err != nil {
		t.Fatal(err)
	}
	next.Core.Filters = core.Filters{PublishDevice: pjsipOnly}
	next.Core.Stale, next.Core.StaleGrace = core.StaleKeep, 30*time.Second
	next.LogLevel = slog.LevelWarn
	next.XMPP.Trace = true
	next.Manager.Secret = "s2"
	next.ManagerAddr = "127.0.0.1:1" // takes a restart

	notes, err := m.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(notes, "\n")
	for _, want := range []string{"buddy added: d@x.test", "buddy removed: c@x.test", "filters: device_state_filter=^pjsip/",
		"stale policy: keep, grace 30s", "log level: WARN", "stanza trace (debug): true", "manager account",
		"needs a restart, running value kept: [manager] bindaddr/port"} {
		if !strings.Contains(text, want) {
			t.Errorf("notes lack %q:\n%s", want, text)
		}
	}
	m.x.mu.Lock()
	added, removed, trace := slices.Clone(m.x.added), slices.Clone(m.x.removed), m.x.trace
	m.x.mu.Unlock()
	if !slices.Equal(added, []string{"d@x.test"}) || !slices.Equal(removed, []string{"c@x.test"}) || !trace {
		t.Fatalf("added %v removed %v trace %v", added, removed, trace)
	}
	if level.Level() != slog.LevelWarn {
		t.Fatalf("level %v, want WARN", level.Level())
	}
	// The filter is in force: a device it holds back is not published.
	if err := m.core.SetDeviceState("SIP/1", devstate.InUse); err != nil {
		t.Fatal(err)
	}
	if err := m.core.SetDeviceState("PJSIP/1", devstate.InUse); err != nil {
		t.Fatal(err)
	}
	m.x.mu.Lock()
	_, sip := m.x.published["SIP/1"]
	_, pjsip := m.x.published["PJSIP/1"]
	m.x.mu.Unlock()
	if sip || !pjsip {
		t.Fatalf("published SIP/1 %v PJSIP/1 %v, want only PJSIP/1", sip, pjsip)
	}
	// The same file again: nothing changes (the restart-only key is still
	// reported: it still differs from what runs).
	notes, err = m.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.HasPrefix(notes[0], "needs a restart") {
		t.Fatalf("second reload notes %q", notes)
	}

	// debug on overrides the config's level and trace until debug off.
	m.SetDebug(true)
	if level.Level() != slog.LevelDebug {
		t.Fatalf("debug on: level %v", level.Level())
	}
	next.XMPP.Trace = false
	if _, err := m.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.x.mu.Lock()
	trace = m.x.trace
	m.x.mu.Unlock()
	if !trace || level.Level() != slog.LevelDebug {
		t.Fatalf("a reload under debug on: trace %v level %v, want both kept on", trace, level.Level())
	}
	m.SetDebug(false)
	m.x.mu.Lock()
	trace = m.x.trace
	m.x.mu.Unlock()
	if trace || level.Level() != slog.LevelWarn {
		t.Fatalf("debug off: trace %v level %v, want the config's (off, WARN)", trace, level.Level())
	}

	// A config with errors changes nothing.
	loadErr = errors.New("busylamp.conf:3: [agent] stale: want expire or keep")
	next.XMPP.Buddies = nil
	if _, err := m.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "busylamp.conf:3") {
		t.Fatalf("reload of a bad config: %v", err)
	}
	m.x.mu.Lock()
	removed = slices.Clone(m.x.removed)
	m.x.mu.Unlock()
	if len(removed) != 1 {
		t.Fatalf("a refused reload removed buddies: %v", removed)
	}
	// And the Command line says the same.
	out, err := m.Command(context.Background(), "reload")
	if err == nil {
		t.Fatalf("reload command with a bad config: %q, nil error", out)
	}
}

// Without a way to make a new client (the fake), a changed client section
// is reported as needing a restart, and the running session kept.
func TestReloadSessionNeedsClientFactory(t *testing.T) {
	next := DefaultConfig()
	m := startMemAgent(t, func(c *Config) { c.Load = func() (Config, error) { return next, nil } })
	next = m.cfg
	next.XMPP.StatusMessage = "moved"
	notes, err := m.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(notes, "needs a restart, running value kept: status/statusmessage/priority") {
		t.Fatalf("notes %q", notes)
	}
}

func TestReloadWithoutLoad(t *testing.T) {
	m := startMemAgent(t, nil)
	if _, err := m.Reload(context.Background()); !errors.Is(err, ErrNoReload) {
		t.Fatalf("err %v, want ErrNoReload", err)
	}
}
