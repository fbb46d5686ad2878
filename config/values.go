package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
)

// parseBool reads a boolean as Asterisk's ast_true/ast_false do, except
// that a word that is neither is an error rather than false.
func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "yes", "true", "y", "t", "1", "on":
		return true, true
	case "no", "false", "n", "f", "0", "off":
		return false, true
	}
	return false, false
}

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("bad port %d: want 1-65535", p)
	}
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return p, checkPort(p)
}

// EID is an entity id in Asterisk's form, six bytes written like a MAC
// address: devstate's, so that there is one EID type. The zero value means
// "not configured": the agent derives one from the host.
type EID = devstate.EID

// ParseEID reads six hex bytes separated by colons, one or two hex digits
// each, either case ("00:11:22:33:44:55", "0:11:2:33:4:55"), by
// devstate.ParseEID's rule.
func ParseEID(s string) (EID, error) {
	e, err := devstate.ParseEID(s)
	if err != nil {
		return EID{}, fmt.Errorf("bad EID %q: want six hex bytes separated by colons, like 02:00:00:00:00:01", s)
	}
	return e, nil
}

// defaultResource is the resource Asterisk's res_xmpp binds when username
// has none; busylamp binds the same, so that buddy lines on other nodes
// that name it keep working when a node moves from Asterisk to busylamp.
const defaultResource = "asterisk-xmpp"

func hasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// hostPort reads "host:port" or "host" (then the port is def), checks both,
// and returns "host:port". The host must be an IP address when ipOnly.
func hostPort(s string, def int, ipOnly bool) (string, error) {
	host, port := s, def
	if h, p, err := net.SplitHostPort(s); err == nil {
		host = h
		n, err := strconv.Atoi(p)
		if err != nil {
			return "", fmt.Errorf("bad address %q: bad port %q", s, p)
		}
		port = n
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if ipOnly {
		if net.ParseIP(host) == nil {
			return "", fmt.Errorf("bad address %q: want IP:port", s)
		}
	} else if err := jid.CheckHost(host); err != nil {
		return "", fmt.Errorf("bad address %q: %v", s, err)
	}
	if err := checkPort(port); err != nil {
		return "", fmt.Errorf("bad address %q: %v", s, err)
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// isLoopback reports whether a host (of a host:port) is a loopback address.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
