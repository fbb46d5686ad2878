package cluster

import (
	"context"
	"fmt"
	"github.com/busylamp/busylamp/internal/testlog"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

// testKey is a 32-byte gossip key.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func testEID(i int) devstate.EID { return devstate.EID{0x02, 0, 0, 0, byte(i >> 8), byte(i)} }

func testJID(i int) string { return fmt.Sprintf("pbx%d@example.com/busylamp", i) }

// logBuf collects log output for assertions; BUSYLAMP_TEST_LOG=1 also
// copies it to stderr.
type logBuf = testlog.Buffer

// member is one running Cluster in a test, with the events it delivered.
type member struct {
	i    int
	c    *Cluster
	logs *logBuf

	mu     sync.Mutex
	events []Event
	times  []time.Time // when each event arrived
	cancel context.CancelFunc
	done   chan struct{}
}

// startMember starts member i bound to a free loopback port, joining join,
// with the test key and the local profile unless mod changes them. The
// member is closed when the test ends.
func startMember(t *testing.T, i int, join []string, mod func(*Config)) *member {
	t.Helper()
	logs := &logBuf{}
	cfg := Config{
		Bind:      "127.0.0.1:0",
		Join:      join,
		SecretKey: testKey,
		Profile:   ProfileLocal,
		JID:       testJID(i),
		EID:       testEID(i),
		Version:   fmt.Sprintf("1.0.%d", i),
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	ch := make(chan Event) // unbuffered: the Cluster must not need a reader to keep up
	c, err := Start(cfg, ch)
	if err != nil {
		t.Fatalf("start member %d: %v", i, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{i: i, c: c, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			select {
			case ev := <-ch:
				m.mu.Lock()
				m.events = append(m.events, ev)
				m.times = append(m.times, time.Now())
				m.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(m.stop)
	return m
}

func (m *member) stop() {
	_ = m.c.Close()
	m.cancel()
	<-m.done
}

// eventsFor returns the events m got about the member named name.
func (m *member) eventsFor(name string) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Event
	for _, ev := range m.events {
		if ev.Member.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// eventTime returns when m got its first event of kind about name.
func (m *member) eventTime(kind EventKind, name string) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, ev := range m.events {
		if ev.Kind == kind && ev.Member.Name == name {
			return m.times[i]
		}
	}
	return time.Time{}
}

// startChain starts members first..last, each joining the one before it
// once that one has joined, as an operator would bring them up.
func startChain(t *testing.T, first, last int, mod func(*Config)) []*member {
	t.Helper()
	var all []*member
	for i := first; i <= last; i++ {
		var join []string
		if len(all) > 0 {
			join = []string{all[len(all)-1].c.Addr()}
		}
		m := startMember(t, i, join, mod)
		select {
		case <-m.c.Joined():
		case <-time.After(20 * time.Second):
			t.Fatalf("member %d did not join %v", i, join)
		}
		all = append(all, m)
	}
	return all
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: %s", d, what, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEvent waits until m has an event of kind about name, and returns it.
func (m *member) waitEvent(t *testing.T, d time.Duration, kind EventKind, name string) Event {
	t.Helper()
	var got Event
	waitFor(t, d, fmt.Sprintf("member %d: %s event for %s", m.i, kind, name), func() (bool, string) {
		evs := m.eventsFor(name)
		for _, ev := range evs {
			if ev.Kind == kind {
				got = ev
				return true, ""
			}
		}
		return false, fmt.Sprint(evs)
	})
	return got
}

// wantMeta checks that a member's meta is the one member i advertises.
func wantMeta(t *testing.T, who string, m Member, i int) {
	t.Helper()
	want := Meta{JID: testJID(i), EID: testEID(i), Version: fmt.Sprintf("1.0.%d", i)}
	if m.Meta != want {
		t.Errorf("%s: member %s meta = %+v, want %+v", who, m.Name, m.Meta, want)
	}
}

// waitConverged waits until every member lists exactly the members in all
// as alive, with their meta.
func waitConverged(t *testing.T, d time.Duration, all []*member) {
	t.Helper()
	for _, m := range all {
		waitFor(t, d, fmt.Sprintf("member %d sees %d alive", m.i, len(all)), func() (bool, string) {
			alive := 0
			for _, x := range m.c.Members() {
				if x.State == StateAlive {
					alive++
				}
			}
			return alive == len(all), describe(m.c.Members())
		})
		byName := map[string]Member{}
		for _, x := range m.c.Members() {
			byName[x.Name] = x
		}
		for _, o := range all {
			x, ok := byName[o.c.Name()]
			if !ok {
				t.Fatalf("member %d does not list %s", m.i, o.c.Name())
			}
			wantMeta(t, fmt.Sprintf("member %d", m.i), x, o.i)
			if x.Addr != o.c.Addr() {
				t.Errorf("member %d lists %s at %s, want %s", m.i, x.Name, x.Addr, o.c.Addr())
			}
		}
	}
}

func describe(ms []Member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "[%s %s %s] ", m.Name, m.Addr, m.State)
	}
	return b.String()
}

func stateOf(c *Cluster, name string) string {
	for _, m := range c.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// probedSince reports whether m has heard from the member named name, by
// a probe answered or otherwise, since t.
func (m *member) probedSince(name string, t time.Time) bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	e := m.c.members[name]
	return e != nil && e.acked.After(t)
}

// waitProbeRound waits until each of ms has heard from each other one
// since t: each has run failure detection over the others.
func waitProbeRound(t *testing.T, d time.Duration, ms []*member, since time.Time) {
	t.Helper()
	for _, m := range ms {
		for _, o := range ms {
			if o == m {
				continue
			}
			waitFor(t, d, fmt.Sprintf("member %d hears from member %d", m.i, o.i), func() (bool, string) {
				return m.probedSince(o.c.Name(), since), describe(m.c.Members())
			})
		}
	}
}
