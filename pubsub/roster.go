package pubsub

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"encoding/xml"

	"gosrc.io/xmpp/stanza"
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

// Buddies lists the configured buddies sorted by JID, with the resources
// their presence announced.
func (c *Client) Buddies() []Buddy {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Buddy
	for bare, b := range c.buddies {
		if !b.wanted {
			continue
		}
		v := Buddy{JID: bare, InRoster: b.inRoster, Subscription: b.subscription, Pending: b.ask == "subscribe"}
		for _, r := range b.resources {
			v.Resources = append(v.Resources, r)
		}
		sort.Slice(v.Resources, func(i, j int) bool { return v.Resources[i].Resource < v.Resources[j].Resource })
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].JID < out[j].JID })
	return out
}

func (c *Client) wantedBuddies() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for bare, b := range c.buddies {
		if b.wanted {
			out = append(out, bare)
		}
	}
	sort.Strings(out)
	return out
}

func (c *Client) isBuddy(bare string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buddies[bare]
	return b != nil && b.wanted
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

// syncRoster fetches the roster and applies autoregister and autoprune.
func (c *Client) syncRoster(ctx context.Context, s *session) error {
	res, err := s.iq(ctx, "get", "", &rosterGet{})
	if err != nil {
		return err
	}
	c.mu.Lock()
	for bare, b := range c.buddies {
		b.inRoster, b.subscription, b.ask = false, "", ""
		if !b.wanted {
			delete(c.buddies, bare)
		}
	}
	for _, it := range res.child(nsRoster, "query").children("", "item") {
		c.rosterItemLocked(it)
	}
	var add, subscribe, prune []string
	for bare, b := range c.buddies {
		switch {
		case b.wanted && c.s.AutoRegister:
			if !b.inRoster {
				add = append(add, bare)
			}
			if b.subscription != "to" && b.subscription != "both" && b.ask != "subscribe" {
				subscribe = append(subscribe, bare)
			}
		case !b.wanted && c.s.AutoPrune:
			prune = append(prune, bare)
		}
	}
	c.mu.Unlock()
	sort.Strings(add)
	sort.Strings(subscribe)
	sort.Strings(prune)
	for _, bare := range add {
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare}}); err != nil {
			c.s.log.Warn("could not add buddy to the roster", "buddy", bare, "err", err)
		}
	}
	for _, bare := range subscribe {
		if err := s.send(presenceTo(bare, "subscribe")); err != nil {
			return err
		}
	}
	for _, bare := range prune {
		c.s.log.Info("autoprune: removing roster entry that is not a buddy", "jid", bare)
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare, Subscription: "remove"}}); err != nil {
			c.s.log.Warn("could not remove roster entry", "jid", bare, "err", err)
		}
	}
	return nil
}

// rosterItemLocked applies one roster <item/> (from the fetch or a push).
func (c *Client) rosterItemLocked(it *elem) {
	bare := bareOf(it.attr("jid"))
	if bare == "" || bare == c.s.bare {
		return
	}
	b := c.buddies[bare]
	if it.attr("subscription") == "remove" {
		if b != nil {
			b.inRoster, b.subscription, b.ask = false, "", ""
			if !b.wanted {
				delete(c.buddies, bare)
			}
		}
		return
	}
	if b == nil {
		if len(c.buddies) >= maxRoster {
			return
		}
		b = &buddy{}
		c.buddies[strings.Clone(bare)] = b // kept: not a slice of the stanza
	}
	b.inRoster, b.subscription, b.ask = true, strings.Clone(it.attr("subscription")), strings.Clone(it.attr("ask"))
}

func (c *Client) handleRosterPush(s *session, e, q *elem) {
	if from := e.attr("from"); from != "" && !sameJID(from, c.s.bare) {
		s.replyError(e, "cancel", "service-unavailable", "503") // RFC 6121 2.1.6: ignore pushes from others
		return
	}
	c.mu.Lock()
	for _, it := range q.children("", "item") {
		c.rosterItemLocked(it)
	}
	c.mu.Unlock()
	s.reply(e, nil)
}

// handlePresence answers subscription requests by auth_policy and tracks
// the buddies' resources, reporting each change as a Presence event.
func (c *Client) handlePresence(s *session, e *elem) {
	from := e.attr("from")
	j, err := parseJID(from)
	if err != nil {
		return
	}
	bare := j.bare()
	if bare == c.s.bare {
		return
	}
	switch typ := e.attr("type"); typ {
	case "subscribe":
		if c.s.AuthPolicy == "deny" {
			c.s.log.Info("denied presence subscription (auth_policy=deny)", "from", bare)
			_ = s.send(presenceTo(bare, "unsubscribed"))
			return
		}
		_ = s.send(presenceTo(bare, "subscribed"))
		c.mu.Lock()
		b := c.buddies[bare]
		back := b != nil && b.wanted && c.s.AutoRegister && b.subscription != "to" && b.subscription != "both" && b.ask != "subscribe"
		c.mu.Unlock()
		if back {
			_ = s.send(presenceTo(bare, "subscribe"))
		}
	case "", "unavailable":
		var evs []Event
		c.mu.Lock()
		b := c.buddies[bare]
		if b == nil || !b.wanted {
			c.mu.Unlock()
			return
		}
		if typ == "unavailable" {
			for name := range b.resources {
				if j.resource == "" || name == j.resource {
					delete(b.resources, name)
					evs = append(evs, Presence{JID: bare + "/" + name})
				}
			}
		} else if j.resource != "" {
			r := Resource{Resource: j.resource, Since: time.Now()}
			if show := e.child("", "show").text(); show == "chat" || show == "away" || show == "xa" || show == "dnd" {
				r.Show = show
			}
			r.Status = clip(e.child("", "status").text(), 256)
			if p, err := strconv.Atoi(e.child("", "priority").text()); err == nil && p >= -128 && p <= 127 {
				r.Priority = p
			}
			if b.resources == nil {
				b.resources = map[string]Resource{}
			}
			if _, ok := b.resources[j.resource]; ok || len(b.resources) < maxResources {
				if old, ok := b.resources[j.resource]; ok {
					r.Since = old.Since
				}
				r.Show, r.Status = strings.Clone(r.Show), strings.Clone(r.Status)
				if !ok {
					j.resource = strings.Clone(j.resource)
				}
				b.resources[j.resource] = r
				evs = append(evs, Presence{JID: bare + "/" + j.resource, Available: true, Show: r.Show, Status: r.Status, Priority: r.Priority})
			}
		}
		online := len(b.resources) > 0
		c.mu.Unlock()
		for _, ev := range evs {
			ev := ev.(Presence)
			ev.Online = online
			if !c.q.push(s.ctx.Done(), ev) {
				return
			}
		}
	}
}

// AddBuddy makes jid a buddy at run time: roster entry and presence
// subscription (with autoregister) and owner of both nodes. While
// disconnected it is done at the next connect.
func (c *Client) AddBuddy(ctx context.Context, jidStr string) error {
	bare := bareOf(jidStr)
	if bare == "" || !strings.Contains(bare, "@") {
		return fmt.Errorf("add buddy %q: not a JID", jidStr)
	}
	if bare == c.s.bare {
		return fmt.Errorf("add buddy %s: that is this account", bare)
	}
	c.mu.Lock()
	b := c.buddies[bare]
	if b == nil {
		b = &buddy{}
		c.buddies[bare] = b
	}
	if b.wanted {
		c.mu.Unlock()
		return nil
	}
	b.wanted = true
	c.affDue[bare] = true
	s := c.sess
	needAdd := c.s.AutoRegister && !b.inRoster
	needSub := c.s.AutoRegister && b.subscription != "to" && b.subscription != "both" && b.ask != "subscribe"
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	var errs []error
	if needAdd {
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare}}); err != nil {
			errs = append(errs, fmt.Errorf("roster add: %w", err))
		}
	}
	if needSub {
		if err := s.send(presenceTo(bare, "subscribe")); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.setAffiliation(ctx, s, bare, "owner"); err != nil {
		errs = append(errs, err)
	} else {
		c.mu.Lock()
		delete(c.affDue, bare)
		c.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("add buddy %s: %w", bare, err)
	}
	return nil
}

// RemoveBuddy stops treating jid as a buddy: its roster entry goes, and its
// owner affiliation on both nodes is removed.
func (c *Client) RemoveBuddy(ctx context.Context, jidStr string) error {
	bare := bareOf(jidStr)
	if bare == "" {
		return fmt.Errorf("remove buddy %q: not a JID", jidStr)
	}
	c.mu.Lock()
	b := c.buddies[bare]
	if b == nil || !b.wanted {
		c.mu.Unlock()
		return nil
	}
	b.wanted, b.resources = false, nil
	delete(c.affDue, bare)
	inRoster := b.inRoster
	if !inRoster {
		delete(c.buddies, bare)
	}
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	var errs []error
	if inRoster {
		if _, err := s.iq(ctx, "set", "", &rosterSet{Item: stanza.RosterItem{Jid: bare, Subscription: "remove"}}); err != nil {
			errs = append(errs, fmt.Errorf("roster remove: %w", err))
		}
	}
	if err := c.setAffiliation(ctx, s, bare, "none"); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove buddy %s: %w", bare, err)
	}
	return nil
}

// setAffiliation sets bare's affiliation on both nodes (the collections in
// XEP-0248 mode).
func (c *Client) setAffiliation(ctx context.Context, s *session, bare, aff string) error {
	var errs []error
	for _, node := range []string{NodeDevices, NodeMailboxes} {
		if aff == "none" {
			// Prosody refuses (forbidden, though it stores the change) to
			// drop the affiliation of a JID still subscribed to a
			// whitelist node; an owner may unsubscribe it first.
			_, _ = s.iq(ctx, "set", c.s.Service, unsubscribeRequest(node, bare))
		}
		if _, err := s.iq(ctx, "set", c.s.Service, affiliationRequest(node, bare, aff)); err != nil {
			errs = append(errs, fmt.Errorf("affiliation %s on %s: %w", aff, node, err))
		}
	}
	return errors.Join(errs...)
}

// applyDueAffiliations makes the buddies added while disconnected owners.
func (c *Client) applyDueAffiliations(ctx context.Context, s *session) {
	c.mu.Lock()
	var due []string
	for bare := range c.affDue {
		due = append(due, bare)
	}
	c.mu.Unlock()
	sort.Strings(due)
	for _, bare := range due {
		if err := c.setAffiliation(ctx, s, bare, "owner"); err != nil {
			c.s.log.Warn("could not make buddy an owner of the nodes", "buddy", bare, "err", err)
			continue
		}
		c.mu.Lock()
		delete(c.affDue, bare)
		c.mu.Unlock()
	}
}

// sameJID compares two JIDs, the domain and local part case-insensitively.
func sameJID(a, b string) bool {
	ja, err1 := parseJID(a)
	jb, err2 := parseJID(b)
	return err1 == nil && err2 == nil && ja == jb
}

func xmlName(space, local string) xml.Name { return xml.Name{Space: space, Local: local} }
