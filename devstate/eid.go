package devstate

import (
	"crypto/sha256"
	"errors"
	"fmt"
)

// EID is an entity id: six bytes written like a MAC address,
// "00:11:22:33:44:55", as Asterisk's ast_eid. Every payload carries the EID
// of the server it came from.
type EID [6]byte

// String writes e in Asterisk's form, lower-case hex separated by colons.
func (e EID) String() string {
	const hex = "0123456789abcdef"
	var b [17]byte
	for i, x := range e {
		if i > 0 {
			b[i*3-1] = ':'
		}
		b[i*3] = hex[x>>4]
		b[i*3+1] = hex[x&0xf]
	}
	return string(b[:])
}

// IsZero reports whether e is all zeros (not set).
func (e EID) IsZero() bool { return e == EID{} }

var errEIDForm = errors.New("want six hex bytes separated by colons, like 00:11:22:33:44:55")

// ParseEID reads an EID in Asterisk's form; hex digits of either case, one or
// two per byte (Asterisk accepts "0:11:2:33:4:55" too).
func ParseEID(s string) (EID, error) {
	var e EID
	i := 0
	for part := 0; part < 6; part++ {
		if part > 0 {
			if i >= len(s) || s[i] != ':' {
				return EID{}, fmt.Errorf("bad EID %q: %w", s, errEIDForm)
			}
			i++
		}
		var v byte
		n := 0
		for n < 2 && i < len(s) {
			d, ok := hexDigit(s[i])
			if !ok {
				break
			}
			v = v<<4 | d
			i++
			n++
		}
		if n == 0 {
			return EID{}, fmt.Errorf("bad EID %q: %w", s, errEIDForm)
		}
		e[part] = v
	}
	if i != len(s) {
		return EID{}, fmt.Errorf("bad EID %q: %w", s, errEIDForm)
	}
	return e, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// DeriveEID makes a stable, locally administered EID from a seed such as the
// host name and the node's JID, for nodes whose config names no eid.
func DeriveEID(seed string) EID {
	sum := sha256.Sum256([]byte(seed))
	var e EID
	copy(e[:], sum[:6])
	e[0] = (e[0] | 0x02) &^ 0x01 // locally administered, unicast
	return e
}
