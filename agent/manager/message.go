package manager

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Header is one "Key: Value" line of an AMI message.
type Header struct {
	Key, Value string
}

// Message is one AMI message: its headers in the order they came.
type Message []Header

// Get returns the value of the first header named key, compared without
// regard to case as Asterisk does; "" when there is none.
func (m Message) Get(key string) string {
	v, _ := m.Lookup(key)
	return v
}

// Lookup is Get that also says whether the header is present.
func (m Message) Lookup(key string) (string, bool) {
	for _, h := range m {
		if strings.EqualFold(h.Key, key) {
			return h.Value, true
		}
	}
	return "", false
}

// Values returns the values of every header named key, in order (the
// Output lines of a Command response, for example).
func (m Message) Values(key string) []string {
	var vs []string
	for _, h := range m {
		if strings.EqualFold(h.Key, key) {
			vs = append(vs, h.Value)
		}
	}
	return vs
}

// action is the first non-empty Action header, as Asterisk picks it.
func (m Message) action() string {
	for _, h := range m {
		if h.Value != "" && strings.EqualFold(h.Key, "Action") {
			return h.Value
		}
	}
	return ""
}

// errMessageTooLarge ends a session: the rest of the stream can no longer
// be trusted to be framed where the client meant it.
var errMessageTooLarge = errors.New("message too large")

// parseError is a message that was read to its end but is malformed. The
// session answers it and goes on with the next message.
type parseError struct {
	msg string
}

func (e *parseError) Error() string { return "Failed to parse message: " + e.msg }

// reader reads AMI messages with hard bounds on the line, the message and
// the number of headers, in the manner of net/textproto. Lines may end in
// CRLF or a bare LF.
type reader struct {
	br         *bufio.Reader
	maxLine    int
	maxMessage int
	maxHeaders int
}

func newReader(r io.Reader, maxLine, maxMessage, maxHeaders int) *reader {
	// ReadSlice fails with ErrBufferFull exactly when a line (with its
	// CRLF) does not fit, which is the line bound.
	return &reader{
		br:         bufio.NewReaderSize(r, maxLine+2),
		maxLine:    maxLine,
		maxMessage: maxMessage,
		maxHeaders: maxHeaders,
	}
}

// readMessage reads one message up to its empty line. Empty lines before a
// message are skipped. It returns:
//   - the message and nil;
//   - the well-formed headers read and a *parseError: the message was
//     consumed to its end, the stream is still in step;
//   - the headers read so far and errMessageTooLarge;
//   - nil and io.EOF at a clean end of stream, or another read error
//     (io.ErrUnexpectedEOF when the stream ends inside a message).
func (r *reader) readMessage() (Message, error) {
	var (
		m     Message
		perr  *parseError
		total int
		lines int
	)
	fail := func(format string, args ...any) {
		if perr == nil {
			perr = &parseError{msg: fmt.Sprintf(format, args...)}
		}
	}
	for {
		b, err := r.br.ReadSlice('\n')
		total += len(b)
		if errors.Is(err, bufio.ErrBufferFull) {
			// Skip the rest of the over-long line; it still counts
			// against the message bound.
			for errors.Is(err, bufio.ErrBufferFull) && total <= r.maxMessage {
				b, err = r.br.ReadSlice('\n')
				total += len(b)
			}
			if total > r.maxMessage {
				return m, errMessageTooLarge
			}
			if err != nil {
				return nil, unexpectedEOF(err)
			}
			lines++
			fail("line too long")
			continue
		}
		if total > r.maxMessage {
			return m, errMessageTooLarge
		}
		if err != nil {
			if errors.Is(err, io.EOF) && total == 0 && lines == 0 {
				return nil, io.EOF
			}
			return nil, unexpectedEOF(err)
		}
		b = b[:len(b)-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
		if len(b) == 0 {
			if lines == 0 {
				total = 0 // a blank line between messages
				continue
			}
			if perr != nil {
				return m, perr
			}
			return m, nil
		}
		lines++
		if len(m) >= r.maxHeaders {
			fail("too many lines in message (limit %d)", r.maxHeaders)
			continue
		}
		h, msg := parseHeader(b)
		if msg != "" {
			fail("line %d %s", lines, msg)
			continue
		}
		if m == nil {
			m = make(Message, 0, 8)
		}
		m = append(m, h)
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseHeader splits "Key: Value". Blanks around the key and the value are
// dropped (Asterisk skips them after the colon). Control characters other
// than tab are refused: a CR or NUL inside a value could otherwise be echoed
// back into a response (ActionID) and forge a frame.
func parseHeader(b []byte) (Header, string) {
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return Header{}, "contains a control character"
		}
	}
	s := string(b)
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return Header{}, "has no ':' after the header name"
	}
	k = strings.Trim(k, " \t")
	if k == "" {
		return Header{}, "has an empty header name"
	}
	if strings.EqualFold(k, "Output") {
		// Command output is text whose indentation matters (tables, the
		// 'show buddies' layout): only the one blank after the colon is
		// framing.
		return Header{Key: k, Value: strings.TrimPrefix(v, " ")}, ""
	}
	return Header{Key: k, Value: strings.Trim(v, " \t")}, ""
}

// appendHeader renders one header line. CR and LF in the value (from a
// device name that came over XMPP, say) become blanks so that nothing can
// split a frame.
func appendHeader(b []byte, key, value string) []byte {
	b = append(b, key...)
	b = append(b, ": "...)
	b = appendClean(b, value)
	return append(b, "\r\n"...)
}

func appendClean(b []byte, v string) []byte {
	if strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 {
		return append(b, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// appendMessage renders a whole message with its closing empty line.
func appendMessage(b []byte, hs ...Header) []byte {
	for _, h := range hs {
		b = appendHeader(b, h.Key, h.Value)
	}
	return append(b, "\r\n"...)
}
