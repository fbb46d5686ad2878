package manager

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the guard's clock in tests: bans pass without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// guardConfig is testConfig with the guard's defaults and a fake clock.
func guardConfig(clk *fakeClock) Config {
	cfg := testConfig()
	d := DefaultConfig()
	cfg.LoginBackoff, cfg.MaxLoginBackoff = d.LoginBackoff, d.MaxLoginBackoff
	cfg.BanAfter, cfg.GlobalFailedLogins = d.BanAfter, d.GlobalFailedLogins
	cfg.Now = clk.Now
	return cfg
}

const badLogin = "Action: Login\r\nUsername: admin\r\nSecret: guess-%d\r\n\r\n"

func wrongLogin(rc *rawConn) {
	rc.t.Helper()
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: WRONGGUESS\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
}

// TestIdleFloodDoesNotLockOut: 2,000 idle connections that never log in
// take no logged-in place; while the last of them are still connected,
// sessions that logged in before go on and a good login succeeds at once.
func TestIdleFloodDoesNotLockOut(t *testing.T) {
	cfg := testConfig()
	ts := startServer(t, cfg, newFakeBackend())
	before := dialRaw(t, ts.addr)
	before.login()

	flood := make([]net.Conn, 0, 2000)
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	for range 2000 {
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	// The last ones are still held by the server, up to the cap.
	waitFor(t, "the flood accepted", func() bool {
		return ts.Stats().UnauthDropped >= 2000-uint64(cfg.MaxUnauthSessions)
	})
	ts.mu.Lock()
	unauth := len(ts.unauth)
	ts.mu.Unlock()
	if unauth != cfg.MaxUnauthSessions {
		t.Fatalf("%d unauthenticated sessions, want the cap %d", unauth, cfg.MaxUnauthSessions)
	}
	// Dropped sessions' goroutines end at once.
	waitFor(t, "the dropped sessions gone", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return len(ts.sessions) <= cfg.MaxUnauthSessions+1
	})
	before.send("Action: Ping\r\n\r\n")
	before.expectRE(`^Response: Success\r\nPing: Pong\r\n`)

	rc := dialRaw(t, ts.addr)
	rc.login() // fails the test on any error or timeout

	// The last flood connection is still open on the server's side: the
	// login succeeded while the flood was connected.
	last := &rawConn{t: t, c: flood[len(flood)-1], r: newBufioReader(flood[len(flood)-1])}
	if g := last.line(); g != "Asterisk Call Manager/"+Version+"\r\n" {
		t.Fatalf("greeting = %q", g)
	}
	last.send("Action: Ping\r\n\r\n")
	last.expect("Response: Error\r\nMessage: Permission denied\r\n\r\n")

	// Dropping is logged, not once per connection.
	if n := strings.Count(ts.logs.String(), "dropped the oldest unauthenticated session"); n < 1 || n > 3 {
		t.Errorf("%d log lines for the dropped sessions, want 1 to 3", n)
	}
}

// TestFloodWhileLoggingIn: a connection that sent Login is dropped after
// the idle ones, so a login goes through a flood that is still arriving.
func TestFloodWhileLoggingIn(t *testing.T) {
	cfg := testConfig()
	cfg.MaxUnauthSessions = 4
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Challenge\r\nAuthType: MD5\r\nActionID: c\r\n\r\n")
	got := rc.expectRE(`^Response: Success\r\nActionID: c\r\nChallenge: \d+\r\n\r\n$`)
	challenge := strings.TrimSuffix(strings.SplitN(got, "Challenge: ", 2)[1], "\r\n\r\n")
	for range 40 { // ten times the cap, while rc is mid-login
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, "the flood accepted", func() bool { return ts.Stats().UnauthDropped >= 37 })
	rc.send("Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: " + md5hex(challenge+testSecret) + "\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
}

// TestBruteForceAcrossConnections: many connections from one address
// guessing at once get one check; the others are refused without one, and
// the good secret is refused too until the back-off has passed.
func TestBruteForceAcrossConnections(t *testing.T) {
	clk := newFakeClock()
	ts := startServer(t, guardConfig(clk), newFakeBackend())
	var conns []*rawConn
	for range 40 {
		conns = append(conns, dialRaw(t, ts.addr))
	}
	var wg sync.WaitGroup
	for i, rc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc.c.Write([]byte(strings.Replace(badLogin, "%d", string(rune('a'+i%26)), 1)))
		}()
	}
	wg.Wait()
	for _, rc := range conns {
		rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	}
	st := ts.Stats()
	if st.FailedLogins != 1 || st.RefusedLogins != 39 {
		t.Fatalf("stats %+v: want 1 guess checked, 39 refused", st)
	}

	// The right secret, too soon: refused without a check.
	conns[0].send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	conns[0].expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	clk.Advance(time.Second)
	conns[1].login()

	// A good login forgets the source's failures: the next failure waits
	// one second again, not two.
	wrongLogin(conns[2])
	clk.Advance(time.Second)
	conns[3].login()

	logs := ts.logs.String()
	if n := strings.Count(logs, "manager login refused"); n > 2 {
		t.Errorf("%d log lines for 39 refused logins: the log is not rate-limited", n)
	}
	if strings.Contains(logs, testSecret) || strings.Contains(logs, "WRONGGUESS") || strings.Contains(logs, "guess-") {
		t.Errorf("a secret was logged:\n%s", logs)
	}
}

// TestParallelGoodLogins: logins from one address at once all pass; the
// guard serialises their checks rather than refusing them.
func TestParallelGoodLogins(t *testing.T) {
	clk := newFakeClock()
	ts := startServer(t, guardConfig(clk), newFakeBackend())
	var conns []*rawConn
	for range 30 {
		conns = append(conns, dialRaw(t, ts.addr))
	}
	var wg sync.WaitGroup
	for _, rc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc.c.Write([]byte("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n"))
		}()
	}
	wg.Wait()
	for _, rc := range conns {
		rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	}
	if st := ts.Stats(); st.RefusedLogins != 0 || st.FailedLogins != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestBanGrowsAndEnds: BanAfter failures ban the source: its connections
// are refused at once; the ban ends after BanTime, and the next one lasts
// twice as long.
func TestBanGrowsAndEnds(t *testing.T) {
	clk := newFakeClock()
	cfg := guardConfig(clk)
	cfg.MaxFailedLogins = 100
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	backoff := time.Second
	for i := 1; i < cfg.BanAfter; i++ {
		wrongLogin(rc)
		clk.Advance(backoff)
		backoff = min(2*backoff, cfg.MaxLoginBackoff)
	}
	// The tenth failure bans, and closes the session.
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: WRONGGUESS\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	rc.expectClosed()
	if st := ts.Stats(); st.Bans != 1 || st.FailedLogins != uint64(cfg.BanAfter) {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(ts.logs.String(), "manager source banned") {
		t.Error("ban not logged")
	}

	expectRefused := func() {
		t.Helper()
		c, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := &rawConn{t: t, c: c, r: newBufioReader(c)}
		r.expect("Response: Error\r\nMessage: Too many failed logins; try again later\r\n\r\n")
		r.expectClosed()
	}
	expectRefused()
	clk.Advance(cfg.BanTime - time.Second)
	expectRefused()
	clk.Advance(time.Second)
	rc = dialRaw(t, ts.addr)
	for range cfg.BanAfter {
		wrongLogin(rc)
		clk.Advance(cfg.MaxLoginBackoff)
	}
	rc.expectClosed()
	clk.Advance(cfg.BanTime) // the second ban is twice as long
	expectRefused()
	clk.Advance(cfg.BanTime)
	rc = dialRaw(t, ts.addr)
	rc.login()
}

// TestLoginGuardGlobalAndBounded drives the guard directly with many
// source addresses: the global bucket stops guessing from many addresses
// and refills with time, a source that logged in before is not held back,
// and the per-source map stays within MaxSources.
func TestLoginGuardGlobalAndBounded(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultConfig()
	cfg.GlobalFailedLogins = 5
	cfg.MaxSources = 8
	g := newLoginGuard(cfg.withDefaults(), clk.Now)

	if g.admit("10.9.9.9") != admitted {
		t.Fatal("first login refused")
	}
	g.done("10.9.9.9", true) // the operator's address

	checked := 0
	for i := range 100 {
		src := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String()
		if g.admit(src) == admitted {
			checked++
			g.done(src, false)
		}
	}
	if checked != 5 {
		t.Fatalf("%d guesses checked from 100 addresses, want the global 5", checked)
	}
	if v := g.admit("10.1.1.1"); v != overGlobal {
		t.Fatalf("new address with the bucket empty: %v", v)
	}
	if v := g.admit("10.9.9.9"); v != admitted {
		t.Fatalf("the operator's address: %v", v)
	}
	g.done("10.9.9.9", true)
	clk.Advance(12 * time.Second) // a minute refills 5: 12 s refills 1
	if v := g.admit("10.1.1.1"); v != admitted {
		t.Fatalf("after refill: %v", v)
	}
	g.done("10.1.1.1", false)
	if s, tr := g.size(); s > cfg.MaxSources || tr != 1 {
		t.Fatalf("guard holds %d sources and %d trusted: want at most %d and 1", s, tr, cfg.MaxSources)
	}
	clk.Advance(cfg.withDefaults().ForgetAfter + time.Minute)
	g.admit("10.2.2.2")
	g.done("10.2.2.2", true)
	for i := range 20 {
		g.add(netip.AddrFrom4([4]byte{10, 3, 0, byte(i)}).String(), clk.Now())
	}
	if s, _ := g.size(); s > cfg.MaxSources {
		t.Fatalf("guard holds %d sources, want at most %d", s, cfg.MaxSources)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5038":                   "192.0.2.1",
		"[::ffff:192.0.2.1]:5038":          "192.0.2.1",
		"[2001:db8:1:2:3:4:5:6]:5038":      "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:4:5:6]:1":      "2001:db8:1:2::/64",
		"[fe80::1%eth0]:5038":              "fe80::/64",
		"[2001:db8:1:3:3:4:5:6]:5038":      "2001:db8:1:3::/64",
		"127.0.0.1:1":                      "127.0.0.1",
		"[::1]:1":                          "::/64",
		"[2001:db8:ffff:ffff:ffff::1]:443": "2001:db8:ffff:ffff::/64",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceKey(a); got != want {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestACLPermits(t *testing.T) {
	p := netip.MustParsePrefix
	acl := ACL{
		{Permit: false, Net: p("0.0.0.0/0")},
		{Permit: true, Net: p("10.0.0.0/8")},
		{Permit: false, Net: p("10.9.0.0/16")},
		{Permit: false, Net: p("::/0")},
		{Permit: true, Net: p("2001:db8::/32")},
	}
	for ip, want := range map[string]bool{
		"10.1.2.3":          true,
		"10.9.1.1":          false, // the last matching line decides
		"192.0.2.1":         false,
		"::ffff:10.1.2.3":   true, // an IPv4 line matches a mapped address
		"2001:db8::1":       true,
		"2001:db9::1":       false,
		"::ffff:192.0.2.10": false,
	} {
		if got := acl.Permits(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Permits(%s) = %v, want %v", ip, got, want)
		}
	}
	// No line matches: permitted, as in Asterisk; an IPv4 line does not
	// match IPv6.
	if !(ACL{{Permit: false, Net: p("0.0.0.0/0")}}).Permits(netip.MustParseAddr("2001:db8::1")) {
		t.Error("an IPv4 deny matched an IPv6 address")
	}
	if !(ACL{}).Permits(netip.MustParseAddr("192.0.2.1")) {
		t.Error("an empty ACL denies")
	}
}

// TestACLRefusesLogin: an address the ACL denies cannot log in even with
// the right secret, and is told no more than for a wrong one.
func TestACLRefusesLogin(t *testing.T) {
	cfg := testConfig()
	cfg.ACL = ACL{{Permit: false, Net: netip.MustParsePrefix("0.0.0.0/0")}, {Permit: true, Net: netip.MustParsePrefix("10.0.0.0/8")}}
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	wrongLogin(rc)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	if !strings.Contains(ts.logs.String(), `reason="address not permitted"`) {
		t.Errorf("ACL refusal not logged:\n%s", ts.logs.String())
	}

	cfg.ACL = append(cfg.ACL, ACLRule{Permit: true, Net: netip.MustParsePrefix("127.0.0.1/32")})
	ts = startServer(t, cfg, newFakeBackend())
	rc = dialRaw(t, ts.addr)
	rc.login()
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
