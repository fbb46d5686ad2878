// Package manager owns busylamp's AMI-style socket: a TCP server that
// speaks the Asterisk Manager Interface framing, so that operators' PBX
// scripts and existing AMI client libraries read the cluster-wide device
// states and MWI counts, and set this node's own, unchanged; the event
// fan-out to the sessions listening; and a small client for the CLI.
//
// The wire is Asterisk's: a greeting line "Asterisk Call Manager/<version>",
// then messages of "Key: Value" lines ended by an empty line, CRLF on output
// (a bare LF is accepted on input), header names without regard to case on
// input and with Asterisk's spelling on output, ActionID echoed on every
// response and every list event. Texts of responses and events are the ones
// Asterisk's main/manager.c, res/res_manager_devicestate.c,
// res/res_mwi_external_ami.c and main/manager_mwi.c send.
//
// Nothing a client sends can stop the agent: every read is bounded (line,
// message, headers), a malformed message is answered with an error and the
// session goes on, an oversized message or too many failed logins close the
// session, and a session that does not read its events is disconnected
// rather than allowed to slow the agent. Connections that have not logged
// in have a short deadline and a cap of their own (the oldest idle one is
// dropped for a new one), so they cannot take logged-in sessions' places;
// only Login, Challenge and Logoff are served before a login, as in
// Asterisk. Failed logins are throttled per source address and over all
// sources (guard.go), the account's permit/deny lines apply as Asterisk's
// do (acl.go), and the socket speaks TLS when configured.
package manager

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/mwi"
)

// Version is the AMI protocol version in the greeting: AMI_VERSION of
// Asterisk 20 (include/asterisk/manager.h). Clients only check the
// "Asterisk Call Manager/" prefix; some log or compare the number.
const Version = "9.0.0"

// Config is the socket's configuration. Zero fields take the defaults of
// DefaultConfig, so a Config with only the credentials set is valid.
type Config struct {
	// Username and Secret are the one manager account. The username is
	// compared without regard to case, as Asterisk does. With either
	// empty, every login fails.
	Username string
	Secret   string

	// MaxSessions bounds logged-in sessions; a login past it is refused.
	// Connections that have not logged in do not take these places.
	MaxSessions int
	// MaxUnauthSessions bounds connections that have not logged in yet
	// (Asterisk's authlimit). A new one past it drops the oldest of them,
	// preferring one that has not tried to log in, so that a flood of
	// idle connections cannot keep the operator out.
	MaxUnauthSessions int
	MaxMessage        int // bytes of one message; more closes the session
	MaxLine           int // bytes of one line; more is an error, the session goes on
	MaxHeaders        int // lines of one message
	MaxFailedLogins   int // failed logins that close the connection
	QueueLen          int // events waiting for one session before it is disconnected

	// AuthTimeout is how long a connection may stay without logging in
	// (Asterisk's authtimeout).
	AuthTimeout time.Duration
	// WriteTimeout bounds a write to a client that does not read.
	WriteTimeout time.Duration
	// FailedLoginDelay is waited before answering a failed login, as
	// Asterisk waits a second, to slow guessing on one connection.
	FailedLoginDelay time.Duration
	// CommandTimeout bounds Backend.Command.
	CommandTimeout time.Duration

	// Across connections (guard.go): per source address, the wait after
	// a failed login, doubling per failure up to MaxLoginBackoff; a ban
	// of BanTime (doubling per ban up to MaxBanTime) after BanAfter
	// failures; failures forgotten after ForgetAfter; at most MaxSources
	// addresses remembered. Over all sources, GlobalFailedLogins failed
	// logins a minute.
	LoginBackoff       time.Duration
	MaxLoginBackoff    time.Duration
	BanAfter           int
	BanTime            time.Duration
	MaxBanTime         time.Duration
	ForgetAfter        time.Duration
	MaxSources         int
	GlobalFailedLogins int

	// ACL is the account's permit/deny lines; empty permits every
	// address.
	ACL ACL
	// TLS, when set, makes the socket speak TLS (Serve wraps the
	// listener). Without it, a listener off loopback is warned about.
	TLS *tls.Config

	// Now is the clock of the login guard; nil is time.Now. For tests.
	Now func() time.Time

	// Hops, when set, is told when a Setvar was read and when a batch of
	// events starts to be written (make bench's per-hop breakdown).
	Hops hop.Func
}

// DefaultConfig is the configuration without credentials.
func DefaultConfig() Config {
	return Config{
		MaxSessions:        256,
		MaxUnauthSessions:  50, // Asterisk's authlimit
		MaxMessage:         64 << 10,
		MaxLine:            8 << 10,
		MaxHeaders:         128, // Asterisk's AST_MAX_MANHEADERS
		MaxFailedLogins:    5,
		QueueLen:           4096,
		AuthTimeout:        10 * time.Second, // Asterisk's is 30; a client logs in at once
		WriteTimeout:       30 * time.Second,
		FailedLoginDelay:   time.Second,
		CommandTimeout:     30 * time.Second,
		LoginBackoff:       time.Second,
		MaxLoginBackoff:    time.Minute,
		BanAfter:           10,
		BanTime:            5 * time.Minute,
		MaxBanTime:         time.Hour,
		ForgetAfter:        15 * time.Minute,
		MaxSources:         4096,
		GlobalFailedLogins: 60,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.MaxSessions, d.MaxSessions)
	setInt(&c.MaxUnauthSessions, d.MaxUnauthSessions)
	setInt(&c.BanAfter, d.BanAfter)
	setInt(&c.MaxSources, d.MaxSources)
	setInt(&c.GlobalFailedLogins, d.GlobalFailedLogins)
	setDur(&c.LoginBackoff, d.LoginBackoff)
	setDur(&c.MaxLoginBackoff, d.MaxLoginBackoff)
	setDur(&c.BanTime, d.BanTime)
	setDur(&c.MaxBanTime, d.MaxBanTime)
	setDur(&c.ForgetAfter, d.ForgetAfter)
	c.MaxLoginBackoff = max(c.MaxLoginBackoff, c.LoginBackoff)
	c.MaxBanTime = max(c.MaxBanTime, c.BanTime)
	if c.Now == nil {
		c.Now = time.Now
	}
	setInt(&c.MaxMessage, d.MaxMessage)
	setInt(&c.MaxLine, d.MaxLine)
	setInt(&c.MaxHeaders, d.MaxHeaders)
	setInt(&c.MaxFailedLogins, d.MaxFailedLogins)
	setInt(&c.QueueLen, d.QueueLen)
	setDur(&c.AuthTimeout, d.AuthTimeout)
	setDur(&c.WriteTimeout, d.WriteTimeout)
	setDur(&c.CommandTimeout, d.CommandTimeout)
	if c.FailedLoginDelay < 0 {
		c.FailedLoginDelay = 0
	} else if c.FailedLoginDelay == 0 {
		c.FailedLoginDelay = d.FailedLoginDelay
	}
	if c.MaxLine > c.MaxMessage {
		c.MaxLine = c.MaxMessage
	}
	return c
}

// DeviceState is one device and its cluster-wide state, as the tables list
// them.
type DeviceState = devstate.DeviceState

// MailboxState is one mailbox and its cluster-wide counts, as the tables
// list them.
type MailboxState = mwi.MailboxState

// Backend is what the socket reads and drives: the agent. Calls come from
// the sessions' goroutines, concurrently; ctx ends when the session does.
type Backend interface {
	// DeviceState is a device's cluster-wide state; ok is false for a
	// device no server knows.
	DeviceState(ctx context.Context, device string) (s devstate.State, ok bool)
	// SetDeviceState sets this node's state of device and publishes it.
	SetDeviceState(ctx context.Context, device string, s devstate.State) error
	// Devices is a snapshot of every device, sorted by name.
	Devices(ctx context.Context) []DeviceState
	// Mailbox is a mailbox's cluster-wide counts.
	Mailbox(ctx context.Context, mailbox string) (c mwi.Counts, ok bool)
	// Mailboxes is a snapshot of every mailbox, sorted by name; the
	// socket applies MWIGet's and MWIDelete's /regex/ to it.
	Mailboxes(ctx context.Context) []MailboxState
	// SetMailbox sets this node's counts of mailbox and publishes them.
	SetMailbox(ctx context.Context, mailbox string, c mwi.Counts) error
	// DeleteMailbox removes this node's counts of mailbox; deleting an
	// unknown mailbox is not an error.
	DeleteMailbox(ctx context.Context, mailbox string) error
	// Command runs a CLI command line ("show buddies") and returns its
	// text. On error the text, if any, is still shown.
	Command(ctx context.Context, line string) (string, error)
	// Booted is closed once the cluster state is complete; FullyBooted is
	// sent to sessions after that. A nil channel never closes.
	Booted() <-chan struct{}
	// Reload re-reads the config and applies it; notes says what changed
	// and what needs a restart. On error nothing changed, and the error's
	// text is one problem per line (FILE:LINE: message).
	Reload(ctx context.Context) (notes []string, err error)
}

// Server is the AMI-style socket.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	started time.Time

	users      atomic.Pointer[users] // SetUsers replaces them (a reload)
	lastReload atomic.Int64          // unix ns of the last Reload that succeeded

	guard *loginGuard

	mu       sync.Mutex
	sessions map[*session]struct{}
	unauth   []*session // not logged in, oldest first
	loggedIn int        // sessions that took a logged-in place
	serving  bool

	stats      counters
	refusing   atomic.Int32 // refusals being written
	logFailed  logLimiter
	logDropped logLimiter
	logRefused logLimiter
	logTimeout logLimiter

	// listeners is the copy-on-write list of logged-in sessions with
	// events on, read by Emit without locks.
	listeners atomic.Pointer[[]*session]
	// emitMu gives all sessions the same order of events.
	emitMu sync.Mutex

	wg sync.WaitGroup
}

// New returns a server; Serve runs it.
func New(cfg Config, b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:        cfg,
		backend:    b,
		log:        log,
		started:    time.Now(),
		sessions:   make(map[*session]struct{}),
		guard:      newLoginGuard(cfg, cfg.Now),
		logFailed:  logLimiter{every: time.Second},
		logDropped: logLimiter{every: 10 * time.Second},
		logRefused: logLimiter{every: 10 * time.Second},
		logTimeout: logLimiter{every: 10 * time.Second},
	}
	empty := []*session{}
	s.listeners.Store(&empty)
	s.SetUsers(cfg.Username, cfg.Secret, cfg.ACL)
	return s
}

// users is the manager account and who may log in, as one value so that a
// reload changes them at once.
type users struct {
	username, secret     string
	userHash, secretHash [sha256.Size]byte
	acl                  ACL
}

// SetUsers replaces the manager account and the ACL (a reload). Sessions
// logged in stay; the next login is checked against the new ones.
func (s *Server) SetUsers(username, secret string, acl ACL) {
	s.users.Store(&users{
		username: username, secret: secret, acl: acl,
		userHash:   sha256.Sum256([]byte(strings.ToLower(username))),
		secretHash: sha256.Sum256([]byte(secret)),
	})
}

// Serve accepts sessions on ln until ctx is done, then closes ln and every
// session and returns once all their goroutines have ended. It returns nil
// after ctx is done, or the error that stopped accepting.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("manager: Serve called twice")
	}
	s.serving = true
	s.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	if u := s.users.Load(); u.username == "" || u.secret == "" {
		s.log.Warn("manager has no username or secret; every login will fail")
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	} else if ip, ok := addrIP(ln.Addr()); ok && !ip.IsLoopback() {
		s.log.Warn("MANAGER SOCKET IS NOT ON LOOPBACK AND NOT ENCRYPTED: the secret and every action cross the network in clear; set tls_cert and tls_key in [manager], or bindaddr = 127.0.0.1",
			"addr", ln.Addr().String())
	}
	s.log.Info("manager listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "acl_lines", len(s.users.Load().acl))

	err := s.accept(ctx, ln)

	cancel()
	ln.Close()
	s.mu.Lock()
	for ses := range s.sessions {
		ses.kill("shutdown")
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("manager: accept: %w", err)
			}
			// Out of descriptors and the like: wait and go on, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("manager accept failed", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = 0
		s.startSession(ctx, conn)
	}
}

// startSession starts a session for conn, unless its source is banned. Past
// MaxUnauthSessions the oldest connection not logged in is dropped, so
// that a flood of idle connections cannot keep a login out; logged-in
// sessions keep their places.
func (s *Server) startSession(ctx context.Context, conn net.Conn) {
	src := sourceKey(conn.RemoteAddr())
	if s.guard.isBanned(src) {
		s.refuse(conn, "Too many failed logins; try again later", "banned")
		return
	}
	s.mu.Lock()
	var dropped *session
	if len(s.unauth) >= s.cfg.MaxUnauthSessions {
		i := 0
		for j, u := range s.unauth {
			if !u.loginTried.Load() {
				i = j
				break
			}
		}
		dropped = s.unauth[i]
		s.unauth = slices.Delete(s.unauth, i, i+1)
	}
	ses := newSession(ctx, s, conn, src)
	s.sessions[ses] = struct{}{}
	s.unauth = append(s.unauth, ses)
	s.wg.Add(2)
	s.mu.Unlock()
	if dropped != nil {
		s.stats.unauthDropped.Add(1)
		dropped.kill("unauthenticated sessions over the limit")
		if ok, n := s.logDropped.allow(s.cfg.Now()); ok {
			s.log.Warn("manager dropped the oldest unauthenticated session",
				"remote", dropped.remote, "limit", s.cfg.MaxUnauthSessions, "dropped_total", s.stats.unauthDropped.Load(), "suppressed", n)
		}
	}
	go ses.writeLoop()
	go ses.readLoop()
}

// promote gives a session that passed the login check a logged-in place;
// false when there is none, or the session was dropped meanwhile.
func (s *Server) promote(ses *session) (ok bool, full bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.unauth, ses)
	if i < 0 {
		return false, false
	}
	if s.loggedIn >= s.cfg.MaxSessions {
		return false, true
	}
	s.unauth = slices.Delete(s.unauth, i, i+1)
	s.loggedIn++
	ses.counted = true
	return true, false
}

// refuse tells a connection why it is not served, and closes it. At most
// a few refusals are written at once; past that the connection is just
// closed, so that a flood costs no goroutines.
func (s *Server) refuse(conn net.Conn, msg, reason string) {
	s.stats.refused.Add(1)
	if ok, n := s.logRefused.allow(s.cfg.Now()); ok {
		s.log.Warn("manager session refused", "remote", conn.RemoteAddr().String(),
			"reason", reason, "refused_total", s.stats.refused.Load(), "suppressed", n)
	}
	if s.refusing.Add(1) > 16 {
		s.refusing.Add(-1)
		conn.Close()
		return
	}
	b := appendMessage(nil, Header{"Response", "Error"}, Header{"Message", msg})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.refusing.Add(-1)
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(b)
		conn.Close()
	}()
}

// remove forgets a session that has ended.
func (s *Server) remove(ses *session) {
	s.mu.Lock()
	delete(s.sessions, ses)
	if i := slices.Index(s.unauth, ses); i >= 0 {
		s.unauth = slices.Delete(s.unauth, i, i+1)
	}
	if ses.counted {
		s.loggedIn--
	}
	s.mu.Unlock()
	s.updateListeners()
}

// updateListeners rebuilds the list Emit walks, after a login, an event
// mask change or a session's end.
func (s *Server) updateListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	ls := make([]*session, 0, len(s.sessions))
	for ses := range s.sessions {
		if ses.loggedIn.Load() && ses.mask.Load() != 0 {
			ls = append(ls, ses)
		}
	}
	s.listeners.Store(&ls)
}

// Emit sends ev to every logged-in session whose event mask takes it. The
// event is rendered once and the bytes shared; each session gets them in
// Emit order through its own bounded queue. A session whose queue is full is
// disconnected. Emit never blocks on a client.
func (s *Server) Emit(ev Event) {
	if len(*s.listeners.Load()) == 0 {
		return
	}
	class := eventClass(ev.Privilege)
	b := ev.render()
	s.emitMu.Lock()
	for _, ses := range *s.listeners.Load() {
		if wants(ses.mask.Load(), class) {
			ses.push(b)
		}
	}
	s.emitMu.Unlock()
}

// CheckLogin says whether user and secret are the manager account's (as
// a Login would), in constant time: the web page's login off loopback.
func (s *Server) CheckLogin(user, secret string) bool { return s.checkLogin(user, secret) }

// checkLogin compares the credentials in constant time; hashing first keeps
// the lengths from showing.
func (s *Server) checkLogin(user, secret string) bool {
	us := s.users.Load()
	if us.username == "" || us.secret == "" {
		return false
	}
	u := sha256.Sum256([]byte(strings.ToLower(user)))
	p := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(u[:], us.userHash[:])&
		subtle.ConstantTimeCompare(p[:], us.secretHash[:]) == 1
}

// Stats counts what the socket refused, for logs and metrics.
type Stats struct {
	FailedLogins    uint64 // credentials checked and wrong, or the address not permitted
	RefusedLogins   uint64 // attempts refused without a check: throttled, banned, global limit
	Bans            uint64 // sources banned
	UnauthDropped   uint64 // connections dropped to make room (MaxUnauthSessions)
	RefusedSessions uint64 // connections refused at accept (banned sources)
}

type counters struct {
	failed, refusedLogins, bans, unauthDropped, refused atomic.Uint64
}

// Stats returns the counters since New.
func (s *Server) Stats() Stats {
	return Stats{
		FailedLogins:    s.stats.failed.Load(),
		RefusedLogins:   s.stats.refusedLogins.Load(),
		Bans:            s.stats.bans.Load(),
		UnauthDropped:   s.stats.unauthDropped.Load(),
		RefusedSessions: s.stats.refused.Load(),
	}
}
