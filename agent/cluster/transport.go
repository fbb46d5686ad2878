package cluster

import (
	"context"
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport is memberlist's NetTransport whose outgoing streams end when
// ctx does. Without it a join to an address that drops packets holds Close
// for memberlist's TCP timeout (10 s LAN, 30 s WAN) per address.
type transport struct {
	*memberlist.NetTransport
	ctx context.Context
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport binds TCP and UDP on ip:port. Port 0 picks a free port; as
// memberlist does, it retries when the kernel's TCP port is taken for UDP.
func newTransport(ctx context.Context, ip string, port int, logger *log.Logger) (*transport, error) {
	cfg := &memberlist.NetTransportConfig{BindAddrs: []string{ip}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(cfg); err == nil {
			return &transport{NetTransport: nt, ctx: ctx}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, fmt.Errorf("bind %s: %w", net.JoinHostPort(ip, fmt.Sprint(port)), err)
}

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.dial(addr, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.dial(a.Addr, timeout)
}

func (t *transport) dial(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(t.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// memberlist sets a deadline on the streams it reads answers from,
	// not on a user message (SendReliable): without one, a member that
	// stops reading would hold the sender until Close.
	_ = conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(t.ctx, func() { _ = conn.Close() })
	return &stream{Conn: conn, stop: stop}, nil
}

// stream is a dialed connection that ctx closes.
type stream struct {
	net.Conn
	stop func() bool
}

func (s *stream) Close() error {
	s.stop()
	return s.Conn.Close()
}
