package packaging

import (
	"fmt"
	"regexp"
	"strings"
)

// describeRE splits `git describe --tags --always --dirty` output:
// an optional tag (v1.2.3, 1.2.3-rc1), the commits since it and the
// abbreviated hash, and -dirty.
var describeRE = regexp.MustCompile(`^(?:v?([0-9][0-9A-Za-z.~+-]*?)-([0-9]+)-g)?([0-9a-f]{4,40})(-dirty)?$`)

// tagRE is a release tag alone: v1.2.3, 1.2, v1.0.0-rc1.
var tagRE = regexp.MustCompile(`^v?([0-9][0-9A-Za-z.~+-]*?)(-dirty)?$`)

// debianVersionRE is an upstream version without epoch or revision:
// it starts with a digit and holds only alphanumerics and . + ~
// (a hyphen would start a Debian revision).
var debianVersionRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)

// DebianVersion maps a version as `git describe --tags --always --dirty`
// prints it (what the Makefile's VERSION holds) to a Debian version that
// sorts the way the commits came:
//
//	v1.2.3              1.2.3
//	v1.0.0-rc1          1.0.0~rc1        (before 1.0.0)
//	v0.1-3-gabc1234     0.1+git3.abc1234 (after 0.1, before 0.2)
//	6b5f47d             0.0~git6b5f47d   (no tag yet: before any release)
//	...-dirty           ...+dirty
//	dev, ""             0.0~dev
//
// Git's hashes do not order, so two untagged builds compare by hash, not
// by age: tag a release to get an upgrade path.
func DebianVersion(describe string) (string, error) {
	d := strings.TrimSpace(describe)
	var v string
	switch m := describeRE.FindStringSubmatch(d); {
	case d == "" || d == "dev":
		v = "0.0~dev"
	case m != nil && m[1] != "":
		v = upstream(m[1]) + "+git" + m[2] + "." + m[3] + dirty(m[4])
	case m != nil:
		v = "0.0~git" + m[3] + dirty(m[4])
	default:
		t := tagRE.FindStringSubmatch(d)
		if t == nil {
			return "", fmt.Errorf("version %q: not a tag or git describe output", describe)
		}
		v = upstream(t[1]) + dirty(t[2])
	}
	if !ValidDebianVersion(v) {
		return "", fmt.Errorf("version %q: maps to %q, not a Debian version", describe, v)
	}
	return v, nil
}

// upstream turns a tag's pre-release hyphen into Debian's "~" (sorts
// before the release) and drops other characters Debian does not allow.
func upstream(tag string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-':
			return '~'
		case r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '.', r == '+', r == '~':
			return r
		default:
			return -1
		}
	}, tag)
}

func dirty(s string) string {
	if s != "" {
		return "+dirty"
	}
	return ""
}

// ValidDebianVersion reports whether v is a Debian upstream version as
// this package writes it: no epoch, no revision.
func ValidDebianVersion(v string) bool { return debianVersionRE.MatchString(v) }
