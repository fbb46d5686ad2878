package manager

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/internal/hop"
)

// frame is a run of whole messages for the writer; close asks it to flush
// and end the session after them (Logoff, an oversized message).
type frame struct {
	b      []byte
	close  bool
	reason string
}

// session is one connection. Its read goroutine reads and answers actions
// one at a time; its write goroutine alone writes, responses and events, so
// frames never interleave.
type session struct {
	srv    *Server
	conn   net.Conn
	remote string
	source string     // the login guard's key for the peer
	ip     netip.Addr // the peer's address, for the ACL; invalid when not IP
	ctx    context.Context
	cancel context.CancelFunc

	resp     chan frame    // responses, from the read goroutine
	done     chan struct{} // closed by kill
	killOnce sync.Once

	// The event queue: Emit appends, the writer takes the whole batch.
	evMu    sync.Mutex
	evq     [][]byte
	closed  bool
	evReady chan struct{} // a token when evq turns non-empty

	loggedIn atomic.Bool
	mask     atomic.Uint32 // event classes this session takes

	user atomic.Pointer[string] // set at login; logged by other goroutines

	loginTried atomic.Bool // sent Login or Challenge: not dropped first
	counted    bool        // holds a logged-in place; guarded by srv.mu

	// Owned by the read goroutine.
	failed    int
	challenge string
	readAt    time.Time // when the message being handled was read (only with cfg.Hops)
}

func newSession(ctx context.Context, srv *Server, conn net.Conn, source string) *session {
	ctx, cancel := context.WithCancel(ctx)
	ip, _ := addrIP(conn.RemoteAddr())
	s := &session{
		srv:     srv,
		conn:    conn,
		remote:  conn.RemoteAddr().String(),
		source:  source,
		ip:      ip,
		ctx:     ctx,
		cancel:  cancel,
		resp:    make(chan frame, 4),
		done:    make(chan struct{}),
		evReady: make(chan struct{}, 1),
	}
	s.mask.Store(classAll) // Asterisk's sessions start with all events on
	return s
}

func (s *session) username() string {
	if u := s.user.Load(); u != nil {
		return *u
	}
	return ""
}

// kill ends the session: the connection is closed, both goroutines return.
func (s *session) kill(reason string) {
	s.killOnce.Do(func() {
		s.evMu.Lock()
		s.closed = true
		s.evq = nil
		s.evMu.Unlock()
		s.cancel()
		close(s.done)
		s.conn.Close()
		if reason != "" {
			s.srv.log.Debug("manager session closed", "remote", s.remote, "user", s.username(), "reason", reason)
		}
	})
}

// push queues one rendered event; a full queue means the client does not
// keep up, and it is cut off rather than allowed to hold the agent back.
func (s *session) push(b []byte) {
	s.evMu.Lock()
	if s.closed {
		s.evMu.Unlock()
		return
	}
	if len(s.evq) >= s.srv.cfg.QueueLen {
		n := len(s.evq)
		s.evMu.Unlock()
		s.srv.log.Warn("manager session disconnected: not reading its events",
			"remote", s.remote, "user", s.username(), "queued", n)
		s.kill("event queue full")
		return
	}
	s.evq = append(s.evq, b)
	first := len(s.evq) == 1
	s.evMu.Unlock()
	if first {
		select {
		case s.evReady <- struct{}{}:
		default:
		}
	}
}

func (s *session) takeEvents(spare [][]byte) [][]byte {
	s.evMu.Lock()
	q := s.evq
	s.evq = spare[:0]
	s.evMu.Unlock()
	return q
}

func (s *session) eventsPending() bool {
	s.evMu.Lock()
	n := len(s.evq)
	s.evMu.Unlock()
	return n > 0
}

// send hands a response to the writer; false once the session has ended.
func (s *session) send(f frame) bool {
	select {
	case s.resp <- f:
		return true
	case <-s.done:
		return false
	}
}

// closeAfter sends the last response and waits until the writer has
// flushed it and ended the session.
func (s *session) closeAfter(b []byte, reason string) {
	if s.send(frame{b: b, close: true, reason: reason}) {
		<-s.done
	}
}

func (s *session) writeLoop() {
	defer s.srv.wg.Done()
	defer s.kill("")
	bw := bufio.NewWriterSize(s.conn, 32<<10)
	var spare [][]byte
	// Setting a deadline costs more than a small write, so it is renewed
	// only when a tenth of the timeout has passed: a write that blocks
	// still fails after 90..100% of WriteTimeout.
	timeout := s.srv.cfg.WriteTimeout
	var armed time.Time
	arm := func() {
		if now := time.Now(); now.Sub(armed) > timeout/10 {
			armed = now
			s.conn.SetWriteDeadline(now.Add(timeout))
		}
	}
	// write returns false when the session is over. The deadline is
	// armed once per batch, not per frame: reading the clock is not free.
	write := func(f frame) bool {
		if _, err := bw.Write(f.b); err != nil {
			s.kill("write: " + err.Error())
			return false
		}
		if f.close {
			bw.Flush()
			s.kill(f.reason)
			return false
		}
		return true
	}
	for {
		// Flush once nothing more is waiting, so a burst leaves in few
		// writes.
		if bw.Buffered() > 0 && len(s.resp) == 0 && !s.eventsPending() {
			arm()
			if h := s.srv.cfg.Hops; h != nil {
				h(hop.Flushed, "", time.Now())
			}
			if err := bw.Flush(); err != nil {
				s.kill("write: " + err.Error())
				return
			}
		}
		select {
		case <-s.done:
			return
		case f := <-s.resp:
			arm()
			if !write(f) {
				return
			}
		case <-s.evReady:
			arm()
			// Responses queued before these events were pushed go
			// first (the login response before the first event).
			for drained := false; !drained; {
				select {
				case f := <-s.resp:
					if !write(f) {
						return
					}
				default:
					drained = true
				}
			}
			batch := s.takeEvents(spare)
			for _, b := range batch {
				if !write(frame{b: b}) {
					return
				}
			}
			clear(batch)
			spare = batch[:0]
		}
	}
}

func (s *session) readLoop() {
	defer s.srv.wg.Done()
	defer s.srv.remove(s)
	defer s.kill("")

	if !s.send(frame{b: []byte("Asterisk Call Manager/" + Version + "\r\n")}) {
		return
	}
	cfg := s.srv.cfg
	// As Asterisk's authtimeout: a connection that does not log in soon
	// gives its place back. Login clears the deadline.
	s.conn.SetReadDeadline(time.Now().Add(cfg.AuthTimeout))
	r := newReader(s.conn, cfg.MaxLine, cfg.MaxMessage, cfg.MaxHeaders)
	for {
		m, err := r.readMessage()
		var perr *parseError
		switch {
		case err == nil:
			if cfg.Hops != nil {
				s.readAt = time.Now()
			}
			if !s.handle(m) {
				return
			}
		case errors.As(err, &perr):
			s.srv.log.Debug("manager malformed message", "remote", s.remote, "err", perr.msg)
			if !s.sendError(m, perr.Error()) {
				return
			}
		case errors.Is(err, errMessageTooLarge):
			s.srv.log.Warn("manager session closed: message too large",
				"remote", s.remote, "user", s.username(), "limit", cfg.MaxMessage)
			s.closeAfter(s.response(m, "Error",
				Header{"Message", fmt.Sprintf("Message too large (limit %d bytes)", cfg.MaxMessage)}),
				"message too large")
			return
		default:
			if !s.loggedIn.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				if ok, n := s.srv.logTimeout.allow(cfg.Now()); ok {
					s.srv.log.Info("manager session closed: no login in time",
						"remote", s.remote, "timeout", cfg.AuthTimeout, "suppressed", n)
				}
				return
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) {
				s.srv.log.Debug("manager read failed", "remote", s.remote, "err", err)
			}
			return
		}
	}
}

// response renders "Response: status", the request's ActionID, then hs.
func (s *session) response(req Message, status string, hs ...Header) []byte {
	b := make([]byte, 0, 128)
	b = appendHeader(b, "Response", status)
	if id := req.Get("ActionID"); id != "" {
		b = appendHeader(b, "ActionID", id)
	}
	return appendMessage(b, hs...)
}

func (s *session) sendError(req Message, msg string) bool {
	return s.send(frame{b: s.response(req, "Error", Header{"Message", msg})})
}

func (s *session) sendSuccess(req Message, hs ...Header) bool {
	return s.send(frame{b: s.response(req, "Success", hs...)})
}
