package pubsub

import (
	"encoding/base64"
	"github.com/busylamp/busylamp/internal/testlog"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
)

// The metrics hooks: each publish's round trip, and the time to its echo
// (the service's notification of our own item), on both servers; and the
// session counter.
func TestObservePublishAndEcho(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("obs")
		freshNodes(t, srv, false, aj)
		cfg := peerConfig(srv, aj, apw, "obs")
		var mu sync.Mutex
		var rtts, echoes []time.Duration
		echoed := make(chan struct{}, 16)
		cfg.ObservePublish = func(d time.Duration) { mu.Lock(); rtts = append(rtts, d); mu.Unlock() }
		cfg.ObserveEcho = func(d time.Duration) {
			mu.Lock()
			echoes = append(echoes, d)
			mu.Unlock()
			echoed <- struct{}{}
		}
		a := startPeer(t, "A", cfg)
		a.connected(connectWait)
		dev := uniq(t, "SIP/obs")
		a.c.PublishDevice(dev, devstate.InUse, true)
		a.c.PublishMailbox(uniq(t, "obs")+"@default", mwi.Counts{New: 1})
		for range 2 {
			select {
			case <-echoed:
			case <-time.After(eventWait):
				t.Fatalf("no echo of our own publishes within %v", eventWait)
			}
		}
		waitIdle(t, a.c)
		mu.Lock()
		defer mu.Unlock()
		if len(rtts) < 2 || len(echoes) != 2 {
			t.Fatalf("round trips %v, echoes %v: want 2 of each", rtts, echoes)
		}
		for _, d := range append(rtts, echoes...) {
			if d <= 0 || d > eventWait {
				t.Fatalf("a measured time %v out of range", d)
			}
		}
		if st := a.c.Stats(); st.Sessions != 1 || st.Malformed != 0 {
			t.Fatalf("stats %+v, want one session and nothing malformed", st)
		}
	})
}

// lockedBuffer is a log sink the client's goroutines write to.
type lockedBuffer = testlog.Buffer

// The stanza trace ('busylamp debug on'): every stanza but SASL's, so the
// password never reaches the log, in plain text or as PLAIN's base64; and
// it is switched at run time.
func TestTraceSwitchedAndSecretRedacted(t *testing.T) {
	srv := sharedServer(t, xmpptest.Prosody)
	aj, apw := srv.Admin("tr")
	freshNodes(t, srv, false, aj)
	logs := &lockedBuffer{}
	cfg := peerConfig(srv, aj, apw, "tr")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Trace = true
	a := startPeer(t, "A", cfg, func(s *settings) { s.onlyMech = "PLAIN" })
	a.connected(connectWait)
	dev := uniq(t, "SIP/trace")
	a.c.PublishDevice(dev, devstate.InUse, true)
	waitIdle(t, a.c)
	text := logs.String()
	plain := base64.StdEncoding.EncodeToString([]byte("\x00tr\x00" + apw))
	if strings.Contains(text, apw) || strings.Contains(text, plain) {
		t.Fatalf("the password reached the log:\n%s", text)
	}
	if !strings.Contains(text, "SASL exchange (not traced)") || !strings.Contains(text, "xmpp send") ||
		!strings.Contains(text, dev) || !strings.Contains(text, "xmpp recv") {
		t.Fatalf("trace lacks the publish or the SASL note:\n%s", text)
	}
	a.c.SetTrace(false)
	before := strings.Count(logs.String(), "xmpp send")
	dev2 := uniq(t, "SIP/untraced")
	a.c.PublishDevice(dev2, devstate.Busy, true)
	waitIdle(t, a.c)
	if after := logs.String(); strings.Count(after, "xmpp send") != before || strings.Contains(after, dev2) {
		t.Fatalf("stanzas traced after SetTrace(false)")
	}
}

// The subscriptions check is put off while the service notifies us, at
// most busyFactor ticks; a quiet session is checked at every tick.
func TestCheckDue(t *testing.T) {
	const every = 5 * time.Second
	var d checkDue
	t0 := time.Unix(1000, 0)
	steps := []struct {
		after time.Duration
		heard bool
		want  bool
	}{
		{0, true, true},             // the first check is made
		{every, true, false},        // busy: put off
		{2 * every, true, false},    //
		{3 * every, false, true},    // quiet: checked
		{4 * every, true, false},    // busy again
		{15 * every, true, true},    // busy for 12 ticks since the last check: checked anyway
		{16 * every, true, false},   //
		{16*every + 1, false, true}, // quiet
		{16*every + 2, false, true}, // and again
		{30 * every, true, true},    // a long gap: due
		{30*every + 1, true, false}, //
	}
	for i, s := range steps {
		if got := d.now(t0.Add(s.after), s.heard, every); got != s.want {
			t.Fatalf("step %d (after %v, heard %v): due %v, want %v", i, s.after, s.heard, got, s.want)
		}
	}
}
