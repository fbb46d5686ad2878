package agent

import (
	"context"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/pubsub"
)

// 'show connected' names the PubSub service the client uses (configured
// or discovered), says when none is known yet, and lists what the
// service does not advertise.
func TestShowConnectedService(t *testing.T) {
	m := startMemAgent(t, nil)
	for _, tc := range []struct {
		st          pubsub.ConnStatus
		want, unwan []string
	}{
		{pubsub.ConnStatus{State: "connected", Service: "pubsub.x.test"},
			[]string{"PubSub: pubsub.x.test "}, []string{"Missing:"}},
		{pubsub.ConnStatus{State: "connected", Service: "pubsub.x.test", Missing: []string{"pubsub#collections", "pubsub#item-ids"}},
			[]string{"PubSub: pubsub.x.test ", "\n           Missing: pubsub#collections pubsub#item-ids\n"}, nil},
		{pubsub.ConnStatus{State: "connecting"},
			[]string{"PubSub: (not discovered yet) "}, []string{"Missing:"}},
	} {
		m.x.mu.Lock()
		m.x.status = tc.st
		m.x.mu.Unlock()
		out, err := m.Command(context.Background(), "show connected")
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%+v: output lacks %q:\n%s", tc.st, w, out)
			}
		}
		for _, u := range tc.unwan {
			if strings.Contains(out, u) {
				t.Errorf("%+v: output has %q:\n%s", tc.st, u, out)
			}
		}
	}
}
