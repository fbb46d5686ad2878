package cluster

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Direct messages: the owner's own messages to one member, over
// memberlist's reliable stream (SendReliable: one TCP connection per
// message, encrypted and authenticated with the gossip key when one is
// set, and carrying the "busylamp" label), not over gossip. The cluster
// frames them after the leave intents' types; what is inside is the
// owner's business (the agent's own-states exchange).
//
// What arrives is bounded twice: memberlist refuses a user message over
// 20 MiB before it reaches the delegate, and this package refuses a body
// over MaxDirectSize, and anything past the owner's channel (whose
// capacity bounds the memory waiting for it). Refusals are counted and
// logged, at most one line per directLogEvery.
const (
	msgDirect byte = 3

	// MaxDirectSize bounds the body of one direct message, in bytes.
	MaxDirectSize = 1 << 20

	directLogEvery = 10 * time.Second
)

// ErrNotMember is returned by SendDirect for a name that is not a live
// member.
var ErrNotMember = errors.New("not a live member")

// DirectStats counts direct messages.
type DirectStats struct {
	Sent     uint64
	Received uint64 // handed to the owner
	Refused  uint64 // over MaxDirectSize, empty, or the owner's channel full
}

type directCounters struct {
	sent, received, refused atomic.Uint64

	mu      sync.Mutex
	lastLog time.Time
	quiet   uint64 // refusals not logged since lastLog
}

// SendDirect sends body to the live member name over memberlist's
// reliable stream. It returns once the message is written (not once the
// member has read it), or with an error: ErrNotMember, a body over
// MaxDirectSize, or the stream's.
func (c *Cluster) SendDirect(name string, body []byte) error {
	if len(body) > MaxDirectSize {
		return fmt.Errorf("direct message to %s: %d bytes, over %d", name, len(body), MaxDirectSize)
	}
	var to *memberlist.Node
	for _, n := range c.ml.Members() {
		if n.Name == name {
			to = n
			break
		}
	}
	if to == nil || name == c.cfg.Name {
		return fmt.Errorf("direct message to %s: %w", name, ErrNotMember)
	}
	msg := make([]byte, 0, 1+len(body))
	msg = append(append(msg, msgDirect), body...)
	if err := c.ml.SendReliable(to, msg); err != nil {
		return fmt.Errorf("direct message to %s: %w", name, err)
	}
	c.direct.sent.Add(1)
	return nil
}

// DirectStats returns the direct message counters.
func (c *Cluster) DirectStats() DirectStats {
	return DirectStats{Sent: c.direct.sent.Load(), Received: c.direct.received.Load(), Refused: c.direct.refused.Load()}
}

// receiveDirect hands a direct message's body (b without its type) to the
// owner. It runs in memberlist's goroutines (the stream's, or the packet
// handler's for one sent as a packet) and must not block: a message the
// owner has no room for is refused.
func (c *Cluster) receiveDirect(b []byte) {
	switch {
	case c.cfg.Direct == nil:
		c.refuseDirect("no reader", len(b))
	case len(b) == 0:
		c.refuseDirect("empty", 0)
	case len(b) > MaxDirectSize:
		c.refuseDirect(fmt.Sprintf("over %d bytes", MaxDirectSize), len(b))
	default:
		body := append([]byte(nil), b...) // memberlist reuses b
		select {
		case c.cfg.Direct <- body:
			c.direct.received.Add(1)
		default:
			c.refuseDirect("too many waiting", len(b))
		}
	}
}

func (c *Cluster) refuseDirect(why string, size int) {
	c.direct.refused.Add(1)
	d := &c.direct
	d.mu.Lock()
	now := time.Now()
	if now.Sub(d.lastLog) < directLogEvery {
		d.quiet++
		d.mu.Unlock()
		return
	}
	quiet := d.quiet
	d.lastLog, d.quiet = now, 0
	d.mu.Unlock()
	c.log.Warn("cluster: direct message refused", "reason", why, "bytes", size, "refused_since_last_line", quiet)
}
