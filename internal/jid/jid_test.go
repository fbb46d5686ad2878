package jid

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, bare, full string
	}{
		{"node1@Example.ORG/pbx1", "node1@example.org", "node1@example.org/pbx1"},
		{"Node1@example.org", "node1@example.org", "node1@example.org"},
		{"node1@example.org./pbx1", "node1@example.org", "node1@example.org/pbx1"}, // RFC 7622 §3.2
		{"pubsub.example.org", "pubsub.example.org", "pubsub.example.org"},
		{"pubsub.example.org.", "pubsub.example.org", "pubsub.example.org"},
		{"a@127.0.0.1/Res/With/Slash", "a@127.0.0.1", "a@127.0.0.1/Res/With/Slash"},
		{"a@[::1]", "a@[::1]", "a@[::1]"},
	} {
		j, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if j.Bare() != tc.bare || j.String() != tc.full {
			t.Errorf("Parse(%q) = %q, %q; want %q, %q", tc.in, j.Bare(), j.String(), tc.bare, tc.full)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, in := range []string{
		"", "@example.org", "a@", "a@example.org/", "a b@example.org", "a@exa mple.org",
		"a@example..org", "a@.example.org", "a@example.org..", "a<b@example.org", "a@[zz]",
		"a@example.org/x\x01", string([]byte{0xff}) + "@x",
	} {
		if j, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, j)
		}
	}
	if _, err := ParseAccount("pubsub.example.org"); err == nil {
		t.Error("ParseAccount took a domain JID")
	}
}

// One account may not be bound under two spellings: a trailing dot and
// capitals name the same account.
func TestOneAccountOneSpelling(t *testing.T) {
	for _, pair := range [][2]string{
		{"node1@example.org", "node1@example.org."},
		{"node1@example.org/pbx", "NODE1@Example.Org./pbx"},
	} {
		if !SameAccount(pair[0], pair[1]) || Bare(pair[0]) != Bare(pair[1]) {
			t.Errorf("%q and %q are one account", pair[0], pair[1])
		}
	}
	if Equal("a@x/pbx", "a@x/PBX") {
		t.Error("resources compare with case")
	}
	if Bare("not a jid@") != "" || SameAccount("", "") {
		t.Error("a string that is not a JID has no bare form")
	}
}

func TestBareAllocatesNothingWhenCanonical(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = Bare("node1@example.org/pbx1") }); n != 0 {
		t.Errorf("Bare of a canonical JID: %v allocations, want 0", n)
	}
	if got := Bare("Node1@Example.org./x"); got != "node1@example.org" {
		t.Errorf("Bare = %q", got)
	}
}
