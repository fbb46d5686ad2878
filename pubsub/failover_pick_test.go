package pubsub

import (
	"testing"
	"time"

	"github.com/busylamp/busylamp/internal/xmppstream"
)

// The order of connects over three targets: the first at start; after
// each session or attempt the next one, at once while it was not tried
// since the last wait; a backoff wait after a full round; a failback goes
// to the target it names, and a failback that fails holds that target
// out of the probes.
func TestFailoverPicks(t *testing.T) {
	ts := []xmppstream.Target{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1", DirectTLS: true}}
	var f failover
	step := func(want int, wait bool) {
		t.Helper()
		if got := f.pick(ts); got != want {
			t.Fatalf("picked %d, want %d", got, want)
		}
		if got := f.waitFirst(); got != wait {
			t.Fatalf("after %d: waitFirst %v, want %v", want, got, wait)
		}
	}
	step(0, false) // start: a; b untried
	f.connected()  // a session on a, then it ends
	step(1, false) // b at once; c untried
	step(2, true)  // c; a was tried this round: wait
	f.waited()
	step(0, false)
	step(1, false)
	f.connected() // on b
	f.prefer = targetKey(ts[0])
	if f.waitFirst() {
		t.Fatal("a failback waits")
	}
	step(0, true) // the failback to a; next (b) was tried
	now := time.Now()
	f.failed(now) // a served the probe but not the login
	if !f.held(now)[targetKey(ts[0])] || f.held(now.Add(failbackHold + time.Second))[targetKey(ts[0])] {
		t.Errorf("held %v", f.held(now))
	}
	step(1, false)
	f.failed(now) // not a failback: nothing held
	if len(f.held(now)) != 1 {
		t.Errorf("held %v", f.held(now))
	}
	// A target gone from DNS: start from the first again.
	f.last = "gone:1"
	step(0, true) // b, next, was tried this round
}
