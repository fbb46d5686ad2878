// Package jid owns the one parser of XMPP addresses (RFC 7622) that the
// config, the XMPP client and the agent share, so that an account is
// spelled one way everywhere: local part and domain compare without case,
// a trailing dot of the domain is dropped (RFC 7622 §3.2), the resource is
// kept as it is. Unicode normalisation (PRECIS) is not done: two spellings
// that differ only by it are two accounts here.
package jid

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"
)

// JID is a parsed address in canonical form.
type JID struct {
	Local    string // lower-cased; "" for a domain JID (a PubSub service)
	Domain   string // lower-cased, without a trailing dot
	Resource string // as given
}

// maxPart is RFC 7622's limit on each part, in bytes.
const maxPart = 1023

// Parse reads s into its canonical form. A domain JID (no local part) is
// accepted; callers that need an account use ParseAccount.
func Parse(s string) (JID, error) {
	bad := func(why string) (JID, error) { return JID{}, fmt.Errorf("bad JID %q: %s", s, why) }
	if s == "" {
		return bad("empty")
	}
	if !utf8.ValidString(s) {
		return bad("not UTF-8")
	}
	bare, res, hasRes := strings.Cut(s, "/")
	local, domain, hasAt := strings.Cut(bare, "@")
	if !hasAt {
		local, domain = "", bare
	}
	switch {
	case hasAt && local == "":
		return bad("empty user part")
	case strings.ContainsAny(local, "\"&'/:<>@") || hasSpaceOrControl(local):
		return bad("user part has a character XMPP forbids")
	case len(local) > maxPart:
		return bad("user part longer than 1023 bytes")
	case hasRes && res == "":
		return bad("empty resource after '/'")
	case len(res) > maxPart || strings.IndexFunc(res, unicode.IsControl) >= 0:
		return bad("bad resource")
	}
	domain = strings.TrimSuffix(domain, ".")
	if err := CheckHost(domain); err != nil {
		return bad("domain: " + err.Error())
	}
	return JID{Local: strings.ToLower(local), Domain: strings.ToLower(domain), Resource: res}, nil
}

// ParseAccount is Parse for an account address: the local part is
// required (every node and buddy is an account).
func ParseAccount(s string) (JID, error) {
	j, err := Parse(s)
	if err == nil && j.Local == "" {
		return JID{}, fmt.Errorf("bad JID %q: want user@domain or user@domain/resource", s)
	}
	return j, err
}

// Bare is local@domain (or the domain alone), canonical.
func (j JID) Bare() string {
	if j.Local == "" {
		return j.Domain
	}
	return j.Local + "@" + j.Domain
}

// String is the full JID, canonical.
func (j JID) String() string {
	if j.Resource == "" {
		return j.Bare()
	}
	return j.Bare() + "/" + j.Resource
}

// WithResource is j with the resource r.
func (j JID) WithResource(r string) JID { j.Resource = r; return j }

// Bare is the canonical bare form of s, or "" when s is not a JID. When
// s is canonical already (as the servers send JIDs) the result is a slice
// of s: the agent calls this for every notification.
func Bare(s string) string {
	j, err := Parse(s)
	if err != nil {
		return ""
	}
	bare, _, _ := strings.Cut(s, "/")
	if j.Local == "" {
		if bare == j.Domain {
			return bare
		}
		return j.Domain
	}
	if n := len(j.Local); len(bare) == n+1+len(j.Domain) && bare[:n] == j.Local && bare[n] == '@' && bare[n+1:] == j.Domain {
		return bare
	}
	return j.Bare()
}

// Canonical is the canonical full form of s, or "" when s is not a JID.
func Canonical(s string) string {
	j, err := Parse(s)
	if err != nil {
		return ""
	}
	return j.String()
}

// Resource is the resource of s, "" when it has none or is not a JID.
func Resource(s string) string {
	j, err := Parse(s)
	if err != nil {
		return ""
	}
	return j.Resource
}

// Equal reports whether a and b are the same address (full comparison:
// resources must match too). Two strings that do not parse are never
// equal.
func Equal(a, b string) bool {
	ja, err1 := Parse(a)
	jb, err2 := Parse(b)
	return err1 == nil && err2 == nil && ja == jb
}

// SameAccount reports whether a and b name the same account (bare JIDs
// compared).
func SameAccount(a, b string) bool {
	ja, err1 := Parse(a)
	jb, err2 := Parse(b)
	return err1 == nil && err2 == nil && ja.Bare() == jb.Bare()
}

func hasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// CheckHost accepts a DNS name or an IP address (IPv6 with or without
// brackets). It does not resolve anything.
func CheckHost(h string) error {
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		if net.ParseIP(h[1:len(h)-1]) == nil {
			return errors.New("bad IPv6 address")
		}
		return nil
	}
	// Only what could be an IP address is parsed as one: a failed ParseIP
	// allocates, and this runs for every notification's publisher.
	if h != "" && (strings.IndexByte(h, ':') >= 0 || h[len(h)-1] >= '0' && h[len(h)-1] <= '9') && net.ParseIP(h) != nil {
		return nil
	}
	switch {
	case h == "":
		return errors.New("empty host name")
	case len(h) > 253:
		return errors.New("host name longer than 253 bytes")
	case strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") || strings.Contains(h, ".."):
		return errors.New("bad host name")
	}
	for _, r := range h {
		if r < 0x80 && !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_') {
			return errors.New("bad host name")
		}
	}
	return nil
}
