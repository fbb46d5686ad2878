package manager

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// The login guard slows password guessing across connections, where the
// per-session delay and failure limit cannot: an attacker with 200
// connections otherwise makes 200 guesses a second.
//
//   - Per source address (an IPv4 address, or an IPv6 /64, which one
//     host can fill): one credential check at a time (others wait for
//     it); after a failure no check before a delay that doubles with each
//     failure (LoginBackoff … MaxLoginBackoff); after BanAfter failures
//     the source is banned for BanTime, doubling with each ban up to
//     MaxBanTime. A source's failures are forgotten after ForgetAfter
//     without one, and at a good login.
//   - Over all sources: at most GlobalFailedLogins failed logins a minute
//     (a bucket that refills continuously); once it is empty, sources that
//     never logged in successfully are refused without a check, so that
//     many addresses together cannot guess faster. Sources that logged in
//     before (the operator's) are not held back by the global bucket.
//
// A refused attempt is answered like a failed one, without checking the
// credentials, so a refused guess learns nothing. Every map here is
// bounded: MaxSources entries of per-source state (the oldest forgotten
// first) and maxTrusted good sources.

// verdict is what the guard says about a login attempt.
type verdict uint8

const (
	admitted   verdict = iota // check the credentials
	throttled                 // too soon after this source's last failure
	banned                    // the source is banned
	overGlobal                // too many failed logins over all sources
)

func (v verdict) String() string {
	switch v {
	case admitted:
		return "admitted"
	case throttled:
		return "throttled"
	case banned:
		return "banned"
	}
	return "global limit"
}

const maxTrusted = 256

type sourceState struct {
	failures    int
	last        time.Time // the last failure or attempt
	next        time.Time // no check before this
	bannedUntil time.Time
	bans        int
	checking    bool
}

type loginGuard struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	cond     *sync.Cond // on mu: a check has ended
	sources  map[string]*sourceState
	trusted  map[string]time.Time // sources with a good login, and when
	tokens   float64
	refilled time.Time
}

func newLoginGuard(cfg Config, now func() time.Time) *loginGuard {
	g := &loginGuard{
		cfg:      cfg,
		now:      now,
		sources:  make(map[string]*sourceState),
		trusted:  make(map[string]time.Time),
		tokens:   float64(cfg.GlobalFailedLogins),
		refilled: now(),
	}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// sourceKey is the address the guard counts by: the IP of a TCP peer
// (IPv4-mapped IPv6 as IPv4), an IPv6 address's /64.
func sourceKey(a net.Addr) string {
	ip, ok := addrIP(a)
	if !ok {
		return a.String()
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// addrIP is the IP of a TCP (or UDP) address, unmapped.
func addrIP(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func (g *loginGuard) refill(now time.Time) {
	if limit := float64(g.cfg.GlobalFailedLogins); g.tokens < limit {
		g.tokens = min(limit, g.tokens+now.Sub(g.refilled).Minutes()*limit)
	}
	g.refilled = now
}

// isBanned reports whether src is banned now, for refusing its
// connections outright.
func (g *loginGuard) isBanned(src string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.sources[src]
	return st != nil && g.now().Before(st.bannedUntil)
}

// admit decides whether a login attempt from src may check credentials.
// An attempt that comes while another from the same source is being
// checked waits for that check (a hash compare: microseconds), so that
// parallel good logins all pass and parallel guesses get one check. When
// it is admitted, done must be called with the result.
func (g *loginGuard) admit(src string) verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		st := g.sources[src]
		if st != nil && st.checking {
			g.cond.Wait()
			continue
		}
		now := g.now()
		g.refill(now)
		if st != nil && !now.Before(st.bannedUntil) && now.Sub(st.last) > g.cfg.ForgetAfter {
			st.failures = 0
		}
		if st != nil {
			switch {
			case now.Before(st.bannedUntil):
				return banned
			case now.Before(st.next):
				return throttled
			}
		}
		_, good := g.trusted[src]
		if !good && g.tokens < 1 {
			return overGlobal
		}
		if st == nil {
			st = g.add(src, now)
		}
		st.checking = true
		st.last = now
		if !good {
			g.tokens-- // given back on success
		}
		return admitted
	}
}

// add makes room for and inserts a new source; g.mu is held.
func (g *loginGuard) add(src string, now time.Time) *sourceState {
	if len(g.sources) >= g.cfg.MaxSources {
		g.prune(now)
	}
	if len(g.sources) >= g.cfg.MaxSources {
		var oldest string
		var at time.Time
		for k, st := range g.sources {
			if st.checking {
				continue
			}
			if oldest == "" || st.last.Before(at) {
				oldest, at = k, st.last
			}
		}
		delete(g.sources, oldest)
	}
	st := &sourceState{}
	g.sources[src] = st
	return st
}

// prune forgets sources that have been quiet for ForgetAfter and are not
// banned; g.mu is held.
func (g *loginGuard) prune(now time.Time) {
	for k, st := range g.sources {
		if !st.checking && now.After(st.bannedUntil) && now.Sub(st.last) > g.cfg.ForgetAfter {
			delete(g.sources, k)
		}
	}
}

// done records the result of an admitted attempt. For a failure it says
// whether the source is now banned, for how long, and its failure count.
func (g *loginGuard) done(src string, ok bool) (banFor time.Duration, failures int) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.sources[src]
	if st == nil { // evicted meanwhile (MaxSources)
		st = g.add(src, now)
	}
	st.checking = false
	g.cond.Broadcast()
	_, good := g.trusted[src]
	if ok {
		delete(g.sources, src)
		if !good {
			g.tokens = min(float64(g.cfg.GlobalFailedLogins), g.tokens+1)
			if len(g.trusted) >= maxTrusted {
				var oldest string
				var at time.Time
				for k, t := range g.trusted {
					if oldest == "" || t.Before(at) {
						oldest, at = k, t
					}
				}
				delete(g.trusted, oldest)
			}
		}
		g.trusted[src] = now
		return 0, 0
	}
	st.failures++
	st.last = now
	backoff := g.cfg.LoginBackoff
	for i := 1; i < st.failures && backoff < g.cfg.MaxLoginBackoff; i++ {
		backoff *= 2
	}
	st.next = now.Add(min(backoff, g.cfg.MaxLoginBackoff))
	if st.failures >= g.cfg.BanAfter {
		banFor = g.cfg.BanTime
		for i := 0; i < st.bans && banFor < g.cfg.MaxBanTime; i++ {
			banFor *= 2
		}
		banFor = min(banFor, g.cfg.MaxBanTime)
		st.bans++
		st.failures = 0
		st.bannedUntil = now.Add(banFor)
		st.last = st.bannedUntil // forgotten only ForgetAfter past the ban
	}
	return banFor, st.failures
}

// size is how many sources the guard holds, for tests.
func (g *loginGuard) size() (sources, trusted int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sources), len(g.trusted)
}

// logLimiter lets one log line of a kind through per interval and counts
// the others, so that a flood is logged in a few lines, not a line each.
type logLimiter struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were held back
// since the last one logged.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return true, n
}
