package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gosrc.io/xmpp/stanza"
)

// session is one negotiated stream. It owns the one read loop, which
// handles stanzas strictly in arrival order: IQ answers go to the caller
// waiting for that id, notifications and presences become events in
// order, and requests from others are answered.
type session struct {
	cl     *Client
	c      *conn
	jid    string // bound full JID
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // every goroutine of this session

	idPrefix string
	seq      atomic.Uint64

	mu  sync.Mutex
	iqs map[string]*pendingIQ // nil once the read loop has ended

	noPublishOptions atomic.Bool // the server refuses Asterisk's publish-options
	overwriteNoted   atomic.Bool // logged once: items of others must be retracted first
	unpagedNoted     atomic.Bool // logged once: the service answered items unpaged, bounded by max_items
}

type pendingIQ struct {
	to string
	ch chan *elem
}

func newSession(parent context.Context, cl *Client, n *negotiated) *session {
	ctx, cancel := context.WithCancelCause(parent)
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &session{cl: cl, c: n.c, jid: n.jid, ctx: ctx, cancel: cancel,
		idPrefix: "bl" + hex.EncodeToString(b[:]) + "-", iqs: map[string]*pendingIQ{}}
	// Ending the session closes the socket, which ends the read loop.
	context.AfterFunc(ctx, n.c.close)
	return s
}

func (s *session) stop(err error) { s.cancel(err) }

// done reports whether the session has ended, and why.
func (s *session) err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

func (s *session) newID() string {
	return s.idPrefix + fmt.Sprint(s.seq.Add(1))
}

// send writes a stanza; a write error ends the session.
func (s *session) send(v any) error {
	if err := s.err(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotConnected, err)
	}
	if err := s.c.send(v); err != nil {
		s.stop(fmt.Errorf("write: %w", err))
		return fmt.Errorf("%w: write: %v", ErrNotConnected, err)
	}
	return nil
}

// iq sends an IQ and waits for its answer, at most Config.IQTimeout. An
// error answer is returned as *StanzaError.
func (s *session) iq(ctx context.Context, typ, to string, p stanza.IQPayload) (*elem, error) {
	call, err := s.sendIQ(typ, to, p)
	if err != nil {
		return nil, err
	}
	return s.wait(ctx, call)
}

// iqCall is an IQ sent and not answered yet.
type iqCall struct {
	id string
	ch chan *elem
	t0 time.Time
}

// sendIQ writes an IQ and registers for its answer; wait collects it.
func (s *session) sendIQ(typ, to string, p stanza.IQPayload) (*iqCall, error) {
	call := &iqCall{id: s.newID(), ch: make(chan *elem, 1), t0: time.Now()}
	s.mu.Lock()
	if s.iqs == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrNotConnected, s.err())
	}
	s.iqs[call.id] = &pendingIQ{to: to, ch: call.ch}
	s.mu.Unlock()
	if err := s.send(newIQ(typ, to, call.id, p)); err != nil {
		s.forget(call)
		return nil, err
	}
	return call, nil
}

func (s *session) forget(call *iqCall) {
	s.mu.Lock()
	if s.iqs != nil {
		delete(s.iqs, call.id)
	}
	s.mu.Unlock()
}

func (s *session) wait(ctx context.Context, call *iqCall) (*elem, error) {
	defer s.forget(call)
	t := time.NewTimer(s.cl.s.IQTimeout - time.Since(call.t0))
	defer t.Stop()
	select {
	case e := <-call.ch:
		if e.attr("type") == "error" {
			return e, parseStanzaError(e.child("", "error"))
		}
		return e, nil
	case <-t.C:
		return nil, ErrTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrNotConnected, s.err())
	}
}

// readLoop runs until the stream ends. Its read deadline is a second
// liveness check beside the pings: the server answers a ping every
// PingInterval, so a silent stream is a dead one.
func (s *session) readLoop() {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.iqs = nil
		s.mu.Unlock()
	}()
	idle := s.cl.s.PingInterval + s.cl.s.IQTimeout + 5*time.Second
	for {
		s.c.setReadDeadline(time.Now().Add(idle))
		e, err := s.c.next()
		if err != nil {
			if err == io.EOF {
				err = errors.New("server closed the stream")
			}
			s.stop(fmt.Errorf("read: %w", err))
			return
		}
		if e.XMLName.Space == nsStream && e.XMLName.Local == "error" {
			s.stop(streamError(e))
			return
		}
		if e.XMLName.Space != nsClient {
			continue
		}
		switch e.XMLName.Local {
		case "iq":
			s.handleIQ(e)
		case "message":
			s.cl.handleMessage(s, e)
		case "presence":
			s.cl.handlePresence(s, e)
		}
		if s.ctx.Err() != nil {
			return
		}
	}
}

func (s *session) handleIQ(e *elem) {
	typ, id, from := e.attr("type"), e.attr("id"), e.attr("from")
	switch typ {
	case "result", "error":
		s.mu.Lock()
		p := s.iqs[id]
		if p != nil && s.answerFrom(p.to, from) {
			delete(s.iqs, id)
		} else {
			p = nil
		}
		s.mu.Unlock()
		if p != nil {
			p.ch <- e // buffered, one answer per id
		}
	case "get", "set":
		s.cl.handleRequest(s, e)
	}
}

// answerFrom checks that an answer comes from whom the request went to
// (RFC 6120 8.1.2.1); requests to our account are answered by the server
// without a from, or from our bare or full JID.
func (s *session) answerFrom(to, from string) bool {
	if strings.EqualFold(to, from) {
		return true
	}
	if to == "" || strings.EqualFold(to, s.cl.s.bare) {
		return from == "" || strings.EqualFold(from, s.cl.s.bare) || strings.EqualFold(from, s.jid) ||
			strings.EqualFold(from, s.cl.s.domain)
	}
	return false
}

// reply answers a request with a result carrying p (nil for none).
func (s *session) reply(req *elem, p stanza.IQPayload) {
	iq := newIQ("result", req.attr("from"), req.attr("id"), p)
	_ = s.send(iq)
}

// replyError answers a request with an error; code is the legacy numeric
// code Asterisk's res_xmpp reads (RFC 6120 does not need it).
func (s *session) replyError(req *elem, typ, cond, code string) {
	_ = s.send(errorIQ{
		Type: "error", ID: req.attr("id"), To: req.attr("from"),
		Error: stanzaErrorOut{Type: typ, Code: code, Cond: xml.Name{Space: nsStanzas, Local: cond}},
	})
}

type errorIQ struct {
	XMLName xml.Name       `xml:"iq"`
	Type    string         `xml:"type,attr"`
	ID      string         `xml:"id,attr"`
	To      string         `xml:"to,attr,omitempty"`
	Error   stanzaErrorOut `xml:"error"`
}

type stanzaErrorOut struct {
	Type string `xml:"type,attr"`
	Code string `xml:"code,attr,omitempty"`
	Cond xml.Name
}

func (e stanzaErrorOut) MarshalXML(enc *xml.Encoder, start xml.StartElement) error {
	start.Attr = []xml.Attr{{Name: xml.Name{Local: "type"}, Value: e.Type}}
	if e.Code != "" {
		start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "code"}, Value: e.Code})
	}
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	c := xml.StartElement{Name: xml.Name{Local: e.Cond.Local}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: e.Cond.Space}}}
	if err := enc.EncodeToken(c); err != nil {
		return err
	}
	if err := enc.EncodeToken(c.End()); err != nil {
		return err
	}
	return enc.EncodeToken(start.End())
}

// pingLoop pings the server every PingInterval (XEP-0199). No answer within
// the IQ timeout means the connection is dead: the session ends, and Run
// reconnects. An error answer is an answer. Now and then it also checks
// that both subscriptions still exist (see checkSubscriptions).
func (s *session) pingLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cl.s.PingInterval)
	defer t.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		_, err := s.iq(s.ctx, "get", s.cl.s.domain, &pingReq{})
		if errors.Is(err, ErrTimeout) {
			s.stop(fmt.Errorf("no answer to ping within %v", s.cl.s.IQTimeout))
			return
		}
		if time.Since(lastCheck) >= s.cl.s.subCheck {
			lastCheck = time.Now()
			if err := s.cl.checkSubscriptions(s.ctx, s); err != nil {
				s.stop(err)
				return
			}
		}
	}
}
