package pubsub

import (
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// The metrics hooks: each publish's round trip, and the time to its echo
// (the service's notification of our own item), on both servers; and the
// session counter.
func TestObservePublishAndEcho(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("obs")
		freshNodes(t, srv, false, aj)
		cfg := peerConfig(srv, aj, apw, "obs")
		var mu sync.Mutex
		var rtts, echoes []time.Duration
		echoed := make(chan struct{}, 16)
		cfg.ObservePublish = func(d time.Duration) { mu.Lock(); rtts = append(rtts, d); mu.Unlock() }
		cfg.ObserveEcho = func(d time.Duration) {
			mu.Lock()
			echoes = append(echoes, d)
			mu.Unlock()
			echoed <- struct{}{}
		}
		a := startPeer(t, "A", cfg)
		a.connected(connectWait)
		dev := uniq(t, "SIP/obs")
		a.c.PublishDevice(dev, devstate.InUse, true)
		a.c.PublishMailbox(uniq(t, "obs")+"@default", mwi.Counts{New: 1})
		for range 2 {
			select {
			case <-echoed:
			case <-time.After(eventWait):
				t.Fatalf("no echo of our own publishes within %v", eventWait)
			}
		}
		waitIdle(t, a.c)
		mu.Lock()
		defer mu.Unlock()
		if len(rtts) < 2 || len(echoes) != 2 {
			t.Fatalf("round trips %v, echoes %v: want 2 of each", rtts, echoes)
		}
		for _, d := range append(rtts, echoes...) {
			if d <= 0 || d > eventWait {
				t.Fatalf("a measured time %v out of range", d)
			}
		}
		if st := a.c.Stats(); st.Sessions != 1 || st.Malformed != 0 {
			t.Fatalf("stats %+v, want one session and nothing malformed", st)
		}
	})
}
