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
// rather than allowed to slow the agent.
package manager

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/devstate"
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

	MaxSessions     int // connections at once, logged in or not
	MaxMessage      int // bytes of one message; more closes the session
	MaxLine         int // bytes of one line; more is an error, the session goes on
	MaxHeaders      int // lines of one message
	MaxFailedLogins int // failed logins that close the connection
	QueueLen        int // events waiting for one session before it is disconnected

	// AuthTimeout is how long a connection may stay without logging in.
	AuthTimeout time.Duration
	// WriteTimeout bounds a write to a client that does not read.
	WriteTimeout time.Duration
	// FailedLoginDelay is waited before answering a failed login, as
	// Asterisk waits a second, to slow guessing.
	FailedLoginDelay time.Duration
	// CommandTimeout bounds Backend.Command.
	CommandTimeout time.Duration
}

// DefaultConfig is the configuration without credentials.
func DefaultConfig() Config {
	return Config{
		MaxSessions:      256,
		MaxMessage:       64 << 10,
		MaxLine:          8 << 10,
		MaxHeaders:       128, // Asterisk's AST_MAX_MANHEADERS
		MaxFailedLogins:  5,
		QueueLen:         4096,
		AuthTimeout:      30 * time.Second, // Asterisk's authtimeout
		WriteTimeout:     30 * time.Second,
		FailedLoginDelay: time.Second,
		CommandTimeout:   30 * time.Second,
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
}

// Server is the AMI-style socket.
type Server struct {
	cfg     Config
	backend Backend
	log     *slog.Logger
	started time.Time

	userHash   [sha256.Size]byte
	secretHash [sha256.Size]byte

	mu       sync.Mutex
	sessions map[*session]struct{}
	serving  bool

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
		userHash:   sha256.Sum256([]byte(strings.ToLower(cfg.Username))),
		secretHash: sha256.Sum256([]byte(cfg.Secret)),
		sessions:   make(map[*session]struct{}),
	}
	empty := []*session{}
	s.listeners.Store(&empty)
	return s
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

	if s.cfg.Username == "" || s.cfg.Secret == "" {
		s.log.Warn("manager has no username or secret; every login will fail")
	}
	s.log.Info("manager listening", "addr", ln.Addr().String())

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

		s.mu.Lock()
		if len(s.sessions) >= s.cfg.MaxSessions {
			s.mu.Unlock()
			s.refuse(conn)
			continue
		}
		ses := newSession(ctx, s, conn)
		s.sessions[ses] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go ses.writeLoop()
		go ses.readLoop()
	}
}

// refuse tells a connection over the session limit why, and closes it.
func (s *Server) refuse(conn net.Conn) {
	s.log.Warn("manager session refused", "remote", conn.RemoteAddr().String(),
		"reason", "too many sessions", "limit", s.cfg.MaxSessions)
	msg := appendMessage(nil,
		Header{"Response", "Error"},
		Header{"Message", fmt.Sprintf("Too many sessions (limit %d)", s.cfg.MaxSessions)})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(msg)
		conn.Close()
	}()
}

// remove forgets a session that has ended.
func (s *Server) remove(ses *session) {
	s.mu.Lock()
	delete(s.sessions, ses)
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

// checkLogin compares the credentials in constant time; hashing first keeps
// the lengths from showing.
func (s *Server) checkLogin(user, secret string) bool {
	if s.cfg.Username == "" || s.cfg.Secret == "" {
		return false
	}
	u := sha256.Sum256([]byte(strings.ToLower(user)))
	p := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(u[:], s.userHash[:])&
		subtle.ConstantTimeCompare(p[:], s.secretHash[:]) == 1
}
