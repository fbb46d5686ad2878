package config

import (
	"bytes"
	"strings"
)

// The scan applies Asterisk's lexical rules (main/config.c) to the file
// before gopkg.in/ini.v1 reads it, and records on which line every section
// and key stands; ini.v1 keeps no line numbers. It writes one output line
// per input line, so ini.v1 sees the file's structure unchanged:
//
//   - ';' starts a comment anywhere on a line, "\;" is a literal ';', and
//     ";--" ... "--;" is a block comment that may span lines and nest;
//   - '#' is not an inline comment (passwords may hold it); a line that
//     starts with '#' is an Asterisk directive: #include, #tryinclude and
//     #exec are errors (busylamp reads one file), any other is a comment;
//   - there are no continuation lines: a trailing '\' is part of the value,
//     as in Asterisk;
//   - "key => value" is the same as "key = value";
//   - quotes around a value are kept, as Asterisk keeps them;
//   - "[name](+)" adds to a section like a repeated "[name]" does; other
//     section options (templates) are errors.
//
// Lines that ini.v1 could not read (no '=', a key before any section, ...)
// become errors here and are blanked, so that one bad line does not hide
// the errors on the others.

// keyPos is one occurrence of a key.
type keyPos struct {
	line  int
	value string // the value as the scan reads it; ini.v1 must agree
}

// sectionPos is one section, merged over every header with its name.
type sectionPos struct {
	name  string
	line  int // first header line
	keys  map[string][]keyPos
	order []string // key names (lower case) in order of first appearance
}

type scanned struct {
	clean    []byte // the text handed to ini.v1
	sections []*sectionPos
	byName   map[string]*sectionPos
}

// lookup returns the section named name, or nil.
func (s *scanned) lookup(name string) *sectionPos { return s.byName[name] }

func scan(src []byte, r *report) *scanned {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf"))
	s := &scanned{byName: map[string]*sectionPos{}}
	var out bytes.Buffer
	var cur *sectionPos
	badHeader := false       // the last header was bad: its keys are not checked
	depth, depthLine := 0, 0 // block comment nesting, and where it opened

	lines := strings.Split(string(src), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		n := i + 1
		if i > 0 {
			out.WriteByte('\n')
		}
		raw = strings.TrimSuffix(raw, "\r")
		var text string
		text, depth = stripComments(raw, depth)
		if depth > 0 && depthLine == 0 {
			depthLine = n
		} else if depth == 0 {
			depthLine = 0
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		switch text[0] {
		case '#':
			word := ""
			if f := strings.Fields(text[1:]); len(f) > 0 {
				word = strings.ToLower(f[0])
			}
			switch word {
			case "include", "tryinclude", "exec":
				r.errorf(n, "", "#%s is not supported: busylamp reads one file; put the settings here", word)
			}
			continue
		case '[':
			sec := scanSection(text, n, r)
			cur, badHeader = nil, sec == ""
			if badHeader {
				continue
			}
			cur = s.byName[sec]
			if cur == nil {
				cur = &sectionPos{name: sec, line: n, keys: map[string][]keyPos{}}
				s.byName[sec] = cur
				s.sections = append(s.sections, cur)
			}
			out.WriteString("[" + sec + "]")
			continue
		}
		key, value, ok := scanKey(text, n, r)
		if !ok {
			continue
		}
		if cur == nil {
			if !badHeader {
				r.errorf(n, key, "key before the first [section]")
			}
			continue
		}
		if _, seen := cur.keys[key]; !seen {
			cur.order = append(cur.order, key)
		}
		cur.keys[key] = append(cur.keys[key], keyPos{line: n, value: value})
		out.WriteString(key + "=" + value)
	}
	if depth > 0 {
		r.errorf(depthLine, "", "block comment \";--\" is not closed with \"--;\"")
	}
	s.clean = out.Bytes()
	return s
}

// stripComments removes Asterisk comments from one line. depth is the block
// comment nesting at the start of the line; it returns the nesting at the
// end.
func stripComments(line string, depth int) (string, int) {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		c := line[i]
		if depth > 0 {
			switch {
			case strings.HasPrefix(line[i:], "--;"):
				depth--
				i += 2
			case strings.HasPrefix(line[i:], ";--"):
				depth++
				i += 2
			}
			continue
		}
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == ';':
			b.WriteByte(';')
			i++
		case strings.HasPrefix(line[i:], ";--"):
			depth++
			i += 2
		case c == ';':
			return b.String(), depth
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), depth
}

// scanSection reads "[name]" or "[name](+)"; it returns "" after reporting
// an error.
func scanSection(text string, n int, r *report) string {
	end := strings.IndexByte(text, ']')
	if end < 0 {
		r.errorf(n, "", "section header without ']'")
		return ""
	}
	name := strings.TrimSpace(text[1:end])
	rest := strings.TrimSpace(text[end+1:])
	switch {
	case name == "":
		r.errorf(n, "", "empty section name")
		return ""
	case strings.ContainsAny(name, "[]"):
		r.errorf(n, "", "bad section name %q", name)
		return ""
	case rest == "" || strings.ReplaceAll(rest, " ", "") == "(+)":
		return name
	case strings.HasPrefix(rest, "("):
		r.errorf(n, "", "section [%s]: templates and section options %s are not supported", name, rest)
		return ""
	default:
		r.errorf(n, "", "section [%s]: unexpected text after ']'", name)
		return ""
	}
}

// scanKey reads "key = value" or "key => value". The key comes back in
// lower case: keys are case-insensitive, as in Asterisk.
func scanKey(text string, n int, r *report) (key, value string, ok bool) {
	k, v, found := strings.Cut(text, "=")
	if !found {
		// Not echoed: the line may be a password that lost its key.
		r.errorf(n, "", "expected \"key = value\"")
		return "", "", false
	}
	key = strings.ToLower(strings.TrimSpace(k))
	v = strings.TrimPrefix(v, ">")
	value = strings.TrimSpace(v)
	if key == "" {
		r.errorf(n, "", "missing key name before '='")
		return "", "", false
	}
	if !validKeyName(key) {
		r.errorf(n, "", "bad key name %q", key)
		return "", "", false
	}
	// ini.v1 reads a value that starts with a backquote or """ as a quoted,
	// possibly multi-line string; Asterisk does not. Refuse rather than
	// read something else than Asterisk would.
	if strings.HasPrefix(value, "`") || strings.HasPrefix(value, `"""`) {
		r.errorf(n, key, "a value may not start with ` or \"\"\"")
		return "", "", false
	}
	return key, value, true
}

func validKeyName(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9' && i > 0, (c == '_' || c == '-' || c == '.') && i > 0:
		default:
			return false
		}
	}
	return true
}
