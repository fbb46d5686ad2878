package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmppstream"
)

// ensureNode creates node (a leaf of coll in XEP-0248 mode, else the flat
// node) with every buddy as owner; an existing node is fine. It reports
// whether this server created it: when another did, that one may still be
// making the buddies owners. Concurrent publishes that all met
// item-not-found share one creation.
func (c *Client) ensureNode(ctx context.Context, s *session, node, coll string) (bool, error) {
	// Do runs the creation on the first caller's goroutine (no goroutine
	// of its own to outlive the session); the others wait for its result,
	// at most its IQ timeouts, or until the session ends.
	v, err, _ := c.creating.Do(node, func() (any, error) {
		return c.createShared(ctx, s, node, coll)
	})
	made, _ := v.(bool)
	return made, err
}

func (c *Client) createShared(ctx context.Context, s *session, node, coll string) (bool, error) {
	kind := flatNode
	switch {
	case c.s.CollectionNodes && node == coll:
		kind = collectionNode
	case c.s.CollectionNodes:
		kind = leafNode
	}
	err := c.create(ctx, s, node, kind, coll)
	if IsCondition(err, "conflict") {
		return false, nil // someone else was quicker
	}
	if err != nil {
		return false, err
	}
	c.s.log.Info("created PubSub node", "node", node, "service", s.service())
	if node == coll && c.sessionIs(s) {
		// A node that was deleted under a running session took the
		// subscription with it.
		if _, serr := s.iq(ctx, "set", s.service(), subscribeRequest(node, c.s.bare, c.s.CollectionNodes)); serr != nil {
			c.s.log.Warn("could not subscribe to the re-created node", "node", node, "err", serr)
		}
	}
	return true, nil
}

// again does do again while refused(err), after each of steps (jitter:
// servers that lost a race do not meet again), until the steps are used
// up or ctx or the session ends; it returns the last error.
func (c *Client) again(ctx context.Context, s *session, what string, err error, steps []time.Duration, refused func(error) bool, do func() error) error {
	for _, step := range steps {
		if !refused(err) {
			break
		}
		wait := jitter(step)
		c.s.log.Debug(what+": refused for now; asking again", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		case <-s.ctx.Done():
			t.Stop()
			return err
		}
		err = do()
	}
	return err
}

// ownerRetry is how long subscribe waits before asking again when a node
// another server just created does not yet let this account in: the
// creator makes the buddies owners right after the creation, an IQ later.
var ownerRetry = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 800 * time.Millisecond, 3200 * time.Millisecond}

// notOwnerYet reports a refusal of an account that is not (yet) an
// owner or publisher of the node.
func notOwnerYet(err error) bool {
	return IsCondition(err, "forbidden") || IsCondition(err, "not-authorized") ||
		IsCondition(err, "not-allowed") || IsCondition(err, "closed-node")
}

// createRetry is how long create waits before each new attempt of a
// creation the server refused for now (again).
var createRetry = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, 800 * time.Millisecond}

// createRefusedForNow reports a creation the server refused with an error
// that may not come again when asked again: type wait, or
// internal-server-error (ejabberd's lost transaction). A timeout is not one: the session itself
// is then in doubt.
func createRefusedForNow(err error) bool {
	var se *StanzaError
	if !errors.As(err, &se) {
		return false
	}
	return se.Type == "wait" || se.Condition == "internal-server-error" || se.Condition == "resource-constraint"
}

// create sends PROTOCOL.md's create + configure and then makes every
// buddy an owner.
func (c *Client) create(ctx context.Context, s *session, node string, kind nodeKind, coll string) error {
	req := createRequest(node, kind, coll)
	if c.s.NoItems {
		req = keepNoItems(req)
	}
	_, err := s.iq(ctx, "set", s.service(), req)
	// ejabberd answers all but one of the servers that create a node at
	// the same moment (a cluster starting) with internal-server-error
	// "Database failure" instead of conflict: its transaction lost. Asked
	// again a moment later it answers conflict, or creates the node when
	// no one did; ending the session instead would cost a reconnect and a
	// resync.
	err = c.again(ctx, s, "create node "+node, err, createRetry, createRefusedForNow, func() error {
		_, err := s.iq(ctx, "set", s.service(), req)
		return err
	})
	if err != nil {
		if IsCondition(err, "forbidden") || IsCondition(err, "not-allowed") || IsCondition(err, "not-authorized") {
			return &CreateForbiddenError{Node: node, Account: c.s.bare, Service: s.service(), Err: err}
		}
		return fmt.Errorf("create node %s on %s: %w", node, s.service(), err)
	}
	owners := c.roster.wanted()
	if len(owners) == 0 {
		return nil
	}
	if _, err := s.iq(ctx, "set", s.service(), ownersRequest(node, owners)); err != nil {
		return fmt.Errorf("node %s created, but making the buddies owners failed: %w", node, err)
	}
	return nil
}

// errNodeGone ends a session whose node was deleted under it.
var errNodeGone = errors.New("gone; reconnecting to create it and subscribe")

// errUnreachable: our server cannot reach the service's (checkLoop asks
// again soon); errServiceBack ends the session when it answers again.
var (
	errUnreachable = errors.New("PubSub service unreachable from our XMPP server")
	errServiceBack = errors.New("PubSub service reachable again; reconnecting to resync")
)

// checkSubscriptions makes sure this account is still subscribed to both
// nodes. A node deleted and created again (by an operator, or by another
// server after item-not-found) loses its subscriptions, and ejabberd does
// not notify the deletion; the session is then ended, so that the
// reconnect subscribes and resyncs.
func (c *Client) checkSubscriptions(ctx context.Context, s *session) error {
	for _, node := range []string{NodeDevices, NodeMailboxes} {
		res, err := s.iq(ctx, "get", s.service(), &psRequest{Subscriptions: &nodeRef{Node: node}})
		if IsCondition(err, "item-not-found") {
			return fmt.Errorf("node %s: %w", node, errNodeGone)
		}
		if remoteUnreachable(err) || (errors.Is(err, ErrTimeout) && c.remoteService(s.service())) {
			// A bounce (also one that did not name the service), or no
			// answer over a path that died without a word: what the
			// service sent us meanwhile may be lost.
			s.noteUnreachable(err)
			return fmt.Errorf("%w: %v", errUnreachable, err)
		}
		if err != nil {
			continue // a service that cannot tell: nothing to check
		}
		ok := false
		for _, sub := range res.Child(nsPubSub, "pubsub").Child("", "subscriptions").Children("", "subscription") {
			if jid.Equal(sub.Attr("jid"), c.s.bare) && sub.Attr("subscription") == "subscribed" &&
				(sub.Attr("node") == "" || sub.Attr("node") == node) {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("no longer subscribed to %s (node re-created?); reconnecting to subscribe and resync", node)
		}
	}
	c.checkPurged(ctx, s)
	return nil
}

// remoteService reports whether the service is, as far as names tell,
// on another server than this account (federation): neither its domain
// nor a name under it.
func (c *Client) remoteService(service string) bool {
	svc, dom := strings.ToLower(jid.Canonical(service)), strings.ToLower(c.s.domain)
	return dom != "" && svc != dom && !strings.HasSuffix(svc, "."+dom)
}

func (c *Client) setProbe(k pubKey) {
	c.probeMu.Lock()
	c.probe, c.hasProbe = k, true
	c.probeMu.Unlock()
}

// checkPurged looks for the last own item this session published (and
// the node keeps): gone, the node was purged (Asterisk's 'xmpp purge
// nodes') by a service that does not notify it, or another server's
// retraction before it overwrote the item (ejabberd; then the republish
// does no harm). It is reported as Purged, and with Config.OwnStates the
// own states are republished.
func (c *Client) checkPurged(ctx context.Context, s *session) {
	c.probeMu.Lock()
	k, ok := c.probe, c.hasProbe
	c.probeMu.Unlock()
	if !ok {
		return
	}
	coll := NodeDevices
	if k.mailbox {
		coll = NodeMailboxes
	}
	node := coll
	if c.s.CollectionNodes {
		node = k.name
	}
	res, err := s.iq(ctx, "get", s.service(), itemsByIDRequest(node, []string{k.name}))
	if err != nil && !IsCondition(err, "item-not-found") {
		return // a service that cannot tell
	}
	for _, it := range res.Child(nsPubSub, "pubsub").Child("", "items").Children("", "item") {
		if it.Attr("id") == k.name {
			return
		}
	}
	c.probeMu.Lock()
	if c.probe == k {
		c.hasProbe = false // until a publish is kept again
	}
	c.probeMu.Unlock()
	c.s.log.Warn("an own item is gone from the node (purged?); republishing own states", "node", node, "item", k.name)
	if c.q.push(s.ctx.Done(), Purged{Node: node, Kind: kindOfColl(coll)}) {
		c.republish()
	}
}

// subscribe does what Asterisk does at connect: unsubscribe, then
// subscribe the bare JID; a missing node is created first.
func (c *Client) subscribe(ctx context.Context, s *session, node string) error {
	_, _ = s.iq(ctx, "set", s.service(), unsubscribeRequest(node, c.s.bare))
	sub := func() error {
		_, err := s.iq(ctx, "set", s.service(), subscribeRequest(node, c.s.bare, c.s.CollectionNodes))
		return err
	}
	err := sub()
	created, made := false, false
	if IsCondition(err, "item-not-found") {
		var cerr error
		if made, cerr = c.ensureNode(ctx, s, node, node); cerr != nil {
			return cerr
		}
		created = true
		err = sub()
	}
	if !made {
		// Another server may have created it a moment ago (a cluster
		// starting) and not yet made this account an owner: the creator
		// does that an IQ after the creation.
		err = c.again(ctx, s, "subscribe to "+node, err, ownerRetry, notOwnerYet, sub)
	}
	if err != nil {
		if IsCondition(err, "forbidden") || IsCondition(err, "not-authorized") || IsCondition(err, "closed-node") {
			err = &PublishForbiddenError{Op: "subscribe to", Node: node, Account: c.s.bare, Service: s.service(), Err: err}
		}
		return fmt.Errorf("subscribe to %s: %w", node, err)
	}
	if !created {
		// The node may have been created by someone else, or auto-created
		// by ejabberd on a publish with its default configuration: make
		// sure every buddy is an owner (needs this account to be one).
		if owners := c.roster.wanted(); len(owners) > 0 {
			if _, err := s.iq(ctx, "set", s.service(), ownersRequest(node, owners)); err != nil {
				c.s.log.Info("could not make the buddies owners of the node (this account is no owner?)", "node", node, "err", err)
			}
		}
		// A node created before pubsub_persist_items = no (or by an
		// Asterisk node) is made to keep no items too.
		if c.s.NoItems {
			if _, err := s.iq(ctx, "set", s.service(), noItemsConfigRequest(node)); err != nil {
				c.s.log.Warn("could not make the node keep no items (pubsub_persist_items = no; this account is no owner?)", "node", node, "err", err)
			}
		}
	}
	return nil
}

// FetchItems returns the current items of node (device states and
// mailboxes, this server's own included; unknown payloads left out),
// paging with RSM where the service pages.
func (c *Client) FetchItems(ctx context.Context, node string) ([]DeviceItem, []MailboxItem, error) {
	s, err := c.session()
	if err != nil {
		return nil, nil, err
	}
	return c.fetchItems(ctx, s, node)
}

const (
	pageSize = 500
	maxPages = 2000
	// maxUnpaged is the most items a service that does not page sends
	// (max_items): at the largest item (a 256-byte id, escaped) it keeps
	// the answer under xmppstream's bound on a stanza (4 MiB).
	maxUnpaged = 3000
	// byIDMax is the most items asked for by id at once, when a page
	// was too large or the service does not page.
	byIDMax = 128
)

// fetch is one node's items being read.
type fetch struct {
	c       *Client
	s       *session
	node    string
	seen    map[string]bool
	devs    []DeviceItem
	mboxes  []MailboxItem
	skipped int // items that could not be read
}

func (f *fetch) add(items []*elem) {
	for _, it := range items {
		// A server that ignores RSM answers every page alike.
		id := it.Attr("id")
		if f.seen[id] {
			continue
		}
		f.seen[id] = true
		r := f.c.parse.parseItem(f.node, it, true)
		if r.dev != nil {
			f.devs = append(f.devs, *r.dev)
		} else if r.mbox != nil {
			f.mboxes = append(f.mboxes, *r.mbox)
		}
	}
}

// fetchItems reads the items of node in bounded pages (RSM where the
// service pages, else max_items). No item can keep the others out: a
// page too large for a stanza (xmppstream skips it) is read again item by
// item, by the ids the node lists (disco#items), and what still cannot be
// read is skipped and counted.
func (c *Client) fetchItems(ctx context.Context, s *session, node string) ([]DeviceItem, []MailboxItem, error) {
	f := &fetch{c: c, s: s, node: node, seen: map[string]bool{}}
	after := ""
	for page := 0; page < maxPages; page++ {
		res, err := s.iq(ctx, "get", s.service(), itemsRequest(node, pageSize, after))
		if errors.Is(err, xmppstream.ErrAnswerSkipped) {
			c.s.log.Warn("a page of PubSub items was too large for one stanza; reading the items by id, a few at a time",
				"node", node, "page", page)
			return f.byID(ctx)
		}
		if err != nil {
			return f.devs, f.mboxes, fmt.Errorf("items of %s: %w", node, err)
		}
		ps := res.Child(nsPubSub, "pubsub")
		items := ps.Child("", "items").Children("", "item")
		f.add(items)
		last := ""
		if set := ps.Child(nsRSM, "set"); set != nil {
			last = set.Child("", "last").Text()
		} else if page == 0 && len(items) >= maxUnpaged && !s.unpagedNoted.Swap(true) {
			// Reading the rest by id would be slow on Prosody's item
			// store, which looks each id up through the whole node.
			c.s.log.Info("the PubSub service does not page items (Prosody): read the newest of them only; "+
				"busylamp buddies send the rest of their states, an Asterisk node's other devices show when they change",
				"node", node, "items", len(items))
		}
		if last == "" || last == after || len(items) == 0 {
			break
		}
		after = last
	}
	return f.devs, f.mboxes, nil
}

// byID reads the items not read yet by id: byIDMax at a time while the
// answers fit in a stanza, fewer (down to one) when one does not; an item
// too large alone, or that the service refuses, is skipped.
func (f *fetch) byID(ctx context.Context) ([]DeviceItem, []MailboxItem, error) {
	c, s := f.c, f.s
	ids, err := c.itemIDs(ctx, s, f.node)
	if err != nil {
		return f.devs, f.mboxes, err
	}
	var todo []string
	for _, id := range ids {
		if !f.seen[id] {
			todo = append(todo, id)
		}
	}
	size := byIDMax
	for len(todo) > 0 && ctx.Err() == nil {
		batch := todo[:min(size, len(todo))]
		res, err := s.iq(ctx, "get", s.service(), itemsByIDRequest(f.node, batch))
		switch {
		case err == nil:
			f.add(res.Child(nsPubSub, "pubsub").Child("", "items").Children("", "item"))
			size = min(2*size, byIDMax)
		case errors.Is(err, xmppstream.ErrAnswerSkipped) && len(batch) > 1:
			size = max(1, len(batch)/8) // ask again for fewer
			continue
		case errors.Is(err, ErrNotConnected):
			return f.devs, f.mboxes, err
		default:
			for _, id := range batch {
				f.skip(id, err)
			}
		}
		todo = todo[len(batch):]
	}
	if f.skipped > 0 {
		c.s.log.Warn("PubSub items skipped: too large for one stanza, or refused", "node", f.node, "skipped", f.skipped)
	}
	return f.devs, f.mboxes, ctx.Err()
}

func (f *fetch) skip(id string, err error) {
	f.skipped++
	f.c.fetchSkipped.Add(1)
	if f.c.limit.allow("fetch-skip:" + f.node) {
		f.c.s.log.Warn("skipped a PubSub item", "node", f.node, "item", clip(id, 64), "err", err)
	}
}

// itemIDs lists the ids of node's items (disco#items on the node,
// XEP-0060 5.5: each item's name is an item id).
func (c *Client) itemIDs(ctx context.Context, s *session, node string) ([]string, error) {
	res, err := s.iq(ctx, "get", s.service(), &discoQuery{XMLName: xmlName(nsDiscoItems, "query"), Node: node})
	if err != nil {
		return nil, fmt.Errorf("list the items of %s: %w", node, err)
	}
	var out []string
	for _, it := range res.Child(nsDiscoItems, "query").Children("", "item") {
		if id := it.Attr("name"); id != "" && len(out) < maxListed {
			out = append(out, id)
		}
	}
	return out, nil
}

// fetchAll returns the items under a node: in flat mode its own items, in
// XEP-0248 mode those of every leaf the collection lists.
func (c *Client) fetchAll(ctx context.Context, s *session, node string) ([]DeviceItem, []MailboxItem, error) {
	if !c.s.CollectionNodes {
		return c.fetchItems(ctx, s, node)
	}
	leaves, err := c.listNodes(ctx, s, node)
	if err != nil {
		return nil, nil, err
	}
	var devs []DeviceItem
	var mboxes []MailboxItem
	for _, leaf := range leaves {
		c.learnLeaf(leaf, kindOfColl(node))
		d, m, err := c.fetchItems(ctx, s, leaf)
		if err != nil {
			c.s.log.Warn("fetching items of a leaf failed", "node", leaf, "err", err)
			continue
		}
		devs = append(devs, d...)
		mboxes = append(mboxes, m...)
	}
	return devs, mboxes, nil
}

// maxListed bounds the nodes one ListNodes returns.
const maxListed = 1 << 20

// ListNodes lists the nodes under parent ("" for the service's top level)
// with disco#items, following RSM pages where the service pages.
func (c *Client) ListNodes(ctx context.Context, parent string) ([]string, error) {
	s, err := c.session()
	if err != nil {
		return nil, err
	}
	return c.listNodes(ctx, s, parent)
}

func (c *Client) listNodes(ctx context.Context, s *session, parent string) ([]string, error) {
	res, err := s.iq(ctx, "get", s.service(), &discoQuery{XMLName: xmlName(nsDiscoItems, "query"), Node: parent})
	if err != nil {
		return nil, fmt.Errorf("list nodes of %s under %q: %w", s.service(), parent, err)
	}
	var out []string
	for _, it := range res.Child(nsDiscoItems, "query").Children("", "item") {
		if n := it.Attr("node"); n != "" && len(out) < maxListed {
			out = append(out, n)
		}
	}
	return out, nil
}

// CreateNode creates a flat node with PROTOCOL.md's configuration and every
// buddy as owner.
func (c *Client) CreateNode(ctx context.Context, node string) error {
	return c.createPublic(ctx, node, flatNode, "")
}

// CreateCollection creates a XEP-0248 collection node.
func (c *Client) CreateCollection(ctx context.Context, node string) error {
	return c.createPublic(ctx, node, collectionNode, "")
}

// CreateLeaf creates a XEP-0248 leaf node in collection.
func (c *Client) CreateLeaf(ctx context.Context, collection, node string) error {
	return c.createPublic(ctx, node, leafNode, collection)
}

func (c *Client) createPublic(ctx context.Context, node string, kind nodeKind, coll string) error {
	if err := checkName(node); err != nil {
		return fmt.Errorf("node name %q: %w", clip(node, 64), err)
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	return c.create(ctx, s, node, kind, coll)
}

// Purge removes every item of node (owner only).
func (c *Client) Purge(ctx context.Context, node string) error {
	s, err := c.session()
	if err != nil {
		return err
	}
	if _, err := s.iq(ctx, "set", s.service(), &psOwner{Purge: &nodeRef{Node: node}}); err != nil {
		return fmt.Errorf("purge %s: %w", node, err)
	}
	return nil
}

// DeleteNode deletes node (owner only). Deleting device_state or
// message_waiting makes every busylamp subscribed to it (this one too)
// reconnect, which creates the node afresh: in effect a reset.
func (c *Client) DeleteNode(ctx context.Context, node string) error {
	s, err := c.session()
	if err != nil {
		return err
	}
	if _, err := s.iq(ctx, "set", s.service(), &psOwner{Delete: &nodeRef{Node: node}}); err != nil {
		return fmt.Errorf("delete %s: %w", node, err)
	}
	return nil
}
