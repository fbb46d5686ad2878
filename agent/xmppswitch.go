package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

// errReconfigured ends an XMPP session that a reload replaced.
var errReconfigured = errors.New("the client section changed: a new XMPP session with the reloaded settings")

// xmppSwitch is the XMPP client the agent holds when a reload may replace
// it (a changed client section): every call goes to the current client;
// Replace stops the current one and starts the next on the same events
// channel. The agent sees a Disconnected then the new session's
// Connected, as after any reconnect: it resyncs, then republishes its own
// states, so a publish the old client still held is not lost.
type xmppSwitch struct {
	events chan<- pubsub.Event

	// cur is read on every call (PublishDevice is on the latency path):
	// an atomic load, no lock. Run writes it, under mu.
	cur atomic.Pointer[xmppBox]

	mu      sync.Mutex
	next    XMPP               // set by Replace until Run takes it
	stopCur context.CancelFunc // ends cur's Run
	retired pubsub.Stats       // the counters of replaced clients, added in
}

var _ XMPP = (*xmppSwitch)(nil)

type xmppBox struct{ XMPP }

func newXMPPSwitch(x XMPP, events chan<- pubsub.Event) *xmppSwitch {
	s := &xmppSwitch{events: events}
	s.cur.Store(&xmppBox{x})
	return s
}

func (s *xmppSwitch) current() XMPP { return s.cur.Load().XMPP }

// Replace makes x the client: the current one's Run ends, and Run goes on
// with x. x must send its events on the switch's channel and not be
// running.
func (s *xmppSwitch) Replace(x XMPP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = x
	if s.stopCur != nil {
		s.stopCur()
	}
}

// Run runs the current client, and each one that replaces it, until ctx
// ends.
func (s *xmppSwitch) Run(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.next != nil {
			s.retired = addStats(s.retired, s.current().Stats())
			s.cur.Store(&xmppBox{s.next})
			s.next = nil
		}
		x := s.current()
		rctx, cancel := context.WithCancel(ctx)
		s.stopCur = cancel
		s.mu.Unlock()

		err := x.Run(rctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		replaced := s.next != nil
		s.mu.Unlock()
		if !replaced {
			return err
		}
		// The old client said nothing of its end (its ctx was cancelled).
		select {
		case s.events <- pubsub.Disconnected{Err: errReconfigured}:
		case <-ctx.Done():
			return nil
		}
	}
}

func addStats(a, b pubsub.Stats) pubsub.Stats {
	a.Published += b.Published
	a.Coalesced += b.Coalesced
	a.Errors += b.Errors
	a.Waited += b.Waited
	a.Direct += b.Direct
	a.Retried += b.Retried
	a.Sessions += b.Sessions
	a.Malformed += b.Malformed
	return a
}

// Stats adds the replaced clients' counters to the current one's, so
// that the counters (and the metrics read from them) never go back.
func (s *xmppSwitch) Stats() pubsub.Stats {
	s.mu.Lock()
	x, base := s.current(), s.retired
	s.mu.Unlock()
	st := x.Stats()
	pending, inFlight := st.Pending, st.InFlight
	st = addStats(base, st)
	st.Pending, st.InFlight = pending, inFlight
	return st
}

func (s *xmppSwitch) Status() pubsub.ConnStatus { return s.current().Status() }
func (s *xmppSwitch) Buddies() []pubsub.Buddy   { return s.current().Buddies() }
func (s *xmppSwitch) SetTrace(on bool)          { s.current().SetTrace(on) }

func (s *xmppSwitch) AddBuddy(ctx context.Context, jid string) error {
	return s.current().AddBuddy(ctx, jid)
}

func (s *xmppSwitch) RemoveBuddy(ctx context.Context, jid string) error {
	return s.current().RemoveBuddy(ctx, jid)
}

func (s *xmppSwitch) RequestOwnStates(ctx context.Context, fullJID string, chunkWait time.Duration) ([]pubsub.DeviceItem, []pubsub.MailboxItem, error) {
	return s.current().RequestOwnStates(ctx, fullJID, chunkWait)
}

func (s *xmppSwitch) AnswerOwnStates(req pubsub.OwnStatesRequest, devices []pubsub.DeviceItem, mailboxes []pubsub.MailboxItem) error {
	return s.current().AnswerOwnStates(req, devices, mailboxes)
}

func (s *xmppSwitch) PublishDevice(device string, st devstate.State, cachable bool) {
	s.current().PublishDevice(device, st, cachable)
}

func (s *xmppSwitch) PublishMailbox(mailbox string, c mwi.Counts) {
	s.current().PublishMailbox(mailbox, c)
}

// RepublishDevice and RepublishMailbox keep the republish lane
// (core.Republisher) when the client has one.
func (s *xmppSwitch) RepublishDevice(device string, st devstate.State, cachable bool) {
	x := s.current()
	if rp, ok := x.(interface {
		RepublishDevice(string, devstate.State, bool)
	}); ok {
		rp.RepublishDevice(device, st, cachable)
		return
	}
	x.PublishDevice(device, st, cachable)
}

func (s *xmppSwitch) RepublishMailbox(mailbox string, c mwi.Counts) {
	x := s.current()
	if rp, ok := x.(interface{ RepublishMailbox(string, mwi.Counts) }); ok {
		rp.RepublishMailbox(mailbox, c)
		return
	}
	x.PublishMailbox(mailbox, c)
}

func (s *xmppSwitch) Purge(ctx context.Context, node string) error {
	return s.current().Purge(ctx, node)
}

func (s *xmppSwitch) DeleteNode(ctx context.Context, node string) error {
	return s.current().DeleteNode(ctx, node)
}

func (s *xmppSwitch) CreateCollection(ctx context.Context, node string) error {
	return s.current().CreateCollection(ctx, node)
}

func (s *xmppSwitch) CreateLeaf(ctx context.Context, collection, node string) error {
	return s.current().CreateLeaf(ctx, collection, node)
}
