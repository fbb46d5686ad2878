package jid

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// MaxServers bounds the entries of a server list (serverhost), and the
// targets an SRV lookup may add.
const MaxServers = 32

// HostPort is one entry of a server list: a host name or IP address (an
// IPv6 one without brackets) and its port, 0 when the entry gave none.
type HostPort struct {
	Host string
	Port int
}

// String is host:port, or the host alone without a port.
func (h HostPort) String() string {
	if h.Port == 0 {
		if strings.IndexByte(h.Host, ':') >= 0 {
			return "[" + h.Host + "]"
		}
		return h.Host
	}
	return net.JoinHostPort(h.Host, strconv.Itoa(h.Port))
}

// IsIP reports whether the host is an IP address rather than a name.
func (h HostPort) IsIP() bool { return net.ParseIP(h.Host) != nil }

// SplitServers reads serverhost's value: one server or several separated
// by commas, each a host name, an IPv4 address or an IPv6 one (bracketed
// when a port follows), with an optional :port. It is the one reader of
// the form, shared by the config check and the dialer, so that both take
// the same lists.
func SplitServers(s string) ([]HostPort, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty server list")
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxServers {
		return nil, fmt.Errorf("%d servers: at most %d", len(parts), MaxServers)
	}
	out := make([]HostPort, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, errors.New("empty entry in the server list")
		}
		h, err := splitServer(p)
		if err != nil {
			if len(parts) > 1 {
				return nil, fmt.Errorf("%q: %w", p, err)
			}
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func splitServer(p string) (HostPort, error) {
	if net.ParseIP(p) != nil { // an IPv6 address alone has colons too
		return HostPort{Host: p}, nil
	}
	host, port := p, 0
	if h, ps, err := net.SplitHostPort(p); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n < 1 || n > 65535 {
			return HostPort{}, fmt.Errorf("bad port %q: want 1-65535", ps)
		}
		host, port = h, n
	} else if strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
		host = p[1 : len(p)-1]
		if net.ParseIP(host) == nil {
			return HostPort{}, errors.New("bad IPv6 address")
		}
	}
	if strings.IndexByte(host, ':') >= 0 && net.ParseIP(host) == nil {
		return HostPort{}, errors.New("bad host name")
	}
	if err := CheckHost(host); err != nil {
		return HostPort{}, err
	}
	return HostPort{Host: host, Port: port}, nil
}
