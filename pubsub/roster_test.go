package pubsub

import (
	"context"
	"fmt"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"slices"
	"strings"
	"testing"
)

// Presence.Online follows the buddy's account: it stays true while any
// resource is left, and an unavailable presence without a resource takes
// every resource (each of its events then says false).
func TestPresenceOnline(t *testing.T) {
	c, err := New(testConfig(), make(chan Event, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &session{cl: c, ctx: ctx}
	steps := []struct {
		stanza string
		want   []string // JID available online
	}{
		{`<presence from="server2@example.org/r1"><priority>3</priority></presence>`,
			[]string{"server2@example.org/r1 true true"}},
		{`<presence from="Server2@Example.org/r2"><show>away</show></presence>`,
			[]string{"server2@example.org/r2 true true"}},
		{`<presence from="server2@example.org/r1" type="unavailable"/>`,
			[]string{"server2@example.org/r1 false true"}}, // r2 is still there
		{`<presence from="server2@example.org/r1" type="unavailable"/>`,
			nil}, // gone already: nothing to say
		{`<presence from="server2@example.org/r3"/>`,
			[]string{"server2@example.org/r3 true true"}},
		{`<presence from="server2@example.org" type="unavailable"/>`,
			[]string{"server2@example.org/r2 false false", "server2@example.org/r3 false false"}},
		{`<presence from="server3@example.org/x"/>`,
			[]string{"server3@example.org/x true true"}},
		{`<presence from="stranger@example.org/x"/>`,
			nil}, // not a buddy
		{`<presence from="server3@example.org/x" type="unavailable"/>`,
			[]string{"server3@example.org/x false false"}},
	}
	for i, st := range steps {
		e, err := xmppstream.ParseDocument(`<stream xmlns="jabber:client">` + st.stanza + `</stream>`)
		if err != nil {
			t.Fatal(err)
		}
		c.roster.handlePresence(s, &e.Nodes[0])
		c.q.mu.Lock()
		evs := c.q.q
		c.q.q = nil
		c.q.mu.Unlock()
		var got []string
		for _, ev := range evs {
			p := ev.(Presence)
			got = append(got, fmt.Sprintf("%s %v %v", p.JID, p.Available, p.Online))
		}
		slices.Sort(got) // one stanza's events come in no set order of resources
		if strings.Join(got, "|") != strings.Join(st.want, "|") {
			t.Errorf("step %d %s: events %v, want %v", i, st.stanza, got, st.want)
		}
	}
	if bs := c.Buddies(); len(bs) != 2 || len(bs[0].Resources) != 0 || len(bs[1].Resources) != 0 {
		t.Errorf("buddies after all went: %+v", bs)
	}
}
