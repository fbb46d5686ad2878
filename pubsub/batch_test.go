package pubsub

import (
	"fmt"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// putAll queues live values as if put one after the other while the
// publisher's goroutine looked away: ready together.
func putAll(p *publisher, entries []pubEntry) {
	p.mu.Lock()
	for _, e := range entries {
		p.putLocked(e.k, e.v)
	}
	p.mu.Unlock()
	signal(p.kick)
}

// Publishes ready together go out in one write to a real server, each an
// IQ of its own that is answered, and reach a subscriber.
func TestBatchedPublishesOneWrite(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		aj, apw := srv.Admin("a")
		bj, bpw := srv.User("b")
		freshNodes(t, srv, false, bj)
		// No buddies, no subscription check, no pings: nothing else for
		// A to write while the batch is out.
		quiet := func(s *settings) { s.subCheck = 0 }
		ca := peerConfig(srv, aj, apw, "astvoip1")
		ca.PingInterval = time.Hour
		cb := peerConfig(srv, bj, bpw, "astvoip2")
		a := startPeer(t, "A", ca, quiet)
		a.connected(connectWait)
		b := startPeer(t, "B", cb, quiet)
		b.connected(connectWait)
		s, err := a.c.session()
		if err != nil {
			t.Fatal(err)
		}
		const n = 24 // below the window of 32
		var entries []pubEntry
		var want []func(Event) bool
		for i := range n {
			if i%4 == 3 {
				m := uniq(t, fmt.Sprintf("%d@batch", i))
				c := mwi.Counts{New: i, Old: 1}
				entries = append(entries, pubEntry{pubKey{mailbox: true, name: m}, pubValue{mbox: MailboxItem{Mailbox: m, Counts: c, EID: a.c.s.EID}}})
				want = append(want, isMailbox(m, c))
				continue
			}
			d := uniq(t, fmt.Sprintf("Custom:batch&<%d>", i))
			st := devstate.States[i%len(devstate.States)]
			entries = append(entries, pubEntry{pubKey{name: d}, pubValue{dev: DeviceItem{Device: d, State: st, Cachable: true, EID: a.c.s.EID}}})
			want = append(want, isDevice(d, st))
		}
		before, w0 := a.c.Stats(), s.st.Writes()
		putAll(a.c.pub, entries)
		waitIdle(t, a.c)
		st, w1 := a.c.Stats(), s.st.Writes()
		if st.Published-before.Published != n || st.Errors != before.Errors {
			t.Fatalf("stats %+v, before %+v: want %d published, no errors", st, before, n)
		}
		if w1-w0 != 1 {
			t.Errorf("%d publishes ready together took %d writes, want 1", n, w1-w0)
		}
		b.waitAll(eventWait, "every published value", want...)
	})
}
