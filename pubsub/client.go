package pubsub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmppstream"
)

// Reconnect backoff: doubles from minBackoff to maxBackoff, each wait
// drawn from its upper half (jitter), reset after a session that lasted.
// The first retry comes within half a second: a restarted server accepts
// connections again after a second or two, and every agent should be
// back within a few seconds of that; the jitter spreads a cluster's
// reconnects. While the server does not serve at all (it refuses, or
// closes or stalls the stream before authentication: it is down, or
// still starting) the wait stays under maxDownBackoff however long that
// lasts, so that an agent is back within seconds of the server, even
// after a long outage; such an attempt costs the server next to
// nothing. Anything the server answers (authentication refused, a
// stream error, a setup refused) waits the doubling wait.
const (
	minBackoff     = 500 * time.Millisecond
	maxBackoff     = 30 * time.Second
	maxDownBackoff = 2 * time.Second
	stableFor      = 10 * time.Second
)

// backoff is the reconnect schedule; the zero value starts at minBackoff.
type backoff struct{ cur time.Duration }

// next is the wait before the next attempt, after a session that was
// connected for lasted (0: the attempt failed); down says the server did
// not serve the attempt (xmppstream.ErrUnavailable).
func (b *backoff) next(lasted time.Duration, down bool) time.Duration {
	if b.cur == 0 || lasted > stableFor {
		b.cur = minBackoff
	}
	step := b.cur
	if down {
		step = min(step, maxDownBackoff)
	}
	b.cur = min(2*b.cur, maxBackoff)
	return jitter(step)
}

// jitter is a wait between half of step and all of it, at random, so
// that the clients that met one event do not all try again at once.
func jitter(step time.Duration) time.Duration { return step/2 + rand.N(step/2+1) }

// Client is one XMPP account taking part in the cluster. Run connects and
// keeps it connected; the other methods may be called from any goroutine.
type Client struct {
	s      *settings
	events chan<- Event
	q      *eventQueue
	pub    *publisher
	parse  *parser
	limit  *logLimiter

	roster   *roster
	answers  *answerCache
	creating singleflight.Group // node creations under way, by node

	fetchSkipped atomic.Uint64 // items a fetch could not read
	sessions     atomic.Uint64 // sessions that came up
	malformed    atomic.Uint64 // items dropped as malformed (parser's reject)

	// echoes: when each own publish was written, until its echo (the
	// service's notification of it) is read; for Config.ObserveEcho.
	echoMu sync.Mutex
	echoes map[pubKey]time.Time

	probeMu  sync.Mutex
	probe    pubKey // an own item published and kept by the node (the check looks for it)
	hasProbe bool

	mu      sync.Mutex
	running bool
	closed  bool
	sess    *session // the connected session, nil while there is none
	status  ConnStatus
	leaves  map[string]Kind // XEP-0248: leaf nodes seen, and their collection
}

// ConnStatus is what 'show connected' prints.
type ConnStatus struct {
	JID       string // bound full JID, or the configured one while not connected
	Server    string // host:port of the target in use (or last tried); the configured servers before the first try
	Target    int    // the target's place in the resolved list, from 1 (0: none yet)
	Targets   int    // the targets resolved
	Via       string // how the target was found: "serverhost", "SRV _xmpp-client._tcp.example.org", ...
	DirectTLS bool   // the target is direct TLS (XEP-0368)
	Service   string // PubSub service
	State     string // "connecting", "connected", "disconnected"
	Since     time.Time
	TLS       bool
	TLSName   string // TLS version and cipher suite when TLS is on
	LastError string // why the last session ended or the last attempt failed

	// Service is pubsub_node, or the service last discovered (XEP-0030);
	// "" before the first. Missing lists the features busylamp uses that
	// the service does not advertise (pubsub#collections), as of the last
	// connect.
	Missing []string
}

// New checks cfg and returns a client that reports on events. The owner
// must keep reading events while Run runs; events is never closed.
func New(cfg Config, events chan<- Event) (*Client, error) {
	s, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if events == nil {
		return nil, errors.New("pubsub.New: nil events channel")
	}
	if !cfg.UseSASL {
		s.log.Warn("usesasl=no: legacy non-SASL authentication (XEP-0078) is not spoken; using SASL")
	}
	if cfg.Priority < 0 {
		s.log.Warn("negative priority: the server delivers no PubSub notification sent to the bare JID to this resource", "priority", cfg.Priority)
	}
	c := &Client{
		s: s, events: events, q: newEventQueue(), pub: newPublisher(s.PublishWindow),
		limit:   newLogLimiter(10 * time.Second),
		roster:  newRoster(s),
		leaves:  map[string]Kind{},
		answers: newAnswerCache(),
		status:  ConnStatus{JID: s.JID, Server: s.addr, Service: s.Service, State: "disconnected", Since: time.Now()},
	}
	c.parse = &parser{own: s.EID, kindOf: c.kindOf, echo: c.echoSeen, reject: func(msg string, args ...any) {
		c.malformed.Add(1)
		if c.limit.allow("reject:" + msg) {
			c.s.log.Warn("dropped PubSub item: "+msg, args...)
		}
	}}
	return c, nil
}

// Run connects, and reconnects after every disconnect with a jittered
// backoff of at most 30 s (2 s while the server does not serve at all),
// until ctx is done. It returns nil then, having
// stopped every goroutine it started. Run may be called once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running || c.closed {
		c.mu.Unlock()
		return errors.New("pubsub: Run called twice")
	}
	c.running = true
	c.mu.Unlock()

	// The dispatcher ends with ctx; events still queued then are dropped.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.q.run(ctx, c.events) }()
	defer func() {
		wg.Wait()
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
	}()

	var b backoff
	var fo failover
	for {
		lasted, err := c.runSession(ctx, &fo)
		if ctx.Err() != nil {
			return nil
		}
		if to, ok := failbackTarget(err); ok {
			fo.prefer = targetKey(to)
			c.s.log.Info("XMPP session closed to move back to the preferred server", "to", to.String())
			continue
		}
		if !fo.waitFirst() {
			// The next target at once, so that a switch costs the lamps
			// nothing (the agent's stale grace spans it).
			c.s.log.Warn("XMPP session ended; trying the next server", "err", err)
			continue
		}
		wait := b.next(lasted, errors.Is(err, xmppstream.ErrUnavailable))
		c.s.log.Warn("XMPP session ended; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
		fo.waited()
	}
}

func (c *Client) setStatus(state string, err error, tlsName string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.State, c.status.Since = state, time.Now()
	if err != nil {
		c.status.LastError = err.Error()
	}
	if state != "connected" {
		c.status.JID, c.status.TLS, c.status.TLSName = c.s.JID, false, ""
	}
	if tlsName != "" {
		c.status.TLS, c.status.TLSName = true, tlsName
	}
}

// runSession resolves the targets, makes one connection to the one fo
// picks, and returns when it ends, with how long it was connected (0 when
// it never was).
func (c *Client) runSession(ctx context.Context, fo *failover) (time.Duration, error) {
	c.setStatus("connecting", nil, "")
	ts, err := c.resolveTargets(ctx)
	if err != nil {
		fo.next = ""
		c.setStatus("disconnected", err, "")
		return 0, err
	}
	i := fo.pick(ts)
	target := ts[i]
	c.mu.Lock()
	c.status.Server, c.status.Target, c.status.Targets, c.status.Via, c.status.DirectTLS = target.Addr, i+1, len(ts), target.Via, target.DirectTLS
	c.mu.Unlock()
	dialStart := time.Now()
	st, err := xmppstream.DialTarget(ctx, c.s.streamConfig(), target)
	dialTook := time.Since(dialStart)
	if err != nil {
		fo.failed(time.Now())
		c.setStatus("disconnected", err, "")
		return 0, err
	}
	s := newSession(c, st)
	c.q.hold()
	st.Start(s)

	conn, err := c.setup(s)
	if err != nil {
		s.stop(err)
		st.Wait()
		c.q.dropHeld()
		fo.failed(time.Now())
		c.setStatus("disconnected", err, "")
		return 0, err
	}
	connectedAt := time.Now()
	fo.connected()
	c.mu.Lock()
	c.sess = s
	c.status.JID = s.jid
	c.mu.Unlock()
	tlsName := ""
	if ts := st.TLS(); ts != nil {
		tlsName = tls.VersionName(ts.Version) + " " + tls.CipherSuiteName(ts.CipherSuite)
	}
	c.sessions.Add(1)
	c.setStatus("connected", nil, tlsName)
	c.s.log.Info("XMPP connected", "bound", s.jid, "server", target.String(), "target", i+1, "of", len(ts), "via", target.Via, "tls", tlsName != "",
		"devices", len(conn.Devices), "mailboxes", len(conn.Mailboxes),
		"negotiated_in", dialTook.Round(time.Millisecond), "setup_in", connectedAt.Sub(dialStart.Add(dialTook)).Round(time.Millisecond))
	c.q.release(conn)

	s.wg.Add(2)
	if i > 0 {
		s.wg.Add(1)
		go c.probeLoop(s, target, fo.held(time.Now()))
	}
	go s.checkLoop()
	go func() {
		defer s.wg.Done()
		c.pub.run(s.ctx, func(batch []pubEntry) []func(context.Context) error {
			return c.publishBatch(s, batch)
		})
	}()
	c.republish()

	<-s.ctx.Done()
	cause := context.Cause(s.ctx)
	c.mu.Lock()
	c.sess = nil
	c.mu.Unlock()
	c.roster.clearResources()
	s.wg.Wait()
	st.Wait()
	c.setStatus("disconnected", cause, "")
	if ctx.Err() == nil {
		c.q.push(ctx.Done(), Disconnected{Err: cause})
	}
	return time.Since(connectedAt), cause
}

// setup runs everything between negotiation and Connected: the PubSub
// service (discovered when not configured, and checked), roster and
// presence, node subscriptions (creating missing nodes), the owner
// affiliations still due, and the items fetch.
func (c *Client) setup(s *session) (Connected, error) {
	ctx := s.ctx
	t := time.Now()
	var phases []any
	phase := func(name string) {
		now := time.Now()
		phases = append(phases, name, now.Sub(t).Round(100*time.Microsecond))
		t = now
	}
	defer func() { c.s.log.Debug("XMPP setup", phases...) }()
	if err := c.resolveService(ctx, s); err != nil {
		return Connected{}, err
	}
	if err := c.roster.sync(ctx, s); err != nil {
		return Connected{}, fmt.Errorf("roster: %w", err)
	}
	phase("service_and_roster")
	if err := s.send(c.ownPresence()); err != nil {
		return Connected{}, err
	}
	for _, node := range []string{NodeDevices, NodeMailboxes} {
		if err := c.subscribe(ctx, s, node); err != nil {
			return Connected{}, err
		}
	}
	phase("subscribe")
	c.applyDueAffiliations(ctx, s)
	phase("affiliations")

	conn := Connected{JID: s.jid}
	for _, node := range []string{NodeDevices, NodeMailboxes} {
		if c.s.NoItems && !c.s.CollectionNodes {
			// Nodes that keep no items: nothing to read (Prosody refuses
			// to try). XEP-0248 mode still lists the leaves.
			break
		}
		d, m, err := c.fetchAll(ctx, s, node)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ErrNotConnected) {
				return Connected{}, fmt.Errorf("fetch items of %s: %w", node, err)
			}
			// Never a reason to end the session: that would fetch again,
			// and fail again, for good. Buddies' states answers and the
			// notifications fill in the rest.
			c.s.log.Warn("fetching the items failed; going on with what was read", "node", node,
				"devices", len(d), "mailboxes", len(m), "err", err)
		}
		conn.Devices = append(conn.Devices, d...)
		conn.Mailboxes = append(conn.Mailboxes, m...)
		phase("fetch_" + node)
	}
	return conn, nil
}

// session returns the connected session.
func (c *Client) session() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.sess == nil {
		return nil, ErrNotConnected
	}
	return c.sess, nil
}

// SetTrace switches the stanza trace (debug-level log lines of every
// stanza but SASL's) at run time, on the current stream too.
func (c *Client) SetTrace(on bool) { c.s.trace.Store(on) }

// Tracing says whether stanzas are traced.
func (c *Client) Tracing() bool { return c.s.trace.Load() }

// Status reports the connection, for 'show connected'.
func (c *Client) Status() ConnStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Stats reports the publish counters.
func (c *Client) Stats() Stats {
	st := c.pub.stats()
	st.Sessions, st.Malformed = c.sessions.Load(), c.malformed.Load()
	return st
}

// maxEchoes bounds the publishes whose echo is awaited; past it the
// oldest are forgotten (a service that sends a publisher no echoes, or a
// subscription lost).
const maxEchoes = 4096

// echoWritten notes when the publishes of k were written.
func (c *Client) echoWritten(ks []pubKey, at time.Time) {
	c.echoMu.Lock()
	defer c.echoMu.Unlock()
	if c.echoes == nil {
		c.echoes = make(map[pubKey]time.Time)
	}
	if len(c.echoes)+len(ks) > maxEchoes {
		for k, t := range c.echoes {
			if at.Sub(t) > 10*time.Second || len(c.echoes)+len(ks) > maxEchoes {
				delete(c.echoes, k)
			}
		}
	}
	for _, k := range ks {
		c.echoes[k] = at
	}
}

// echoSeen is the parser's news of a notification of our own item.
func (c *Client) echoSeen(kind Kind, name string) {
	if c.s.ObserveEcho == nil {
		return
	}
	k := pubKey{mailbox: kind == KindMailboxes, name: name}
	c.echoMu.Lock()
	at, ok := c.echoes[k]
	if ok {
		delete(c.echoes, k)
	}
	c.echoMu.Unlock()
	if ok {
		c.s.ObserveEcho(time.Since(at))
	}
}

func kindOfColl(coll string) Kind {
	if coll == NodeMailboxes {
		return KindMailboxes
	}
	return KindDevices
}

// kindOf names what a node holds.
func (c *Client) kindOf(node string) Kind {
	switch node {
	case NodeDevices:
		return KindDevices
	case NodeMailboxes:
		return KindMailboxes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaves[node]
}

// maxLeaves bounds the leaf names remembered for Kind.
const maxLeaves = 1 << 20

func (c *Client) learnLeaf(node string, k Kind) {
	if k == KindUnknown || !c.s.CollectionNodes {
		return
	}
	c.mu.Lock()
	if _, ok := c.leaves[node]; ok {
		c.leaves[node] = k
	} else if len(c.leaves) < maxLeaves {
		c.leaves[strings.Clone(node)] = k // not a slice of the stanza
	}
	c.mu.Unlock()
}

// handleMessage turns PubSub notifications from the service into events.
// Messages from anyone else are ignored: only the service may tell us
// about items.
func (c *Client) handleMessage(s *session, e *elem) {
	var read time.Time
	if c.s.Hops != nil {
		read = time.Now() // the stream hands each stanza over as soon as it is read
	}
	if e.Attr("type") == "error" || !jid.Equal(e.Attr("from"), s.service()) {
		return
	}
	s.heard.Store(true) // the subscriptions check may wait (checkDue)
	for _, ev := range c.parse.parseEvent(e) {
		switch ev := ev.(type) {
		case DeviceEvent:
			if c.s.Hops != nil {
				c.s.Hops(hop.Read, ev.Item.Device, read)
			}
			if c.s.CollectionNodes {
				c.learnLeaf(ev.Item.Device, KindDevices)
			}
		case MailboxEvent:
			if c.s.CollectionNodes {
				c.learnLeaf(ev.Item.Mailbox, KindMailboxes)
			}
		}
		if !c.q.push(s.ctx.Done(), ev) {
			return
		}
		if p, ok := ev.(Purged); ok && (p.Node == NodeDevices || p.Node == NodeMailboxes || c.s.CollectionNodes) {
			c.republish() // Config.OwnStates: the items are gone
		}
		if d, ok := ev.(Deleted); ok && (d.Node == NodeDevices || d.Node == NodeMailboxes) {
			// Our subscription went with the node: reconnect, which
			// creates the node again, subscribes and resyncs.
			s.stop(fmt.Errorf("node %s was deleted; reconnecting to re-create it and subscribe", d.Node))
			return
		}
	}
}

// handleRequest answers an IQ get or set addressed to us (the stream
// answers pings and payload-less requests itself).
func (c *Client) handleRequest(s *session, e *elem) {
	typ := e.Attr("type")
	p := e.FirstChild()
	switch {
	case typ == "set" && p.Is(nsRoster, "query"):
		c.roster.handlePush(s, e, p)
	case typ == "get" && p.Is(NSOwnStates, "states"):
		c.handleOwnStatesRequest(s, e, p)
	case typ == "get" && p.Is(nsDiscoInfo, "query") && p.Attr("node") == "":
		s.reply(e, discoInfoResult())
	default:
		// RFC 6120 8.4: an IQ nobody here handles gets service-unavailable.
		s.replyError(e, "cancel", "service-unavailable", "503")
	}
}

func (c *Client) sessionIs(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess == s
}

// logLimiter lets one log line per key through per period, so a broken
// node cannot flood the log with one line per publish.
type logLimiter struct {
	mu     sync.Mutex
	period time.Duration
	last   map[string]time.Time
}

func newLogLimiter(p time.Duration) *logLimiter {
	return &logLimiter{period: p, last: map[string]time.Time{}}
}

func (l *logLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.period {
		return false
	}
	if len(l.last) > 1024 {
		clear(l.last)
	}
	l.last[key] = now
	return true
}
