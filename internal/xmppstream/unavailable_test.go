package xmppstream

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// scripted is a TCP server on 127.0.0.1 that plays one script per
// connection: serve reads the client's stream header and writes back.
func scripted(t *testing.T, serve func(nc net.Conn, x *xmlReader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				serve(nc, newXMLReader(bufio.NewReader(nc)))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func dialTest(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := Dial(ctx, Config{Addr: addr, JID: "a@example.org/r", Password: "pw", Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		st.Close(errors.New("test done"))
		st.Wait()
	}
	return err
}

const saslFeatures = `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>` +
	`<mechanism>PLAIN</mechanism></mechanisms></stream:features>`

// A server that is not serving (refused, or closes or stalls the stream
// before authentication) is told apart from one that answers: the first
// may be retried soon, the second not.
func TestDialTellsUnavailableFromAnswered(t *testing.T) {
	// A port nobody listens on: bind one, close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	cases := []struct {
		name        string
		addr        string
		unavailable bool
	}{
		{"refused", refused, true},
		{"closed at once", scripted(t, func(nc net.Conn, x *xmlReader) {}), true},
		{"closed after the header", scripted(t, func(nc net.Conn, x *xmlReader) {
			_ = x.header()
			_, _ = nc.Write([]byte(serverHeader))
		}), true},
		{"closed during SASL", scripted(t, func(nc net.Conn, x *xmlReader) {
			_ = x.header()
			_, _ = nc.Write([]byte(serverHeader + saslFeatures))
			_, _ = x.next() // the auth
		}), true},
		{"authentication refused", scripted(t, func(nc net.Conn, x *xmlReader) {
			_ = x.header()
			_, _ = nc.Write([]byte(serverHeader + saslFeatures))
			_, _ = x.next()
			_, _ = nc.Write([]byte(`<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>`))
			_, _ = x.next() // until the client closes
		}), false},
		{"stream error", scripted(t, func(nc net.Conn, x *xmlReader) {
			_ = x.header()
			_, _ = nc.Write([]byte(serverHeader + `<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`))
			_, _ = x.next()
		}), false},
	}
	for _, c := range cases {
		err := dialTest(c.addr)
		if err == nil {
			t.Fatalf("%s: Dial succeeded", c.name)
		}
		if got := errors.Is(err, ErrUnavailable); got != c.unavailable {
			t.Errorf("%s: %v: unavailable %v, want %v", c.name, err, got, c.unavailable)
		}
	}
}
