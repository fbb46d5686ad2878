package xmppstream

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// StanzaError is an error answer to an IQ (RFC 6120 section 8.3).
type StanzaError struct {
	Type      string // cancel, auth, modify, wait, continue
	Condition string // defined condition, e.g. "item-not-found", "forbidden"
	// App is the application-specific condition element when the server
	// added one (its namespace says whose: XEP-0060's pubsub#errors, ...).
	App  xml.Name
	Text string
	Code string // legacy numeric code, when present
}

func (e *StanzaError) Error() string {
	var b strings.Builder
	b.WriteString(e.Condition)
	if e.App.Local != "" {
		b.WriteString(" (" + e.App.Local + ")")
	}
	if e.Text != "" {
		b.WriteString(": " + e.Text)
	}
	return b.String()
}

// parseStanzaError reads an <error/> element.
func parseStanzaError(e *Element) *StanzaError {
	se := &StanzaError{Type: e.Attr("type"), Code: e.Attr("code")}
	if e != nil {
		for i := range e.Nodes {
			c := &e.Nodes[i]
			switch {
			case c.XMLName.Space == NSStanzas && c.XMLName.Local == "text":
				se.Text = Clip(strings.TrimSpace(c.Content), 512)
			case c.XMLName.Space == NSStanzas:
				if se.Condition == "" {
					se.Condition = c.XMLName.Local
				}
			default:
				se.App = c.XMLName
			}
		}
	}
	if se.Condition == "" {
		se.Condition = "undefined-condition"
	}
	return se
}

// AuthError is a SASL failure: wrong password, unknown account, or no
// mechanism in common.
type AuthError struct {
	Mechanism string
	Condition string // SASL condition, e.g. "not-authorized"
	Text      string
}

func (e *AuthError) Error() string {
	s := "SASL " + e.Mechanism + " authentication failed: " + e.Condition
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// streamError is the error a <stream:error/> carries (RFC 6120 4.9).
func streamError(e *Element) error {
	cond, text := "undefined-condition", ""
	for i := range e.Nodes {
		n := &e.Nodes[i]
		if n.XMLName.Space != nsStreams {
			continue
		}
		if n.XMLName.Local == "text" {
			text = Clip(strings.TrimSpace(n.Content), 512)
		} else {
			cond = n.XMLName.Local
		}
	}
	if text != "" {
		return fmt.Errorf("stream error %s: %s", cond, text)
	}
	return fmt.Errorf("stream error %s", cond)
}

// Clip cuts s to n bytes, marking the cut; for text from the peer that
// goes into errors and logs.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
