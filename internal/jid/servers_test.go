package jid

import (
	"strings"
	"testing"
)

func TestSplitServers(t *testing.T) {
	for in, want := range map[string]string{
		"xmpp.example.org":                    "xmpp.example.org",
		"xmpp.example.org:5223":               "xmpp.example.org:5223",
		" a.example.org:5222 ,b.example.org ": "a.example.org:5222|b.example.org",
		"1.2.3.4":                             "1.2.3.4",
		"::1":                                 "[::1]",
		"[::1]":                               "[::1]",
		"[2001:db8::1]:5300, 10.0.0.1:5222":   "[2001:db8::1]:5300|10.0.0.1:5222",
		"127.0.0.1:5223, 127.0.0.1:5224":      "127.0.0.1:5223|127.0.0.1:5224",
	} {
		hs, err := SplitServers(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		var got []string
		for _, h := range hs {
			got = append(got, h.String())
		}
		if strings.Join(got, "|") != want {
			t.Errorf("%q: %v, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"":                             "empty server list",
		"a.example.org,":               "empty entry",
		"a..example.org":               "bad host name",
		"a.example.org:0":              "bad port",
		"a.example.org:http":           "bad port",
		"[zz]":                         "bad IPv6",
		"a:b:c":                        "bad host name",
		strings.Repeat("h,", 32) + "h": "at most 32",
	} {
		if _, err := SplitServers(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %q", in, err, want)
		}
	}
}
