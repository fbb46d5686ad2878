package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/pubsub"
)

// A states request refused as from a stranger is tried statesTries times,
// waiting statesRetryDelay, then twice as long each time (7.5 s in all).
const (
	statesTries      = 5
	statesRetryDelay = 500 * time.Millisecond
)

// resyncJoinWait bounds how long a resync waits for gossip to join.
const resyncJoinWait = time.Second

func (a *Agent) isSynced() bool {
	select {
	case <-a.synced:
		return true
	default:
		return false
	}
}

// heldRequest is a buddy's states request waiting to be answered, at the
// latest at until.
type heldRequest struct {
	req   pubsub.OwnStatesRequest
	ask   *statesAsk // instead of req: a member's ask over gossip
	until time.Time
}

// answerLoop answers buddies' states requests in arrival order. Until our
// own states are restored from the PubSub items a partial answer would
// make the asker drop our real states, so a request waits for that (well
// within the asker's timeout). Not "until booted": agents that start
// together would each wait for the other's answer. What later answers
// restore is republished.
func (a *Agent) answerLoop(ctx context.Context) {
	for {
		var h heldRequest
		select {
		case <-ctx.Done():
			return
		case h = <-a.answers:
		}
		if !a.isSynced() && h.ask == nil {
			expired, stop := core.After(a.clock, h.until.Sub(a.clock.Now()))
			select {
			case <-a.synced:
			case <-expired:
			case <-ctx.Done():
				stop()
				return
			}
			stop()
		}
		if h.ask != nil {
			a.answerGossip(ctx, h.ask)
		} else {
			a.answer(h.req)
		}
	}
}

// answer answers a buddy's states request with our own states and what
// we hold of the asker's server.
func (a *Agent) answer(req pubsub.OwnStatesRequest) {
	eid, _ := a.core.EIDOf(req.From)
	ds, ms := a.core.AnswerFor(eid)
	if err := a.xmpp.AnswerOwnStates(req, ds, ms); err != nil {
		a.log.Warn("answer states request", "from", req.From, "err", err)
	}
}

func (a *Agent) cancelResync() {
	a.resyncMu.Lock()
	defer a.resyncMu.Unlock()
	if a.resyncCancel != nil {
		a.resyncCancel()
		a.resyncCancel = nil
	}
}

// startResync asks every busylamp buddy for its own states (what PubSub
// items cannot tell exactly), then republishes this node's own states and
// marks the node booted. Asterisk buddies simply do not answer.
func (a *Agent) startResync(ctx context.Context) {
	a.cancelResync()
	rctx, cancel := context.WithCancel(ctx)
	a.resyncMu.Lock()
	a.resyncCancel = cancel
	a.resyncMu.Unlock()
	a.goRun(func() {
		defer cancel()
		start := time.Now()
		if a.cluster != nil {
			// Joining takes milliseconds when a member answers; then the
			// members are asked over gossip rather than through the server.
			joined, stop := core.After(a.clock, resyncJoinWait)
			select {
			case <-a.cluster.Joined():
			case <-joined:
			case <-rctx.Done():
			}
			stop()
		}
		targets := a.resyncTargets()
		var mu sync.Mutex
		answered := 0
		inParallel(len(targets), func(i int) {
			if a.requestStates(rctx, targets[i]) {
				mu.Lock()
				answered++
				mu.Unlock()
			}
		})
		if rctx.Err() != nil {
			return
		}
		a.core.Republish()
		// Settled before booted: whoever sees the boot (a buddy's
		// presence handled next) sees it settled too.
		a.settled.Store(true)
		a.core.MarkBooted()
		took := time.Since(start)
		a.lastResync.Store(int64(took))
		a.log.Info("resync complete", "asked", len(targets), "answered", answered,
			"took", took.Round(time.Millisecond))
	})
}

// earlyResync is the first resync's head start with gossip on: while
// XMPP still connects (and reads the items, which on Prosody alone takes
// 0.4 s for 3,000 of them), the live members are asked for their own
// states over gossip. When every configured buddy is one of the members
// that answered, those answers are the whole picture and the node is
// booted at once; the items and the resync after the connect follow as
// usual (Resync leaves the early answers as they are, and the resync asks
// again). A configured buddy that is no member (an Asterisk node) is
// known only from the items: then booting waits for them.
func (a *Agent) earlyResync(ctx context.Context) {
	start := time.Now()
	joined, stop := core.After(a.clock, resyncJoinWait)
	select {
	case <-a.cluster.Joined():
	case <-joined:
	case <-ctx.Done():
	}
	stop()
	if ctx.Err() != nil || a.isSynced() {
		return
	}
	// Gossip lists the members a moment after the join: wait a little
	// (within resyncJoinWait) for every configured buddy to be listed.
	members := a.earlyMembers()
	for waited := time.Duration(0); !a.buddiesListed(members) && waited < resyncJoinWait; waited += 20 * time.Millisecond {
		tick, stop := core.After(a.clock, 20*time.Millisecond)
		select {
		case <-tick:
		case <-ctx.Done():
			stop()
			return
		}
		members = a.earlyMembers()
	}
	if len(members) == 0 {
		return
	}
	var mu sync.Mutex
	answered := make(map[string]bool) // bare JIDs
	inParallel(len(members), func(i int) {
		m := members[i]
		gctx, cancel := context.WithTimeout(ctx, min(a.cfg.ResyncTimeout, gossipAnswerWait))
		defer cancel()
		req := a.core.EarlyStatesRequest(m.Meta.JID)
		ds, ms, err := a.requestStatesGossip(gctx, m.Name)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Debug("early states over gossip", "member", m.Name, "err", err)
			}
			return
		}
		a.gossip.answers.Add(1)
		a.core.ApplyServerStates(req, ds, ms)
		mu.Lock()
		answered[jid.Bare(m.Meta.JID)] = true
		mu.Unlock()
	})
	if ctx.Err() != nil {
		return
	}
	if len(answered) < len(members) {
		a.log.Debug("early resync: not every member answered; booting waits for the items", "members", len(members),
			"answered", len(answered))
		return
	}
	for _, b := range a.cfg.XMPP.Buddies {
		if !answered[jid.Bare(b)] {
			a.log.Debug("early resync: a buddy is no member; booting waits for the items", "buddy", b, "members", fmt.Sprint(slices.Sorted(maps.Keys(answered))))
			return
		}
	}
	a.bootedEarly.Store(true)
	// Logged first: whoever sees the boot (FullyBooted, a test) finds
	// the line already written.
	a.log.Info("booted from the members' states over gossip (ahead of the items and resync over XMPP)", "members", len(members),
		"took", time.Since(start).Round(time.Millisecond))
	a.core.MarkBooted()
}

// inParallel runs f(0) … f(n-1), resyncParallel at a time, and returns
// when all are done.
func inParallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, resyncParallel)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

// earlyMembers are the members the early resync asks.
func (a *Agent) earlyMembers() []cluster.Member {
	var members []cluster.Member
	self := jid.Canonical(a.cfg.XMPP.JID)
	for _, m := range a.cluster.Members() {
		// A suspect member may well answer (a busy machine is slow to
		// ack a probe); if it does not, booting waits for the items.
		live := m.State == cluster.StateAlive || m.State == cluster.StateSuspect
		if live && m.Name != a.cluster.Name() && strings.Contains(m.Meta.JID, "/") &&
			jid.Canonical(m.Meta.JID) != self {
			members = append(members, m)
		}
	}
	return members
}

// buddiesListed says whether every configured buddy is one of members.
func (a *Agent) buddiesListed(members []cluster.Member) bool {
	listed := make(map[string]bool, len(members))
	for _, m := range members {
		listed[jid.Bare(m.Meta.JID)] = true
	}
	for _, b := range a.cfg.XMPP.Buddies {
		if !listed[jid.Bare(b)] {
			return false
		}
	}
	return true
}

// resyncTargets are the full JIDs to ask: configured buddies with a
// resource, every resource whose presence we know, and the members gossip
// says are alive.
func (a *Agent) resyncTargets() []string {
	seen := make(map[string]bool)
	self := jid.Canonical(a.cfg.XMPP.JID)
	var out []string
	add := func(j string) {
		c := jid.Canonical(j)
		if c == "" || seen[c] || c == self {
			return
		}
		seen[c] = true
		out = append(out, j)
	}
	for _, b := range a.cfg.XMPP.Buddies {
		if strings.Contains(b, "/") {
			add(b)
		}
	}
	for _, b := range a.xmpp.Buddies() {
		for _, r := range b.Resources {
			add(b.JID + "/" + r.Resource)
		}
	}
	if a.cluster != nil {
		for _, m := range a.cluster.Members() {
			if m.State == cluster.StateAlive && strings.Contains(m.Meta.JID, "/") {
				add(m.Meta.JID)
			}
		}
	}
	return out
}

// requestStates asks one buddy for its own states and applies the answer.
//
// A member that has not heard of this node yet (gossip reaches members
// one after another, within a second or two) refuses the request as
// coming from a stranger (forbidden): it is asked again, a few times; so
// is one whose answer stopped after the first chunks. ResyncTimeout
// bounds the wait for each chunk, not the whole answer: 100,000 states
// take 200 chunks, several seconds through a busy server.
//
// A buddy that is a live gossip member is asked over gossip first
// (gossipstates.go); the XMPP request is the fallback.
func (a *Agent) requestStates(ctx context.Context, to string) bool {
	if m, ok := a.memberOf(to); ok {
		gctx, cancel := context.WithTimeout(ctx, min(a.cfg.ResyncTimeout, gossipAnswerWait))
		req := a.core.StatesRequest(to)
		ds, ms, err := a.requestStatesGossip(gctx, m.Name)
		cancel()
		if err == nil {
			a.gossip.answers.Add(1)
			a.statesAnswered(to)
			a.core.ApplyServerStates(req, ds, ms)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.gossip.fallbacks.Add(1)
		a.log.Info("states over gossip failed; asking over XMPP", "member", m.Name, "jid", to, "err", err)
	}
	wait := statesRetryDelay
	for attempt := 1; ; attempt++ {
		req := a.core.StatesRequest(to)
		ds, ms, err := a.xmpp.RequestOwnStates(ctx, to, a.cfg.ResyncTimeout)
		if err == nil {
			a.gossip.xmppAnswers.Add(1)
			a.statesAnswered(to)
			a.core.ApplyServerStates(req, ds, ms)
			return true
		}
		// Refused as from a stranger, or cut off after the first chunks
		// (a busylamp peer, busy): asked again, a few times.
		cut := errors.Is(err, pubsub.ErrOwnStatesIncomplete)
		if (cut || pubsub.IsCondition(err, "forbidden")) && attempt < statesTries && ctx.Err() == nil {
			if cut {
				a.log.Info("states answer cut off; asking again", "jid", to, "attempt", attempt, "err", err)
			}
			retry, stop := core.After(a.clock, wait)
			select {
			case <-retry:
				wait *= 2
				continue
			case <-ctx.Done():
				stop()
			}
		}
		if ctx.Err() != nil {
			return false
		}
		if cut {
			// Not silent: this server's states are now only what the
			// PubSub items tell.
			a.log.Warn("states request failed; keeping what the PubSub items tell of that server", "jid", to, "attempts", attempt, "err", err)
		} else {
			a.log.Debug("states request", "jid", to, "attempts", attempt, "err", err)
		}
		return false
	}
}

// What a worker does for one buddy; several asks for one buddy merge.
type askKind uint8

const (
	askAddBuddy askKind = 1 << iota // roster, presence subscription, node owner
	askStates                       // a directed states request
)

// askQueue is the bounded, deduplicated work list of the ask workers: a
// buddy is in it at most once, whatever came in meanwhile.
type askQueue struct {
	mu      sync.Mutex
	max     int
	pending map[string]askKind
	order   []string
	wake    chan struct{} // one signal pending at most
	closed  bool
}

func newAskQueue(max int) *askQueue {
	return &askQueue{max: max, pending: make(map[string]askKind), wake: make(chan struct{}, 1)}
}

// add queues work for the buddy j; it reports false when the queue is
// full (the buddy is asked at the next resync instead).
func (q *askQueue) add(j string, k askKind) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if old, ok := q.pending[j]; ok {
		q.pending[j] = old | k
		return true
	}
	if len(q.pending) >= q.max {
		return false
	}
	q.pending[j] = k
	q.order = append(q.order, j)
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns the oldest buddy's work, if any.
func (q *askQueue) take() (string, askKind, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		return "", 0, false
	}
	j := q.order[0]
	q.order[0] = ""
	q.order = q.order[1:]
	k := q.pending[j]
	delete(q.pending, j)
	if len(q.order) > 0 {
		select {
		case q.wake <- struct{}{}: // another worker may take the next
		default:
		}
	}
	return j, k, true
}

func (q *askQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
}

// askLoop does the queued work for buddies until ctx ends.
func (a *Agent) askLoop(ctx context.Context) {
	for {
		j, k, ok := a.asks.take()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-a.asks.wake:
				continue
			}
		}
		if k&askAddBuddy != 0 {
			actx, cancel := context.WithTimeout(ctx, a.cfg.ResyncTimeout)
			if err := a.xmpp.AddBuddy(actx, j); err != nil && ctx.Err() == nil {
				a.log.Warn("member as buddy", "jid", j, "err", err)
			}
			cancel()
		}
		if k&askStates != 0 {
			a.requestStates(ctx, j)
		}
		if a.askDone != nil {
			a.askDone(j)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// relearnGrace is how long after a buddy comes back this node waits
// before republishing its own states for it: an Asterisk node subscribes
// right after its presence, and a notification sent before its
// subscription exists is lost.
const relearnGrace = 2 * time.Second

// relearn tracks the buddies that came back and have not been taken
// care of: a buddy that answers our states request is a busylamp agent
// (it fetches the items and asks us itself); one that has not answered
// within relearnGrace is taken for an Asterisk node, which learns a
// state only from a notification, so our own states are republished
// (once for all the buddies due then; the publisher puts the republish
// behind live changes and coalesces it).
type relearn struct {
	mu    sync.Mutex
	back  map[string]*buddyBack // by canonical full JID
	armed bool                  // relearnLoop runs
}

type buddyBack struct {
	at       time.Time
	answered bool
}

// maxRelearn bounds the buddies waiting for their grace to end; past it
// a buddy coming back is not waited for (the republish for the others
// covers it, or the next one does).
const maxRelearn = 1 << 14

// buddyBack notes that the buddy j (a full JID) came back online.
func (a *Agent) buddyBack(ctx context.Context, j string) {
	c := jid.Canonical(j)
	r := &a.relearn
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.back == nil {
		r.back = make(map[string]*buddyBack)
	}
	if len(r.back) >= maxRelearn {
		return
	}
	r.back[c] = &buddyBack{at: a.clock.Now()}
	if !r.armed {
		r.armed = true
		a.goRun(func() { a.relearnLoop(ctx) })
	}
}

// statesAnswered notes that the buddy j answered a states request.
func (a *Agent) statesAnswered(j string) {
	r := &a.relearn
	r.mu.Lock()
	if b := r.back[jid.Canonical(j)]; b != nil {
		b.answered = true
	}
	r.mu.Unlock()
}

// relearnLoop waits for the grace of each buddy that came back and
// republishes this node's own states when one of them has not answered.
func (a *Agent) relearnLoop(ctx context.Context) {
	r := &a.relearn
	for {
		r.mu.Lock()
		now := a.clock.Now()
		var next time.Time
		need := false
		for c, b := range r.back {
			due := b.at.Add(relearnGrace)
			if !due.After(now) {
				need = need || !b.answered
				delete(r.back, c)
			} else if next.IsZero() || due.Before(next) {
				next = due
			}
		}
		if next.IsZero() {
			r.armed = false
		}
		r.mu.Unlock()
		if need && ctx.Err() == nil {
			a.log.Info("republishing own states for a buddy that came back without asking for them (Asterisk)")
			a.core.Republish()
		}
		if next.IsZero() {
			return
		}
		wake, stop := core.After(a.clock, next.Sub(now))
		select {
		case <-wake:
		case <-ctx.Done():
			stop()
			r.mu.Lock()
			r.armed = false
			clear(r.back)
			r.mu.Unlock()
			return
		}
	}
}
