package xmpptest

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// StreamOpens checks that a server at addr answers a client stream for
// domain with its stream features within d: the port is bound, the host
// is configured and the server serves. A TCP connect alone says less: a
// starting ejabberd has its port listening (the kernel completes the
// handshake) seconds before it accepts and answers anything.
func StreamOpens(addr, domain string, d time.Duration) error {
	return streamOpens(addr, domain, "jabber:client", d)
}

// streamOpens opens a stream of namespace ns (the attribute's value as
// written, extra namespace declarations may follow it) and waits for the
// stream features.
func streamOpens(addr, domain, ns string, d time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(d)); err != nil {
		return err
	}
	_, err = fmt.Fprintf(conn, "<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='%s' xmlns:stream='http://etherx.jabber.org/streams'>", domain, ns)
	if err != nil {
		return err
	}
	dec := xml.NewDecoder(io.LimitReader(conn, 1<<16))
	for {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("read stream features: %w", err)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		switch {
		case se.Name.Local == "features":
			_, _ = io.WriteString(conn, "</stream:stream>")
			return nil
		case se.Name.Local == "error":
			return errors.New("stream error before features")
		}
	}
}

// probeTimeout bounds one readiness probe.
const probeTimeout = 10 * time.Second

// waitReady polls until the stream opens, the server exits, or timeout.
func waitReady(g *group, addr, domain string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if g.exited() {
			return fmt.Errorf("server exited during start-up: %v", g.waitErr)
		}
		// A booting server may take seconds to answer a stream it has
		// accepted when the machine is busy; one probe waits that long.
		if last = StreamOpens(addr, domain, probeTimeout); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %v: %v", timeout, last)
}

// StartServing starts the server (Start) and says when it served again:
// the first client stream it answered with its features, probed from
// before Start, or Start's return if that came first (Start returns once
// its own probe got the features). done waits for the probe, which may
// still be in a stream then; call it when the measurement is over.
func (s *Server) StartServing() (up time.Time, done func(), err error) {
	served := make(chan time.Time, 1)
	stop, probed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(probed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if StreamOpens(s.Addr, s.Domain, probeTimeout) == nil {
				served <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	done = func() { <-probed }
	err = s.Start()
	up = time.Now()
	close(stop)
	select {
	case up = <-served:
	default:
	}
	return up, done, err
}
