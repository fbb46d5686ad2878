package devstate

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen bounds a device name, a mailbox and a PubSub item id, in bytes.
const MaxNameLen = 256

// CheckName says why s cannot be a device name or mailbox (empty, too
// long, not UTF-8, a control character), or nil. It is the one rule for
// names: the AMI socket, the agent and the wire all apply it, so what is
// accepted anywhere can also be published.
func CheckName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxNameLen:
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	case !utf8.ValidString(s):
		return errors.New("not UTF-8")
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		return errors.New("control character")
	}
	return nil
}
