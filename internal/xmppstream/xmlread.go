package xmppstream

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// xmlReader reads an XMPP stream: its header, then each stanza (top-level
// element) as an elem tree. It does what encoding/xml's Decoder did for
// the read loop, with the same result for every stanza (names, namespaces,
// attributes, entities, line ends, character checks: a differential fuzz
// test holds it to that), at a few allocations a stanza instead of some 80:
// a stanza is first framed into one buffer, made one string, and its names,
// values and text are slices of that string unless an entity or a carriage
// return makes them differ.
//
// It is stricter than encoding/xml where RFC 6120 §11.1 restricts XMPP:
// comments, processing instructions and DTDs inside a stanza, names that
// are not ASCII, and text other than white space between stanzas are
// errors.
type xmlReader struct {
	r     *bufio.Reader
	buf   []byte   // the stanza being framed; reused
	head  int      // in buf: the end of the stanza's start tag (after '>'), 0 before it
	skip  *skipped // the stanza being skipped (too large), nil while framing whole
	base  []nsDecl // the stream header's declarations
	scope []nsDecl // declarations in scope while parsing; reused
	tmp   []xml.Attr
}

// nsDecl binds a prefix ("" for the default namespace) to a namespace.
type nsDecl struct{ prefix, uri string }

const (
	xmlURL      = "http://www.w3.org/XML/1998/namespace"
	xmlnsPrefix = "xmlns"
)

var (
	errRestrictedXML = errors.New("restricted XML (comment, processing instruction or DTD) in a stanza")
	errTextBetween   = errors.New("text between stanzas")
	errTooManyNS     = fmt.Errorf("more than %d namespace declarations in scope", maxNSDecls)
)

// skipped is a stanza that was read to its end and dropped: larger than
// maxStanza, or nested deeper than maxDepth. Any account can send such a
// stanza to our full JID and the server passes it on, so it must not end
// the stream; the stream reads on from the next stanza. Head is the
// stanza's start tag (name and attributes, no children), nil when the tag
// itself could not be read, so that an IQ answer dropped this way still
// reaches its caller as an error.
type skipped struct {
	head   *Element
	size   int   // bytes read
	reason error // errStanzaTooLarge or errTooDeep
}

func (e *skipped) Error() string {
	name := "?"
	if e.head != nil {
		name = e.head.XMLName.Local
	}
	return fmt.Sprintf("skipped a <%s> stanza of %d bytes: %v", name, e.size, e.reason)
}

func (e *skipped) Unwrap() error { return e.reason }

// maxSkip bounds what one skipped stanza may take off the stream; past it
// the stream ends (a stanza that does not end is no stanza). Skipping
// keeps nothing, so the bound is about bytes, not memory: a PubSub answer
// of 3,000 items of 24 KB is 72 MB. The keepalive bounds the time (pings
// are not answered while a stanza is being skipped).
var maxSkip = 256 << 20 // a var for the tests

// maxNSDecls bounds the namespace declarations in scope: resolving a name
// looks through them, so without a bound a hostile stanza could make that
// quadratic. XMPP stanzas carry a handful.
const maxNSDecls = 64

func newXMLReader(r *bufio.Reader) *xmlReader { return &xmlReader{r: r} }

func xmlSyntax(format string, args ...any) error {
	return fmt.Errorf("XML syntax error: "+format, args...)
}

// skipSpace reads white space up to the next '<', which it leaves unread.
func (x *xmlReader) skipSpace() error {
	for {
		b, err := x.r.ReadByte()
		if err != nil {
			return err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '<':
			return x.r.UnreadByte()
		}
		return errTextBetween
	}
}

// header reads the server's stream header (after an optional XML
// declaration) and keeps its namespace declarations for the stanzas.
func (x *xmlReader) header() error {
	if err := x.skipSpace(); err != nil {
		return err
	}
	if b, err := x.r.Peek(2); err == nil && string(b) == "<?" {
		// The XML declaration, up to "?>".
		var prev byte
		for {
			chunk, err := x.r.ReadSlice('>')
			if err != nil && err != bufio.ErrBufferFull {
				return err
			}
			if err == nil {
				before := prev
				if len(chunk) >= 2 {
					before = chunk[len(chunk)-2]
				}
				if before == '?' {
					break
				}
			}
			prev = chunk[len(chunk)-1]
		}
		if err := x.skipSpace(); err != nil {
			return err
		}
	}
	s, err := x.frameTag()
	if err != nil {
		return err
	}
	p := parser2{s: s, scope: x.scope[:0]}
	p.i = 1
	raw, attrs, empty, err := p.tag()
	if err != nil {
		return err
	}
	if err := p.declare(attrs); err != nil {
		return err
	}
	name := p.translate(raw, true)
	if name.Space != nsStream || name.Local != "stream" || empty {
		return fmt.Errorf("expected <stream:stream>, got <%s> in %q", name.Local, name.Space)
	}
	x.base = append(x.base[:0], p.scope...)
	return nil
}

// frameTag reads one tag, up to its '>' outside quotes (the stream header).
func (x *xmlReader) frameTag() (string, error) {
	x.buf = x.buf[:0]
	var quote byte
	for {
		b, err := x.r.ReadByte()
		if err != nil {
			return "", err
		}
		x.buf = append(x.buf, b)
		if len(x.buf) > maxStanza {
			return "", errStanzaTooLarge
		}
		switch {
		case quote != 0:
			if b == quote {
				quote = 0
			}
		case b == '"' || b == '\'':
			quote = b
		case b == '>':
			return string(x.buf), nil
		}
	}
}

// next reads the next stanza. The end of the stream is io.EOF.
func (x *xmlReader) next() (*Element, error) {
	if err := x.skipSpace(); err != nil {
		return nil, err
	}
	end, err := x.frame()
	if err != nil {
		return nil, err
	}
	if end {
		return nil, io.EOF
	}
	if sk := x.skip; sk != nil {
		x.skip = nil
		return nil, sk
	}
	s := string(x.buf)
	p := parser2{s: s, scope: append(x.scope[:0], x.base...), tmp: x.tmp}
	e := &Element{}
	err = p.element(e, 1)
	x.scope, x.tmp = p.scope[:0], p.tmp[:0]
	if err == errTooDeep {
		return nil, &skipped{head: x.headElement(s[:x.head]), size: len(s), reason: errTooDeep}
	}
	if err != nil {
		return nil, err
	}
	if p.i != len(s) {
		return nil, xmlSyntax("data after the element")
	}
	return e, nil
}

// headElement parses a stanza's start tag alone (name and attributes), nil
// when it does not parse.
func (x *xmlReader) headElement(tag string) *Element {
	if len(tag) < 2 {
		return nil
	}
	p := parser2{s: tag, scope: append([]nsDecl(nil), x.base...)}
	p.i = 1
	raw, attrs, _, err := p.tag()
	if err != nil || p.declare(attrs) != nil {
		return nil
	}
	e := &Element{XMLName: p.translate(raw, true)}
	for _, a := range attrs {
		if a.Name.Space == xmlnsPrefix || (a.Name.Space == "" && a.Name.Local == xmlnsPrefix) {
			continue
		}
		e.Attrs = append(e.Attrs, xml.Attr{Name: p.translate(a.Name, false), Value: a.Value})
	}
	return e
}

// Framing states.
const (
	fText = iota
	fTag
	fQuote
	fEnd
	fCDATA
)

// frame reads one top-level element into x.buf, or the stream's end tag
// (end is true). It only follows tags, quotes and CDATA; parsing checks
// the rest. An element larger than maxStanza is followed to its end all
// the same, keeping only its start tag and the last bytes framing needs
// (x.skip says so).
func (x *xmlReader) frame() (end bool, err error) {
	x.buf, x.head, x.skip = x.buf[:0], 0, nil
	depth, state := 0, fText
	var quote, last byte // last: the last byte in a tag outside quotes
	for {
		chunk, err := x.r.ReadSlice('>')
		if err != nil && err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return false, err
		}
		start := len(x.buf)
		if x.skip != nil || start+len(chunk) > maxStanza {
			if x.skip == nil {
				x.skip = &skipped{head: x.headElement(string(x.buf[:x.head])), reason: errStanzaTooLarge}
			}
			// Every byte in buf has been framed; the CDATA end check
			// looks two bytes back.
			keep := min(2, start)
			x.skip.size += start - keep
			if x.skip.size > maxSkip {
				x.skip = nil
				return false, errStanzaTooLarge
			}
			copy(x.buf, x.buf[start-keep:start])
			x.buf = x.buf[:keep]
			start = keep
		}
		x.buf = append(x.buf, chunk...)
		for i := start; i < len(x.buf); i++ {
			b := x.buf[i]
			switch state {
			case fText:
				if b != '<' {
					continue
				}
				if i+1 >= len(x.buf) {
					// '<' ends a chunk only at "<>"-less EOF; ask for more.
					if err := x.more(); err != nil {
						return false, err
					}
				}
				switch x.buf[i+1] {
				case '/':
					state = fEnd
				case '!':
					if err := x.needPrefix(i, "<![CDATA["); err != nil {
						return false, err
					}
					state = fCDATA
					i += 8
				case '?':
					return false, errRestrictedXML
				default:
					state, last = fTag, 0
				}
			case fTag:
				switch b {
				case '"', '\'':
					state, quote = fQuote, b
				case '>':
					state = fText
					if last != '/' {
						depth++
						if depth == 1 && x.skip == nil {
							x.head = i + 1
						}
					} else if depth == 0 {
						return false, x.skipEnd(len(x.buf))
					}
				case ' ', '\t', '\r', '\n':
				default:
					last = b
				}
			case fQuote:
				if b == quote {
					state = fTag
				}
			case fEnd:
				if b == '>' {
					state = fText
					depth--
					if depth < 0 {
						return true, nil
					}
					if depth == 0 {
						return false, x.skipEnd(len(x.buf))
					}
				}
			case fCDATA:
				if b == '>' && i >= 2 && x.buf[i-1] == ']' && x.buf[i-2] == ']' {
					state = fText
				}
			}
		}
	}
}

// skipEnd ends a frame: a skipped stanza's size is completed; the
// stanza's end must end the chunk (ReadSlice stops at '>').
func (x *xmlReader) skipEnd(n int) error {
	if x.skip != nil {
		x.skip.size += n
	}
	return nil
}

// more appends the next chunk to x.buf (a construct spans two chunks).
func (x *xmlReader) more() error {
	chunk, err := x.r.ReadSlice('>')
	if err != nil && err != bufio.ErrBufferFull {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if len(x.buf)+len(chunk) > maxStanza {
		return errStanzaTooLarge
	}
	x.buf = append(x.buf, chunk...)
	return nil
}

// needPrefix reads on until x.buf[i:] starts with p, and refuses the
// stanza as restricted XML as soon as the bytes it has differ from p: a
// short directive (<!x>) near the end of the input is refused for what it
// is, not for the input ending, and reading stops once the bytes decide.
func (x *xmlReader) needPrefix(i int, p string) error {
	for {
		have := x.buf[i:min(len(x.buf), i+len(p))]
		if string(have) != p[:len(have)] {
			return errRestrictedXML
		}
		if len(have) == len(p) {
			return nil
		}
		if err := x.more(); err != nil {
			return err
		}
	}
}

// parser2 parses one framed stanza from s; every string it returns is a
// slice of s unless decoding changed it.
type parser2 struct {
	s     string
	i     int
	scope []nsDecl
	tmp   []xml.Attr // one tag's attributes; reused
	arena []xml.Attr // the stanza's kept attributes, handed out in slices
}

// keep copies attrs into the stanza's arena: one allocation for most
// stanzas rather than a slice per element.
func (p *parser2) keep(attrs []xml.Attr) []xml.Attr {
	n := len(attrs)
	if cap(p.arena)-len(p.arena) < n {
		p.arena = make([]xml.Attr, 0, max(16, n))
	}
	k := len(p.arena)
	p.arena = append(p.arena, attrs...)
	return p.arena[k : k+n : k+n]
}

func (p *parser2) eof() error { return xmlSyntax("unexpected EOF") }

func (p *parser2) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func isNameByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '_' || c == ':' || c == '.' || c == '-'
}

// name reads a name as encoding/xml splits it: prefix:local, or all of it
// in Local when it has no colon or an empty side.
func (p *parser2) name() (xml.Name, error) {
	start := p.i
	for p.i < len(p.s) && (isNameByte(p.s[p.i]) || p.s[p.i] >= utf8.RuneSelf) {
		p.i++
	}
	s := p.s[start:p.i]
	if s == "" {
		if p.i >= len(p.s) {
			return xml.Name{}, p.eof()
		}
		return xml.Name{}, xmlSyntax("expected a name")
	}
	for j := 0; j < len(s); j++ {
		if s[j] >= utf8.RuneSelf {
			return xml.Name{}, xmlSyntax("name not ASCII: %q", s)
		}
	}
	if c := s[0]; !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || c == ':') {
		return xml.Name{}, xmlSyntax("invalid XML name: %s", s)
	}
	if strings.Count(s, ":") > 1 {
		return xml.Name{}, xmlSyntax("invalid XML name: %s", s)
	}
	if space, local, ok := strings.Cut(s, ":"); ok && space != "" && local != "" {
		return xml.Name{Space: space, Local: local}, nil
	}
	return xml.Name{Local: s}, nil
}

// tag reads a start tag's name and attributes, p.i just past the '<'.
func (p *parser2) tag() (raw xml.Name, attrs []xml.Attr, empty bool, err error) {
	if raw, err = p.name(); err != nil {
		return
	}
	attrs = p.tmp[:0]
	defer func() { p.tmp = attrs[:0] }()
	for {
		p.space()
		if p.i >= len(p.s) {
			return raw, nil, false, p.eof()
		}
		switch p.s[p.i] {
		case '/':
			if p.i+1 >= len(p.s) || p.s[p.i+1] != '>' {
				return raw, nil, false, xmlSyntax("expected /> in element")
			}
			p.i += 2
			return raw, attrs, true, nil
		case '>':
			p.i++
			return raw, attrs, false, nil
		}
		var a xml.Attr
		if a.Name, err = p.name(); err != nil {
			return
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != '=' {
			return raw, nil, false, xmlSyntax("attribute name without = in element")
		}
		p.i++
		p.space()
		if p.i >= len(p.s) || (p.s[p.i] != '"' && p.s[p.i] != '\'') {
			return raw, nil, false, xmlSyntax("unquoted or missing attribute value in element")
		}
		q := p.s[p.i]
		end := strings.IndexByte(p.s[p.i+1:], q)
		if end < 0 {
			return raw, nil, false, p.eof()
		}
		if a.Value, err = decodeText(p.s[p.i+1:p.i+1+end], true); err != nil {
			return
		}
		p.i += end + 2
		attrs = append(attrs, a)
	}
}

// declare brings a tag's namespace declarations into scope.
func (p *parser2) declare(attrs []xml.Attr) error {
	for _, a := range attrs {
		var d nsDecl
		switch {
		case a.Name.Space == xmlnsPrefix:
			d = nsDecl{a.Name.Local, a.Value}
		case a.Name.Space == "" && a.Name.Local == xmlnsPrefix:
			d = nsDecl{"", a.Value}
		default:
			continue
		}
		if len(p.scope) >= maxNSDecls {
			return errTooManyNS
		}
		p.scope = append(p.scope, d)
	}
	return nil
}

// translate resolves a name as encoding/xml does: a bound prefix (or, for
// an element, the default namespace) gives the namespace; xmlns
// declarations stay as they are; an unbound prefix stays in Space.
func (p *parser2) translate(n xml.Name, element bool) xml.Name {
	switch {
	case n.Space == xmlnsPrefix:
		return n
	case n.Space == "" && !element:
		return n
	case n.Space == "xml":
		n.Space = xmlURL
	case n.Space == "" && n.Local == xmlnsPrefix:
		return n
	}
	for j := len(p.scope) - 1; j >= 0; j-- {
		if p.scope[j].prefix == n.Space {
			n.Space = p.scope[j].uri
			return n
		}
	}
	return n
}

// element parses the element at p.i (its '<') into e; depth counts e.
func (p *parser2) element(e *Element, depth int) error {
	p.i++
	raw, attrs, empty, err := p.tag()
	if err != nil {
		return err
	}
	mark := len(p.scope)
	if err := p.declare(attrs); err != nil {
		return err
	}
	e.XMLName = p.translate(raw, true)
	n := 0
	for _, a := range attrs { // as copyAttrs: declarations are not kept
		if a.Name.Space == xmlnsPrefix || (a.Name.Space == "" && a.Name.Local == xmlnsPrefix) {
			continue
		}
		attrs[n] = xml.Attr{Name: p.translate(a.Name, false), Value: a.Value}
		n++
	}
	if n > 0 {
		e.Attrs = p.keep(attrs[:n])
	}
	defer func() { p.scope = p.scope[:mark] }()
	if empty {
		return nil
	}
	// Text in several pieces (around children, CDATA) is gathered here:
	// appending to Content piece by piece would be quadratic.
	var more []byte
	addText := func(t string) {
		switch {
		case more != nil:
			more = append(more, t...)
		case e.Content == "":
			e.Content = t
		default:
			more = append(append(make([]byte, 0, 2*(len(e.Content)+len(t))), e.Content...), t...)
		}
	}
	for {
		lt := strings.IndexByte(p.s[p.i:], '<')
		if lt < 0 {
			return p.eof()
		}
		if lt > 0 {
			t, err := decodeText(p.s[p.i:p.i+lt], false)
			if err != nil {
				return err
			}
			addText(t)
			p.i += lt
		}
		rest := p.s[p.i:]
		switch {
		case strings.HasPrefix(rest, "</"):
			p.i += 2
			end, err := p.name()
			if err != nil {
				return err
			}
			p.space()
			if p.i >= len(p.s) || p.s[p.i] != '>' {
				return xmlSyntax("invalid characters between </%s and >", end.Local)
			}
			p.i++
			if end != raw {
				return xmlSyntax("element <%s> closed by </%s>", raw.Local, end.Local)
			}
			if more != nil {
				e.Content = string(more)
			}
			return nil
		case strings.HasPrefix(rest, "<![CDATA["):
			stop := strings.Index(rest[9:], "]]>")
			if stop < 0 {
				return xmlSyntax("unexpected EOF in CDATA section")
			}
			t, err := cdataText(rest[9 : 9+stop])
			if err != nil {
				return err
			}
			addText(t)
			p.i += 9 + stop + 3
		case strings.HasPrefix(rest, "<!"), strings.HasPrefix(rest, "<?"):
			return errRestrictedXML
		default:
			if depth >= maxDepth {
				return errTooDeep
			}
			e.Nodes = append(e.Nodes, Element{})
			if err := p.element(&e.Nodes[len(e.Nodes)-1], depth+1); err != nil {
				return err
			}
		}
	}
}

// decodeText is encoding/xml's reading of character data (attr: a quoted
// attribute value): entities and character references decoded, "\r\n" and
// "\r" made "\n", then every character checked.
func decodeText(s string, attr bool) (string, error) {
	plain := true
	for j := 0; j < len(s); j++ {
		c := s[j]
		if c == '&' || c == '\r' || c >= utf8.RuneSelf || (c < 0x20 && c != '\t' && c != '\n') ||
			(attr && c == '<') || (!attr && c == '>' && j >= 2 && s[j-1] == ']' && s[j-2] == ']') {
			plain = false
			break
		}
	}
	if plain {
		return s, nil
	}
	out := make([]byte, 0, len(s))
	var b0, b1 byte
	for j := 0; j < len(s); j++ {
		b := s[j]
		if !attr && b0 == ']' && b1 == ']' && b == '>' {
			return "", xmlSyntax("unescaped ]]> not in CDATA section")
		}
		if attr && b == '<' {
			return "", xmlSyntax("unescaped < inside quoted string")
		}
		if b == '&' {
			semi := strings.IndexByte(s[j:], ';')
			if semi < 0 {
				return "", xmlSyntax("invalid character entity %s (no semicolon)", s[j:])
			}
			r, ok := entityValue(s[j+1 : j+semi])
			if !ok {
				return "", xmlSyntax("invalid character entity %s", s[j:j+semi+1])
			}
			out = append(out, r...)
			j += semi
			b0, b1 = 0, 0
			continue
		}
		if b == '\r' {
			out = append(out, '\n')
		} else if !(b1 == '\r' && b == '\n') {
			out = append(out, b)
		}
		b0, b1 = b1, b
	}
	if err := checkChars(out); err != nil {
		return "", err
	}
	return string(out), nil
}

// entityValue decodes what stands between '&' and ';' as encoding/xml
// does in strict mode.
func entityValue(ent string) (string, bool) {
	switch ent {
	case "lt":
		return "<", true
	case "gt":
		return ">", true
	case "amp":
		return "&", true
	case "apos":
		return "'", true
	case "quot":
		return "\"", true
	}
	num, ok := strings.CutPrefix(ent, "#")
	if !ok {
		return "", false
	}
	base := 10
	if h, ok := strings.CutPrefix(num, "x"); ok {
		num, base = h, 16
	}
	for j := 0; j < len(num); j++ {
		c := num[j]
		if !('0' <= c && c <= '9' || base == 16 && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F')) {
			return "", false
		}
	}
	n, err := strconv.ParseUint(num, base, 64)
	if err != nil || n > utf8.MaxRune {
		return "", false
	}
	return string(rune(n)), true
}

// cdataText is a CDATA section's text: line ends made "\n", characters
// checked.
func cdataText(s string) (string, error) {
	if !strings.ContainsRune(s, '\r') {
		if err := checkChars([]byte(s)); err != nil {
			return "", err
		}
		return s, nil
	}
	out := make([]byte, 0, len(s))
	var b1 byte
	for j := 0; j < len(s); j++ {
		b := s[j]
		if b == '\r' {
			out = append(out, '\n')
		} else if !(b1 == '\r' && b == '\n') {
			out = append(out, b)
		}
		b1 = b
	}
	if err := checkChars(out); err != nil {
		return "", err
	}
	return string(out), nil
}

// checkChars refuses invalid UTF-8 and characters XML does not allow.
func checkChars(b []byte) error {
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			return xmlSyntax("invalid UTF-8")
		}
		b = b[size:]
		if !(r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
			r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF) {
			return xmlSyntax("illegal character code %U", r)
		}
	}
	return nil
}
