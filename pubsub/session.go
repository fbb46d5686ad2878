package pubsub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmppstream"
)

// elem is a parsed stanza (xmppstream's element tree); the short name
// reads better in the parsing code.
type elem = xmppstream.Element

// session is one connected stream and what this client keeps about it:
// the publisher and the subscription check run for as long as it lasts.
// It is the stream's Handler: stanzas reach the client in arrival order.
type session struct {
	cl  *Client
	st  *xmppstream.Stream
	jid string // bound full JID
	ctx context.Context
	wg  sync.WaitGroup // this client's goroutines of the session

	svc atomic.Pointer[string] // the PubSub service discovered at setup; nil: the configured one (service)

	noPublishOptions atomic.Bool // the server refuses Asterisk's publish-options
	overwriteNoted   atomic.Bool // logged once: items of others must be retracted first
	unpagedNoted     atomic.Bool // logged once: the service answered items unpaged, bounded by max_items
	// heard: a notification came from the service since the last
	// subscriptions check (checkDue).
	heard atomic.Bool
	// unreachable: the service's server could not be reached from ours
	// (federation: the s2s path between them failed) since the session
	// began; set by the first such error, the session ends when the
	// service answers again (checkLoop).
	unreachable atomic.Bool
	wakeCheck   chan struct{} // noteUnreachable → checkLoop: ask at the fast pace now
}

func newSession(cl *Client, st *xmppstream.Stream) *session {
	return &session{cl: cl, st: st, jid: st.JID(), ctx: st.Context(), wakeCheck: make(chan struct{}, 1)}
}

func (s *session) HandleMessage(_ *xmppstream.Stream, e *elem)  { s.cl.handleMessage(s, e) }
func (s *session) HandlePresence(_ *xmppstream.Stream, e *elem) { s.cl.roster.handlePresence(s, e) }
func (s *session) HandleIQ(_ *xmppstream.Stream, e *elem)       { s.cl.handleRequest(s, e) }

// stop ends the session (its stream) for err.
func (s *session) stop(err error) { s.st.Close(err) }

// send writes a stanza; a write error ends the session.
func (s *session) send(v any) error { return s.st.Send(v) }

// iq sends an IQ and waits for its answer, at most Config.IQTimeout. An
// error answer is returned as *StanzaError.
func (s *session) iq(ctx context.Context, typ, to string, p stanza.IQPayload) (*elem, error) {
	call, err := s.sendIQ(typ, to, p)
	if err != nil {
		return nil, err
	}
	return s.wait(ctx, call)
}

// sendIQ writes an IQ and registers for its answer; wait collects it.
func (s *session) sendIQ(typ, to string, p stanza.IQPayload) (*xmppstream.Call, error) {
	return s.st.SendIQ(typ, to, p)
}

// sendPublishes writes the publishes to the service with one write and
// registers for their answers, in order.
func (s *session) sendPublishes(to string, ps []publishIQ) ([]*xmppstream.Call, error) {
	return s.st.SendIQs(to, len(ps), func(b []byte, i int, id string) []byte { return ps[i].appendTo(b, id, to) })
}

// publish writes one publish and waits for its answer (a retry).
func (s *session) publish(ctx context.Context, to string, p *publishIQ) (*elem, error) {
	calls, err := s.sendPublishes(to, []publishIQ{*p})
	if err != nil {
		return nil, err
	}
	return s.wait(ctx, calls[0])
}

func (s *session) wait(ctx context.Context, call *xmppstream.Call) (*elem, error) {
	e, err := call.Wait(ctx)
	var se *xmppstream.StanzaError
	if errors.As(err, &se) {
		// Read again for the PubSub condition pubsub's StanzaError names.
		perr := parseStanzaError(e.Child("", "error"))
		if remoteUnreachable(perr) && jid.Equal(e.Attr("from"), s.service()) {
			s.noteUnreachable(perr)
		}
		return e, perr
	}
	return e, err
}

// remoteUnreachable reports whether err is our server saying that it
// cannot reach the recipient's server (RFC 6120 8.3.3.14, 8.3.3.15).
func remoteUnreachable(err error) bool {
	return IsCondition(err, "remote-server-not-found") || IsCondition(err, "remote-server-timeout")
}

// noteUnreachable marks the service unreachable, logging it once a session.
func (s *session) noteUnreachable(err error) {
	if !s.unreachable.Swap(true) {
		select {
		case s.wakeCheck <- struct{}{}:
		default:
		}
		s.cl.s.log.Warn("PubSub service unreachable from our XMPP server (server-to-server path down?); "+
			"resyncing once it answers again", "service", s.service(), "err", err)
	}
}

// reply answers a request with a result carrying p (nil for none).
func (s *session) reply(req *elem, p stanza.IQPayload) { s.st.Reply(req, p) }

// replyError answers a request with an error; code is the legacy numeric
// code Asterisk's res_xmpp reads (RFC 6120 does not need it).
func (s *session) replyError(req *elem, typ, cond, code string) {
	s.st.ReplyError(req, typ, cond, code)
}

// checkDue decides when the subscriptions are asked for. While the
// service keeps notifying us, the session and its subscriptions are
// evidently there, and the query is put off: on Prosody each check held
// up the notifications in flight by about 40 ms (the p999 spikes of
// BENCHMARKS.md's issue 12 runs went away with the check off). It is
// still made at least every busyFactor checks, so that a subscription
// lost on one node while the other is busy is found within a minute; a
// quiet session is checked at every tick, which costs nobody anything.
type checkDue struct{ last time.Time }

const busyFactor = 12 // 5 s ticks: a busy session is checked every minute

func (d *checkDue) now(now time.Time, heard bool, every time.Duration) bool {
	if heard && !d.last.IsZero() && now.Sub(d.last) < busyFactor*every {
		return false
	}
	d.last = now
	return true
}

// checkLoop checks every subCheck that both subscriptions still exist
// (see checkSubscriptions), and ends the session when not. A missing
// subscription is looked at again a moment later before the session is
// ended: another session of this account (a second resource, or the same
// agent restarted) unsubscribes and subscribes the bare JID when it
// connects, as Asterisk does, and a check can fall between the two. A
// node that is gone ends the session at once. subCheck 0 turns the check
// off (a tool's session that does not follow the nodes).
//
// A service our server cannot reach (on another domain, its s2s path
// down) is asked at every fifth of subCheck until it answers; then the
// session is ended, so that the reconnect does what it does after any
// outage: subscribe again, fetch the items, ask the buddies and
// republish the own states. What was published to us and what we
// published while the path was down was bounced and is lost otherwise.
func (s *session) checkLoop() {
	defer s.wg.Done()
	every := s.cl.s.subCheck
	if every <= 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	missed := false
	var due checkDue
	for {
		select {
		case <-t.C:
		case <-s.wakeCheck:
			t.Reset(max(every/5, 10*time.Millisecond))
			continue
		case <-s.ctx.Done():
			return
		}
		unreachable := s.unreachable.Load()
		if !missed && !unreachable && !due.now(time.Now(), s.heard.Swap(false), every) {
			continue
		}
		err := s.cl.checkSubscriptions(s.ctx, s)
		if h := s.cl.s.onCheck; h != nil {
			h(err)
		}
		switch {
		case errors.Is(err, errUnreachable):
			continue // at the fast pace: noteUnreachable woke us
		case err == nil && unreachable:
			s.cl.s.log.Info("PubSub service reachable again; reconnecting to resync", "service", s.service())
			s.stop(errServiceBack)
			return
		case err == nil:
			if missed {
				missed = false
				t.Reset(every)
			}
			continue
		case missed || errors.Is(err, errNodeGone):
			s.stop(err)
			return
		}
		missed = true
		t.Reset(max(every/5, 10*time.Millisecond))
	}
}
