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

const (
	ownChunk     = 500             // items per answer
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

// chunk builds the answer starting at item off of ans.
func chunk(ans *answer, tok string, off int) *statesResult {
	total := len(ans.devs) + len(ans.mboxes)
	end := min(off+ownChunk, total)
	r := &statesResult{}
	for i := off; i < end; i++ {
		if i < len(ans.devs) {
			d := ans.devs[i]
			r.Devices = append(r.Devices, ownDevice{Name: d.Device, State: d.State.String(), Cachable: cachableAttr(d.Cachable), EID: d.EID.String()})
		} else {
			m := ans.mboxes[i-len(ans.devs)]
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
// at most 500 items; the buddy fetches the later chunks by itself.
func (c *Client) AnswerOwnStates(req OwnStatesRequest, devices []DeviceItem, mailboxes []MailboxItem) error {
	s := req.sess
	if s == nil {
		return errors.New("answer own states: not a request from this client")
	}
	ans := &answer{to: req.From, devs: append([]DeviceItem(nil), devices...),
		mboxes: append([]MailboxItem(nil), mailboxes...), expires: time.Now().Add(ownTTL)}
	tok := ""
	if len(devices)+len(mailboxes) > ownChunk {
		tok = c.answers.put(ans)
	}
	iq := newIQ("result", req.From, req.ID, chunk(ans, tok, 0))
	if err := s.send(iq); err != nil {
		return fmt.Errorf("answer own states to %s: %w", req.From, err)
	}
	return nil
}

// RequestOwnStates asks the busylamp buddy at fullJID for its own device
// and mailbox states. An Asterisk node (or a resource that is gone) yields
// an error that wraps ErrOwnStatesUnsupported; an Asterisk node that does
// not answer at all yields ErrTimeout.
func (c *Client) RequestOwnStates(ctx context.Context, fullJID string) ([]DeviceItem, []MailboxItem, error) {
	s, err := c.session()
	if err != nil {
		return nil, nil, err
	}
	var devs []DeviceItem
	var mboxes []MailboxItem
	after := ""
	for total := 0; ; {
		res, err := s.iq(ctx, "get", fullJID, &statesQuery{Max: ownChunk, After: after})
		if err != nil {
			if IsCondition(err, "service-unavailable") || IsCondition(err, "feature-not-implemented") {
				return nil, nil, fmt.Errorf("own states of %s: %w (%w)", fullJID, ErrOwnStatesUnsupported, err)
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
	name := d.Attr("name")
	if err := checkName(name); err != nil {
		return DeviceItem{}, fmt.Errorf("name: %w", err)
	}
	eid, err := devstate.ParseEID(d.Attr("eid"))
	if err != nil {
		return DeviceItem{}, err
	}
	st, ok := devstate.Parse(d.Attr("state"))
	if !ok {
		return DeviceItem{}, fmt.Errorf("device %s: unknown state %q", name, clip(d.Attr("state"), 32))
	}
	return DeviceItem{Device: name, State: st, Cachable: d.Attr("cachable") != "0", EID: eid}, nil
}

func parseOwnMailbox(m *elem) (MailboxItem, error) {
	name := m.Attr("name")
	if err := checkName(name); err != nil {
		return MailboxItem{}, fmt.Errorf("name: %w", err)
	}
	eid, err := devstate.ParseEID(m.Attr("eid"))
	if err != nil {
		return MailboxItem{}, err
	}
	nw, err1 := count(&elem{Content: m.Attr("new")})
	old, err2 := count(&elem{Content: m.Attr("old")})
	if err := errors.Join(err1, err2); err != nil {
		return MailboxItem{}, fmt.Errorf("mailbox %s: %w", name, err)
	}
	return MailboxItem{Mailbox: name, Counts: mwi.Counts{New: nw, Old: old}, EID: eid}, nil
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
