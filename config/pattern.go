package config

import (
	"fmt"
	"regexp"
	"regexp/syntax"
)

// Pattern is a regular expression with the semantics of the filters of
// Asterisk's res_pjsip_publish_asterisk (device_state_filter and the
// others), which compiles them with regcomp(REG_EXTENDED | REG_ICASE |
// REG_NOSUB): POSIX extended syntax, case-insensitive, unanchored (it
// matches anywhere in the name unless written with ^ or $), '.' and
// bracket expressions match a newline too. Perl-only syntax (\d, (?i),
// non-greedy repeats, ...) is refused.
//
// A nil *Pattern, as from an empty value, matches everything: an unset
// filter lets everything pass.
type Pattern struct {
	text string
	re   *regexp.Regexp
}

// ParsePattern reads a pattern; "" gives nil (everything passes).
func ParsePattern(s string) (*Pattern, error) {
	if s == "" {
		return nil, nil
	}
	// OneLine, DotNL and ClassNL: regexec without REG_NEWLINE treats a
	// newline as an ordinary character. No PerlX: \d, \b, (?flags) and
	// the like are not POSIX.
	parsed, err := syntax.Parse(s, syntax.POSIX|syntax.FoldCase|syntax.OneLine|syntax.DotNL|syntax.ClassNL)
	if err != nil {
		return nil, fmt.Errorf("bad regex %q: %v (want POSIX extended syntax)", s, syntaxReason(err))
	}
	re, err := regexp.Compile(parsed.String())
	if err != nil {
		return nil, fmt.Errorf("bad regex %q: %v", s, err)
	}
	return &Pattern{text: s, re: re}, nil
}

// syntaxReason is the error without the expression, which the message
// names already.
func syntaxReason(err error) string {
	if se, ok := err.(*syntax.Error); ok {
		if se.Expr != "" {
			return fmt.Sprintf("%s: %s", se.Code, se.Expr)
		}
		return se.Code.String()
	}
	return err.Error()
}

// Match reports whether the pattern matches anywhere in s; a nil Pattern
// matches everything.
func (p *Pattern) Match(s string) bool {
	if p == nil || p.re == nil {
		return true
	}
	return p.re.MatchString(s)
}

// String is the pattern as the operator wrote it; "" for nil.
func (p *Pattern) String() string {
	if p == nil {
		return ""
	}
	return p.text
}
