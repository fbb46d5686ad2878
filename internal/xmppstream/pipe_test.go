package xmppstream

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"
)

const serverHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' ` +
	`xmlns:stream='http://etherx.jabber.org/streams' from='example.org' id='s1' version='1.0'>`

// peer is the server's end of an in-memory stream: it reads what the
// client writes as stanzas and writes raw XML back.
type peer struct {
	t    *testing.T
	nc   net.Conn
	in   chan *Element // stanzas from the client, in order
	errc chan error
}

// pipeConn returns the client's conn, its stream header exchanged, and
// the server's end.
func pipeConn(t *testing.T) (*conn, *peer) {
	t.Helper()
	a, b := net.Pipe()
	c := &conn{raw: a, nc: a, log: slog.New(slog.DiscardHandler)}
	c.resetDecoder()
	p := &peer{t: t, nc: b, in: make(chan *Element, 64), errc: make(chan error, 1)}
	go func() {
		x := newXMLReader(bufio.NewReader(b))
		if err := x.header(); err != nil {
			p.errc <- err
			close(p.in)
			return
		}
		if _, err := b.Write([]byte(serverHeader)); err != nil {
			p.errc <- err
			close(p.in)
			return
		}
		for {
			e, err := x.next()
			if err != nil {
				p.errc <- err
				close(p.in)
				return
			}
			p.in <- e
		}
	}()
	if err := c.openStream("example.org"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(); c.close() })
	return c, p
}

// next is the client's next stanza.
func (p *peer) next() *Element {
	p.t.Helper()
	select {
	case e, ok := <-p.in:
		if !ok {
			p.t.Fatalf("client's stream ended: %v", <-p.errc)
		}
		return e
	case <-time.After(10 * time.Second):
		p.t.Fatal("nothing from the client")
		return nil
	}
}

func (p *peer) write(format string, args ...any) {
	p.t.Helper()
	if _, err := fmt.Fprintf(p.nc, format, args...); err != nil {
		p.t.Fatal(err)
	}
}

// pipeStream is a stream over pipeConn, bound to me@example.org/r.
func pipeStream(t *testing.T, cfg Config) (*Stream, *peer) {
	t.Helper()
	c, p := pipeConn(t)
	cfg.JID = "me@example.org/r"
	cfg, j, err := cfg.check()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	s := newStream(context.Background(), cfg, j, c, "me@example.org/r")
	t.Cleanup(func() { s.Close(context.Canceled); s.Wait() })
	return s, p
}
