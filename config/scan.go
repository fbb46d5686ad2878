package config

import (
	"bytes"
	"strings"
)

// The file is read in two steps, and nothing else reads it:
//
//   - lex applies Asterisk's lexical rules (main/config.c) to one file and
//     yields its meaningful lines, each with its file and line: a section
//     header, a key and its value, or a directive;
//   - scan puts those lines together into sections, applying what
//     busylamp supports of Asterisk's directives and section options.
//
// Asterisk's #include, #tryinclude and #exec insert another file's lines
// where the directive stands, and templates copy one section's keys into
// another; both belong in scan, which then feeds lex's lines of the other
// file (with that file's name) into the same sections.
//
// The lexical rules:
//
//   - ';' starts a comment anywhere on a line, "\;" is a literal ';', and
//     ";--" ... "--;" is a block comment that may span lines and nest;
//   - '#' is not an inline comment (passwords may hold it); a line that
//     starts with '#' is an Asterisk directive: #include, #tryinclude and
//     #exec are errors (busylamp reads one file), any other is a comment;
//   - there are no continuation lines: a trailing '\' is part of the value,
//     as in Asterisk;
//   - "key => value" is the same as "key = value"; keys are read in lower
//     case, as Asterisk compares them without case; a key may repeat;
//   - quotes around a value are kept, as Asterisk keeps them;
//   - "[name](+)" adds to a section like a repeated "[name]" does; other
//     section options (templates) are errors.
//
// A line that cannot be read (no '=', a key before any section, ...) is an
// error naming its line, and reading goes on, so that one bad line does
// not hide the errors on the others.

// pos is where a line stands.
type pos struct {
	file string
	line int // from 1; 0 for the file as a whole
}

// itemKind is what a meaningful line is.
type itemKind uint8

const (
	itemSection   itemKind = iota + 1 // [name] or [name](options)
	itemKey                           // key = value
	itemDirective                     // #word text
)

// item is one meaningful line of a file.
type item struct {
	pos
	kind itemKind
	// name is the section name (for a header that could not be read, ""),
	// the key in lower case, or the directive's word in lower case.
	name string
	// text is the key's value, a header's text after ']' (its options,
	// such as "(+)" or "(!)"), or the rest of a directive's line.
	text string
}

// lex reads src, the text of file, and calls yield with every meaningful
// line in order. It reports what Asterisk's syntax does not allow; such a
// line is not yielded, except a bad section header, which is yielded with
// an empty name so that the keys under it are not taken for another
// section's.
func lex(file string, src []byte, r *report, yield func(item)) {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf"))
	depth, depthLine := 0, 0 // block comment nesting, and where it opened
	lines := strings.Split(string(src), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, raw := range lines {
		at := pos{file: file, line: i + 1}
		raw = strings.TrimSuffix(raw, "\r")
		var text string
		text, depth = stripComments(raw, depth)
		if depth > 0 && depthLine == 0 {
			depthLine = at.line
		} else if depth == 0 {
			depthLine = 0
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		switch text[0] {
		case '#':
			word, rest := "", ""
			if f := strings.Fields(text[1:]); len(f) > 0 {
				word = strings.ToLower(f[0])
				rest = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text[1:]), f[0]))
			}
			yield(item{pos: at, kind: itemDirective, name: word, text: rest})
			continue
		case '[':
			name, options := lexSection(text, at, r)
			yield(item{pos: at, kind: itemSection, name: name, text: options})
			continue
		}
		if key, value, ok := lexKey(text, at, r); ok {
			yield(item{pos: at, kind: itemKey, name: key, text: value})
		}
	}
	if depth > 0 {
		r.errorf(pos{file: file, line: depthLine}, "", "block comment \";--\" is not closed with \"--;\"")
	}
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

// lexSection reads "[name]" or "[name](options)" and returns the name and
// the options as written ("" without). The name is "" after reporting an
// error.
func lexSection(text string, at pos, r *report) (name, options string) {
	end := strings.IndexByte(text, ']')
	if end < 0 {
		r.errorf(at, "", "section header without ']'")
		return "", ""
	}
	name = strings.TrimSpace(text[1:end])
	rest := strings.TrimSpace(text[end+1:])
	switch {
	case name == "":
		r.errorf(at, "", "empty section name")
		return "", ""
	case strings.ContainsAny(name, "[]"):
		r.errorf(at, "", "bad section name %q", name)
		return "", ""
	case rest != "" && !strings.HasPrefix(rest, "("):
		r.errorf(at, "", "section [%s]: unexpected text after ']'", name)
		return "", ""
	}
	return name, rest
}

// lexKey reads "key = value" or "key => value". The key comes back in
// lower case: keys are case-insensitive, as in Asterisk.
func lexKey(text string, at pos, r *report) (key, value string, ok bool) {
	k, v, found := strings.Cut(text, "=")
	if !found {
		// Not echoed: the line may be a password that lost its key.
		r.errorf(at, "", "expected \"key = value\"")
		return "", "", false
	}
	key = strings.ToLower(strings.TrimSpace(k))
	v = strings.TrimPrefix(v, ">")
	value = strings.TrimSpace(v)
	if key == "" {
		r.errorf(at, "", "missing key name before '='")
		return "", "", false
	}
	if !validKeyName(key) {
		r.errorf(at, "", "bad key name %q", key)
		return "", "", false
	}
	// Asterisk reads such a value as it stands, but INI readers (and so
	// busylamp before, with gopkg.in/ini.v1) read it as a quoted string
	// that may span lines. Refused, so that a file means one thing to
	// whoever reads it and loads as it always did.
	if strings.HasPrefix(value, "`") || strings.HasPrefix(value, `"""`) {
		r.errorf(at, key, "a value may not start with ` or \"\"\"")
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

// keyPos is one occurrence of a key.
type keyPos struct {
	pos
	value string
}

// sectionPos is one section, merged over every header with its name.
type sectionPos struct {
	name string
	pos  // first header
	keys map[string][]keyPos
	// order lists the key names (lower case) in order of first
	// appearance.
	order []string
}

// scanned is the file's sections, in order of first appearance.
type scanned struct {
	sections []*sectionPos
	byName   map[string]*sectionPos
}

// lookup returns the section named name, or nil.
func (s *scanned) lookup(name string) *sectionPos { return s.byName[name] }

// scan reads the file's sections from src, the text of the file r reports
// on.
func scan(src []byte, r *report) *scanned {
	s := &scanned{byName: map[string]*sectionPos{}}
	var cur *sectionPos
	badHeader := false // the last header was refused: its keys are not checked
	lex(r.file, src, r, func(it item) {
		switch it.kind {
		case itemDirective:
			switch it.name {
			case "include", "tryinclude", "exec":
				r.errorf(it.pos, "", "#%s is not supported: busylamp reads one file; put the settings here", it.name)
			}
			// Any other line that starts with '#' is a comment.
		case itemSection:
			cur, badHeader = nil, true
			switch {
			case it.name == "":
				return
			case it.text != "" && strings.ReplaceAll(it.text, " ", "") != "(+)":
				r.errorf(it.pos, "", "section [%s]: templates and section options %s are not supported", it.name, it.text)
				return
			}
			badHeader = false
			cur = s.byName[it.name]
			if cur == nil {
				cur = &sectionPos{name: it.name, pos: it.pos, keys: map[string][]keyPos{}}
				s.byName[it.name] = cur
				s.sections = append(s.sections, cur)
			}
		case itemKey:
			if cur == nil {
				if !badHeader {
					r.errorf(it.pos, it.name, "key before the first [section]")
				}
				return
			}
			if _, seen := cur.keys[it.name]; !seen {
				cur.order = append(cur.order, it.name)
			}
			cur.keys[it.name] = append(cur.keys[it.name], keyPos{pos: it.pos, value: it.text})
		}
	})
	return s
}
