package config

import (
	"fmt"
	"strings"
)

// Issue is one finding about a config file: an error or a warning. It
// names the file, the line (0 when it is about the file as a whole) and the
// key (empty when it is about a line or a section). It never holds a
// secret's value.
type Issue struct {
	File string
	Line int
	Key  string
	Msg  string
}

// Location is "FILE:LINE", or "FILE" when the line is unknown.
func (i Issue) Location() string {
	if i.Line > 0 {
		return fmt.Sprintf("%s:%d", i.File, i.Line)
	}
	return i.File
}

// Message is the finding without its location: `key "port": bad port "x"`.
func (i Issue) Message() string {
	if i.Key != "" {
		return fmt.Sprintf("key %q: %s", i.Key, i.Msg)
	}
	return i.Msg
}

// Error is `FILE:LINE: key "port": bad port "x"`.
func (i Issue) Error() string { return i.Location() + ": " + i.Message() }

// String is the same as Error.
func (i Issue) String() string { return i.Error() }

// Errors is every error found in one config, in file order. Load, Parse and
// Validate return it as their error; use errors.As to get the list.
type Errors []Issue

// Error lists the errors one per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, is := range e {
		lines[i] = is.Error()
	}
	return strings.Join(lines, "\n")
}

// report collects errors and warnings while reading one file.
type report struct {
	file     string
	errs     Errors
	warnings []Issue
}

// errorf reports an error at p; a p without a file names the file the
// report is about, and the zero pos the whole of it.
func (r *report) errorf(p pos, key, format string, args ...any) {
	r.errs = append(r.errs, r.issue(p, key, format, args))
}

// warnf reports a warning at p, as errorf.
func (r *report) warnf(p pos, key, format string, args ...any) {
	r.warnings = append(r.warnings, r.issue(p, key, format, args))
}

func (r *report) issue(p pos, key, format string, args []any) Issue {
	file := p.file
	if file == "" {
		file = r.file
	}
	return Issue{File: file, Line: p.line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// err returns the collected errors, or nil.
func (r *report) err() error {
	if len(r.errs) == 0 {
		return nil
	}
	return r.errs
}
