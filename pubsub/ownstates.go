package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/mwi"
)

// busylamp's own-states exchange: a directed IQ get between two busylamp
// agents, so that a (re)connecting server learns every other server's own
// states, also those the PubSub items cannot tell (several servers setting
// the same device share one item id):
//
//	<iq type="get" to="server2@example.org/astvoip2" id="...">
//	  <states xmlns="urn:busylamp:states:0" max="500" [after="CURSOR"]/>
//	</iq>
//	<iq type="result" ...>
//	  <states xmlns="urn:busylamp:states:0" [next="CURSOR"]>
//	    <device name="SIP/100" state="INUSE" cachable="1" eid="02:..."/>
//	    <mailbox name="1000@default" new="2" old="1" eid="02:..."/>
//	  </states>
//	</iq>
//
// The first request becomes an OwnStatesRequest event; the agent answers
// with AnswerOwnStates, which sends the first chunk and keeps the rest as a
// snapshot that later requests (with the cursor) are served from, so the
// pages are consistent. Only buddies are answered.

// An answer holds at most ownChunk items and about ownChunkBytes of XML:
// the byte bound keeps a chunk of long names (escaped) well under the
// smaller of the servers' default stanza limits (Prosody's
// c2s_stanza_size_limit and the max_stanza_size of Debian's ejabberd.yml,
// both 256 KiB). 2,000 items a chunk (~180 KiB) booted 10,000 devices,
// but a joiner of 100,000 stopped after the first chunks (not understood
// yet, see the i12 report): 500 until that is.
const (
	ownChunk      = 500
	ownChunkBytes = 128 << 10
)

const (
	ownMaxItems  = 1 << 20         // items one RequestOwnStates accepts
	ownSnapshots = 16              // snapshots kept for continuations
	ownTTL       = 2 * time.Minute // how long a snapshot is kept
)

type statesQuery struct {
	payload
	XMLName xml.Name `xml:"urn:busylamp:states:0 states"`
	Max     int      `xml:"max,attr,omitempty"`
	After   string   `xml:"after,attr,omitempty"`
}

type statesResult struct {
	payload
	XMLName   xml.Name     `xml:"urn:busylamp:states:0 states"`
	Next      string       `xml:"next,attr,omitempty"`
	Devices   []ownDevice  `xml:"device"`
	Mailboxes []ownMailbox `xml:"mailbox"`
}

type ownDevice struct {
	Name     string `xml:"name,attr"`
	State    string `xml:"state,attr"`
	Cachable string `xml:"cachable,attr"`
	EID      string `xml:"eid,attr"`
}

type ownMailbox struct {
	Name string `xml:"name,attr"`
	New  int    `xml:"new,attr"`
	Old  int    `xml:"old,attr"`
	EID  string `xml:"eid,attr"`
}

// answer is a snapshot being served in chunks.
type answer struct {
	to      string
	devs    []DeviceItem
	mboxes  []MailboxItem
	expires time.Time
}

type answerCache struct {
	mu    sync.Mutex
	m     map[string]*answer
	order []string
}

func newAnswerCache() *answerCache { return &answerCache{m: map[string]*answer{}} }

func (a *answerCache) put(ans *answer) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.order) >= ownSnapshots {
		delete(a.m, a.order[0])
		a.order = a.order[1:]
	}
	a.m[tok] = ans
	a.order = append(a.order, tok)
	return tok
}

func (a *answerCache) get(tok string) *answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	ans := a.m[tok]
	if ans != nil && time.Now().After(ans.expires) {
		delete(a.m, tok)
		return nil
	}
	return ans
}

// Upper bounds of an item's XML besides its name, in bytes, as
// encoding/xml writes them: <device name="" state="RINGINUSE"
// cachable="1" eid="00:11:22:33:44:55"></device>, and <mailbox name=""
// new="2147483647" old="2147483647" eid="..."></mailbox>; and of the
// <states> element around them.
const (
	ownDeviceXML  = 80
	ownMailboxXML = 85
	ownStatesXML  = 256
)

// attrLen is the length of s escaped as an XML attribute value (at most:
// encoding/xml writes &#34; for a quote).
func attrLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '&', '<', '>', '"', '\'', '\t', '\n', '\r':
			n += 4
		}
	}
	return n
}

// chunk builds the answer starting at item off of ans: up to ownChunk
// items and ownChunkBytes, and at least one item.
func chunk(ans *answer, tok string, off int) *statesResult {
	total := len(ans.devs) + len(ans.mboxes)
	r := &statesResult{}
	end, size := off, ownStatesXML
	for ; end < total && end-off < ownChunk; end++ {
		if end < len(ans.devs) {
			d := ans.devs[end]
			if size += ownDeviceXML + attrLen(d.Device); size > ownChunkBytes && end > off {
				break
			}
			r.Devices = append(r.Devices, ownDevice{Name: d.Device, State: d.State.String(), Cachable: cachableAttr(d.Cachable), EID: d.EID.String()})
		} else {
			m := ans.mboxes[end-len(ans.devs)]
			if size += ownMailboxXML + attrLen(m.Mailbox); size > ownChunkBytes && end > off {
				break
			}
			r.Mailboxes = append(r.Mailboxes, ownMailbox{Name: m.Mailbox, New: m.Counts.New, Old: m.Counts.Old, EID: m.EID.String()})
		}
	}
	if end < total {
		r.Next = tok + ":" + strconv.Itoa(end)
	}
	return r
}

func (c *Client) handleOwnStatesRequest(s *session, e, q *elem) {
	from := e.Attr("from")
	if !c.roster.isBuddy(jid.Bare(from)) {
		s.replyError(e, "auth", "forbidden", "403")
		return
	}
	after := q.Attr("after")
	if after == "" {
		c.q.push(s.ctx.Done(), OwnStatesRequest{From: from, ID: e.Attr("id"), sess: s})
		return
	}
	tok, offs, _ := strings.Cut(after, ":")
	off, err := strconv.Atoi(offs)
	ans := c.answers.get(tok)
	if err != nil || ans == nil || ans.to != from || off < 0 || off > len(ans.devs)+len(ans.mboxes) {
		s.replyError(e, "cancel", "item-not-found", "404")
		return
	}
	s.reply(e, chunk(ans, tok, off))
}

// AnswerOwnStates answers req with this server's own states, in chunks of
// at most ownChunk items and ownChunkBytes; the buddy fetches the later
// chunks by itself.
func (c *Client) AnswerOwnStates(req OwnStatesRequest, devices []DeviceItem, mailboxes []MailboxItem) error {
	s := req.sess
	if s == nil {
		return errors.New("answer own states: not a request from this client")
	}
	ans := &answer{to: req.From, devs: append([]DeviceItem(nil), devices...),
		mboxes: append([]MailboxItem(nil), mailboxes...), expires: time.Now().Add(ownTTL)}
	first := chunk(ans, "", 0)
	if len(first.Devices)+len(first.Mailboxes) < len(devices)+len(mailboxes) {
		first = chunk(ans, c.answers.put(ans), 0)
	}
	iq := newIQ("result", req.From, req.ID, first)
	if err := s.send(iq); err != nil {
		return fmt.Errorf("answer own states to %s: %w", req.From, err)
	}
	return nil
}

// RequestOwnStates asks the busylamp buddy at fullJID for its own device
// and mailbox states, chunk by chunk; each chunk's answer is waited for
// at most chunkWait (0: the IQ timeout), so a long answer that keeps
// coming is not cut off by a bound meant for a peer that does not answer.
// An Asterisk node (or a resource that is gone) yields an error that
// wraps ErrOwnStatesUnsupported; an Asterisk node that does not answer at
// all yields ErrTimeout; a peer that stops answering after the first
// chunks, ErrOwnStatesIncomplete.
func (c *Client) RequestOwnStates(ctx context.Context, fullJID string, chunkWait time.Duration) ([]DeviceItem, []MailboxItem, error) {
	s, err := c.session()
	if err != nil {
		return nil, nil, err
	}
	var devs []DeviceItem
	var mboxes []MailboxItem
	after := ""
	for total := 0; ; {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if chunkWait > 0 {
			cctx, cancel = context.WithTimeout(ctx, chunkWait)
		}
		res, err := s.iq(cctx, "get", fullJID, &statesQuery{Max: ownChunk, After: after})
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = ErrTimeout // the chunk's own bound
			}
			if IsCondition(err, "service-unavailable") || IsCondition(err, "feature-not-implemented") {
				return nil, nil, fmt.Errorf("own states of %s: %w (%w)", fullJID, ErrOwnStatesUnsupported, err)
			}
			if after != "" && ctx.Err() == nil {
				return nil, nil, fmt.Errorf("own states of %s: %w after %d items: %w", fullJID, ErrOwnStatesIncomplete, total, err)
			}
			return nil, nil, fmt.Errorf("own states of %s: %w", fullJID, err)
		}
		st := res.Child(NSOwnStates, "states")
		if st == nil {
			return nil, nil, fmt.Errorf("own states of %s: %w (empty answer)", fullJID, ErrOwnStatesUnsupported)
		}
		for _, d := range st.Children("", "device") {
			it, err := parseOwnDevice(d)
			if err != nil {
				c.parse.reject("own-states device", "from", fullJID, "err", err)
				continue
			}
			devs = append(devs, it)
		}
		for _, m := range st.Children("", "mailbox") {
			it, err := parseOwnMailbox(m)
			if err != nil {
				c.parse.reject("own-states mailbox", "from", fullJID, "err", err)
				continue
			}
			mboxes = append(mboxes, it)
		}
		total = len(devs) + len(mboxes)
		next := st.Attr("next")
		if next == "" {
			break
		}
		if next == after || total > ownMaxItems {
			return nil, nil, fmt.Errorf("own states of %s: more than %d items or a cursor that does not advance", fullJID, ownMaxItems)
		}
		after = next
	}
	return devs, mboxes, nil
}

func parseOwnDevice(d *elem) (DeviceItem, error) {
	return ParseOwnDevice(d.Attr("name"), d.Attr("state"), d.Attr("cachable"), d.Attr("eid"))
}

func parseOwnMailbox(m *elem) (MailboxItem, error) {
	return ParseOwnMailbox(m.Attr("name"), m.Attr("new"), m.Attr("old"), m.Attr("eid"))
}

// ParseOwnDevice checks one device of a buddy's own-states answer, given
// as the strings of the exchange's attributes, and returns it. Every
// carrier of the exchange (XMPP, gossip) reads its entries with it.
func ParseOwnDevice(name, state, cachable, eid string) (DeviceItem, error) {
	if err := checkName(name); err != nil {
		return DeviceItem{}, fmt.Errorf("name: %w", err)
	}
	e, err := devstate.ParseEID(eid)
	if err != nil {
		return DeviceItem{}, err
	}
	st, ok := devstate.Parse(state)
	if !ok {
		return DeviceItem{}, fmt.Errorf("device %s: unknown state %q", name, clip(state, 32))
	}
	return DeviceItem{Device: name, State: st, Cachable: cachable != "0", EID: e}, nil
}

// ParseOwnMailbox checks one mailbox of a buddy's own-states answer, as
// ParseOwnDevice does a device.
func ParseOwnMailbox(name, newCount, oldCount, eid string) (MailboxItem, error) {
	if err := checkName(name); err != nil {
		return MailboxItem{}, fmt.Errorf("name: %w", err)
	}
	e, err := devstate.ParseEID(eid)
	if err != nil {
		return MailboxItem{}, err
	}
	nw, err1 := count(&elem{Content: newCount})
	old, err2 := count(&elem{Content: oldCount})
	if err := errors.Join(err1, err2); err != nil {
		return MailboxItem{}, fmt.Errorf("mailbox %s: %w", name, err)
	}
	return MailboxItem{Mailbox: name, Counts: mwi.Counts{New: nw, Old: old}, EID: e}, nil
}

// discoInfo is our answer to disco#info: a client that speaks ping and the
// own-states exchange.
type discoInfo struct {
	payload
	XMLName  xml.Name `xml:"http://jabber.org/protocol/disco#info query"`
	Identity struct {
		Category string `xml:"category,attr"`
		Type     string `xml:"type,attr"`
		Name     string `xml:"name,attr"`
	} `xml:"identity"`
	Features []discoFeature `xml:"feature"`
}

type discoFeature struct {
	Var string `xml:"var,attr"`
}

func discoInfoResult() *discoInfo {
	d := &discoInfo{}
	d.Identity.Category, d.Identity.Type, d.Identity.Name = "client", "pc", "busylamp"
	for _, f := range []string{nsDiscoInfo, nsPing, NSOwnStates} {
		d.Features = append(d.Features, discoFeature{Var: f})
	}
	return d
}
