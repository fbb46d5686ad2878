// Package wanpath puts a wide-area path between memberlist members in a
// test: a memberlist transport that delays and drops what it sends.
// Tests of agent/cluster and agent use it (through cluster.Config's
// WrapTransport); nothing in the program imports it.
//
// Why in userspace: issue 14 asked for tc netem in a network namespace,
// and this machine's kernel is built without sch_netem
// (CONFIG_NET_SCH_NETEM is not set, no modules). So the path is modelled
// where memberlist meets its sockets: a Transport wraps the real
// NetTransport, over real UDP and TCP on 127.0.0.1.
//
// Every member's transport delays what it sends, so a round trip between
// two impaired members takes RTT, as `netem delay RTT/2` on lo would:
//   - a datagram leaves after the one-way delay (RTT/2, spread uniformly
//     over ±Jitter/2), or, with probability Loss, never: loss is per
//     datagram and per direction, so a ping and its ack are lost with
//     about 2·Loss, as with `netem loss` on lo. At most maxDelayedPackets
//     wait (netem's default limit is 1000); past that a datagram is
//     dropped and counted.
//   - a stream (memberlist's TCP: joins, push-pull, the TCP fallback
//     ping, direct messages) is what TCP makes of such a path. Connecting
//     takes one RTT (SYN, SYN-ACK), plus Linux's initial retransmission
//     timeout of 1 s if either is lost. TCP loses no data, it resends it:
//     each write is delivered the one-way delay later, or, with probability
//     Loss, a retransmission timeout later still (Linux's RTO: srtt plus at
//     least 200 ms, so RTT+200ms), and what is written after it waits
//     behind it (head-of-line blocking). Per write, not per segment:
//     memberlist's writes are a few KiB, one or two segments. A write
//     returns once queued, as into a socket buffer; past maxStreamQueued
//     bytes it blocks until the line drains.
//
// The random draws come from one seeded generator per transport, so a run
// is repeatable up to the scheduling of goroutines.
package wanpath

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Path is what the path does to each member's traffic.
type Path struct {
	RTT    time.Duration // round trip: each datagram and stream write waits RTT/2
	Jitter time.Duration // the one-way delay varies uniformly over ±Jitter/2
	Loss   float64       // a datagram's chance to be lost; a stream write's to wait an RTO
	Seed   uint64        // of the transport's random draws
}

const (
	maxDelayedPackets = 1000
	maxStreamQueued   = 4 << 20
	synRetransmit     = time.Second            // Linux's initial RTO (RFC 6298)
	minRTO            = 200 * time.Millisecond // Linux's tcp_rto_min
)

var errClosed = errors.New("wanpath: transport shut down")

// Wrap returns a hook for cluster.Config's WrapTransport: each transport
// it makes (one per member) is the path's, seeded with Seed plus how many
// it made before, and is handed to made, if not nil, for its counts.
func (p Path) Wrap(made func(*Transport)) func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
	var n atomic.Uint64
	return func(inner memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
		q := p
		q.Seed += n.Add(1) - 1
		t := New(inner, q)
		if made != nil {
			made(t)
		}
		return t
	}
}

// Counts are what a Transport did.
type Counts struct {
	Packets, Dropped, Overflow int64 // datagrams sent, lost, over the limit
	Writes, Retransmits        int64 // stream writes, and those that waited an RTO
	Dials, SynLost             int64 // streams dialed, and those whose handshake lost a packet
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.Packets += o.Packets
	c.Dropped += o.Dropped
	c.Overflow += o.Overflow
	c.Writes += o.Writes
	c.Retransmits += o.Retransmits
	c.Dials += o.Dials
	c.SynLost += o.SynLost
}

type counters struct {
	packets, dropped, overflow atomic.Int64
	writes, retransmits        atomic.Int64
	dials, synLost             atomic.Int64
}

// Counts are what t did so far.
func (t *Transport) Counts() Counts {
	c := &t.counts
	return Counts{Packets: c.packets.Load(), Dropped: c.dropped.Load(), Overflow: c.overflow.Load(),
		Writes: c.writes.Load(), Retransmits: c.retransmits.Load(), Dials: c.dials.Load(), SynLost: c.synLost.Load()}
}

// Transport is one member's end of the path: it delays and drops what the
// member sends (see the package comment). Its Shutdown, which memberlist
// calls at its own, stops its goroutines.
type Transport struct {
	memberlist.NodeAwareTransport
	path     Path
	streamCh chan net.Conn
	done     chan struct{}
	wake     chan struct{}
	counts   counters

	mu      sync.Mutex // guards rng, pending, closed and wg.Add
	rng     *rand.Rand
	pending packetQueue
	closed  bool
	wg      sync.WaitGroup
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// New puts path p between inner and memberlist.
func New(inner memberlist.NodeAwareTransport, p Path) *Transport {
	t := &Transport{
		NodeAwareTransport: inner,
		path:               p,
		streamCh:           make(chan net.Conn),
		done:               make(chan struct{}),
		wake:               make(chan struct{}, 1),
		rng:                rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)),
	}
	t.wg.Add(2)
	go t.sendLoop()
	go t.acceptLoop()
	return t
}

// draw draws a one-way delay, and whether the loss draw hit.
func (t *Transport) draw() (delay time.Duration, lost bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.drawLocked()
}

func (t *Transport) drawLocked() (time.Duration, bool) {
	d := t.path.RTT / 2
	if t.path.Jitter > 0 {
		d += time.Duration(t.rng.Int64N(int64(t.path.Jitter))) - t.path.Jitter/2
	}
	return max(d, 0), t.path.Loss > 0 && t.rng.Float64() < t.path.Loss
}

func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress queues b to leave after the one-way delay, or drops it.
// memberlist reuses b, so it is copied.
func (t *Transport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	now := time.Now()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return time.Time{}, errClosed
	}
	d, lost := t.drawLocked()
	t.counts.packets.Add(1)
	switch {
	case lost:
		t.counts.dropped.Add(1)
	case len(t.pending) >= maxDelayedPackets:
		t.counts.overflow.Add(1)
	default:
		heap.Push(&t.pending, &delayedPacket{due: now.Add(d), buf: append([]byte(nil), b...), addr: addr})
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return now, nil
}

// sendLoop sends each queued datagram when it is due.
func (t *Transport) sendLoop() {
	defer t.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []*delayedPacket
		next := time.Hour
		t.mu.Lock()
		for len(t.pending) > 0 {
			if wait := t.pending[0].due.Sub(now); wait > 0 {
				next = wait
				break
			}
			due = append(due, heap.Pop(&t.pending).(*delayedPacket))
		}
		t.mu.Unlock()
		for _, p := range due {
			_, _ = t.NodeAwareTransport.WriteToAddress(p.buf, p.addr)
		}
		timer.Reset(next)
		select {
		case <-t.done:
			return
		case <-t.wake:
			timer.Stop() // go1.23 timers: no stale tick to drain
		case <-timer.C:
		}
	}
}

// acceptLoop hands memberlist the accepted streams, delayed like dialed
// ones: the answers a member writes on them cross the path too.
func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		var c net.Conn
		select {
		case <-t.done:
			return
		case c = <-t.NodeAwareTransport.StreamCh():
		}
		dc, err := t.newDelayedConn(c)
		if err != nil {
			_ = c.Close()
			return
		}
		select {
		case t.streamCh <- dc:
		case <-t.done:
			_ = dc.Close()
			return
		}
	}
}

func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout takes the handshake's round trip (and a SYN
// retransmission when the draw loses the SYN or the SYN-ACK) before
// connecting.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	start := time.Now()
	t.mu.Lock()
	d1, lost1 := t.drawLocked()
	d2, lost2 := t.drawLocked()
	t.mu.Unlock()
	t.counts.dials.Add(1)
	wait := d1 + d2
	if lost1 || lost2 {
		t.counts.synLost.Add(1)
		wait += synRetransmit
	}
	if wait >= timeout {
		t.sleep(timeout)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errDialTimeout}
	}
	if !t.sleep(wait) {
		return nil, errClosed
	}
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout-time.Since(start))
	if err != nil {
		return nil, err
	}
	dc, err := t.newDelayedConn(c)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	return dc, nil
}

var errDialTimeout = errors.New("i/o timeout (impaired path)")

// sleep waits d, or until Shutdown; it reports whether d passed.
func (t *Transport) sleep(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-t.done:
		return false
	}
}

// Shutdown stops the delay lines, dropping what waits in them, then the
// real transport.
func (t *Transport) Shutdown() error {
	var err error
	t.once.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		close(t.done)
		t.wg.Wait()
		err = t.NodeAwareTransport.Shutdown()
	})
	return err
}

type delayedPacket struct {
	due  time.Time
	buf  []byte
	addr memberlist.Address
}

// packetQueue is a min-heap of datagrams by due time (with jitter they
// may overtake each other, as netem's do).
type packetQueue []*delayedPacket

func (q packetQueue) Len() int           { return len(q) }
func (q packetQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q packetQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *packetQueue) Push(x any)        { *q = append(*q, x.(*delayedPacket)) }
func (q *packetQueue) Pop() any {
	old := *q
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return p
}

// delayedConn is one end of a stream over the impaired path: reads pass
// through, writes go out in order after their delay, from a goroutine of
// the conn's own that ends when the conn is closed and drained, or at the
// transport's Shutdown.
type delayedConn struct {
	net.Conn
	t *Transport

	mu      sync.Mutex
	chunks  []delayedChunk
	queued  int
	last    time.Time // due time of the newest chunk: order is kept
	closing bool
	err     error
	wake    chan struct{} // a chunk was queued, or Close
	space   chan struct{} // a chunk went out
	ended   chan struct{}
}

type delayedChunk struct {
	due time.Time
	b   []byte
}

func (t *Transport) newDelayedConn(c net.Conn) (*delayedConn, error) {
	dc := &delayedConn{Conn: c, t: t, wake: make(chan struct{}, 1), space: make(chan struct{}, 1), ended: make(chan struct{})}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errClosed
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go dc.flush()
	return dc, nil
}

func (c *delayedConn) Write(b []byte) (int, error) {
	d, lost := c.t.draw()
	c.t.counts.writes.Add(1)
	if lost {
		c.t.counts.retransmits.Add(1)
		d += c.t.path.RTT + minRTO
	}
	for {
		c.mu.Lock()
		if c.err != nil || c.closing {
			err := c.err
			c.mu.Unlock()
			if err == nil {
				err = net.ErrClosed
			}
			return 0, err
		}
		if c.queued == 0 || c.queued+len(b) <= maxStreamQueued {
			due := time.Now().Add(d)
			if due.Before(c.last) {
				due = c.last
			}
			c.last = due
			c.chunks = append(c.chunks, delayedChunk{due: due, b: append([]byte(nil), b...)})
			c.queued += len(b)
			c.mu.Unlock()
			signal(c.wake)
			return len(b), nil
		}
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-c.ended:
		}
	}
}

// Close lets what is queued go out, as a closed TCP socket still sends
// its buffer, and then closes the real conn.
func (c *delayedConn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	signal(c.wake)
	return nil
}

func (c *delayedConn) flush() {
	defer c.t.wg.Done()
	defer close(c.ended)
	defer c.Conn.Close()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.chunks) == 0 && c.closing {
			c.mu.Unlock()
			return
		}
		var ch delayedChunk
		ready := false
		wait := time.Hour
		if len(c.chunks) > 0 {
			if wait = time.Until(c.chunks[0].due); wait <= 0 {
				ch, ready = c.chunks[0], true
				c.chunks[0] = delayedChunk{}
				c.chunks = c.chunks[1:]
				c.queued -= len(ch.b)
			}
		}
		c.mu.Unlock()
		if ready {
			signal(c.space)
			if _, err := c.Conn.Write(ch.b); err != nil {
				c.mu.Lock()
				c.err = err
				c.closing = true
				c.chunks, c.queued = nil, 0
				c.mu.Unlock()
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-c.t.done:
			return
		case <-c.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
