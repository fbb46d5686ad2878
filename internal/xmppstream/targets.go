package xmppstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/busylamp/busylamp/internal/jid"
)

// DefaultPort is the xmpp-client port (RFC 6120 §14.7) used when neither
// the server list nor DNS names one.
const DefaultPort = 5222

// MaxTargets bounds the targets of one resolution: a server list, or what
// the SRV records name.
const MaxTargets = jid.MaxServers

// lookupTimeout bounds the DNS lookups of one resolution.
const lookupTimeout = 10 * time.Second

// ErrNoService is in the chain of Resolve's error when DNS says the
// domain offers no XMPP client service (an SRV target of ".", RFC 2782).
var ErrNoService = errors.New("the domain offers no XMPP client service")

// Target is one place to connect to.
type Target struct {
	Addr string // host:port to dial
	// DirectTLS is XEP-0368: TLS at once after the TCP connect (ALPN
	// xmpp-client), no STARTTLS.
	DirectTLS bool
	// Via says how the target was found: "serverhost", an SRV record's
	// name, or the A/AAAA fallback.
	Via string
}

// String is the address, marked when it is direct TLS.
func (t Target) String() string {
	if t.DirectTLS {
		return t.Addr + " (direct TLS)"
	}
	return t.Addr
}

// Resolve returns where cfg.Addr says to connect, most preferred first:
// the servers listed, in order (a port missing from an entry is 5222);
// or, when cfg.Addr is a single host name without a port, what DNS says
// (RFC 6120 §3.2.1): the _xmpp-client._tcp SRV records and, with UseTLS,
// the _xmpps-client._tcp ones (XEP-0368), mixed into one order by
// priority and weight (RFC 2782); the name itself at port 5222 when there
// are no records. Every connect resolves again: DNS may have changed. At
// most MaxTargets are returned.
func Resolve(ctx context.Context, cfg Config) ([]Target, error) {
	return resolve(ctx, cfg, rand.N[int])
}

// resolve is Resolve with the randomness of the weighted order given
// (tests): intn(n) is uniform in [0, n).
func resolve(ctx context.Context, cfg Config, intn func(int) int) ([]Target, error) {
	hs, err := jid.SplitServers(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", cfg.Addr, err)
	}
	if len(hs) == 1 && hs[0].Port == 0 && !hs[0].IsIP() {
		return lookupSRV(ctx, cfg, strings.TrimSuffix(hs[0].Host, "."), intn)
	}
	ts := make([]Target, 0, len(hs))
	for _, h := range hs {
		if h.Port == 0 {
			h.Port = DefaultPort
		}
		ts = append(ts, Target{Addr: h.String(), Via: "serverhost"})
	}
	return ts, nil
}

// srvRecord is one SRV record and the kind of connection it asks for.
type srvRecord struct {
	net.SRV
	direct bool
	via    string
}

func lookupSRV(parent context.Context, cfg Config, name string, intn func(int) int) ([]Target, error) {
	ctx, cancel := context.WithTimeout(parent, lookupTimeout)
	defer cancel()
	r := cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	plain, plainDot, plainErr := lookupService(ctx, r, "xmpp-client", name, false)
	var direct []srvRecord
	var directDot bool
	var directErr error
	if cfg.UseTLS {
		direct, directDot, directErr = lookupService(ctx, r, "xmpps-client", name, true)
	}
	// Only our own end stops here: a lookup that timed out falls back.
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("SRV lookup for %s: %w", name, errors.Join(plainErr, directErr, err))
	}
	// A "." for xmpps-client only says there is no direct TLS (XEP-0368
	// §5); one for xmpp-client says there is no service, unless direct
	// TLS is offered.
	if plainDot && len(direct) == 0 {
		return nil, fmt.Errorf("_xmpp-client._tcp.%s: %w (its SRV target is \".\")", name, ErrNoService)
	}
	recs := append(plain, direct...)
	if len(recs) == 0 && directDot {
		// XEP-0368 §5: the domain uses SRV records, so no A/AAAA fallback.
		return nil, fmt.Errorf("%s: %w (no _xmpp-client._tcp records, and _xmpps-client._tcp's target is \".\")", name, ErrNoService)
	}
	if len(recs) == 0 {
		// No records (or no answer): RFC 6120 §3.2.2's fallback.
		via := "A/AAAA of " + name + " (no SRV records)"
		if plainErr != nil && !isNotFound(plainErr) {
			via = "A/AAAA of " + name + " (SRV lookup failed)"
			if cfg.Logger != nil {
				cfg.Logger.Warn("SRV lookup failed; trying the name itself", "name", name, "err", plainErr)
			}
		}
		return []Target{{Addr: net.JoinHostPort(name, strconv.Itoa(DefaultPort)), Via: via}}, nil
	}
	ordered := orderSRV(recs, intn)
	if len(ordered) > MaxTargets {
		ordered = ordered[:MaxTargets]
	}
	ts := make([]Target, len(ordered))
	for i, rec := range ordered {
		ts[i] = Target{Addr: net.JoinHostPort(strings.TrimSuffix(rec.Target, "."), strconv.Itoa(int(rec.Port))),
			DirectTLS: rec.direct, Via: rec.via}
	}
	return ts, nil
}

// maxRecords bounds the records of one lookup that are kept.
const maxRecords = 4 * MaxTargets

// lookupService asks for _service._tcp.name; dot reports a single "."
// target (the service is not offered).
func lookupService(ctx context.Context, r *net.Resolver, service, name string, direct bool) (recs []srvRecord, dot bool, err error) {
	_, srvs, err := r.LookupSRV(ctx, service, "tcp", name)
	via := "SRV _" + service + "._tcp." + name
	for _, s := range srvs {
		if s == nil {
			continue
		}
		if s.Target == "." || s.Target == "" {
			if len(srvs) == 1 {
				return nil, true, nil
			}
			continue
		}
		if len(recs) < maxRecords {
			recs = append(recs, srvRecord{SRV: *s, direct: direct, via: via})
		}
	}
	// Records that were read are used even when others were malformed.
	if len(recs) > 0 {
		err = nil
	}
	return recs, false, err
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// orderSRV is RFC 2782's order: by priority, lowest first; within one
// priority, a weighted random draw, one record at a time (weight-0
// records first in the running sum, so they come last but for luck).
func orderSRV(recs []srvRecord, intn func(int) int) []srvRecord {
	recs = slices.Clone(recs)
	slices.SortStableFunc(recs, func(a, b srvRecord) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(min(a.Weight, 1), min(b.Weight, 1)); c != 0 {
			return c // weight 0 first
		}
		// Else any order (the draw decides); a fixed one, as the
		// resolver shuffles.
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port), cmp.Compare(b.Weight, a.Weight))
	})
	out := make([]srvRecord, 0, len(recs))
	for len(recs) > 0 {
		j := 1
		for j < len(recs) && recs[j].Priority == recs[0].Priority {
			j++
		}
		group := recs[:j]
		for len(group) > 0 {
			sum := 0
			for _, r := range group {
				sum += int(r.Weight)
			}
			pick := intn(sum + 1)
			k, run := 0, 0
			for k = range group {
				run += int(group[k].Weight)
				if run >= pick {
					break
				}
			}
			out = append(out, group[k])
			group = slices.Delete(group, k, k+1)
		}
		recs = recs[j:]
	}
	return out
}

// probeTimeout bounds one Probe.
const probeTimeout = 5 * time.Second

// Probe checks that t serves client streams for the account's domain:
// the TCP connect, direct TLS for such a target, the stream header and
// the features, within 5 s; no authentication, so it costs the server
// next to nothing. The stream is closed at once.
func Probe(ctx context.Context, cfg Config, t Target) error {
	cfg, j, err := cfg.check()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	c, err := dial(ctx, t.Addr, cfg.ConnectTimeout, cfg.Resolver, cfg.Logger, nil)
	if err != nil {
		return err
	}
	defer c.close()
	dl, _ := ctx.Deadline()
	_ = c.raw.SetDeadline(dl)
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	n := &negotiation{Config: cfg, j: j, addr: t.Addr, probe: true}
	if t.DirectTLS {
		if err := n.directTLS(c); err != nil {
			return err
		}
	}
	_, err = n.restart(c)
	return err
}
