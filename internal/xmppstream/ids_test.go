package xmppstream

import (
	"regexp"
	"testing"
)

// IQ ids are short, distinct within a stream, and differ between two
// streams of the same full JID (an answer to the earlier one is not
// taken for an answer to the later one).
func TestIQIDs(t *testing.T) {
	a, _ := pipeStream(t, Config{})
	b, _ := pipeStream(t, Config{})
	valid := regexp.MustCompile(`^[A-Za-z0-9_-]{6}[0-9a-z]+$`)
	seen := map[string]bool{}
	var last string
	for range 100_000 {
		id := a.newID()
		if !valid.MatchString(id) {
			t.Fatalf("id %q: not a nonce of 6 base64url characters and a base-36 counter", id)
		}
		if seen[id] {
			t.Fatalf("id %q twice on one stream", id)
		}
		seen[id] = true
		last = id
	}
	if len(last) > 10 {
		t.Errorf("the 100,000th id %q is %d characters, want at most 10", last, len(last))
	}
	if a.idPrefix == b.idPrefix {
		t.Errorf("two streams share the nonce %q", a.idPrefix)
	}
	if id := b.newID(); seen[id] {
		t.Errorf("the second stream's first id %q was the first stream's", id)
	}
}
