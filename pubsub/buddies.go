package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/internal/jid"
)

// Buddies lists the configured buddies sorted by JID, with the resources
// their presence announced.
func (c *Client) Buddies() []Buddy { return c.roster.list() }

// AddBuddy makes jid a buddy at run time: roster entry and presence
// subscription (with autoregister) and owner of both nodes. While
// disconnected it is done at the next connect.
func (c *Client) AddBuddy(ctx context.Context, jidStr string) error {
	bare := jid.Bare(jidStr)
	if bare == "" || !strings.Contains(bare, "@") {
		return fmt.Errorf("add buddy %q: not a JID", jidStr)
	}
	if bare == c.s.bare {
		return fmt.Errorf("add buddy %s: that is this account", bare)
	}
	added, needAdd, needSub := c.roster.want(bare)
	if !added {
		return nil
	}
	s, err := c.session()
	if err != nil {
		return nil // done at the next connect
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
		c.roster.affDone(bare)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("add buddy %s: %w", bare, err)
	}
	return nil
}

// RemoveBuddy stops treating jid as a buddy: its roster entry goes, and its
// owner affiliation on both nodes is removed.
func (c *Client) RemoveBuddy(ctx context.Context, jidStr string) error {
	bare := jid.Bare(jidStr)
	if bare == "" {
		return fmt.Errorf("remove buddy %q: not a JID", jidStr)
	}
	removed, inRoster := c.roster.unwant(bare)
	if !removed {
		return nil
	}
	s, err := c.session()
	if err != nil {
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
			_, _ = s.iq(ctx, "set", s.service(), unsubscribeRequest(node, bare))
		}
		if _, err := s.iq(ctx, "set", s.service(), affiliationRequest(node, bare, aff)); err != nil {
			errs = append(errs, fmt.Errorf("affiliation %s on %s: %w", aff, node, err))
		}
	}
	return errors.Join(errs...)
}

// applyDueAffiliations makes the buddies added while disconnected owners.
func (c *Client) applyDueAffiliations(ctx context.Context, s *session) {
	for _, bare := range c.roster.due() {
		if err := c.setAffiliation(ctx, s, bare, "owner"); err != nil {
			c.s.log.Warn("could not make buddy an owner of the nodes", "buddy", bare, "err", err)
			continue
		}
		c.roster.affDone(bare)
	}
}
