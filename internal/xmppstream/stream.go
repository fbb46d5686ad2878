package xmppstream

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/internal/jid"
)

var (
	// ErrNotConnected is returned by calls on a stream that has ended; the
	// error also wraps why it ended.
	ErrNotConnected = errors.New("not connected to the XMPP server")
	// ErrTimeout is returned when an IQ gets no answer within
	// Config.IQTimeout.
	ErrTimeout = errors.New("no answer within the IQ timeout")
	// ErrAnswerSkipped is returned when an IQ's answer was larger than
	// the bound on a stanza (4 MiB) or nested too deeply: it was read and
	// dropped, and the stream goes on. Ask for less.
	ErrAnswerSkipped = errors.New("the answer was too large or nested too deeply, and was skipped")
)

// skippedAnswer stands, on a pending IQ's channel, for an answer that was
// skipped (ErrAnswerSkipped).
var skippedAnswer = &Element{}

// Config is one account's stream: where to connect, how to authenticate,
// and how to keep the stream alive.
type Config struct {
	// Addr is where to connect (Resolve): "host", "host:port", or a
	// list "host1:port1, host2" tried in order; a single host name
	// without a port is looked up in DNS (SRV records).
	Addr     string
	JID      string // the account, user@domain/resource; the resource is asked for at bind
	Password string

	// UseTLS asks for STARTTLS, or direct TLS on an _xmpps-client
	// target, verified against the system roots and TLSCAFile.
	UseTLS      bool
	TLSCAFile   string // PEM file of extra trusted CAs
	TLSInsecure bool   // skip certificate verification (logged at every connect)
	// Mechanism restricts SASL to one mechanism (tests); "" picks the best
	// one offered: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN.
	Mechanism string

	IQTimeout    time.Duration // every IQ (default 10 s)
	PingInterval time.Duration // XEP-0199 ping to the server (default 10 s)
	// ConnectTimeout bounds one TCP connect (default 5 s): a dead target
	// must not hold up the next one.
	ConnectTimeout time.Duration
	// Resolver looks up SRV records and host names; nil is
	// net.DefaultResolver.
	Resolver *net.Resolver

	Logger *slog.Logger // default slog.Default()
	// Trace, when set and true, logs every stanza but SASL's at debug
	// level; it may be switched while the stream runs.
	Trace *atomic.Bool
}

// Handler gets the stanzas of a stream, one at a time, on the stream's
// read loop and in arrival order. A handler must not wait for an IQ answer
// (the read loop delivers it, so that would never end); it may send.
type Handler interface {
	// HandleMessage gets every <message/>.
	HandleMessage(s *Stream, e *Element)
	// HandlePresence gets every <presence/>.
	HandlePresence(s *Stream, e *Element)
	// HandleIQ gets every IQ get or set addressed to us but pings (the
	// stream answers those) and payload-less ones (bad-request). It must
	// answer each, with Reply or ReplyError (RFC 6120 8.2.3).
	HandleIQ(s *Stream, e *Element)
}

// Stream is one negotiated XMPP c2s stream. Its read loop handles stanzas
// strictly in arrival order: IQ answers go to the caller waiting for that
// id (and only from the entity asked), everything else to the Handler.
// Its keepalive pings the server; no answer within the IQ timeout ends
// the stream. Ending it (Close, a read or write error, a stream error,
// the context given to Dial) closes the socket; Wait then returns once
// every goroutine of the stream has ended.
type Stream struct {
	cfg    Config
	bare   string // our account, canonical
	domain string
	c      *conn
	target Target // where c goes
	jid    string // bound full JID
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the read loop and the keepalive

	idPrefix string
	seq      atomic.Uint64
	started  atomic.Bool

	mu  sync.Mutex
	iqs map[string]*pendingIQ // nil once the read loop has ended

	lastRead   atomic.Int64  // when the read loop last read a stanza (UnixNano)
	skipped    atomic.Uint64 // stanzas read and dropped (too large, too deep)
	skipLogged time.Time     // the last skip logged (read loop only)
	skipQuiet  uint64        // skips since, not logged
}

// skipLogEvery bounds the log lines about skipped stanzas: anyone may send
// them.
const skipLogEvery = 10 * time.Second

type pendingIQ struct {
	to string
	ch chan *Element
}

// Dial resolves cfg.Addr (Resolve) and connects to the first target that
// serves, negotiating the stream (TLS, SASL, resource binding) within
// 30 s a target. A target that does not serve (ErrUnavailable) is passed
// over for the next; any other failure is the answer. The stream lasts
// until ctx is done or it is closed; nothing is read until Start.
func Dial(ctx context.Context, cfg Config) (*Stream, error) {
	cfg, _, err := cfg.check()
	if err != nil {
		return nil, err
	}
	ts, err := Resolve(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range ts {
		st, err := DialTarget(ctx, cfg, t)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
		if !errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			break
		}
	}
	last := errs[len(errs)-1]
	if len(errs) == 1 || !errors.Is(last, ErrUnavailable) {
		return nil, last
	}
	return nil, unavailable{errors.Join(errs...)}
}

// DialTarget connects to one target (of Resolve) and negotiates the
// stream, as Dial does.
func DialTarget(ctx context.Context, cfg Config, t Target) (*Stream, error) {
	cfg, j, err := cfg.check()
	if err != nil {
		return nil, err
	}
	c, bound, err := negotiate(ctx, cfg, j, t)
	if err != nil {
		return nil, err
	}
	s := newStream(ctx, cfg, j, c, bound)
	s.target = t
	return s, nil
}

func (cfg Config) check() (Config, jid.JID, error) {
	j, err := jid.ParseAccount(cfg.JID)
	if err != nil {
		return cfg, j, err
	}
	if cfg.IQTimeout <= 0 {
		cfg.IQTimeout = 10 * time.Second
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 10 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, j, nil
}

func newStream(parent context.Context, cfg Config, j jid.JID, c *conn, bound string) *Stream {
	ctx, cancel := context.WithCancelCause(parent)
	var b [4]byte
	_, _ = rand.Read(b[:])
	s := &Stream{cfg: cfg, bare: j.Bare(), domain: j.Domain, c: c, jid: bound, ctx: ctx, cancel: cancel,
		idPrefix: base64.RawURLEncoding.EncodeToString(b[:]), iqs: map[string]*pendingIQ{}}
	// Ending the stream closes the socket, which ends the read loop.
	context.AfterFunc(ctx, c.close)
	return s
}

// Start runs the read loop, handing stanzas to h, and the keepalive. It
// may be called once.
func (s *Stream) Start(h Handler) {
	if s.started.Swap(true) {
		panic("xmppstream: Start called twice")
	}
	s.wg.Add(2)
	go s.readLoop(h)
	go s.keepalive()
}

// JID is the full JID the server bound.
func (s *Stream) JID() string { return s.jid }

// Target is where the stream is connected.
func (s *Stream) Target() Target { return s.target }

// TLS is the state of the TLS connection, nil without TLS.
func (s *Stream) TLS() *tls.ConnectionState { return s.c.tls }

// Context is done when the stream has ended; its cause says why.
func (s *Stream) Context() context.Context { return s.ctx }

// Done is closed when the stream has ended.
func (s *Stream) Done() <-chan struct{} { return s.ctx.Done() }

// Err is why the stream ended, nil while it lasts.
func (s *Stream) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

// Skipped is the number of incoming stanzas read and dropped because they
// were larger than 4 MiB or nested more than 32 deep.
func (s *Stream) Skipped() uint64 { return s.skipped.Load() }

// Writes is the number of writes made on the connection so far, stanzas
// and batches of them (each one write call, one syscall without TLS).
func (s *Stream) Writes() uint64 { return s.c.nw.Load() }

// Close ends the stream for cause (the first cause given wins); the
// socket is closed. It does not wait: Wait does.
func (s *Stream) Close(cause error) { s.cancel(cause) }

// Wait waits for the stream's goroutines after it has ended.
func (s *Stream) Wait() { s.wg.Wait() }

// notConnected wraps both ErrNotConnected and why the stream ended, so
// that errors.Is finds either.
func notConnected(cause error) error {
	if cause == nil {
		return ErrNotConnected
	}
	return fmt.Errorf("%w: %w", ErrNotConnected, cause)
}

// Send marshals and writes a stanza; a write error ends the stream. After
// the end the error wraps ErrNotConnected and the cause.
func (s *Stream) Send(v any) error {
	if err := s.Err(); err != nil {
		return notConnected(err)
	}
	if err := s.c.send(v); err != nil {
		err = fmt.Errorf("write: %w", err)
		s.Close(err)
		return notConnected(err)
	}
	return nil
}

// newID is the id of our next IQ: the stream's nonce (4 random bytes,
// 6 characters of base64url) and a counter in base 36. The nonce keeps a
// late answer to an IQ of an earlier stream of the same full JID (one
// that crossed a server-to-server link, say) from being taken for the
// answer to an IQ of this one; answers are matched by their sender too
// (answerFrom). Short, because every publish carries its id and the
// server echoes it in its answer: after 100,000 IQs 10 characters
// ("Xk3_9Q255s"), where "bl" + 8 hex digits + "-" + the decimal counter
// took 17, 14 more bytes through the server per change.
func (s *Stream) newID() string {
	var b [24]byte
	return string(strconv.AppendUint(append(b[:0], s.idPrefix...), s.seq.Add(1), 36))
}

// IQ sends an IQ and waits for its answer, at most Config.IQTimeout. An
// error answer is returned with a *StanzaError.
func (s *Stream) IQ(ctx context.Context, typ, to string, p stanza.IQPayload) (*Element, error) {
	call, err := s.SendIQ(typ, to, p)
	if err != nil {
		return nil, err
	}
	return call.Wait(ctx)
}

// Call is an IQ sent and not answered yet.
type Call struct {
	s  *Stream
	id string
	ch chan *Element
	t0 time.Time
}

// SendIQ writes an IQ and registers for its answer, which Wait collects;
// the IQ timeout counts from now. Writing IQs in order and waiting for
// their answers elsewhere keeps several in flight.
func (s *Stream) SendIQ(typ, to string, p stanza.IQPayload) (*Call, error) {
	call := &Call{s: s, id: s.newID(), ch: make(chan *Element, 1), t0: time.Now()}
	s.mu.Lock()
	if s.iqs == nil {
		s.mu.Unlock()
		return nil, notConnected(s.Err())
	}
	s.iqs[call.id] = &pendingIQ{to: to, ch: call.ch}
	s.mu.Unlock()
	iq := &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.StanzaType(typ), To: to, Id: call.id}, Payload: p}
	if err := s.Send(iq); err != nil {
		call.forget()
		return nil, err
	}
	return call, nil
}

// SendIQs writes n IQs to one entity with one write (one syscall) and
// registers for their answers, which each Call's Wait collects; each IQ
// timeout counts from now. enc appends the i-th IQ, with the id given
// and addressed to to, to b; it runs under the stream's write lock, so it
// only encodes. A write error ends the stream and fails every call.
func (s *Stream) SendIQs(to string, n int, enc func(b []byte, i int, id string) []byte) ([]*Call, error) {
	if err := s.Err(); err != nil {
		return nil, notConnected(err)
	}
	t0 := time.Now()
	calls := make([]*Call, n)
	s.mu.Lock()
	if s.iqs == nil {
		s.mu.Unlock()
		return nil, notConnected(s.Err())
	}
	for i := range calls {
		c := &Call{s: s, id: s.newID(), ch: make(chan *Element, 1), t0: t0}
		s.iqs[c.id] = &pendingIQ{to: to, ch: c.ch}
		calls[i] = c
	}
	s.mu.Unlock()
	err := s.c.writeWith(func(b []byte) []byte {
		for i, c := range calls {
			b = enc(b, i, c.id)
		}
		return b
	})
	if err != nil {
		err = fmt.Errorf("write: %w", err)
		s.Close(err)
		for _, c := range calls {
			c.forget()
		}
		return nil, notConnected(err)
	}
	return calls, nil
}

func (c *Call) forget() {
	s := c.s
	s.mu.Lock()
	if s.iqs != nil {
		delete(s.iqs, c.id)
	}
	s.mu.Unlock()
}

// Wait returns the answer. An error answer comes with a *StanzaError; no
// answer within the IQ timeout is ErrTimeout; the end of the stream
// wraps ErrNotConnected.
func (c *Call) Wait(ctx context.Context) (*Element, error) {
	defer c.forget()
	t := time.NewTimer(c.s.cfg.IQTimeout - time.Since(c.t0))
	defer t.Stop()
	select {
	case e := <-c.ch:
		if e == skippedAnswer {
			return nil, ErrAnswerSkipped
		}
		if e.Attr("type") == "error" {
			return e, parseStanzaError(e.Child("", "error"))
		}
		return e, nil
	case <-t.C:
		return nil, ErrTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.s.ctx.Done():
		return nil, notConnected(c.s.Err())
	}
}

// readLoop runs until the stream ends. Its read deadline is a second
// liveness check beside the pings: the server answers a ping every
// PingInterval, so a silent stream is a dead one.
func (s *Stream) readLoop(h Handler) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.iqs = nil
		s.mu.Unlock()
	}()
	idle := s.cfg.PingInterval + s.cfg.IQTimeout + 5*time.Second
	for {
		s.c.setReadDeadline(time.Now().Add(idle))
		e, err := s.c.next()
		s.lastRead.Store(time.Now().UnixNano())
		if err != nil {
			if sk, ok := err.(*skipped); ok {
				s.skip(sk)
				continue
			}
			if err == io.EOF {
				err = errors.New("server closed the stream")
			}
			s.Close(fmt.Errorf("read: %w", err))
			return
		}
		if e.XMLName.Space == nsStream && e.XMLName.Local == "error" {
			s.Close(streamError(e))
			return
		}
		if e.XMLName.Space != nsClient {
			continue
		}
		switch e.XMLName.Local {
		case "iq":
			s.handleIQ(h, e)
		case "message":
			h.HandleMessage(s, e)
		case "presence":
			h.HandlePresence(s, e)
		}
		if s.ctx.Err() != nil {
			return
		}
	}
}

// skip counts and logs (rate-limited) a stanza read and dropped, and
// settles what it was: an IQ answer fails its caller at once, a request
// to us is answered with policy-violation (RFC 6120 8.3.3.12).
func (s *Stream) skip(sk *skipped) {
	n := s.skipped.Add(1)
	if now := time.Now(); now.Sub(s.skipLogged) >= skipLogEvery {
		from := ""
		if sk.head != nil {
			from = sk.head.Attr("from")
		}
		s.cfg.Logger.Warn("skipped an incoming stanza", "reason", sk.reason, "bytes", sk.size,
			"from", Clip(from, 128), "skipped_since_last_log", s.skipQuiet, "skipped_total", n)
		s.skipLogged, s.skipQuiet = now, 0
	} else {
		s.skipQuiet++
	}
	e := sk.head
	if e == nil || e.XMLName.Space != nsClient || e.XMLName.Local != "iq" {
		return
	}
	switch typ, id := e.Attr("type"), e.Attr("id"); typ {
	case "result", "error":
		s.mu.Lock()
		p := s.iqs[id]
		if p != nil && s.answerFrom(p.to, e.Attr("from")) {
			delete(s.iqs, id)
		} else {
			p = nil
		}
		s.mu.Unlock()
		if p != nil {
			p.ch <- skippedAnswer
		}
	case "get", "set":
		s.ReplyError(e, "modify", "policy-violation", "")
	}
}

func (s *Stream) handleIQ(h Handler, e *Element) {
	typ, id, from := e.Attr("type"), e.Attr("id"), e.Attr("from")
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
		p := e.FirstChild()
		switch {
		case p == nil:
			s.ReplyError(e, "modify", "bad-request", "400")
		case typ == "get" && p.Is(nsPing, "ping"):
			s.Reply(e, nil)
		default:
			h.HandleIQ(s, e)
		}
	}
}

// answerFrom checks that an answer comes from whom the request went to
// (RFC 6120 8.1.2.1); requests to our account are answered by the server
// without a from, or from our bare or full JID.
func (s *Stream) answerFrom(to, from string) bool {
	if strings.EqualFold(to, from) {
		return true
	}
	if to == "" || strings.EqualFold(to, s.bare) {
		return from == "" || strings.EqualFold(from, s.bare) || strings.EqualFold(from, s.jid) ||
			strings.EqualFold(from, s.domain)
	}
	return false
}

// Reply answers a request with a result carrying p (nil for none).
func (s *Stream) Reply(req *Element, p stanza.IQPayload) {
	_ = s.Send(&stanza.IQ{XMLName: xml.Name{Local: "iq"},
		Attrs: stanza.Attrs{Type: stanza.IQTypeResult, To: req.Attr("from"), Id: req.Attr("id")}, Payload: p})
}

// ReplyError answers a request with an error of type typ and defined
// condition cond; code is the legacy numeric code (Asterisk's res_xmpp
// reads it; RFC 6120 does not need it), "" for none.
func (s *Stream) ReplyError(req *Element, typ, cond, code string) {
	_ = s.Send(errorIQ{
		Type: "error", ID: req.Attr("id"), To: req.Attr("from"),
		Error: stanzaErrorOut{Type: typ, Code: code, Cond: xml.Name{Space: NSStanzas, Local: cond}},
	})
}

// errorIQ is an IQ error answer.
type errorIQ struct {
	XMLName xml.Name       `xml:"iq"`
	Type    string         `xml:"type,attr"`
	ID      string         `xml:"id,attr"`
	To      string         `xml:"to,attr,omitempty"`
	Error   stanzaErrorOut `xml:"error"`
}

// stanzaErrorOut is the <error/> of an answer we send.
type stanzaErrorOut struct {
	Type string `xml:"type,attr"`
	Code string `xml:"code,attr,omitempty"`
	Cond xml.Name
}

// MarshalXML writes the condition as an empty element in its namespace.
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

type pingReq struct {
	XMLName xml.Name `xml:"urn:xmpp:ping ping"`
}

func (*pingReq) Namespace() string         { return nsPing }
func (*pingReq) GetSet() *stanza.ResultSet { return nil }

// keepalive pings the server every PingInterval (XEP-0199). No answer
// within the IQ timeout means the connection is dead, and the stream
// ends, unless the server sent us a stanza within that time: a server
// that is busy reads our ping late (Prosody reads 8 KiB of a connection
// per turn, and a ping waits behind our publishes), and ending a session
// that is alive makes it busier still (a reconnect republishes every own
// state). An error answer is an answer.
func (s *Stream) keepalive() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		if _, err := s.IQ(s.ctx, "get", s.domain, &pingReq{}); errors.Is(err, ErrTimeout) {
			if since := time.Since(time.Unix(0, s.lastRead.Load())); since < s.cfg.IQTimeout {
				s.cfg.Logger.Debug("no answer to ping, but the server sent a stanza since: busy, not dead",
					"timeout", s.cfg.IQTimeout, "last_read_ago", since.Round(time.Millisecond))
				continue
			}
			s.Close(fmt.Errorf("no answer to ping within %v", s.cfg.IQTimeout))
			return
		}
	}
}
