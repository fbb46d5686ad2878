package agent

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

func gossipSample(ndev, nmbox int) ([]pubsub.DeviceItem, []pubsub.MailboxItem) {
	var ds []pubsub.DeviceItem
	var ms []pubsub.MailboxItem
	for i := range ndev {
		ds = append(ds, pubsub.DeviceItem{Device: fmt.Sprintf("PJSIP/%05d", i), State: devstate.States[i%len(devstate.States)], Cachable: i%3 != 0, EID: eidB})
	}
	for i := range nmbox {
		ms = append(ms, pubsub.MailboxItem{Mailbox: fmt.Sprintf("%d@default", i), Counts: mwi.Counts{New: i, Old: mwi.MaxCount - i}, EID: eidA})
	}
	return ds, ms
}

// An answer splits into messages of at most the size given, in order,
// and reads back exactly; an empty answer is one message.
func TestGossipAnswerRoundTrip(t *testing.T) {
	id := gossipID{1, 2, 3}
	for _, tc := range []struct{ ndev, nmbox, max, chunks int }{
		{0, 0, 1 << 20, 1}, {3, 2, 1 << 20, 1}, {25000, 500, 1 << 20, 1}, {25000, 500, 64 << 10, 16},
	} {
		ds, ms := gossipSample(tc.ndev, tc.nmbox)
		msgs, err := encodeAnswer(id, ds, ms, tc.max)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != tc.chunks {
			t.Errorf("%d+%d entries in messages of %d: %d messages, want %d", tc.ndev, tc.nmbox, tc.max, len(msgs), tc.chunks)
		}
		var gotD []pubsub.DeviceItem
		var gotM []pubsub.MailboxItem
		for i, b := range msgs {
			if len(b) > tc.max {
				t.Fatalf("message %d: %d bytes, over %d", i, len(b), tc.max)
			}
			kind, gid, err := gossipHeadOf(b)
			if err != nil || kind != gossipAnswer || gid != id {
				t.Fatalf("message %d: kind %d id %x err %v", i, kind, gid, err)
			}
			c, err := decodeAnswer(b)
			if err != nil {
				t.Fatal(err)
			}
			if c.seq != i || c.chunks != len(msgs) || c.refused != 0 {
				t.Fatalf("message %d: %+v", i, c)
			}
			gotD, gotM = append(gotD, c.devices...), append(gotM, c.mailboxes...)
		}
		if fmt.Sprint(gotD) != fmt.Sprint(ds) || fmt.Sprint(gotM) != fmt.Sprint(ms) {
			t.Errorf("%d+%d entries: read back differ", tc.ndev, tc.nmbox)
		}
	}
	ask, err := decodeAsk(encodeAsk(id, "pbx1"))
	if err != nil || ask.id != id || ask.member != "pbx1" {
		t.Errorf("ask read back as %+v, %v", ask, err)
	}
	if got := decodeRefuse(encodeRefuse(id, strings.Repeat("x", 500))); len(got) != maxRefuseReason+2 {
		t.Errorf("refusal reason not clipped: %d bytes", len(got))
	}
}

// Entries are checked as the XMPP exchange checks them: a bad one is
// skipped and counted, the rest kept.
func TestGossipAnswerBadEntriesRefused(t *testing.T) {
	b := gossipHead(gossipAnswer, gossipID{})
	for _, n := range []int{0, 1, 4, 1} { // chunk 0 of 1, 4 devices, 1 mailbox
		b = append(b, byte(n))
	}
	dev := func(name, state string, cach byte, eid string) {
		b = appendStr(b, name)
		b = appendStr(b, state)
		b = append(b, cach)
		b = appendStr(b, eid)
	}
	dev("SIP/ok", "inuse", '1', eidB.String())
	dev("", "INUSE", '1', eidB.String())       // empty name
	dev("SIP/x", "WEIRD", '1', eidB.String())  // unknown state
	dev("SIP/\x00", "BUSY", '0', "not-an-eid") // control character
	b = appendStr(b, "1@c")
	b = appendStr(b, "-1")
	b = appendStr(b, "0")
	b = appendStr(b, eidB.String()) // count out of range
	c, err := decodeAnswer(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.refused != 4 || len(c.devices) != 1 || c.devices[0].State != devstate.InUse || len(c.mailboxes) != 0 {
		t.Fatalf("read %+v", c)
	}
}

// A message whose structure is wrong is refused whole, with an error that
// says what is wrong; nothing in it is trusted (no length read past the
// end, no allocation by a claimed count).
func TestGossipMessagesMalformed(t *testing.T) {
	ds, ms := gossipSample(10, 2)
	msgs, err := encodeAnswer(gossipID{}, ds, ms, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	good := msgs[0]
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"empty":          {nil, "shorter than a header"},
		"garbage":        {[]byte(strings.Repeat("\xff", 40)), "version 255"},
		"kind":           {append([]byte{gossipVersion, 9}, make([]byte, 16)...), "kind 9"},
		"truncated":      {good[:len(good)-3], "past the end"},
		"trailing":       {append(append([]byte{}, good...), 0), "1 trailing bytes"},
		"count too high": {append(gossipHead(gossipAnswer, gossipID{}), 0, 1, 0xff, 0xff, 0xff, 0x7f, 0), "devices: bad or too large"},
		"count vs bytes": {append(gossipHead(gossipAnswer, gossipID{}), 0, 1, 100, 0), "with 100 entries in 0 bytes"},
		"seq past count": {append(gossipHead(gossipAnswer, gossipID{}), 3, 2, 0, 0), "chunk 3 of 2"},
	} {
		_, err := decodeAnswer(tc.b)
		if !errors.Is(err, errGossip) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
	if _, err := decodeAsk(append(gossipHead(gossipAsk, gossipID{}), 0)); err == nil {
		t.Error("an ask with an empty member name read")
	}
	if _, err := encodeAnswer(gossipID{}, []pubsub.DeviceItem{{Device: strings.Repeat("x", 200), EID: eidB}}, nil, 100); err == nil {
		t.Error("an entry larger than a message encoded")
	}
}
