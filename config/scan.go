package config

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
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
// (or a command's output) where the directive stands, and templates copy
// one section's keys into another; both belong in scan, which feeds lex's
// lines of the other file (with that file's name, so that every issue
// names the file and line it comes from) into the same sections.
// include.go has the directives' rules and bounds.
//
// The lexical rules:
//
//   - ';' starts a comment anywhere on a line, "\;" is a literal ';', and
//     ";--" ... "--;" is a block comment that may span lines and nest;
//   - '#' is not an inline comment (passwords may hold it); a line that
//     starts with '#' is an Asterisk directive: #include, #tryinclude and
//     #exec (include.go), any other is a comment;
//   - there are no continuation lines: a trailing '\' is part of the value,
//     as in Asterisk;
//   - "key => value" is the same as "key = value"; keys are read in lower
//     case, as Asterisk compares them without case; a key may repeat;
//   - quotes around a value are kept, as Asterisk keeps them;
//   - a header's options, "[name](opts)", are Asterisk's: "!" makes the
//     section a template (its keys are only copied into others; it is
//     never read as a client or anything else), "+" adds to the section
//     (as a repeated "[name]" does), and any other name is a section or
//     template above whose keys the section starts with, in the order
//     named and before its own keys ("[b](!,a)" is a template built on
//     a). The section's own line for a key overrides a template's without
//     a warning; repeated keys (buddy=) add up. A name not defined above
//     is an error.
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
	// seq orders every occurrence in the whole reading, across files:
	// line numbers alone do not once files include others.
	seq int
	// inherited marks a key copied from a template: the section's own
	// line for the same key overrides it without a warning.
	inherited bool
}

// sectionPos is one section, merged over every header with its name.
type sectionPos struct {
	name string
	pos  // first header
	keys map[string][]keyPos
	// order lists the key names (lower case) in order of first
	// appearance.
	order []string
	// template is set for "[name](!)": its keys are copied into the
	// sections that name it, and it is not read as a section itself.
	template bool
	used     bool // a section inherited from it
}

func (sec *sectionPos) add(k string, kp keyPos) {
	if _, seen := sec.keys[k]; !seen {
		sec.order = append(sec.order, k)
	}
	sec.keys[k] = append(sec.keys[k], kp)
}

// scanned is the file's sections, in order of first appearance.
type scanned struct {
	sections  []*sectionPos
	byName    map[string]*sectionPos
	templates map[string]*sectionPos
	// files ranks every file read (and every #exec) in the order it was
	// first read, so that issues list in reading order.
	files map[string]int
	// execOK is execincludes = yes in the top-level file's [general].
	execOK bool
}

// lookup returns the section named name, or nil.
func (s *scanned) lookup(name string) *sectionPos { return s.byName[name] }

// base returns the section or template a header names in its options,
// compared without case as Asterisk does; nil when there is none (yet).
func (s *scanned) base(name string) *sectionPos {
	if t := s.templates[name]; t != nil {
		return t
	}
	if b := s.byName[name]; b != nil {
		return b
	}
	for _, m := range []map[string]*sectionPos{s.templates, s.byName} {
		for n, b := range m {
			if strings.EqualFold(n, name) {
				return b
			}
		}
	}
	return nil
}

// scan reads the sections from src, the text of the file r reports on,
// and from every file it includes (read through so).
func scan(src []byte, r *report, so *sources) *scanned {
	sc := &scanner{
		s: &scanned{byName: map[string]*sectionPos{}, templates: map[string]*sectionPos{},
			files: map[string]int{}},
		r:      r,
		so:     so,
		top:    r.file,
		execOK: execIncludes(r.file, src),
	}
	sc.total = len(src)
	sc.s.execOK = sc.execOK
	sc.read(frame{file: r.file, id: fileID(r.file), dir: filepath.Dir(r.file)}, src)
	for _, t := range sortedTemplates(sc.s.templates) {
		if !t.used {
			r.warnf(t.pos, "", "template [%s] is not used by any section", t.name)
		}
	}
	return sc.s
}

func sortedTemplates(m map[string]*sectionPos) []*sectionPos {
	out := make([]*sectionPos, 0, len(m))
	for _, t := range m {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// scanner is the state of one reading: the section that keys go into
// carries across #include and #exec, as in Asterisk, so that an included
// file (or a command's output) may hold just buddy= lines.
type scanner struct {
	s         *scanned
	r         *report
	so        *sources
	top       string // the top-level file's name
	execOK    bool   // the top-level file's [general] has execincludes = yes
	cur       *sectionPos
	badHeader bool    // the last header was refused: its keys are not checked
	stack     []frame // the files being read, the top-level file first
	total     int     // bytes read so far, over every file
	includes  int     // files and commands included so far
	full      bool    // total went past maxTotalSize: nothing more is read
	seq       int
}

// frame is one file (or one #exec's output) being read.
type frame struct {
	file string // as shown in issues
	id   string // what makes two frames the same, for loops
	dir  string // where its relative #include names are looked up
}

func (sc *scanner) read(f frame, src []byte) {
	if _, ok := sc.s.files[f.file]; !ok {
		sc.s.files[f.file] = len(sc.s.files)
	}
	sc.stack = append(sc.stack, f)
	lex(f.file, src, sc.r, sc.item)
	sc.stack = sc.stack[:len(sc.stack)-1]
}

func (sc *scanner) item(it item) {
	switch it.kind {
	case itemDirective:
		switch it.name {
		case "include", "tryinclude":
			sc.include(it)
		case "exec":
			sc.exec(it)
		}
		// Any other line that starts with '#' is a comment.
	case itemSection:
		sc.header(it)
	case itemKey:
		if sc.cur == nil {
			if !sc.badHeader {
				sc.r.errorf(it.pos, it.name, "key before the first [section]")
			}
			return
		}
		if it.name == "execincludes" && it.file != sc.top {
			sc.r.warnf(it.pos, it.name, "counts only in [general] of the top-level file %s; ignored here", sc.top)
		}
		sc.seq++
		sc.cur.add(it.name, keyPos{pos: it.pos, value: it.text, seq: sc.seq})
	}
}

// header opens a section: "[name]", or "[name](options)" where the options,
// separated by commas, are "!" (a template), "+" (add to the section, as a
// repeated "[name]" does in busylamp) and the names of sections or
// templates above whose keys the section starts with, in order.
func (sc *scanner) header(it item) {
	sc.cur, sc.badHeader = nil, true
	if it.name == "" {
		return
	}
	var template, add bool
	var bases []*sectionPos
	if opts := strings.TrimSpace(it.text); opts != "" {
		if !strings.HasSuffix(opts, ")") || strings.Count(opts, "(") != 1 || strings.Count(opts, ")") != 1 {
			sc.r.errorf(it.pos, "", "section [%s]: bad options %s: want (!), (+) or (template,...)", it.name, opts)
			return
		}
		for _, o := range strings.Split(opts[1:len(opts)-1], ",") {
			switch o = strings.TrimSpace(o); o {
			case "!":
				template = true
			case "+":
				add = true
			case "":
				sc.r.errorf(it.pos, "", "section [%s]: empty name in options %s", it.name, opts)
				return
			default:
				b := sc.s.base(o)
				if b == nil {
					sc.r.errorf(it.pos, "", "section [%s]: template [%s] is not defined above", it.name, o)
					return
				}
				if strings.EqualFold(b.name, it.name) {
					sc.r.errorf(it.pos, "", "section [%s]: cannot inherit from itself", it.name)
					return
				}
				bases = append(bases, b)
			}
		}
	}
	own, other := sc.s.byName, sc.s.templates
	if template || add && own[it.name] == nil && other[it.name] != nil {
		// "[t](+)" adds to template t.
		template = true
		own, other = other, own
	}
	if o := other[it.name]; o != nil {
		what := "a section"
		if o.template {
			what = "a template"
		}
		sc.r.errorf(it.pos, "", "section [%s]: already %s (at %s)", it.name, what, where(o.pos, it.pos))
		return
	}
	sc.badHeader = false
	cur := own[it.name]
	if cur == nil {
		cur = &sectionPos{name: it.name, pos: it.pos, keys: map[string][]keyPos{}, template: template}
		own[it.name] = cur
		if !template {
			sc.s.sections = append(sc.s.sections, cur)
		}
	}
	// Asterisk copies the templates' keys as they stand at the header.
	for _, b := range bases {
		b.used = true
		for _, k := range b.order {
			for _, kp := range b.keys[k] {
				sc.seq++
				kp.seq, kp.inherited = sc.seq, true
				cur.add(k, kp)
			}
		}
	}
	sc.cur = cur
}

// where names p as seen from at: "line 3" in the same file, else
// "other.conf:3".
func where(p, at pos) string {
	if p.file == at.file || p.file == "" {
		return fmt.Sprintf("line %d", p.line)
	}
	return fmt.Sprintf("%s:%d", p.file, p.line)
}
