package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// Leave intents tell a graceful leave from a failure.
//
// memberlist reports both through one callback, NotifyLeave, and the Node
// it passes does not say which: its State is always alive, because
// memberlist's internal node state shadows it (hashicorp/memberlist#293).
// So, as Serf does with its messageLeave, a member about to leave first
// says so itself, in a user message on the gossip channel (encrypted and
// authenticated by the gossip key, under memberlist's label, like the rest
// of gossip). Its receivers remember it, re-gossip it once, and when
// memberlist later reports that member gone, report a leave instead of a
// death.
//
// memberlist does not tell NotifyMsg who sent a message, and gossip relays
// it anyway, so a receiver cannot check that an intent comes from the
// member it names. Unlike Serf's (which also serve its force-leave), these
// intents therefore cannot make a member leave or mark it left:
//
//   - An intent changes nothing by itself. It only decides the kind of a
//     departure that memberlist's own failure detector or leave message
//     reports, and only within intentTTL of its arrival.
//   - The member an intent names refutes one it did not send, as memberlist
//     refutes a suspicion: it gossips a "stay" with the same number, which
//     wins the tie, and the intent is dropped. So a member holding the key
//     cannot make another's later crash pass for a leave, except during the
//     moment the refutation takes to spread.
//   - Intents about names this member does not list as alive are dropped:
//     at most one per live member is kept and queued for re-gossip.
//   - An intent is forgotten when memberlist reports its member gone (it
//     has been used) and when the member joins again (a restart starts
//     afresh), so a leave of one run is never applied to the next.
//
// The numbers order a member's intents and refutations without clocks: a
// member's next intent is numbered past every number it has seen about
// itself.

// The user messages busylamp sends over gossip, by their first byte.
// Unknown ones are ignored, so later versions can add some.
const (
	msgLeave byte = 1 // the named member is leaving
	msgStay  byte = 2 // the named member is not leaving: a refutation
)

const (
	// maxIntentSize bounds what NotifyMsg parses: type, number, a member
	// name of at most 255 bytes and its length.
	maxIntentSize = 1 + binary.MaxVarintLen64 + 2 + 255
	// intentTTL is how long an intent stays good: longer than a leaving
	// member takes from its intent to its memberlist leave (Close bounds
	// both), and than the WAN profile takes to declare a member dead if
	// that leave message is lost.
	intentTTL = time.Minute
)

// intent is a leave intent or its refutation.
type intent struct {
	leave bool
	seq   uint64
	name  string
}

func (in intent) marshal() []byte {
	b := make([]byte, 0, maxIntentSize)
	if in.leave {
		b = append(b, msgLeave)
	} else {
		b = append(b, msgStay)
	}
	b = binary.AppendUvarint(b, in.seq)
	b = binary.AppendUvarint(b, uint64(len(in.name)))
	return append(b, in.name...)
}

var errNotIntent = errors.New("not an intent")

// parseIntent decodes what marshal wrote. It comes from the network, so
// every length is checked before it is used.
func parseIntent(b []byte) (intent, error) {
	var in intent
	if len(b) == 0 {
		return in, errNotIntent
	}
	if len(b) > maxIntentSize {
		return in, fmt.Errorf("intent is %d bytes, over %d", len(b), maxIntentSize)
	}
	switch b[0] {
	case msgLeave:
		in.leave = true
	case msgStay:
	default:
		return in, errNotIntent
	}
	seq, k := binary.Uvarint(b[1:])
	if k <= 0 {
		return in, errors.New("intent: bad number")
	}
	rest := b[1+k:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n == 0 || n > 255 || n != uint64(len(rest)-k) {
		return in, errors.New("intent: bad name length")
	}
	in.seq, in.name = seq, string(rest[k:])
	if err := printable(in.name, false); err != nil {
		return in, fmt.Errorf("intent name: %w", err)
	}
	return in, nil
}

// intentRecord is the newest intent heard about one member.
type intentRecord struct {
	seq   uint64
	leave bool
	at    time.Time
}

// newer reports whether in supersedes r; a refutation wins a tie.
func (r intentRecord) newer(in intent) bool {
	return in.seq > r.seq || (in.seq == r.seq && r.leave && !in.leave)
}

// receiveIntent handles an intent from gossip.
func (c *Cluster) receiveIntent(in intent) {
	now := time.Now()
	if in.name == c.cfg.Name {
		c.mu.Lock()
		c.ownSeq = max(c.ownSeq, in.seq)
		c.mu.Unlock()
		if in.leave && !c.leavingNow.Load() {
			c.log.Warn("cluster: refuting a leave intent naming this member", "seq", in.seq)
			c.gossip(intent{leave: false, seq: in.seq, name: in.name}, nil)
		}
		return
	}
	c.mu.Lock()
	for name, r := range c.intents {
		if now.Sub(r.at) > intentTTL {
			delete(c.intents, name)
		}
	}
	e := c.members[in.name]
	r, known := c.intents[in.name]
	fresh := e != nil && e.State == StateAlive && (!known || r.newer(in))
	if fresh {
		c.intents[in.name] = intentRecord{seq: in.seq, leave: in.leave, at: now}
	}
	c.mu.Unlock()
	if fresh {
		c.log.Debug("cluster: intent", "name", in.name, "leave", in.leave, "seq", in.seq)
		c.gossip(in, nil) // pass it on once: gossip reaches only a few members per round
	}
}

// takeIntent reports whether the member named name announced its leave,
// and forgets the announcement: memberlist reports a departure once.
func (c *Cluster) takeIntentLocked(name string, now time.Time) bool {
	r, ok := c.intents[name]
	delete(c.intents, name)
	return ok && r.leave && now.Sub(r.at) <= intentTTL
}

// announceLeave tells the others this member is leaving and waits, until
// deadline, for the news to have been gossiped as often as memberlist
// gossips its own. It also sends the intent straight to every live member,
// so that each has it before memberlist's leave message, which follows.
func (c *Cluster) announceLeave(deadline time.Time) error {
	c.leavingNow.Store(true)
	c.mu.Lock()
	c.ownSeq++
	in := intent{leave: true, seq: c.ownSeq, name: c.cfg.Name}
	var to []memberlist.Address
	for _, e := range c.members {
		if e.State == StateAlive && e.Name != c.cfg.Name {
			to = append(to, memberlist.Address{Addr: e.Addr, Name: e.Name})
		}
	}
	c.mu.Unlock()
	if len(to) == 0 {
		return nil
	}
	done := make(chan struct{})
	c.gossip(in, done)
	msg := in.marshal()
	for _, a := range to {
		if err := c.ml.SendToAddress(a, msg); err != nil {
			c.log.Debug("cluster: send leave intent", "to", a.Name, "err", err)
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return errors.New("timeout gossiping the leave intent")
	}
}

// gossip queues in for gossip; done, if not nil, is closed once it has
// been sent as often as it will be, or replaced by a newer one.
func (c *Cluster) gossip(in intent, done chan struct{}) {
	c.broadcasts.QueueBroadcast(&intentBroadcast{name: in.name, msg: in.marshal(), done: done})
}

// intentBroadcast is an intent in memberlist's gossip queue. It is named
// after its member, so a newer intent replaces an older one and the queue
// holds at most one per member.
type intentBroadcast struct {
	name string
	msg  []byte
	done chan struct{}
}

var _ memberlist.NamedBroadcast = (*intentBroadcast)(nil)

func (b *intentBroadcast) Name() string    { return b.name }
func (b *intentBroadcast) Message() []byte { return b.msg }
func (b *intentBroadcast) Finished() {
	if b.done != nil {
		close(b.done)
	}
}

func (b *intentBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(memberlist.NamedBroadcast)
	return ok && o.Name() == b.name
}
