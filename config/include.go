package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Asterisk's directives, as main/config.c reads them:
//
//   - "#include FILE" and "#tryinclude FILE" read FILE's lines where the
//     directive stands; FILE may be written bare, in double quotes or in
//     <>, and may be a glob pattern (every match, in sorted order;
//     Asterisk's {a,b} braces are not supported). A relative FILE is looked
//     up in the directory of the file that includes it (Asterisk looks in
//     its config directory, which is where an xmpp.conf stands, so the
//     same files are found). A FILE that is missing, or a pattern that
//     matches nothing, is an error for #include and nothing for
//     #tryinclude; one that is there but cannot be read is an error for
//     both.
//   - "#exec COMMAND" runs COMMAND with /bin/sh -c, in the directory of the
//     file that holds the directive, and reads its standard output as
//     lines of the file (named "exec:COMMAND" in issues). As Asterisk
//     wants execincludes = yes in asterisk.conf, busylamp wants
//     execincludes = yes in [general], and only the top-level file's own
//     [general] counts: the key is read from that file's lines before any
//     directive runs (so it may stand before or after the #exec), and an
//     included file (or a command) cannot turn it on for itself.
//   - The section that keys go into carries across: an included file or a
//     command's output may hold just keys (buddy= lines) for the section
//     the directive stands in, and the section it opens last goes on after
//     the directive.
//
// Reading is bounded: includes nest at most maxIncludeDepth deep, at most
// maxIncludes files and commands are read, and at most maxTotalSize
// bytes in all. A file that includes itself, directly or through others,
// is refused at the directive that closes the loop.
const (
	maxIncludeDepth = 16
	maxIncludes     = 1000
	maxTotalSize    = 8 << 20
	maxExecOutput   = 4 << 20
	execTimeout     = 10 * time.Second
)

// sources is where the directives read from: the file system and
// /bin/sh (osSources), or anything a test puts in.
type sources struct {
	readFile func(path string) ([]byte, error) // at most maxFileSize bytes
	glob     func(pattern string) ([]string, error)
	// exec runs command in dir and returns its standard output; an error
	// says why it failed (with the first line of its standard error).
	exec func(dir, command string) ([]byte, error)
}

// osSources reads the file system and runs commands with timeout.
func osSources(timeout time.Duration) *sources {
	return &sources{
		readFile: readFile,
		glob:     filepath.Glob,
		exec: func(dir, command string) ([]byte, error) {
			return runCommand(dir, command, timeout, maxExecOutput)
		},
	}
}

// noSources refuses every directive's read, for fuzzing.
var noSources = &sources{
	readFile: func(string) ([]byte, error) { return nil, fs.ErrPermission },
	glob:     func(p string) ([]string, error) { return []string{p}, nil },
	exec:     func(string, string) ([]byte, error) { return nil, fs.ErrPermission },
}

// runCommand runs command with /bin/sh -c and returns at most limit
// bytes of its standard output.
func runCommand(dir, command string, timeout time.Duration, limit int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Dir = dir
	// A child the shell left behind may hold the pipes open; do not wait
	// for it past the kill.
	cmd.WaitDelay = time.Second
	stdout := &capped{limit: limit, full: cancel}
	stderr := &capped{limit: 4096}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	switch {
	case stdout.over:
		return nil, fmt.Errorf("output is larger than %d bytes", limit)
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("did not finish within %v", timeout)
	case err != nil:
		msg := err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Exited() {
			msg = fmt.Sprintf("exit status %d", ee.ExitCode())
		}
		if line := firstLine(stderr.buf.String()); line != "" {
			msg += ": " + line
		}
		return nil, errors.New(msg)
	}
	return stdout.buf.Bytes(), nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	return s
}

// capped keeps the first limit bytes written to it; past them it calls
// full (to stop the command) and drops the rest.
type capped struct {
	buf   bytes.Buffer
	limit int
	over  bool
	full  func()
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.limit - c.buf.Len(); len(p) > room {
		c.buf.Write(p[:max(room, 0)])
		if !c.over && c.full != nil {
			c.over = true
			c.full()
		}
		return len(p), nil
	}
	c.buf.Write(p)
	return len(p), nil
}

// execIncludes reports whether the top-level file's own [general] sets
// execincludes to yes (the last such line counts). A bad value is reported
// when [general] is read; here it means no.
func execIncludes(file string, src []byte) bool {
	var on, inGeneral bool
	lex(file, src, &report{file: file}, func(it item) {
		switch it.kind {
		case itemSection:
			inGeneral = strings.EqualFold(it.name, "general")
		case itemKey:
			if inGeneral && it.name == "execincludes" {
				on, _ = parseBool(it.text)
			}
		}
	})
	return on
}

// fileID is what makes two names the same file, for loops.
func fileID(path string) string {
	if p, err := filepath.Abs(path); err == nil {
		path = p
	}
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	return path
}

// directiveArg is a directive's argument without the double quotes or <>
// around it.
func directiveArg(text string) string {
	t := strings.TrimSpace(text)
	if len(t) >= 2 && (t[0] == '"' && t[len(t)-1] == '"' || t[0] == '<' && t[len(t)-1] == '>') {
		t = strings.TrimSpace(t[1 : len(t)-1])
	}
	return t
}

func (sc *scanner) dir() string { return sc.stack[len(sc.stack)-1].dir }

// room reports whether one more file may be read at it, and reports why
// not.
func (sc *scanner) room(it item, what string) bool {
	switch {
	case len(sc.stack) > maxIncludeDepth:
		sc.r.errorf(it.pos, "", "#%s %q: includes nest deeper than %d", it.name, what, maxIncludeDepth)
	case sc.includes >= maxIncludes:
		sc.r.errorf(it.pos, "", "#%s %q: more than %d files and commands included", it.name, what, maxIncludes)
	default:
		return true
	}
	return false
}

// loop reports whether id is being read already, and reports the chain.
func (sc *scanner) loop(it item, what, id string) bool {
	for i, f := range sc.stack {
		if f.id != id {
			continue
		}
		var chain []string
		for _, g := range sc.stack[i:] {
			chain = append(chain, g.file)
		}
		sc.r.errorf(it.pos, "", "#%s %q: include loop: %s -> %s", it.name, what, strings.Join(chain, " -> "), f.file)
		return true
	}
	return false
}

// take counts n more bytes read, and reports whether they fit.
func (sc *scanner) take(it item, what string, n int) bool {
	if sc.full {
		return false // reported once, at the directive that went past
	}
	sc.total += n
	sc.includes++
	if sc.total > maxTotalSize {
		sc.full = true
		sc.r.errorf(it.pos, "", "#%s %q: the files read come to more than %d bytes", it.name, what, maxTotalSize)
		return false
	}
	return true
}

func (sc *scanner) include(it item) {
	try := it.name == "tryinclude"
	name := directiveArg(it.text)
	if name == "" {
		sc.r.errorf(it.pos, "", "#%s needs a file name", it.name)
		return
	}
	pattern := name
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(sc.dir(), pattern)
	}
	matches, err := sc.so.glob(pattern)
	if err != nil {
		sc.r.errorf(it.pos, "", "#%s %q: bad pattern: %v", it.name, name, err)
		return
	}
	if len(matches) == 0 {
		if !try {
			if strings.ContainsAny(name, `*?[\`) {
				sc.r.errorf(it.pos, "", "#include %q: no file matches (use #tryinclude if that may be)", name)
			} else {
				sc.r.errorf(it.pos, "", "#include %q: no such file (use #tryinclude if it may be missing)", name)
			}
		}
		return
	}
	sort.Strings(matches)
	for _, m := range matches {
		if !sc.room(it, name) {
			return
		}
		id := fileID(m)
		if sc.loop(it, name, id) {
			return
		}
		src, err := sc.so.readFile(m)
		if err != nil {
			if !(try && errors.Is(err, fs.ErrNotExist)) {
				sc.r.errorf(it.pos, "", "#%s %q: %s: %v", it.name, name, m, err)
			}
			continue
		}
		if !sc.take(it, name, len(src)) {
			return
		}
		sc.read(frame{file: m, id: id, dir: filepath.Dir(m)}, src)
	}
}

func (sc *scanner) exec(it item) {
	command := directiveArg(it.text)
	switch {
	case command == "":
		sc.r.errorf(it.pos, "", "#exec needs a command")
		return
	case !sc.execOK:
		sc.r.errorf(it.pos, "", "#exec is off: set execincludes = yes in [general] of %s to run commands", sc.top)
		return
	case !sc.room(it, command):
		return
	}
	dir := sc.dir()
	id := "exec:" + dir + "\x00" + command
	if sc.loop(it, command, id) {
		return
	}
	out, err := sc.so.exec(dir, command)
	if err != nil {
		sc.r.errorf(it.pos, "", "#exec %q: %v", command, err)
		return
	}
	if !sc.take(it, command, len(out)) {
		return
	}
	sc.read(frame{file: "exec:" + command, id: id, dir: dir}, out)
}
