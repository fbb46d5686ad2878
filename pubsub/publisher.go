package pubsub

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/internal/xmppstream"
	"github.com/busylamp/busylamp/mwi"
)

// pubKey names what a publish is about: one device or one mailbox.
type pubKey struct {
	mailbox bool
	name    string
}

type pubValue struct {
	dev   DeviceItem
	mbox  MailboxItem
	tries int  // failed attempts so far (transient errors)
	bulk  bool // taken from the republish lane: goes back to it when requeued or retried
}

// pubEntry is one value taken to be published.
type pubEntry struct {
	k pubKey
	v pubValue
}

// A publish that fails for a passing reason (the server was busy or timed
// out) is tried again after tries×retryDelay, up to maxPublishTries times,
// unless a newer value of the same device or mailbox came meanwhile: the
// newest state must reach the cluster, not be dropped by a hiccup.
const (
	maxPublishTries = 5
	retryDelay      = 200 * time.Millisecond
)

// hintInternalError names the usual cause of a refused publish.
const hintInternalError = "Prosody with PubSub storage in memory refuses every new item past " +
	"storage_archive_item_limit (1000 by default): raise it above the number of devices (README)"

// transient reports whether a publish error may pass by itself.
func transient(err error) bool {
	if errors.Is(err, ErrTimeout) {
		return true
	}
	var se *StanzaError
	if errors.As(err, &se) {
		if se.Type == "wait" {
			return true
		}
		switch se.Condition {
		case "internal-server-error", "resource-constraint", "remote-server-timeout":
			return true
		}
	}
	return false
}

// publisher coalesces this server's publishes by back-pressure (STYLE.md,
// after serf's coalescer, without the timer): a publish goes out at once
// while fewer than window publishes are unanswered; past that only the
// newest pending value per device or mailbox is kept (latest + FIFO of
// keys) and sent when an answer frees a slot. Publish calls never block.
//
// Order per device (and per mailbox) is kept: pending publishes are
// written in FIFO order by one goroutine, and a key is never in flight
// twice, so a newer value waits (coalescing) until the older one is
// answered. A live change that finds nothing pending, its key idle and
// the window less than half full is written at once by the caller
// (direct): the hand-over to the publishing goroutine cost a scheduler
// wake-up on the latency path (make bench's per-hop breakdown). Past
// half the window the caller never writes, so a server that stops
// reading cannot stall the caller on a full socket.
// Pending values are bounded by the number of distinct devices and
// mailboxes the caller publishes.
//
// A republish (every own state again, after a reconnect, a purge, or a
// buddy that came back) waits in a lane of its own behind live changes:
// a change made while 200,000 states are being republished goes out
// next, not after them. A live value of a key waiting in the republish
// lane moves it to the live lane. Republished values hold at most
// bulkShare of the window (at most 8, whatever the window): the rest is
// kept for live changes, so a live change finds a free slot at once, and
// at the server it waits behind at most bulkShare republished publishes,
// not behind a full window.
//
// The window is 32 by default: in the same run a window of 256 gave no
// more throughput than 32 (a closed loop of changes; BENCHMARKS.md,
// 2026-12-04), and it queues more at the server.
type publisher struct {
	window    int
	bulkShare int // most republished values in flight
	directMax int // most publishes in flight for the caller to write
	kick      chan struct{}
	after     afterFunc // the retry timers' clock

	mu        sync.Mutex
	latest    map[pubKey]pubValue
	order     *list.List // of pubKey, oldest first: live changes
	bulk      *list.List // of pubKey, oldest first: republished values
	inBulk    map[pubKey]bool
	elems     map[pubKey]*list.Element // in order or bulk
	busy      map[pubKey]bool          // in flight; true: taken from the republish lane
	bulkBusy  int                      // of busy, taken from the republish lane
	retrying  map[pubKey]pubValue      // failed, waiting to be tried again; a newer put cancels
	timers    map[pubKey]func() bool   // the retry timer of each key in retrying: its stop
	published uint64
	coalesced uint64
	errors    uint64
	waited    uint64
	direct    uint64
	retried   uint64
	live      *publishRun // the session's run, while one runs: what put writes with
}

// publishRun is what a running session's publisher writes with.
type publishRun struct {
	ctx   context.Context
	start func([]pubEntry) []func(context.Context) error
	wg    *sync.WaitGroup
}

// afterFunc starts a timer that calls f after d and returns what stops
// it (true when that kept f from running). It is time.AfterFunc by
// default; tests put a clock of their own, so that they wait on the
// retries instead of sleeping.
type afterFunc func(d time.Duration, f func()) (stop func() bool)

func realAfter(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// bulkShareOf is the part of a window republished values may hold: a
// quarter, at least one, and never more than maxBulkInFlight: a live
// change waits at the server behind at most that many republished
// publishes, whatever the window.
func bulkShareOf(window int) int { return min(maxBulkInFlight, max(1, window/4)) }

// directMaxOf is how many publishes may be unanswered for a live change
// to be written by its caller: half the window, at most maxDirectInFlight.
// Past that the publishing goroutine writes, in batches (one syscall for
// all that are ready), and a server that stops reading cannot stall the
// caller on a full socket.
func directMaxOf(window int) int { return min(maxDirectInFlight, max(1, window/2)) }

// The caps of bulkShareOf and directMaxOf: a quarter and a half of the
// default window, kept when a larger window is configured.
const (
	maxBulkInFlight   = 8
	maxDirectInFlight = 16
)

func newPublisher(window int) *publisher {
	return &publisher{window: window, bulkShare: bulkShareOf(window), directMax: directMaxOf(window), kick: make(chan struct{}, 1), after: realAfter, latest: map[pubKey]pubValue{},
		order: list.New(), bulk: list.New(), inBulk: map[pubKey]bool{}, elems: map[pubKey]*list.Element{}, busy: map[pubKey]bool{},
		retrying: map[pubKey]pubValue{}, timers: map[pubKey]func() bool{}}
}

// put queues v as the newest value of k, a live change.
func (p *publisher) put(k pubKey, v pubValue) {
	p.mu.Lock()
	_, inFlight := p.busy[k]
	_, pending := p.latest[k]
	if run := p.live; run != nil && !inFlight && !pending && p.order.Len() == 0 && len(p.busy) < p.directMax {
		// Written here and now (see publisher).
		p.cancelRetryLocked(k)
		p.busy[k] = false
		p.published++
		p.direct++
		run.wg.Add(1)
		p.mu.Unlock()
		e := pubEntry{k, v}
		p.finish(run.ctx, run.wg, e, run.start([]pubEntry{e})[0])
		return
	}
	p.waited++
	p.putLocked(k, v)
	p.mu.Unlock()
	signal(p.kick)
}

func (p *publisher) putLocked(k pubKey, v pubValue) {
	p.cancelRetryLocked(k) // the newer value replaces a failed older one
	if _, ok := p.latest[k]; ok {
		p.coalesced++
		if p.inBulk[k] {
			p.bulk.Remove(p.elems[k])
			delete(p.inBulk, k)
			p.elems[k] = p.order.PushBack(k)
		}
	} else {
		p.elems[k] = p.order.PushBack(k)
	}
	p.latest[k] = v
}

// putBulk queues v as the newest value of k in the republish lane; a
// value already pending keeps its place (and takes v).
func (p *publisher) putBulk(k pubKey, v pubValue) {
	p.mu.Lock()
	p.cancelRetryLocked(k)
	if _, ok := p.latest[k]; ok {
		p.coalesced++
	} else {
		p.elems[k] = p.bulk.PushBack(k)
		p.inBulk[k] = true
	}
	p.latest[k] = v
	p.mu.Unlock()
	signal(p.kick)
}

// requeue puts back a value whose publish was cut off by a disconnect,
// first in its lane, unless a newer one is already pending.
func (p *publisher) requeue(k pubKey, v pubValue) {
	p.mu.Lock()
	if _, ok := p.latest[k]; !ok {
		if v.bulk {
			p.elems[k] = p.bulk.PushFront(k)
			p.inBulk[k] = true
		} else {
			p.elems[k] = p.order.PushFront(k)
		}
		p.latest[k] = v
	}
	p.mu.Unlock()
}

// pushBackLocked queues v as k's pending value, last in its lane.
func (p *publisher) pushBackLocked(k pubKey, v pubValue) {
	if v.bulk {
		p.elems[k] = p.bulk.PushBack(k)
		p.inBulk[k] = true
	} else {
		p.elems[k] = p.order.PushBack(k)
	}
	p.latest[k] = v
}

// failed records a value to be tried again after delay, following a
// transient failure, unless a newer value is already pending.
func (p *publisher) failed(k pubKey, v pubValue, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, newer := p.latest[k]; newer {
		return
	}
	p.cancelRetryLocked(k)
	p.retrying[k] = v
	p.retried++
	// Started under mu: retry takes mu, so the timer cannot fire before
	// its stop is recorded.
	p.timers[k] = p.after(delay, func() { p.retry(k) })
}

// cancelRetryLocked forgets k's failed value and stops its timer.
func (p *publisher) cancelRetryLocked(k pubKey) {
	if stop, ok := p.timers[k]; ok {
		stop()
		delete(p.timers, k)
	}
	delete(p.retrying, k)
}

// stopRetries stops every retry timer and queues the values they waited
// with, for the next session (the session ended: nothing of it may go on
// running).
func (p *publisher) stopRetries() {
	p.mu.Lock()
	for k, stop := range p.timers {
		stop()
		delete(p.timers, k)
	}
	for k, v := range p.retrying {
		delete(p.retrying, k)
		if _, newer := p.latest[k]; !newer {
			p.pushBackLocked(k, v)
		}
	}
	p.mu.Unlock()
}

// retry queues a failed value again, behind what is pending, unless a
// newer value of its key was put since it failed (sent or not).
func (p *publisher) retry(k pubKey) {
	p.mu.Lock()
	v, ok := p.retrying[k]
	delete(p.retrying, k)
	delete(p.timers, k)
	if ok {
		p.pushBackLocked(k, v)
	}
	p.mu.Unlock()
	signal(p.kick)
}

// take returns the oldest pending value whose key is not in flight, when
// a slot is free: a live change first, else a republished value while
// fewer than bulkShare are in flight. At most window keys are in flight,
// so at most that many are skipped.
func (p *publisher) take() (pubKey, pubValue, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.takeLocked()
}

// takeBatch appends to dst every value take would return one after the
// other, taken under one lock: what can be written at once.
func (p *publisher) takeBatch(dst []pubEntry) []pubEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		k, v, ok := p.takeLocked()
		if !ok {
			return dst
		}
		dst = append(dst, pubEntry{k, v})
	}
}

func (p *publisher) takeLocked() (pubKey, pubValue, bool) {
	if len(p.busy) >= p.window {
		return pubKey{}, pubValue{}, false
	}
	if k, v, ok := p.takeFromLocked(p.order, false); ok {
		return k, v, true
	}
	if p.bulkBusy < p.bulkShare {
		return p.takeFromLocked(p.bulk, true)
	}
	return pubKey{}, pubValue{}, false
}

func (p *publisher) takeFromLocked(l *list.List, bulk bool) (pubKey, pubValue, bool) {
	for e := l.Front(); e != nil; e = e.Next() {
		k := e.Value.(pubKey)
		if _, inFlight := p.busy[k]; inFlight {
			continue
		}
		l.Remove(e)
		delete(p.elems, k)
		delete(p.inBulk, k)
		v := p.latest[k]
		delete(p.latest, k)
		v.bulk = bulk
		p.busy[k] = bulk
		if bulk {
			p.bulkBusy++
		}
		p.published++
		return k, v, true
	}
	return pubKey{}, pubValue{}, false
}

// sent counts a retry.
func (p *publisher) sent() {
	p.mu.Lock()
	p.published++
	p.retried++ // sent() counts only the publishes made again
	p.mu.Unlock()
}

// done frees k's slot.
func (p *publisher) done(k pubKey, failed bool) {
	p.mu.Lock()
	if bulk, ok := p.busy[k]; ok && bulk {
		p.bulkBusy--
	}
	delete(p.busy, k)
	if failed {
		p.errors++
	}
	p.mu.Unlock()
	signal(p.kick)
}

// Stats are the publish counters.
type Stats struct {
	Published uint64 // publishes sent (retries after item-not-found included)
	Coalesced uint64 // publishes replaced by a newer value before they were sent
	Errors    uint64 // publishes that failed (error reply, timeout, disconnect)
	Waited    uint64 // live changes not written at once: no session, its device's last publish unanswered, others pending, or the window half full
	Direct    uint64 // live changes written at once by the caller (of Published)
	Retried   uint64 // publishes made again: after creating the node, without publish-options, or a passing failure
	Sessions  uint64 // XMPP sessions that came up (connects; reconnects are Sessions-1)
	Malformed uint64 // items and notifications dropped as malformed
	Pending   int    // values waiting for a slot or a connection
	InFlight  int    // publishes sent and not answered yet
}

func (p *publisher) stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Stats{Published: p.published, Coalesced: p.coalesced, Errors: p.errors, Waited: p.waited, Direct: p.direct, Retried: p.retried, Pending: p.order.Len() + p.bulk.Len() + len(p.retrying), InFlight: len(p.busy)}
}

// run sends pending values while the session lasts. start writes a
// batch of publishes, every value that found a free slot, in order and
// with one write (on this goroutine), and returns for each what waits
// for its answer; that runs on its own goroutine (at most window of
// them), so an item-not-found can create the node and retry without
// holding up others. start must not keep the batch. When ctx is done run
// waits for those, stops the retry timers and keeps their values
// pending, then returns.
func (p *publisher) run(ctx context.Context, start func([]pubEntry) []func(context.Context) error) {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		p.stopRetries()
	}()
	p.mu.Lock()
	p.live = &publishRun{ctx: ctx, start: start, wg: &wg}
	p.mu.Unlock()
	defer func() {
		// No put writes once this returns: the wait above sees every
		// publish of this session.
		p.mu.Lock()
		p.live = nil
		p.mu.Unlock()
	}()
	var batch []pubEntry
	for {
		for ctx.Err() == nil {
			batch = p.takeBatch(batch[:0])
			if len(batch) == 0 {
				break
			}
			finishes := start(batch)
			wg.Add(len(batch))
			for i, e := range batch {
				p.finish(ctx, &wg, e, finishes[i])
			}
		}
		select {
		case <-p.kick:
		case <-ctx.Done():
			return
		}
	}
}

// finish waits for e's answer on a goroutine of its own (counted in wg)
// and settles it: requeued when the session ended, tried again after a
// passing failure, its slot freed.
func (p *publisher) finish(ctx context.Context, wg *sync.WaitGroup, e pubEntry, finish func(context.Context) error) {
	go func() {
		defer wg.Done()
		k, v := e.k, e.v
		err := finish(ctx)
		switch {
		case err == nil:
		case errors.Is(err, ErrNotConnected) || ctx.Err() != nil:
			p.requeue(k, v)
		case transient(err) && v.tries+1 < maxPublishTries:
			v.tries++
			p.failed(k, v, time.Duration(v.tries)*retryDelay)
		}
		p.done(k, err != nil)
	}()
}

// republish queues this server's own states (Config.OwnStates).
func (c *Client) republish() {
	if c.s.OwnStates == nil {
		return
	}
	devs, mboxes := c.s.OwnStates()
	for _, d := range devs {
		c.RepublishDevice(d.Device, d.State, d.Cachable)
	}
	for _, m := range mboxes {
		c.RepublishMailbox(m.Mailbox, m.Counts)
	}
}

// RepublishDevice is PublishDevice for a republish of a state published
// before: it waits behind every live change (PublishDevice), so that a
// large republish holds none of them up.
func (c *Client) RepublishDevice(device string, s devstate.State, cachable bool) {
	if checkName(device) != nil {
		return
	}
	c.pub.putBulk(pubKey{name: device}, pubValue{dev: DeviceItem{Device: device, State: s, Cachable: cachable, EID: c.s.EID}})
}

// RepublishMailbox is PublishMailbox for a republish (see RepublishDevice).
func (c *Client) RepublishMailbox(mailbox string, counts mwi.Counts) {
	if checkName(mailbox) != nil || counts.Check() != nil {
		return
	}
	c.pub.putBulk(pubKey{mailbox: true, name: mailbox}, pubValue{mbox: MailboxItem{Mailbox: mailbox, Counts: counts, EID: c.s.EID}})
}

// PublishDevice publishes this server's state of device. It never blocks:
// the value is sent at once while fewer than PublishWindow publishes are
// unanswered, otherwise it replaces any older pending value of the device.
// While disconnected the newest value waits for the next session.
func (c *Client) PublishDevice(device string, s devstate.State, cachable bool) {
	if err := checkName(device); err != nil {
		c.s.log.Warn("not publishing device state", "device", clip(device, 64), "err", err)
		return
	}
	c.pub.put(pubKey{name: device}, pubValue{dev: DeviceItem{Device: device, State: s, Cachable: cachable, EID: c.s.EID}})
}

// PublishMailbox publishes this server's counts of mailbox, coalescing as
// PublishDevice does.
func (c *Client) PublishMailbox(mailbox string, counts mwi.Counts) {
	if err := checkName(mailbox); err != nil {
		c.s.log.Warn("not publishing mailbox", "mailbox", clip(mailbox, 64), "err", err)
		return
	}
	if err := counts.Check(); err != nil {
		c.s.log.Warn("not publishing mailbox: counts out of range", "mailbox", mailbox, "new", counts.New, "old", counts.Old, "err", err)
		return
	}
	c.pub.put(pubKey{mailbox: true, name: mailbox}, pubValue{mbox: MailboxItem{Mailbox: mailbox, Counts: counts, EID: c.s.EID}})
}

// publishBatch writes a batch of publishes with one write and returns,
// for each, what waits for its answer (publishFinish).
func (c *Client) publishBatch(s *session, batch []pubEntry) []func(context.Context) error {
	reqs := make([]publishIQ, len(batch))
	withOptions := !s.noPublishOptions.Load()
	for i, e := range batch {
		node := collOf(e.k)
		if c.s.CollectionNodes {
			node = e.k.name
			c.learnLeaf(node, kindOfColl(collOf(e.k)))
		}
		reqs[i] = newPublishIQ(node, e.k, e.v, withOptions)
	}
	calls, err := s.sendPublishes(s.service(), reqs)
	// Here every publish of the batch has been written to the socket
	// (one write), or none was (err): the one place that knows when.
	var written time.Time
	if err == nil && (c.s.Hops != nil || c.s.ObservePublish != nil || c.s.ObserveEcho != nil) {
		written = time.Now()
	}
	if h := c.s.Hops; h != nil && err == nil {
		for _, e := range batch {
			if !e.k.mailbox {
				h(hop.Written, e.k.name, written)
			}
		}
	}
	if c.s.ObserveEcho != nil && err == nil {
		ks := make([]pubKey, len(batch))
		for i, e := range batch {
			ks[i] = e.k
		}
		c.echoWritten(ks, written)
	}
	finishes := make([]func(context.Context) error, len(batch))
	for i, e := range batch {
		var call *xmppstream.Call
		if err == nil {
			call = calls[i]
		}
		finishes[i] = c.publishFinish(s, e.k, e.v, &reqs[i], call, written, err)
	}
	return finishes
}

// collOf is the node of k in flat mode, its collection in XEP-0248 mode.
func collOf(k pubKey) string {
	if k.mailbox {
		return NodeMailboxes
	}
	return NodeDevices
}

// publishFinish waits for the answer to req, written as call (or not
// written: err). On item-not-found it creates the node (a leaf in
// XEP-0248 mode) and retries once; a server that refuses Asterisk's
// publish-options for non-cachable states gets the publish again without
// them.
func (c *Client) publishFinish(s *session, k pubKey, v pubValue, req *publishIQ, call *xmppstream.Call, written time.Time, err error) func(context.Context) error {
	coll, node := collOf(k), req.node
	build := func() *publishIQ {
		p := newPublishIQ(node, k, v, !s.noPublishOptions.Load())
		return &p
	}
	return func(ctx context.Context) error {
		if err == nil {
			_, err = s.wait(ctx, call)
			if err == nil && c.s.ObservePublish != nil {
				c.s.ObservePublish(time.Since(written))
			}
		}
		if err != nil && req.options && IsCondition(err, "precondition-not-met") {
			if !s.noPublishOptions.Swap(true) {
				c.s.log.Warn("the PubSub service refuses publish-options persist_items=0 on a persistent node (precondition-not-met); "+
					"publishing non-cachable states without them", "node", node)
			}
			c.pub.sent()
			_, err = s.publish(ctx, s.service(), build())
		}
		if err != nil && IsCondition(err, "item-not-found") {
			if _, cerr := c.ensureNode(ctx, s, node, coll); cerr != nil {
				err = fmt.Errorf("%w (creating the node: %v)", err, cerr)
			} else {
				c.pub.sent()
				_, err = s.publish(ctx, s.service(), build())
			}
		}
		if err != nil && IsCondition(err, "forbidden") && !c.s.CollectionNodes {
			// ejabberd lets only the account that created an item
			// overwrite it, while every server publishes a device under
			// the same item id; an owner may retract it and publish anew.
			if _, rerr := s.iq(ctx, "set", s.service(), retractRequest(node, k.name, false)); rerr == nil {
				if !s.overwriteNoted.Swap(true) {
					c.s.log.Info("the PubSub service refuses to overwrite an item another account published (ejabberd); "+
						"retracting it first", "node", node, "item", k.name)
				}
				c.pub.sent()
				_, err = s.publish(ctx, s.service(), build())
			}
		}
		if err == nil {
			// A node that keeps no items has none to probe for.
			if (k.mailbox || v.dev.Cachable) && !c.s.NoItems {
				c.setProbe(k)
			}
			return nil
		}
		if IsCondition(err, "forbidden") {
			err = &PublishForbiddenError{Op: "publish to", Node: node, Account: c.s.bare, Service: s.service(), Err: err}
		}
		err = fmt.Errorf("publish %s to %s: %w", k.name, node, err)
		if !errors.Is(err, ErrNotConnected) && ctx.Err() == nil && c.limit.allow("publish:"+node) {
			if IsCondition(err, "internal-server-error") {
				c.s.log.Warn("publish failed", "err", err, "hint", hintInternalError)
			} else {
				c.s.log.Warn("publish failed", "err", err)
			}
		}
		return err
	}
}
