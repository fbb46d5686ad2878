package pubsub

import (
	"context"
	"errors"
	"time"

	"github.com/busylamp/busylamp/internal/xmppstream"
)

// probeEvery is how often, while connected to a target that is not the
// most preferred, the more preferred ones are probed (a TCP connect and
// a stream header, no login): a server that is back gets its clients
// back within this time.
const probeEvery = 30 * time.Second

// failover picks the target of each connect: the targets are resolved
// again at every connect; after a session or an attempt on one, the next
// one is tried, cycling through the list, so that a dead server is left
// at once for the next; a failback goes to the target it found back.
// Owned by Run's goroutine.
type failover struct {
	last   string          // key of the target last connected to or tried
	prefer string          // key of the target to try first (a failback)
	tried  map[string]bool // targets tried since the last wait or session
	next   string          // key of the target after last, in the last resolution
	// back is set while the target picked is a failback's; refused
	// notes, for each target a failback to failed, when: the probes pass
	// it over for failbackHold, so that a server that answers the probe
	// but not the login does not pull its clients off a good one every
	// probeEvery.
	back    bool
	refused map[string]time.Time
}

// failbackHold is how long a target a failback failed on is not probed.
const failbackHold = 5 * time.Minute

func targetKey(t xmppstream.Target) string {
	if t.DirectTLS {
		return "tls:" + t.Addr
	}
	return t.Addr
}

// pick chooses among freshly resolved targets and notes the choice.
func (f *failover) pick(ts []xmppstream.Target) int {
	i := 0
	f.back = false
	if k := indexOf(ts, f.prefer); f.prefer != "" && k >= 0 {
		i, f.back = k, true
	} else if k := indexOf(ts, f.last); f.last != "" && k >= 0 {
		i = (k + 1) % len(ts)
	}
	f.prefer = ""
	f.last = targetKey(ts[i])
	f.next = targetKey(ts[(i+1)%len(ts)])
	if f.tried == nil {
		f.tried = map[string]bool{}
	}
	f.tried[f.last] = true
	return i
}

// failed notes that the attempt on the target last picked failed.
func (f *failover) failed(now time.Time) {
	if !f.back {
		return
	}
	if f.refused == nil {
		f.refused = map[string]time.Time{}
	}
	for k, at := range f.refused { // bounded: at most a resolution's targets stay
		if now.Sub(at) > failbackHold {
			delete(f.refused, k)
		}
	}
	if len(f.refused) < maxRefusedKept {
		f.refused[f.last] = now
	}
}

// maxRefusedKept bounds failover's memory of refused failbacks.
const maxRefusedKept = xmppstream.MaxTargets

// held lists the targets the probes pass over now.
func (f *failover) held(now time.Time) map[string]bool {
	out := map[string]bool{}
	for k, at := range f.refused {
		if now.Sub(at) <= failbackHold {
			out[k] = true
		}
	}
	return out
}

// connected notes that a session came up on the target last picked: the
// round of tries starts again from it.
func (f *failover) connected() {
	clear(f.tried)
	f.tried[f.last] = true
}

// waitFirst says whether the next connect must wait for the backoff: when
// the target it would go to was tried already since the last wait. A
// failback or an untried next target goes at once.
func (f *failover) waitFirst() bool {
	if f.prefer != "" {
		return false
	}
	return f.next == "" || f.tried[f.next]
}

// waited notes the backoff wait: a new round of tries.
func (f *failover) waited() { clear(f.tried) }

func indexOf(ts []xmppstream.Target, key string) int {
	for i, t := range ts {
		if targetKey(t) == key {
			return i
		}
	}
	return -1
}

// errFailback ends a session on a less preferred target when a more
// preferred one serves again.
type errFailback struct{ to xmppstream.Target }

func (e errFailback) Error() string {
	return "moving back to the preferred server " + e.to.String()
}

// probeLoop runs while s is connected to the target at index cur of ts:
// every probeEvery it resolves the targets again and probes, in order,
// those preferred to the current one; the first that serves ends the
// session with errFailback, which Run follows.
func (c *Client) probeLoop(s *session, cur xmppstream.Target, held map[string]bool) {
	defer s.wg.Done()
	t := time.NewTicker(c.s.probeEvery)
	defer t.Stop()
	cfg := c.s.streamConfig()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ts, err := xmppstream.Resolve(s.ctx, cfg)
		if err != nil {
			continue
		}
		k := indexOf(ts, targetKey(cur))
		if k < 0 {
			k = len(ts) // gone from DNS: every target is preferred to it
		}
		for _, p := range ts[:k] {
			if held[targetKey(p)] {
				continue
			}
			err := xmppstream.Probe(s.ctx, cfg, p)
			if s.ctx.Err() != nil {
				return
			}
			if err == nil {
				c.s.log.Info("preferred XMPP server serves again; moving back", "to", p.String(), "from", cur.String())
				s.stop(errFailback{to: p})
				return
			}
		}
	}
}

// failbackTarget reports the target a session ended to move back to.
func failbackTarget(err error) (xmppstream.Target, bool) {
	var fb errFailback
	if errors.As(err, &fb) {
		return fb.to, true
	}
	return xmppstream.Target{}, false
}

// resolveTargets is Resolve bounded by ctx.
func (c *Client) resolveTargets(ctx context.Context) ([]xmppstream.Target, error) {
	return xmppstream.Resolve(ctx, c.s.streamConfig())
}
