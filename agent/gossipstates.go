package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/pubsub"
)

// The own-states exchange over gossip: with [cluster] on, a member asks
// another member for its own states with a direct message
// (cluster.SendDirect: memberlist's reliable stream, encrypted and
// authenticated with the gossip key when one is set) instead of IQs
// through the XMPP server, and gets the answer the same way, in chunks of
// at most cluster.MaxDirectSize bytes. The answer is what the XMPP answer
// holds, read with the same checks (pubsub.ParseOwnDevice and
// ParseOwnMailbox). Whatever fails (the member is not in gossip, the
// stream fails, no answer in time, a refusal) falls back to the XMPP
// exchange.
//
// Every message (after the cluster's own type byte):
//
//	version(1)=1 kind(1) id(16) ...
//	ask:    uvarint len, asker's member name
//	answer: uvarint seq, uvarint chunks, uvarint devices, uvarint mailboxes,
//	        devices:   str name, str state, cachable(1: '0' or '1'), str eid
//	        mailboxes: str name, str new, str old, str eid
//	refuse: str reason
//
// where str is a uvarint length and the bytes. The strings are the XMPP
// exchange's attribute values. The id is random per ask; an answer is
// taken only for an ask this node sent to that member and is waiting for,
// so a member cannot push states nobody asked for.
const (
	gossipVersion byte = 1

	gossipAsk    byte = 1
	gossipAnswer byte = 2
	gossipRefuse byte = 3

	gossipHeader = 2 + 16

	// Bounds on one answer: chunks, entries a chunk, entries in all (the
	// XMPP exchange's bound).
	maxGossipChunks       = 64
	maxGossipChunkEntries = 1 << 16
	maxGossipEntries      = 1 << 20
	// maxGossipPending bounds the asks waiting for an answer (a resync's
	// and the ask workers' at most).
	maxGossipPending = 2 * (resyncParallel + askWorkers)
	// gossipChunksWaiting bounds the messages of one answer waiting to
	// be decoded; past it the ask fails (and falls back to XMPP).
	gossipChunksWaiting = 8
	// gossipInbox bounds the messages waiting for directLoop
	// (cluster.MaxDirectSize each).
	gossipInbox = 16
	// gossipStrangerWait is how long an ask from a member this node has
	// not heard of yet waits for gossip to bring it; gossipAnswerWait
	// (or ResyncTimeout, if shorter) how long an ask waits for its answer
	// before it falls back to XMPP. A member that does not speak this
	// exchange (an older busylamp) never answers: that costs
	// gossipAnswerWait.
	gossipStrangerWait = 2 * time.Second
	gossipAnswerWait   = 5 * time.Second
	maxRefuseReason    = 200
)

type gossipID [16]byte

// statesAsk is a member's ask for our own states.
type statesAsk struct {
	id     gossipID
	member string
}

// statesChunk is one decoded chunk of an answer.
type statesChunk struct {
	seq, chunks int
	devices     []pubsub.DeviceItem
	mailboxes   []pubsub.MailboxItem
	refused     int // entries that failed the checks
}

// gossipStates is the asking side's bookkeeping and the exchange's
// counters.
type gossipStates struct {
	mu      sync.Mutex
	pending map[gossipID]chan []byte // by ask id: the answer's messages

	answers        atomic.Uint64 // answers received and applied
	xmppAnswers    atomic.Uint64 // states requests answered over XMPP
	fallbacks      atomic.Uint64 // asks that fell back to XMPP
	refusedMsgs    atomic.Uint64 // malformed, stray or unwanted messages
	refusedEntries atomic.Uint64 // entries that failed the checks

	logMu   sync.Mutex
	lastLog time.Time
	quiet   int
}

// errGossip wraps a malformed message.
var errGossip = errors.New("bad gossip states message")

func appendStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func gossipHead(kind byte, id gossipID) []byte {
	b := make([]byte, 0, 64)
	b = append(b, gossipVersion, kind)
	return append(b, id[:]...)
}

func encodeAsk(id gossipID, member string) []byte {
	return appendStr(gossipHead(gossipAsk, id), member)
}

func encodeRefuse(id gossipID, reason string) []byte {
	if len(reason) > maxRefuseReason {
		reason = reason[:maxRefuseReason]
	}
	return appendStr(gossipHead(gossipRefuse, id), reason)
}

func cachableStr(c bool) string {
	if c {
		return "1"
	}
	return "0"
}

// encodeAnswer splits devices and mailboxes into answer messages of at
// most max bytes each (and maxGossipChunkEntries entries).
func encodeAnswer(id gossipID, devices []pubsub.DeviceItem, mailboxes []pubsub.MailboxItem, max int) ([][]byte, error) {
	const headRoom = gossipHeader + 4*binary.MaxVarintLen64
	type span struct{ d0, d1, m0, m1 int }
	uvl := func(n int) int { return len(binary.AppendUvarint(nil, uint64(n))) }
	strl := func(s string) int { return uvl(len(s)) + len(s) }
	var spans []span
	cur, size := span{}, headRoom
	flush := func() {
		spans = append(spans, cur)
		cur, size = span{d0: cur.d1, d1: cur.d1, m0: cur.m1, m1: cur.m1}, headRoom
	}
	add := func(n int) error {
		if headRoom+n > max {
			return fmt.Errorf("an entry of %d bytes does not fit a message of %d", n, max)
		}
		if size+n > max || (cur.d1-cur.d0)+(cur.m1-cur.m0) >= maxGossipChunkEntries {
			flush()
		}
		size += n
		return nil
	}
	for _, d := range devices {
		if err := add(strl(d.Device) + strl(d.State.String()) + 1 + strl(d.EID.String())); err != nil {
			return nil, err
		}
		cur.d1++
	}
	for _, m := range mailboxes {
		if err := add(strl(m.Mailbox) + strl(strconv.Itoa(m.Counts.New)) + strl(strconv.Itoa(m.Counts.Old)) + strl(m.EID.String())); err != nil {
			return nil, err
		}
		cur.m1++
	}
	flush()
	if len(spans) > maxGossipChunks {
		return nil, fmt.Errorf("%d entries need %d messages, over %d", len(devices)+len(mailboxes), len(spans), maxGossipChunks)
	}
	out := make([][]byte, 0, len(spans))
	for i, s := range spans {
		b := gossipHead(gossipAnswer, id)
		b = binary.AppendUvarint(b, uint64(i))
		b = binary.AppendUvarint(b, uint64(len(spans)))
		b = binary.AppendUvarint(b, uint64(s.d1-s.d0))
		b = binary.AppendUvarint(b, uint64(s.m1-s.m0))
		for _, d := range devices[s.d0:s.d1] {
			b = appendStr(b, d.Device)
			b = appendStr(b, d.State.String())
			b = append(b, cachableStr(d.Cachable)[0])
			b = appendStr(b, d.EID.String())
		}
		for _, m := range mailboxes[s.m0:s.m1] {
			b = appendStr(b, m.Mailbox)
			b = appendStr(b, strconv.Itoa(m.Counts.New))
			b = appendStr(b, strconv.Itoa(m.Counts.Old))
			b = appendStr(b, m.EID.String())
		}
		out = append(out, b)
	}
	return out, nil
}

// reader reads what a member sent: every length is checked before use.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errGossip, what)
	}
}

func (r *reader) uvarint(what string, max int) int {
	if r.err != nil {
		return 0
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 || n > uint64(max) {
		r.fail(what + ": bad or too large")
		return 0
	}
	r.b = r.b[k:]
	return int(n)
}

func (r *reader) str(what string) string {
	n := r.uvarint(what+" length", 1<<30)
	if r.err == nil && n > len(r.b) {
		r.fail(what + ": past the end")
	}
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(what + ": past the end")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// gossipHeadOf reads a message's kind and id.
func gossipHeadOf(b []byte) (byte, gossipID, error) {
	var id gossipID
	if len(b) < gossipHeader {
		return 0, id, fmt.Errorf("%w: %d bytes, shorter than a header", errGossip, len(b))
	}
	if b[0] != gossipVersion {
		return 0, id, fmt.Errorf("%w: version %d, want %d", errGossip, b[0], gossipVersion)
	}
	if k := b[1]; k != gossipAsk && k != gossipAnswer && k != gossipRefuse {
		return 0, id, fmt.Errorf("%w: kind %d", errGossip, k)
	}
	copy(id[:], b[2:gossipHeader])
	return b[1], id, nil
}

func decodeAsk(b []byte) (statesAsk, error) {
	_, id, err := gossipHeadOf(b)
	if err != nil {
		return statesAsk{}, err
	}
	r := &reader{b: b[gossipHeader:]}
	name := r.str("member name")
	if r.err == nil && (name == "" || len(name) > 255) {
		r.fail("member name empty or over 255 bytes")
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	return statesAsk{id: id, member: name}, r.err
}

func decodeRefuse(b []byte) string {
	r := &reader{b: b[gossipHeader:]}
	s := r.str("reason")
	if len(s) > maxRefuseReason {
		s = s[:maxRefuseReason]
	}
	return strconv.Quote(s)
}

// decodeAnswer reads one answer message. An entry that fails the
// exchange's checks is skipped and counted; a message whose structure is
// wrong is refused whole.
func decodeAnswer(b []byte) (statesChunk, error) {
	var c statesChunk
	if _, _, err := gossipHeadOf(b); err != nil {
		return c, err
	}
	r := &reader{b: b[gossipHeader:]}
	c.seq = r.uvarint("chunk number", maxGossipChunks-1)
	c.chunks = r.uvarint("chunks", maxGossipChunks)
	nd := r.uvarint("devices", maxGossipChunkEntries)
	nm := r.uvarint("mailboxes", maxGossipChunkEntries)
	if r.err == nil && (c.chunks == 0 || c.seq >= c.chunks || nd+nm > maxGossipChunkEntries || nd+nm > len(r.b)) {
		r.fail(fmt.Sprintf("chunk %d of %d with %d entries in %d bytes", c.seq, c.chunks, nd+nm, len(r.b)))
	}
	if r.err != nil {
		return c, r.err
	}
	c.devices = make([]pubsub.DeviceItem, 0, nd)
	for range nd {
		name, state := r.str("device name"), r.str("device state")
		cach := string([]byte{r.byte("cachable")})
		eid := r.str("device eid")
		if r.err != nil {
			return c, r.err
		}
		it, err := pubsub.ParseOwnDevice(name, state, cach, eid)
		if err != nil {
			c.refused++
			continue
		}
		c.devices = append(c.devices, it)
	}
	c.mailboxes = make([]pubsub.MailboxItem, 0, nm)
	for range nm {
		name, nw, old, eid := r.str("mailbox name"), r.str("new"), r.str("old"), r.str("mailbox eid")
		if r.err != nil {
			return c, r.err
		}
		it, err := pubsub.ParseOwnMailbox(name, nw, old, eid)
		if err != nil {
			c.refused++
			continue
		}
		c.mailboxes = append(c.mailboxes, it)
	}
	if len(r.b) != 0 {
		return c, fmt.Errorf("%w: %d trailing bytes", errGossip, len(r.b))
	}
	return c, nil
}

// refuse counts a refused message and logs it, at most one line per 10 s.
func (g *gossipStates) refuse(a *Agent, err error) {
	g.refusedMsgs.Add(1)
	g.logMu.Lock()
	now := time.Now()
	if now.Sub(g.lastLog) < 10*time.Second {
		g.quiet++
		g.logMu.Unlock()
		return
	}
	quiet := g.quiet
	g.lastLog, g.quiet = now, 0
	g.logMu.Unlock()
	a.log.Warn("gossip states message refused", "err", err, "refused_since_last_line", quiet)
}

// directLoop takes the members' direct messages: asks go to the answer
// queue, answers to the ask waiting for them.
func (a *Agent) directLoop(ctx context.Context, in <-chan []byte) {
	for {
		var b []byte
		select {
		case <-ctx.Done():
			return
		case b = <-in:
		}
		kind, id, err := gossipHeadOf(b)
		if err != nil {
			a.gossip.refuse(a, err)
			continue
		}
		if kind == gossipAsk {
			ask, err := decodeAsk(b)
			if err != nil {
				a.gossip.refuse(a, err)
				continue
			}
			select {
			case a.answers <- heldRequest{ask: &ask, until: a.clock.Now().Add(a.cfg.ResyncTimeout / 2)}:
			default:
				a.log.Warn("gossip states ask dropped: too many waiting", "member", ask.member, "max", maxWaitingAnswers)
			}
			continue
		}
		a.gossip.mu.Lock()
		ch := a.gossip.pending[id]
		a.gossip.mu.Unlock()
		if ch == nil {
			a.gossip.refuse(a, fmt.Errorf("%w: an answer nobody waits for", errGossip))
			continue
		}
		select {
		case ch <- b:
		default:
			a.gossip.refuse(a, fmt.Errorf("%w: more chunks than the answer has", errGossip))
		}
	}
}

// memberOf is the live member whose meta names the full JID j.
func (a *Agent) memberOf(j string) (cluster.Member, bool) {
	if a.cluster == nil {
		return cluster.Member{}, false
	}
	c := jid.Canonical(j)
	for _, m := range a.cluster.Members() {
		if m.State == cluster.StateAlive && m.Name != a.cluster.Name() && jid.Canonical(m.Meta.JID) == c {
			return m, true
		}
	}
	return cluster.Member{}, false
}

// requestStatesGossip asks the member for its own states over gossip and
// waits for the whole answer, until ctx ends.
func (a *Agent) requestStatesGossip(ctx context.Context, member string) ([]pubsub.DeviceItem, []pubsub.MailboxItem, error) {
	var id gossipID
	_, _ = rand.Read(id[:])
	ch := make(chan []byte, gossipChunksWaiting)
	g := &a.gossip
	g.mu.Lock()
	if len(g.pending) >= maxGossipPending {
		g.mu.Unlock()
		return nil, nil, fmt.Errorf("%d asks waiting already", maxGossipPending)
	}
	if g.pending == nil {
		g.pending = make(map[gossipID]chan []byte)
	}
	g.pending[id] = ch
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.pending, id)
		g.mu.Unlock()
	}()
	if err := a.cluster.SendDirect(member, encodeAsk(id, a.cluster.Name())); err != nil {
		return nil, nil, err
	}
	var (
		devs   []pubsub.DeviceItem
		mboxes []pubsub.MailboxItem
		seen   [maxGossipChunks]bool
		got    int
		chunks = -1
	)
	for chunks < 0 || got < chunks {
		var b []byte
		select {
		case b = <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("answer: %d of %d chunks: %w", got, max(chunks, 0), ctx.Err())
		}
		if b[1] == gossipRefuse {
			return nil, nil, fmt.Errorf("refused: %s", decodeRefuse(b))
		}
		c, err := decodeAnswer(b)
		switch {
		case err != nil:
		case chunks >= 0 && c.chunks != chunks:
			err = fmt.Errorf("%w: chunk %d says %d chunks, an earlier one %d", errGossip, c.seq, c.chunks, chunks)
		case seen[c.seq]:
			err = fmt.Errorf("%w: chunk %d twice", errGossip, c.seq)
		case len(devs)+len(mboxes)+len(c.devices)+len(c.mailboxes) > maxGossipEntries:
			err = fmt.Errorf("%w: more than %d entries", errGossip, maxGossipEntries)
		}
		if err != nil {
			g.refuse(a, err)
			return nil, nil, err
		}
		if c.refused > 0 {
			g.refusedEntries.Add(uint64(c.refused))
			a.log.Warn("gossip states entries refused", "member", member, "refused", c.refused)
		}
		chunks, seen[c.seq] = c.chunks, true
		got++
		devs = append(devs, c.devices...)
		mboxes = append(mboxes, c.mailboxes...)
	}
	return devs, mboxes, nil
}

// answerGossip answers a member's ask with our own states and what we
// hold of its server, as answer does over XMPP.
func (a *Agent) answerGossip(ctx context.Context, ask *statesAsk) {
	if a.cluster == nil {
		return
	}
	if !a.isSynced() && !a.bootedEarly.Load() {
		// The XMPP request waits for that, within the asker's timeout;
		// this one would only make the asker wait to fall back. (Booted
		// over gossip, our own states are back from what the members
		// held of them: as good as the items.)
		a.replyRefuse(ask, "own states not restored yet")
		return
	}
	m, ok := a.aliveMember(ctx, ask.member)
	if !ok {
		a.gossip.refuse(a, fmt.Errorf("%w: an ask from %q, not a live member", errGossip, ask.member))
		return
	}
	ds, ms := a.core.AnswerFor(m.Meta.EID)
	msgs, err := encodeAnswer(ask.id, ds, ms, cluster.MaxDirectSize)
	if err != nil {
		a.log.Warn("answer gossip states ask", "member", m.Name, "err", err)
		a.replyRefuse(ask, err.Error())
		return
	}
	for _, b := range msgs {
		if err := a.cluster.SendDirect(m.Name, b); err != nil {
			a.log.Warn("answer gossip states ask", "member", m.Name, "err", err)
			return
		}
	}
}

// aliveMember finds the live member name, waiting up to
// gossipStrangerWait for gossip to bring one this node has not heard of.
func (a *Agent) aliveMember(ctx context.Context, name string) (cluster.Member, bool) {
	deadline := time.Now().Add(gossipStrangerWait)
	for {
		for _, m := range a.cluster.Members() {
			if m.Name == name && m.State == cluster.StateAlive && !m.Meta.IsZero() && name != a.cluster.Name() {
				return m, true
			}
		}
		if time.Now().After(deadline) {
			return cluster.Member{}, false
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return cluster.Member{}, false
		}
	}
}

// replyRefuse tells the asker at once that no answer comes, so that it
// asks over XMPP without waiting.
func (a *Agent) replyRefuse(ask *statesAsk, reason string) {
	if err := a.cluster.SendDirect(ask.member, encodeRefuse(ask.id, reason)); err != nil {
		a.log.Debug("refuse gossip states ask", "member", ask.member, "err", err)
	}
}
