package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// The integration tests (gossip_test.go) share one Prosody per test
// binary, started on first use; after the tests no goroutine may be left
// but memberlist's probeNode: its Shutdown does not wait for a probe in
// flight, which ends by itself when its ack timer fires, later than
// goleak retries (seen here about once in ten runs; agent/cluster's
// TestMain says more, and its TestCloseLeaksNoGoroutines waits for the
// probes and ignores nothing).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(sharedServers{m},
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

type sharedServers struct{ m *testing.M }

func (s sharedServers) Run() int { return xmpptest.Main(s.m) }

// fakeXMPP is the XMPP client in memory, as memberlist's MockNetwork is
// the network: the test sends the client's events, the agent's calls are
// recorded, and buddies answer states requests from a table.
type fakeXMPP struct {
	events chan pubsub.Event // unbuffered: a send returns once the loop took it

	mu        sync.Mutex
	published map[string]string               // device or mailbox → last value published
	answered  []pubsub.OwnStatesRequest       // requests answered, in order
	answers   map[string][]pubsub.DeviceItem  // what each buddy (full JID) answers
	mailboxes map[string][]pubsub.MailboxItem // and its mailboxes
	refuse    map[string]int                  // buddy → forbidden answers still to give
	cut       map[string]int                  // buddy → answers cut off after the first chunks still to give
	silent    map[string]bool                 // buddies that never answer (Asterisk)
	added     []string                        // AddBuddy calls
	removed   []string                        // RemoveBuddy calls
	trace     bool                            // SetTrace
	answerOut map[string][]pubsub.DeviceItem  // what we answered, by asker
	asked     chan string                     // every states request, as made
	answerCh  chan pubsub.OwnStatesRequest    // every answer, as given
	publishCh chan string                     // every publish, "device=STATE"
	buddies   []pubsub.Buddy                  // for Buddies()
	status    pubsub.ConnStatus               // for Status(); State "connected" when empty
}

func newFakeXMPP() *fakeXMPP {
	return &fakeXMPP{
		events:    make(chan pubsub.Event),
		published: map[string]string{},
		answers:   map[string][]pubsub.DeviceItem{},
		mailboxes: map[string][]pubsub.MailboxItem{},
		refuse:    map[string]int{},
		cut:       map[string]int{},
		silent:    map[string]bool{},
		answerOut: map[string][]pubsub.DeviceItem{},
		asked:     make(chan string, 64),
		answerCh:  make(chan pubsub.OwnStatesRequest, 64),
		publishCh: make(chan string, 1024),
	}
}

func (f *fakeXMPP) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f *fakeXMPP) Status() pubsub.ConnStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status.State == "" {
		return pubsub.ConnStatus{State: "connected"}
	}
	return f.status
}
func (f *fakeXMPP) Stats() pubsub.Stats { return pubsub.Stats{} }
func (f *fakeXMPP) Buddies() []pubsub.Buddy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pubsub.Buddy(nil), f.buddies...)
}

func (f *fakeXMPP) AddBuddy(_ context.Context, jid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.added = append(f.added, jid)
	return nil
}

func (f *fakeXMPP) RemoveBuddy(_ context.Context, jid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, jid)
	return nil
}

func (f *fakeXMPP) SetTrace(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.trace = on
}

func (f *fakeXMPP) RequestOwnStates(ctx context.Context, to string, chunkWait time.Duration) ([]pubsub.DeviceItem, []pubsub.MailboxItem, error) {
	f.asked <- to
	f.mu.Lock()
	if f.silent[to] {
		f.mu.Unlock()
		t := time.NewTimer(chunkWait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-t.C:
			return nil, nil, pubsub.ErrTimeout
		}
	}
	if f.cut[to] > 0 {
		f.cut[to]--
		f.mu.Unlock()
		return nil, nil, fmt.Errorf("own states of %s: %w after 500 items: %w", to, pubsub.ErrOwnStatesIncomplete, pubsub.ErrTimeout)
	}
	if f.refuse[to] > 0 {
		f.refuse[to]--
		f.mu.Unlock()
		return nil, nil, &pubsub.StanzaError{Type: "auth", Condition: "forbidden"}
	}
	ds, ms := f.answers[to], f.mailboxes[to]
	f.mu.Unlock()
	return ds, ms, nil
}

func (f *fakeXMPP) AnswerOwnStates(req pubsub.OwnStatesRequest, ds []pubsub.DeviceItem, _ []pubsub.MailboxItem) error {
	f.mu.Lock()
	f.answered = append(f.answered, req)
	f.answerOut[req.From] = ds
	f.mu.Unlock()
	f.answerCh <- req
	return nil
}

func (f *fakeXMPP) PublishDevice(device string, s devstate.State, _ bool) {
	f.mu.Lock()
	f.published[device] = s.String()
	f.mu.Unlock()
	f.publishCh <- device + "=" + s.String()
}

func (f *fakeXMPP) PublishMailbox(mailbox string, c mwi.Counts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published[mailbox] = fmt.Sprintf("%d/%d", c.New, c.Old)
}

func (f *fakeXMPP) Purge(context.Context, string) error              { return nil }
func (f *fakeXMPP) DeleteNode(context.Context, string) error         { return nil }
func (f *fakeXMPP) CreateCollection(context.Context, string) error   { return nil }
func (f *fakeXMPP) CreateLeaf(context.Context, string, string) error { return nil }

// send hands ev to the agent's loop, then waits until the loop has
// handled it: the loop takes events one at a time, so once it takes a
// second (no-op) event the first is done.
func (f *fakeXMPP) send(t *testing.T, evs ...pubsub.Event) {
	t.Helper()
	for _, ev := range append(evs, pubsub.Purged{Node: "barrier"}) {
		select {
		case f.events <- ev:
		case <-time.After(10 * time.Second):
			t.Fatalf("agent loop did not take %T in 10 s", ev)
		}
	}
}

// recv waits for one value on ch, generously.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s in 10 s", what)
		panic("unreachable")
	}
}

var (
	eidC = devstate.EID{2, 0, 0, 0, 0, 3}
)

const (
	selfJID = "a@x.test/pbx"
	jidB    = "b@x.test/pbx"
	jidC    = "c@x.test/pbx"
)

type memAgent struct {
	*Agent
	x       *fakeXMPP
	clock   *core.ManualClock
	members chan cluster.Event
	asked   chan string // buddies whose asked work (AddBuddy, states) is done
	done    chan error
}

// startMemAgent runs an agent on the fake client and a manual clock.
func startMemAgent(t *testing.T, edit func(*Config)) *memAgent {
	t.Helper()
	x := newFakeXMPP()
	clk := core.NewManualClock()
	cfg := DefaultConfig()
	cfg.Name = "mem"
	cfg.XMPP.JID = selfJID
	cfg.XMPP.EID = eidA
	cfg.ManagerAddr = "127.0.0.1:0"
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Core.Clock = clk
	cfg.Core.StaleGrace = 10 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	a, err := newAgent(cfg, x, x.events)
	if err != nil {
		t.Fatal(err)
	}
	m := &memAgent{Agent: a, x: x, clock: clk, members: make(chan cluster.Event), done: make(chan error, 1)}
	a.members = m.members
	m.asked = make(chan string, 64)
	a.askDone = func(j string) { m.asked <- j }
	ctx, cancel := context.WithCancel(context.Background())
	go func() { m.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := recv(t, m.done, "end of Run"); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m
}

// member hands a membership event to the loop and waits until it is done.
func (m *memAgent) member(t *testing.T, kind cluster.EventKind, name, jid string, eid devstate.EID) {
	t.Helper()
	ev := cluster.Event{Kind: kind, Member: cluster.Member{Name: name, Addr: "127.0.0.1:7946", State: cluster.StateAlive,
		Meta: cluster.Meta{JID: jid, EID: eid}}}
	select {
	case m.members <- ev:
	case <-time.After(10 * time.Second):
		t.Fatal("agent loop did not take the member event")
	}
	m.x.send(t) // the barrier
}

func (m *memAgent) state(device string) string {
	st, ok := m.Core().DeviceState(device)
	if !ok {
		return "-"
	}
	return st.String()
}

func sortedStrings(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
