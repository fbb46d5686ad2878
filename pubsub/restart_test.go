package pubsub

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

// After a server restart every client is back, has re-created the nodes
// where the server lost them (Prosody keeps PubSub in memory here),
// re-subscribed and republished, within a few seconds of the server
// serving again: the reconnect backoff starts at half a
// second. The times are logged; the deadline is generous (shared cores).
func TestConvergeAfterServerRestart(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		const n = 3
		type member struct {
			p   *peer
			dev string
			mu  sync.Mutex
			st  devstate.State
		}
		ms := make([]*member, n)
		var bares []string
		for i := range ms {
			j, _ := srv.Admin(fmt.Sprintf("r%d", i)) // admins: any of them may re-create the nodes on Prosody
			bares = append(bares, j)
		}
		freshNodes(t, srv, false, bares...)
		for i := range ms {
			m := &member{dev: uniq(t, fmt.Sprintf("SIP/r%d", i)), st: devstate.NotInUse}
			ms[i] = m
			j, pw := srv.Admin(fmt.Sprintf("r%d", i))
			cfg := peerConfig(srv, j, pw, "agent")
			for _, b := range bares {
				if b != j {
					cfg.Buddies = append(cfg.Buddies, b)
				}
			}
			cfg.PingInterval = 2 * time.Second
			cfg.OwnStates = func() ([]DeviceItem, []MailboxItem) {
				m.mu.Lock()
				defer m.mu.Unlock()
				return []DeviceItem{{Device: m.dev, State: m.st, Cachable: true}}, nil
			}
			m.p = startPeer(t, fmt.Sprintf("R%d", i), cfg)
			m.p.connected(connectWait)
		}
		for _, m := range ms {
			waitIdle(t, m.p.c)
		}
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			m.p.waitFor(eventWait, "Disconnected", func(ev Event) bool { _, ok := ev.(Disconnected); return ok })
			m.mu.Lock()
			m.st = devstate.InUse // changed while the server was down
			m.mu.Unlock()
			m.p.c.PublishDevice(m.dev, devstate.InUse, true)
		}
		// From when the server serves again: the first stream it answers
		// with its features (a TCP connect alone succeeds seconds earlier
		// on a starting ejabberd, whose port listens before it accepts).
		up, probed, err := srv.StartServing()
		defer probed()
		if err != nil {
			t.Fatal(err)
		}
		ready := time.Now()
		var wg sync.WaitGroup
		took := make([]time.Duration, n)
		for i, m := range ms {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var conn Connected
				m.p.waitFor(connectWait, "Connected", func(ev Event) bool {
					c, ok := ev.(Connected)
					conn = c
					return ok
				})
				var want []func(Event) bool
				for _, o := range ms {
					if o != m && !hasDevice(conn.Devices, o.dev, devstate.InUse) {
						want = append(want, isDevice(o.dev, devstate.InUse))
					}
				}
				if len(want) > 0 {
					m.p.waitAll(eventWait, "the others' states", want...)
				}
				took[i] = time.Since(up)
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		worst := time.Duration(0)
		for _, d := range took {
			worst = max(worst, d)
		}
		t.Logf("%s: serving %v before Start returned; every client converged %v after the server served again (each: %v)",
			srv.Kind, ready.Sub(up).Round(time.Millisecond), worst.Round(time.Millisecond), took)
		if worst > 15*time.Second {
			t.Errorf("converged only %v after the server served again (goal 5 s)", worst)
		}
	})
}

// The reconnect schedule: the first retry within half a second, each wait
// jittered in the upper half of a doubling step, at most 30 s, and back to
// the start after a session that lasted; while the server does not serve
// at all, at most 2 s however long that lasts.
func TestReconnectBackoff(t *testing.T) {
	for range 100 {
		var b backoff
		step := 500 * time.Millisecond
		for i := range 10 {
			w := b.next(0, false)
			if w < step/2 || w > step {
				t.Fatalf("attempt %d: waited %v, want %v..%v", i, w, step/2, step)
			}
			step = min(2*step, 30*time.Second)
		}
		if w := b.next(0, false); w < 15*time.Second || w > 30*time.Second {
			t.Fatalf("capped: %v", w)
		}
		if w := b.next(time.Second, false); w < 15*time.Second {
			t.Fatalf("after a short session: %v, want no reset", w)
		}
		if w := b.next(0, true); w < time.Second || w > 2*time.Second {
			t.Fatalf("server down, after many attempts: %v, want 1..2 s", w)
		}
		if w := b.next(time.Minute, false); w > 500*time.Millisecond {
			t.Fatalf("after a session that lasted: %v, want a reset", w)
		}
		var d backoff
		step = 500 * time.Millisecond
		for i := range 10 {
			w := d.next(0, true)
			if w < step/2 || w > step {
				t.Fatalf("server down, attempt %d: waited %v, want %v..%v", i, w, step/2, step)
			}
			step = min(2*step, 2*time.Second)
		}
	}
}
