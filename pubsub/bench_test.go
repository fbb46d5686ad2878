package pubsub

import (
	"testing"

	"github.com/busylamp/busylamp/internal/xmppstream"
)

// The parsing half of the hot path: a notification's element tree (as the
// stream's reader hands it over; internal/xmppstream's
// BenchmarkReadNotification measures the reading) into the DeviceEvent
// the agent gets.
func BenchmarkParseNotification(b *testing.B) {
	msg, err := xmppstream.ParseDocument(eventMsg(`<items node="device_state">` + stateItem("PJSIP/1000", otherEID.String(), ` cachable="1"`, "INUSE") + `</items>`))
	if err != nil {
		b.Fatal(err)
	}
	p := &parser{own: ownEID, reject: func(string, ...any) {}, kindOf: flatKind}
	b.ReportAllocs()
	for b.Loop() {
		evs := p.parseEvent(msg)
		if len(evs) != 1 {
			b.Fatalf("parsed %v", evs)
		}
		if d, ok := evs[0].(DeviceEvent); !ok || d.Item.Device != "PJSIP/1000" || d.Item.State.String() != "INUSE" {
			b.Fatalf("parsed %+v", evs[0])
		}
	}
}
