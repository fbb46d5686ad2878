package xmppstream

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// writeTimeout bounds every write: a peer that does not take our bytes for
// this long is as dead as one that does not answer a ping.
const writeTimeout = 15 * time.Second

// maxStanza bounds one incoming stanza, in bytes.
const maxStanza = 4 << 20

var errStanzaTooLarge = fmt.Errorf("incoming stanza larger than %d bytes", maxStanza)

// conn is one TCP (and, after STARTTLS, TLS) connection carrying one XMPP
// stream. Reads happen on one goroutine at a time (negotiation, then the
// read loop); writes are serialised by wmu and each has a deadline, so a
// dead peer turns into an error instead of a goroutine stuck for ever.
type conn struct {
	raw net.Conn
	nc  net.Conn // raw, or the TLS connection over it
	tls *tls.ConnectionState
	lim *limitReader
	xr  *xmlReader
	log *slog.Logger
	// trace, when set and on, logs every stanza; sasl suppresses it
	// while the SASL exchange runs (it carries the password).
	trace *atomic.Bool
	sasl  bool
	wmu   sync.Mutex
	wbuf  []byte        // under wmu: writeWith's buffer, kept between writes
	nw    atomic.Uint64 // writes made (syscalls, without TLS)
	ack   func()        // after each write: ACK the server's data at once again (quickAck); nil: nothing
	once  sync.Once
}

// maxKeptWriteBuf bounds the buffer a conn keeps between writes; a larger
// one (a rare large batch) goes back to the garbage collector.
const maxKeptWriteBuf = 64 << 10

// limitReader fails when more than max bytes are read between two resets
// (one stanza, kept or skipped): a stanza is kept up to maxStanza and
// skipped up to maxSkip.
type limitReader struct {
	r   io.Reader
	n   int
	max int
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n >= l.max {
		return 0, errStanzaTooLarge
	}
	if len(p) > l.max-l.n {
		p = p[:l.max-l.n]
	}
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}

// dial makes the TCP connection to addr, within connectTimeout, names
// resolved by r (nil: the default resolver).
func dial(ctx context.Context, addr string, connectTimeout time.Duration, r *net.Resolver, log *slog.Logger, trace *atomic.Bool) (*conn, error) {
	d := net.Dialer{Timeout: connectTimeout, Resolver: r}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{raw: nc, nc: nc, log: log, trace: trace, ack: quickAck(nc)}
	c.resetDecoder()
	return c, nil
}

// resetDecoder starts reading a new XML stream (after STARTTLS and SASL).
func (c *conn) resetDecoder() {
	c.lim = &limitReader{r: c.nc, max: maxSkip + maxStanza}
	c.xr = newXMLReader(bufio.NewReaderSize(c.lim, 16<<10))
}

// openStream sends the stream header and reads the server's.
func (c *conn) openStream(domain string) error {
	hdr := fmt.Sprintf("<?xml version='1.0'?><stream:stream to='%s' xmlns='%s' xmlns:stream='%s' version='1.0'>",
		xmlEscape(domain), nsClient, nsStream)
	if err := c.writeRaw([]byte(hdr)); err != nil {
		return err
	}
	c.lim.n = 0
	if err := c.xr.header(); err != nil {
		return fmt.Errorf("read stream header: %w", err)
	}
	return nil
}

// startTLS upgrades the connection in place.
func (c *conn) startTLS(cfg *tls.Config) error {
	tc := tls.Client(c.raw, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	st := tc.ConnectionState()
	c.nc, c.tls = tc, &st
	c.resetDecoder()
	return nil
}

// next reads the next top-level element of the stream. A closing
// </stream:stream> is io.EOF.
func (c *conn) next() (*Element, error) {
	c.lim.n = 0
	e, err := c.xr.next()
	if err != nil {
		if c.lim.n >= c.lim.max {
			return nil, errStanzaTooLarge
		}
		return nil, err
	}
	if c.tracing() {
		b, _ := xml.Marshal(e)
		c.log.Debug("xmpp recv", "xml", string(b))
	}
	return e, nil
}

// tracing says whether stanzas go to the log now: the flag may be
// switched at run time ('busylamp debug on').
func (c *conn) tracing() bool { return !c.sasl && c.trace != nil && c.trace.Load() }

// setReadDeadline bounds the next reads; the zero time clears it.
func (c *conn) setReadDeadline(t time.Time) { _ = c.nc.SetReadDeadline(t) }

// send marshals v and writes it.
func (c *conn) send(v any) error {
	b, err := xml.Marshal(v)
	if err != nil {
		return fmt.Errorf("marshal stanza: %w", err)
	}
	return c.writeRaw(b)
}

func (c *conn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

// writeWith writes what enc appends to the (empty) buffer it is given,
// with one write: enc runs under the write lock, in the buffer the conn
// keeps, so a batch of stanzas costs one syscall and no allocation.
func (c *conn) writeWith(enc func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := enc(c.wbuf[:0])
	err := c.writeLocked(b)
	if cap(b) <= maxKeptWriteBuf {
		c.wbuf = b[:0]
	}
	return err
}

func (c *conn) writeLocked(b []byte) error {
	if c.tracing() {
		c.log.Debug("xmpp send", "xml", string(b))
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.nw.Add(1)
	_, err := c.nc.Write(b)
	if c.ack != nil {
		c.ack()
	}
	return err
}

// close ends the stream politely when the peer still takes writes, and
// closes the socket. Safe to call more than once and from any goroutine.
func (c *conn) close() {
	c.once.Do(func() {
		// Only when no other write is under way: a writer stuck on a dead
		// peer must not hold up the close, and closing the socket is what
		// frees it.
		if c.wmu.TryLock() {
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.nc.Write([]byte("</stream:stream>"))
			c.wmu.Unlock()
		}
		_ = c.raw.Close()
	})
}

// MarshalXML writes e back as XML (for the trace log, and tests), each
// element's namespace declared on it.
func (e *Element) MarshalXML(enc *xml.Encoder, _ xml.StartElement) error {
	return encodeElem(enc, e)
}

func encodeElem(enc *xml.Encoder, e *Element) error {
	start := xml.StartElement{Name: xml.Name{Local: e.XMLName.Local}}
	if e.XMLName.Space != "" {
		start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "xmlns"}, Value: e.XMLName.Space})
	}
	start.Attr = append(start.Attr, e.Attrs...)
	if err := enc.EncodeToken(start); err != nil {
		return err
	}
	if e.Content != "" {
		if err := enc.EncodeToken(xml.CharData(e.Content)); err != nil {
			return err
		}
	}
	for i := range e.Nodes {
		if err := encodeElem(enc, &e.Nodes[i]); err != nil {
			return err
		}
	}
	return enc.EncodeToken(start.End())
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
