package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/busylamp/busylamp/devstate"
	"github.com/hashicorp/memberlist"
)

// Meta is what every member tells the others about itself in memberlist's
// node meta: enough to treat it as a buddy and to bind its EID to its JID.
type Meta struct {
	JID     string // full XMPP JID, local@domain/resource
	EID     devstate.EID
	Version string // busylamp version
}

// IsZero reports whether m is empty, as it is for a member whose meta could
// not be decoded.
func (m Meta) IsZero() bool { return m == Meta{} }

// metaVersion is the layout written by this code. Later layouts keep every
// field of version 1 in place and only append, so a reader of version 1
// reads the prefix of a newer member's meta and ignores the rest; that lets
// a cluster be upgraded one member at a time.
const metaVersion = 1

const (
	maxMetaSize    = memberlist.MetaMaxSize // 512
	maxVersionSize = 64
)

var errMetaEmpty = errors.New("empty meta")

// MarshalBinary encodes m as
//
//	version(1) EID(6) uvarint(len JID) JID uvarint(len Version) Version
//
// and fails if a field is invalid or the result exceeds memberlist's 512
// bytes.
func (m Meta) MarshalBinary() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+len(m.EID)+2*binary.MaxVarintLen16+len(m.JID)+len(m.Version))
	b = append(b, metaVersion)
	b = append(b, m.EID[:]...)
	b = binary.AppendUvarint(b, uint64(len(m.JID)))
	b = append(b, m.JID...)
	b = binary.AppendUvarint(b, uint64(len(m.Version)))
	b = append(b, m.Version...)
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("meta is %d bytes, memberlist allows %d: JID too long", len(b), maxMetaSize)
	}
	return b, nil
}

// UnmarshalBinary decodes and validates what MarshalBinary wrote. Meta comes
// from the network, so every length is checked before it is used.
func (m *Meta) UnmarshalBinary(b []byte) error {
	if len(b) == 0 {
		return errMetaEmpty
	}
	if len(b) > maxMetaSize {
		return fmt.Errorf("meta is %d bytes, over %d", len(b), maxMetaSize)
	}
	vers := b[0]
	if vers == 0 {
		return errors.New("meta version 0")
	}
	rest := b[1:]
	var out Meta
	if len(rest) < len(out.EID) {
		return errors.New("meta too short for an EID")
	}
	copy(out.EID[:], rest)
	rest = rest[len(out.EID):]
	var err error
	if out.JID, rest, err = readString(rest, "JID"); err != nil {
		return err
	}
	if out.Version, rest, err = readString(rest, "version"); err != nil {
		return err
	}
	if vers == metaVersion && len(rest) != 0 {
		return fmt.Errorf("meta has %d trailing bytes", len(rest))
	}
	if err := out.validate(); err != nil {
		return err
	}
	*m = out
	return nil
}

func readString(b []byte, what string) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return "", nil, fmt.Errorf("meta %s: bad length", what)
	}
	b = b[k:]
	if n > uint64(len(b)) {
		return "", nil, fmt.Errorf("meta %s: length %d past the end", what, n)
	}
	return string(b[:n]), b[n:], nil
}

func (m Meta) validate() error {
	if m.EID.IsZero() {
		return errors.New("meta EID is not set")
	}
	if m.JID == "" {
		return errors.New("meta JID is empty")
	}
	if err := printable(m.JID, false); err != nil {
		return fmt.Errorf("meta JID %q: %w", m.JID, err)
	}
	if len(m.Version) > maxVersionSize {
		return fmt.Errorf("meta version is %d bytes, over %d", len(m.Version), maxVersionSize)
	}
	if err := printable(m.Version, true); err != nil {
		return fmt.Errorf("meta version %q: %w", m.Version, err)
	}
	return nil
}

// printable rejects what would garble `show members` or a log line: invalid
// UTF-8, control characters, and (unless allowed) spaces, which no JID has.
func printable(s string, spaces bool) error {
	if !utf8.ValidString(s) {
		return errors.New("not UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || (!spaces && unicode.IsSpace(r)) {
			return fmt.Errorf("has character %U", r)
		}
	}
	return nil
}
