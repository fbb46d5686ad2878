package pubsub

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/internal/xmppstream"
)

// Finding the PubSub service (XEP-0030) when pubsub_node is not set, and
// checking the service, configured or found, at every connect.

// Bounds on discovery: a domain lists its services (a handful on real
// servers); past maxDiscoItems the rest are not looked at, and at most
// discoInFlight disco#info requests are unanswered at once.
const (
	maxDiscoItems  = 64
	discoInFlight  = 4
	maxFeatures    = 1024 // features read of one disco#info answer
	maxIdentities  = 64   // identities read of one disco#info answer
	featurePrefix  = nsPubSub + "#"
	maxFeatureName = 256
)

// ErrNoService is the cause (wrapped) of a session that found no PubSub
// service on the account's domain.
var ErrNoService = errors.New("no PubSub service found")

// baseFeatures are the XEP-0060 section 10 features busylamp uses in
// either mode: create and configure nodes (createRequest), publish (with
// publish-options for a state that is not cachable, as Asterisk sends),
// subscribe and check the subscriptions, fetch items (by id too), keep
// them, make the buddies owners, retract before overwriting (ejabberd's
// rule), and the purge and delete commands. access-whitelist is left
// out on purpose: Prosody 0.12 does not advertise it, and honours the
// whitelist access model busylamp's nodes are created with.
var baseFeatures = []string{
	"create-nodes", "create-and-configure", "config-node", "publish", "publish-options",
	"subscribe", "retrieve-subscriptions", "retrieve-items", "item-ids", "persistent-items",
	"modify-affiliations", "delete-items", "purge-nodes", "delete-nodes",
}

// collectionFeatures are the extra ones of XEP-0248 mode. The subscribe
// options form is sent too, but subscription-options is not asked for:
// ejabberd 23.01 does not advertise it, and takes the form.
var collectionFeatures = []string{"collections"}

// serviceInfo is what one disco#info answer says, bounded.
type serviceInfo struct {
	pubsubService bool // an identity category="pubsub" type="service"
	identities    []string
	features      map[string]bool
}

// parseServiceInfo reads a disco#info result; identities and features
// past the bounds, and malformed ones, are ignored.
func parseServiceInfo(res *elem) serviceInfo {
	info := serviceInfo{features: map[string]bool{}}
	q := res.Child(nsDiscoInfo, "query")
	if q == nil {
		return info
	}
	n := 0
	for i := range q.Nodes {
		c := &q.Nodes[i]
		if c.XMLName.Space != nsDiscoInfo {
			continue
		}
		switch c.XMLName.Local {
		case "identity":
			if n >= maxIdentities {
				continue
			}
			n++
			cat, typ := c.Attr("category"), c.Attr("type")
			if cat == "pubsub" && typ == "service" {
				info.pubsubService = true
			}
			if cat != "" && len(cat)+len(typ) < 128 && len(info.identities) < 8 {
				info.identities = append(info.identities, strings.Clone(cat+"/"+typ))
			}
		case "feature":
			if v := c.Attr("var"); v != "" && len(v) <= maxFeatureName && len(info.features) < maxFeatures {
				info.features[strings.Clone(v)] = true
			}
		}
	}
	return info
}

// parseDiscoItems reads a disco#items result of domain: the JIDs of the
// entities it lists, in the server's order, at most maxDiscoItems of
// them. Items that name a node (not an entity), JIDs that do not parse,
// that are not on a domain of their own (an account, a resource), the
// domain itself and repeats are left out; dropped counts everything left
// out, the items past the bound included.
func parseDiscoItems(res *elem, domain string) (jids []string, dropped int) {
	seen := map[string]bool{}
	for _, it := range res.Child(nsDiscoItems, "query").Children(nsDiscoItems, "item") {
		if len(jids) >= maxDiscoItems {
			dropped++
			continue
		}
		j, err := jid.Parse(it.Attr("jid"))
		switch {
		case err != nil, j.Local != "", j.Resource != "", it.HasAttr("node"),
			strings.EqualFold(j.Domain, domain), seen[j.Domain]:
			dropped++
			continue
		}
		seen[j.Domain] = true
		jids = append(jids, j.Domain)
	}
	return jids, dropped
}

// missingFeatures lists the features busylamp uses that info does not
// advertise, short (pubsub#collections), in baseFeatures' order.
func missingFeatures(info serviceInfo, collections bool) []string {
	want := baseFeatures
	if collections {
		want = append(append([]string(nil), baseFeatures...), collectionFeatures...)
	}
	var out []string
	for _, f := range want {
		if !info.features[featurePrefix+f] {
			out = append(out, "pubsub#"+f)
		}
	}
	return out
}

// service is the PubSub service of the session: the configured one, or
// the one discovered at its setup.
func (s *session) service() string {
	if p := s.svc.Load(); p != nil {
		return *p
	}
	return s.cl.s.Service
}

// resolveService finds the session's service (discovery when none is
// configured), checks it (verifyService) and puts it in the status.
func (c *Client) resolveService(ctx context.Context, s *session) error {
	svc := c.s.Service
	if svc == "" {
		found, err := c.discoverService(ctx, s)
		if err != nil {
			return err
		}
		svc = found
		s.svc.Store(&svc)
	}
	missing, err := c.verifyService(ctx, s, svc)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.status.Service, c.status.Missing = svc, missing
	c.mu.Unlock()
	return nil
}

// discoverService asks the account's domain for its items and each of
// them for its identities (a few at a time), and returns the first, in
// the server's order, that is a PubSub service (not the PEP service of
// the accounts). Others found are logged.
func (c *Client) discoverService(ctx context.Context, s *session) (string, error) {
	domain := c.s.domain
	res, err := s.iq(ctx, "get", domain, &discoQuery{XMLName: xmlName(nsDiscoItems, "query")})
	if err != nil {
		return "", fmt.Errorf("find the PubSub service: disco#items of %s: %w", domain, err)
	}
	items, dropped := parseDiscoItems(res, domain)
	if dropped > 0 {
		c.s.log.Info("PubSub discovery: items of the domain left out (malformed, repeated, or past the bound)",
			"domain", domain, "left_out", dropped, "bound", maxDiscoItems)
	}
	var found []string
	for start := 0; start < len(items); start += discoInFlight {
		batch := items[start:min(start+discoInFlight, len(items))]
		calls := make([]*xmppstream.Call, len(batch))
		for i, j := range batch {
			if calls[i], err = s.sendIQ("get", j, &discoQuery{XMLName: xmlName(nsDiscoInfo, "query")}); err != nil {
				return "", fmt.Errorf("find the PubSub service: disco#info of %s: %w", j, err)
			}
		}
		for i, call := range calls {
			res, err := s.wait(ctx, call)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrNotConnected) {
					return "", fmt.Errorf("find the PubSub service: disco#info of %s: %w", batch[i], err)
				}
				c.s.log.Debug("PubSub discovery: an item did not answer disco#info", "item", batch[i], "err", err)
				continue
			}
			if parseServiceInfo(res).pubsubService {
				found = append(found, batch[i])
			}
		}
	}
	if len(found) == 0 {
		return "", fmt.Errorf("%w at %s (looked at %d items): set pubsub_node", ErrNoService, domain, len(items))
	}
	if len(found) > 1 {
		c.s.log.Warn("several PubSub services found; using the first (set pubsub_node to choose)",
			"service", found[0], "others", strings.Join(found[1:], ","))
	} else {
		c.s.log.Info("PubSub service discovered", "service", found[0], "domain", domain)
	}
	return found[0], nil
}

// ServiceError says that the PubSub service (pubsub_node, or the one
// discovered) cannot be used: it does not answer disco#info, or it is no
// PubSub service.
type ServiceError struct {
	Service    string
	Identities []string // what it says it is, when it answered
	Err        error    // the error answer, when it did not
}

func (e *ServiceError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("PubSub service %s: disco#info: %v: not a reachable PubSub service; check pubsub_node", e.Service, e.Err)
	}
	what := "no identity"
	if len(e.Identities) > 0 {
		what = "identity " + strings.Join(e.Identities, ", ")
	}
	return fmt.Sprintf("PubSub service %s is not a PubSub service (%s, want pubsub/service); check pubsub_node", e.Service, what)
}

func (e *ServiceError) Unwrap() error { return e.Err }

// verifyService asks svc what it is and which features it has: it must
// be a PubSub service; what busylamp uses and it does not advertise is
// returned and logged, but no reason to stop (servers under-advertise).
func (c *Client) verifyService(ctx context.Context, s *session, svc string) ([]string, error) {
	res, err := s.iq(ctx, "get", svc, &discoQuery{XMLName: xmlName(nsDiscoInfo, "query")})
	var se *StanzaError
	if errors.As(err, &se) {
		return nil, &ServiceError{Service: svc, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("check the PubSub service %s: disco#info: %w", svc, err)
	}
	info := parseServiceInfo(res)
	if !info.pubsubService {
		return nil, &ServiceError{Service: svc, Identities: info.identities}
	}
	missing := missingFeatures(info, c.s.CollectionNodes)
	if len(missing) > 0 {
		c.s.log.Warn("the PubSub service does not advertise features busylamp uses; going on (servers often under-advertise)",
			"service", svc, "missing", strings.Join(missing, ","))
	}
	return missing, nil
}
