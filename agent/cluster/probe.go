package cluster

import (
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// Suspect, as this package shows it, is this member's own finding: its
// direct probes of a live member go unanswered. memberlist's suspicion
// has no public accessor and no callback, so it cannot be shown as such.
//
// memberlist's own probes feed it for free: its PingDelegate is told of
// every direct probe answered (NotifyPingComplete), though never of one
// that failed. memberlist probes one member per probe interval in turn, so
// in a cluster of n it hears from each only every n-1 intervals, longer
// than it takes to declare a failed member dead. So probeLoop also pings,
// with memberlist's public Ping, the members not heard from for
// staleAfter intervals, at most maxPingsPerRound per interval: the extra
// traffic is bounded whatever the cluster's size. A member is suspect
// once two pings in a row go unanswered (one lost datagram is not a
// suspicion), until a probe is answered again or memberlist reports it
// joined, updated or gone.
//
// Unlike memberlist's, this suspicion is not confirmed by other members:
// a member this one cannot reach directly, but others can, stays suspect
// here while memberlist keeps it alive.
const (
	staleAfter       = 2 // probe intervals without an answer before pinging
	maxPingsPerRound = 2
)

// probeLoop pings the members it has not heard from; see above.
func (c *Cluster) probeLoop(interval, timeout time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		for _, a := range c.staleMembers(time.Now().Add(-staleAfter*interval), maxPingsPerRound) {
			ok := c.ping(a) || c.ping(a)
			if c.ctx.Err() != nil {
				return // a ping cut short by Close proves nothing
			}
			c.probed(a.Name, ok)
		}
	}
}

// staleMembers lists up to max live members not heard from since before,
// the longest silent first.
func (c *Cluster) staleMembers(before time.Time, max int) []memberlist.Address {
	c.mu.Lock()
	defer c.mu.Unlock()
	var stale []*entry
	for _, e := range c.members {
		if e.State == StateAlive && e.Name != c.cfg.Name && e.acked.Before(before) {
			stale = append(stale, e)
		}
	}
	// Partial selection: max is tiny.
	var out []memberlist.Address
	for range min(max, len(stale)) {
		best := 0
		for i, e := range stale {
			if e.acked.Before(stale[best].acked) {
				best = i
			}
		}
		out = append(out, memberlist.Address{Addr: stale[best].Addr, Name: stale[best].Name})
		stale[best] = stale[len(stale)-1]
		stale = stale[:len(stale)-1]
	}
	return out
}

// ping sends one memberlist ping to a and waits up to the probe timeout
// for its ack.
func (c *Cluster) ping(a memberlist.Address) bool {
	if c.ctx.Err() != nil {
		return false
	}
	addr, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return false
	}
	_, err = c.ml.Ping(a.Name, addr)
	return err == nil
}

// probed records the outcome of probing the member named name.
func (c *Cluster) probed(name string, answered bool) {
	now := time.Now()
	c.mu.Lock()
	e := c.members[name]
	if e == nil || e.State != StateAlive {
		c.mu.Unlock()
		return
	}
	newSuspect := false
	if answered {
		e.acked, e.suspect = now, time.Time{}
	} else if e.suspect.IsZero() {
		e.suspect = now
		newSuspect = true
	}
	c.mu.Unlock()
	if newSuspect {
		c.log.Debug("cluster: member suspect: probes unanswered", "name", name)
	}
}

// NotifyPingComplete is memberlist's news of a direct probe answered. The
// Node is memberlist's copy for that probe; only its name is read.
func (d *eventDelegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, _ []byte) {
	(*Cluster)(d).probed(n.Name, true)
}

// AckPayload adds nothing to this member's acks.
func (d *eventDelegate) AckPayload() []byte { return nil }
