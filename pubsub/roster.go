package pubsub

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/internal/jid"
)

// maxRoster bounds the roster contacts and resources tracked.
const (
	maxRoster    = 10000
	maxResources = 16 // per buddy
)

// buddy is a roster contact or a configured buddy (or both).
type buddy struct {
	wanted       bool // configured or added with AddBuddy
	inRoster     bool
	subscription string // none, to, from, both
	ask          string // "subscribe" while our request is pending
	resources    map[string]Resource
}

// Buddy is one configured buddy, for 'show buddies'.
type Buddy struct {
	JID          string // bare JID
	InRoster     bool
	Subscription string // roster subscription: none, to, from, both
	Pending      bool   // our subscription request awaits an answer
	Resources    []Resource
}

// Resource is one connected resource of a buddy.
type Resource struct {
	Resource string
	Show     string // "" (available), chat, away, xa, dnd
	Status   string
	Priority int
	Since    time.Time
}

// roster is the buddies' side of the client: the configured buddies, the
// account's roster contacts (autoregister, autoprune, auth_policy), and
// the resources each buddy's presence announced. It is the one owner of a
// buddy's resources. Its mutex is held briefly, never across I/O.
type roster struct {
	s *settings

	mu      sync.Mutex
	buddies map[string]*buddy // wanted buddies and roster contacts, by bare JID
	affDue  map[string]bool   // buddies added while disconnected: owner affiliation still to set
}

func newRoster(s *settings) *roster {
	r := &roster{s: s, buddies: map[string]*buddy{}, affDue: map[string]bool{}}
	for _, b := range s.buddies {
		r.buddies[b] = &buddy{wanted: true}
	}
	return r
}

// list is the configured buddies sorted by JID, with the resources their
// presence announced.
func (r *roster) list() []Buddy {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Buddy
	for bare, b := range r.buddies {
		if !b.wanted {
			continue
		}
		v := Buddy{JID: bare, InRoster: b.inRoster, Subscription: b.subscription, Pending: b.ask == "subscribe"}
		for _, res := range b.resources {
			v.Resources = append(v.Resources, res)
		}
		sort.Slice(v.Resources, func(i, j int) bool { return v.Resources[i].Resource < v.Resources[j].Resource })
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

// wanted is the configured buddies' bare JIDs, sorted.
func (r *roster) wanted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for bare, b := range r.buddies {
		if b.wanted {
			out = append(out, bare)
		}
	}
	sort.Strings(out)
	return out
}

func (r *roster) isBuddy(bare string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buddies[bare]
	return b != nil && b.wanted
}

// clearResources forgets every buddy's resources: the session that
// announced them is gone.
func (r *roster) clearResources() {
	r.mu.Lock()
	for _, b := range r.buddies {
		b.resources = nil
	}
	r.mu.Unlock()
}

// want makes bare a buddy. It reports whether it was not one yet, and
// whether its roster entry and its presence subscription are still to be
// asked for (autoregister). Its owner affiliation is due until affDone.
func (r *roster) want(bare string) (added, needAdd, needSub bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buddies[bare]
	if b == nil {
		b = &buddy{}
		r.buddies[bare] = b
	}
	if b.wanted {
		return false, false, false
	}
	b.wanted = true
	r.affDue[bare] = true
	return true, r.s.AutoRegister && !b.inRoster, r.s.AutoRegister && !subscribedTo(b)
}

// unwant stops treating bare as a buddy; it reports whether it was one,
// and whether it has a roster entry to remove.
func (r *roster) unwant(bare string) (removed, inRoster bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buddies[bare]
	if b == nil || !b.wanted {
		return false, false
	}
	b.wanted, b.resources = false, nil
	delete(r.affDue, bare)
	if !b.inRoster {
		delete(r.buddies, bare)
	}
	return true, b.inRoster
}

// due is the buddies whose owner affiliation is still to be set, sorted.
func (r *roster) due() []string {
	r.mu.Lock()
	var due []string
	for bare := range r.affDue {
		due = append(due, bare)
	}
	r.mu.Unlock()
	sort.Strings(due)
	return due
}

func (r *roster) affDone(bare string) {
	r.mu.Lock()
	delete(r.affDue, bare)
	r.mu.Unlock()
}

// subscribedTo reports whether we have, or have asked for, b's presence.
func subscribedTo(b *buddy) bool {
	return b.subscription == "to" || b.subscription == "both" || b.ask == "subscribe"
}

func (c *Client) ownPresence() stanza.Presence {
	p := stanza.NewPresence(stanza.Attrs{})
	p.Show = stanza.PresenceShow(c.s.show)
	p.Status = c.s.StatusMessage
	p.Priority = int8(c.s.Priority)
	return p
}

func presenceTo(to, typ string) stanza.Presence {
	return stanza.NewPresence(stanza.Attrs{To: to, Type: stanza.StanzaType(typ)})
}

// sync fetches the roster and applies autoregister and autoprune.
func (r *roster) sync(ctx context.Context, s *session) error {
	res, err := s.iq(ctx, "get", "", &rosterGet{})
	if err != nil {
		return err
	}
	r.mu.Lock()
	for bare, b := range r.buddies {
		b.inRoster, b.subscription, b.ask = false, "", ""
		if !b.wanted {
			delete(r.buddies, bare)
		}
	}
	for _, it := range res.Child(nsRoster, "query").Children("", "item") {
		r.itemLocked(it)
	}
	var add, subscribe, prune []string
	for bare, b := range r.buddies {
		switch {
		case b.wanted && r.s.AutoRegister:
			if !b.inRoster {
				add = append(add, bare)
			}
			if !subscribedTo(b) {
				subscribe = append(subscribe, bare)
			}
		case !b.wanted && r.s.AutoPrune:
			prune = append(prune, bare)
		}
	}
	r.mu.Unlock()
	sort.Strings(add)
	sort.Strings(subscribe)
	sort.Strings(prune)
	for _, bare := range add {
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare}}); err != nil {
			r.s.log.Warn("could not add buddy to the roster", "buddy", bare, "err", err)
		}
	}
	for _, bare := range subscribe {
		if err := s.send(presenceTo(bare, "subscribe")); err != nil {
			return err
		}
	}
	for _, bare := range prune {
		r.s.log.Info("autoprune: removing roster entry that is not a buddy", "jid", bare)
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare, Subscription: "remove"}}); err != nil {
			r.s.log.Warn("could not remove roster entry", "jid", bare, "err", err)
		}
	}
	return nil
}

// itemLocked applies one roster <item/> (from the fetch or a push).
func (r *roster) itemLocked(it *elem) {
	bare := jid.Bare(it.Attr("jid"))
	if bare == "" || bare == r.s.bare {
		return
	}
	b := r.buddies[bare]
	if it.Attr("subscription") == "remove" {
		if b != nil {
			b.inRoster, b.subscription, b.ask = false, "", ""
			if !b.wanted {
				delete(r.buddies, bare)
			}
		}
		return
	}
	if b == nil {
		if len(r.buddies) >= maxRoster {
			return
		}
		b = &buddy{}
		r.buddies[strings.Clone(bare)] = b // kept: not a slice of the stanza
	}
	b.inRoster, b.subscription, b.ask = true, strings.Clone(it.Attr("subscription")), strings.Clone(it.Attr("ask"))
}

func (r *roster) handlePush(s *session, e, q *elem) {
	if from := e.Attr("from"); from != "" && !jid.Equal(from, r.s.bare) {
		s.replyError(e, "cancel", "service-unavailable", "503") // RFC 6121 2.1.6: ignore pushes from others
		return
	}
	r.mu.Lock()
	for _, it := range q.Children("", "item") {
		r.itemLocked(it)
	}
	r.mu.Unlock()
	s.reply(e, nil)
}

// handlePresence answers subscription requests by auth_policy and tracks
// the buddies' resources, reporting each change as a Presence event.
func (r *roster) handlePresence(s *session, e *elem) {
	j, err := jid.Parse(e.Attr("from"))
	if err != nil {
		return
	}
	bare := j.Bare()
	if bare == r.s.bare {
		return
	}
	switch typ := e.Attr("type"); typ {
	case "subscribe":
		if r.s.AuthPolicy == "deny" {
			r.s.log.Info("denied presence subscription (auth_policy=deny)", "from", bare)
			_ = s.send(presenceTo(bare, "unsubscribed"))
			return
		}
		_ = s.send(presenceTo(bare, "subscribed"))
		r.mu.Lock()
		b := r.buddies[bare]
		back := b != nil && b.wanted && r.s.AutoRegister && !subscribedTo(b)
		r.mu.Unlock()
		if back {
			_ = s.send(presenceTo(bare, "subscribe"))
		}
	case "", "unavailable":
		for _, ev := range r.presence(bare, j.Resource, typ == "unavailable", e) {
			if !s.cl.q.push(s.ctx.Done(), ev) {
				return
			}
		}
	}
}

// presence applies an available or unavailable presence from bare's
// resource res ("" for the account as a whole) and returns the events it
// makes. Their Online is what the account has left after the whole
// stanza.
func (r *roster) presence(bare, res string, unavailable bool, e *elem) []Presence {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buddies[bare]
	if b == nil || !b.wanted {
		return nil
	}
	var evs []Presence
	if unavailable {
		for name := range b.resources {
			if res == "" || name == res {
				delete(b.resources, name)
				evs = append(evs, Presence{JID: bare + "/" + name})
			}
		}
	} else if res != "" {
		v := Resource{Resource: res, Since: time.Now()}
		if show := e.Child("", "show").Text(); show == "chat" || show == "away" || show == "xa" || show == "dnd" {
			v.Show = show
		}
		v.Status = clip(e.Child("", "status").Text(), 256)
		if p, err := strconv.Atoi(e.Child("", "priority").Text()); err == nil && p >= -128 && p <= 127 {
			v.Priority = p
		}
		if b.resources == nil {
			b.resources = map[string]Resource{}
		}
		if old, ok := b.resources[res]; ok || len(b.resources) < maxResources {
			if ok {
				v.Since = old.Since
			} else {
				res = strings.Clone(res) // kept: not a slice of the stanza
			}
			v.Show, v.Status = strings.Clone(v.Show), strings.Clone(v.Status)
			b.resources[res] = v
			evs = append(evs, Presence{JID: bare + "/" + res, Available: true, Show: v.Show, Status: v.Status, Priority: v.Priority})
		}
	}
	online := len(b.resources) > 0
	for i := range evs {
		evs[i].Online = online
	}
	return evs
}
