package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/pubsub"
)

// show stats counts the remote states refused for want of room, in
// total and per source.
func TestShowStatsCountsRefusals(t *testing.T) {
	m := startMemAgent(t, func(c *Config) { c.Core.MaxDevices = 4 }) // a share of 2
	m.x.send(t, pubsub.Connected{JID: selfJID})
	recv(t, m.Core().Booted(), "boot")
	var evs []pubsub.Event
	for i := range 5 {
		evs = append(evs, pubsub.DeviceEvent{Item: pubsub.DeviceItem{Device: fmt.Sprintf("SIP/b%d", i), State: devstate.InUse, EID: eidB, Publisher: jidB}})
	}
	m.x.send(t, evs...)
	out, err := m.Command(context.Background(), "show stats")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Remote states refused (share/full): 3\n") || !strings.Contains(out, "\n  b@x.test: 3\n") {
		t.Fatalf("show stats:\n%s", out)
	}
	for i := range 4 {
		if err := m.Core().SetDeviceState(fmt.Sprintf("PJSIP/%d", i), devstate.Ringing); err != nil {
			t.Fatalf("own device %d: %v", i, err)
		}
	}
}
