package manager

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/hop"
	"github.com/busylamp/busylamp/mwi"
)

// Bounds on names a client may send.
const (
	maxPattern = 256 // MWIGet/MWIDelete /regex/
	chunkSize  = 32 << 10
)

type handler func(s *session, m Message) bool

type action struct {
	name     string // Asterisk's spelling, for ListCommands
	synopsis string
	preAuth  bool // allowed before Login
	run      handler
}

var actions = map[string]action{}

func init() {
	for _, a := range []action{
		{"Challenge", "Generate Challenge for MD5 Auth.", true, (*session).challengeAction},
		{"Command", "Execute busylamp CLI Command.", false, (*session).command},
		{"DeviceStateList", "List the current known device states.", false, (*session).deviceStateList},
		{"Events", "Control Event Flow.", false, (*session).events},
		{"Getvar", "Gets a channel variable or function value.", false, (*session).getvar},
		{"ListCommands", "List available manager commands.", false, (*session).listCommands},
		{"Login", "Login Manager.", true, (*session).login},
		{"Logoff", "Logoff Manager.", true, (*session).logoff},
		{"MWIDelete", "Delete selected mailboxes.", false, (*session).mwiDelete},
		{"MWIGet", "Get selected mailboxes with message counts.", false, (*session).mwiGet},
		{"MWIUpdate", "Update the mailbox message counts.", false, (*session).mwiUpdate},
		{"Ping", "Keepalive command.", false, (*session).ping},
		{"Reload", "Send a reload event.", false, (*session).reload},
		{"Setvar", "Sets a channel variable or function value.", false, (*session).setvar},
	} {
		actions[strings.ToLower(a.name)] = a
	}
}

// handle answers one message; false ends the session.
func (s *session) handle(m Message) bool {
	name := m.action()
	if name == "" {
		return s.sendError(m, "Missing action in request")
	}
	a, known := actions[strings.ToLower(name)]
	if known && (a.name == "Login" || a.name == "Challenge") {
		s.loginTried.Store(true)
	}
	// As in Asterisk, an unauthenticated session learns nothing about
	// which actions exist.
	if !s.loggedIn.Load() && !(known && a.preAuth) {
		return s.sendError(m, "Permission denied")
	}
	if !known {
		return s.sendError(m, fmt.Sprintf(
			"Invalid/unknown command: %s. Use Action: ListCommands to show available commands.", name))
	}
	s.srv.log.Debug("manager action", "remote", s.remote, "action", a.name)
	return a.run(s, m)
}

func (s *session) ping(m Message) bool {
	now := time.Now()
	return s.sendSuccess(m,
		Header{"Ping", "Pong"},
		Header{"Timestamp", fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000)})
}

func (s *session) logoff(m Message) bool {
	s.closeAfter(s.response(m, "Goodbye", Header{"Message", "Thanks for all the fish."}), "logoff")
	return false
}

func (s *session) challengeAction(m Message) bool {
	if !strings.EqualFold(m.Get("AuthType"), "MD5") {
		return s.sendError(m, "Must specify AuthType")
	}
	if s.challenge == "" {
		n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64))
		if err != nil {
			return s.sendError(m, "Challenge generation failed")
		}
		s.challenge = n.String()
	}
	return s.sendSuccess(m, Header{"Challenge", s.challenge})
}

func (s *session) login(m Message) bool {
	if s.loggedIn.Load() {
		return s.sendSuccess(m, Header{"Message", "Already authenticated"})
	}
	user := m.Get("Username")
	srv := s.srv
	if v := srv.guard.admit(s.source); v != admitted {
		// Answered as a failure, without a check: a refused guess
		// learns nothing.
		srv.stats.refusedLogins.Add(1)
		if ok, n := srv.logFailed.allow(srv.cfg.Now()); ok {
			srv.log.Warn("manager login refused", "remote", s.remote, "source", s.source, "reason", v.String(),
				"refused_total", srv.stats.refusedLogins.Load(), "failed_total", srv.stats.failed.Load(), "suppressed", n)
		}
		return s.loginFailed(m, v == banned)
	}
	// A source the ACL does not permit is refused before the secret is
	// looked at, and counted as a failure, as in Asterisk.
	acl := srv.users.Load().acl
	permitted := len(acl) == 0 || (s.ip.IsValid() && acl.Permits(s.ip))
	ok := false
	if permitted {
		if strings.EqualFold(m.Get("AuthType"), "MD5") {
			ok = s.checkMD5(user, m.Get("Key"))
		} else {
			ok = srv.checkLogin(user, m.Get("Secret"))
		}
	}
	banFor, failures := srv.guard.done(s.source, ok)
	if !ok {
		srv.stats.failed.Add(1)
		reason := "bad credentials"
		if !permitted {
			reason = "address not permitted"
		}
		if logOK, n := srv.logFailed.allow(srv.cfg.Now()); logOK {
			srv.log.Warn("manager login failed", "remote", s.remote, "username", srv.loggableUser(user), "reason", reason,
				"source_failures", failures, "session_failures", s.failed+1,
				"failed_total", srv.stats.failed.Load(), "suppressed", n)
		}
		if banFor > 0 {
			srv.stats.bans.Add(1)
			// Bans are few per source (each lasts longer), so each is
			// logged.
			srv.log.Warn("manager source banned after failed logins", "source", s.source, "for", banFor,
				"bans_total", srv.stats.bans.Load())
		}
		return s.loginFailed(m, banFor > 0)
	}
	if placed, full := srv.promote(s); !placed {
		if full {
			srv.log.Warn("manager login refused: too many sessions", "remote", s.remote, "limit", srv.cfg.MaxSessions)
			s.closeAfter(s.response(m, "Error",
				Header{"Message", fmt.Sprintf("Too many sessions (limit %d)", srv.cfg.MaxSessions)}), "too many sessions")
		}
		return false
	}

	s.user.Store(&user)
	s.conn.SetReadDeadline(time.Time{})
	if ev, present := m.Lookup("Events"); present {
		// Asterisk ignores an Events value it cannot read; so do we.
		if mask, _, ok := parseEventMask(ev); ok {
			s.mask.Store(mask)
		}
	}
	resp := s.response(m, "Success", Header{"Message", "Authentication accepted"})
	booted := s.srv.backend.Booted()
	waitBoot := false
	select {
	case <-booted:
		if s.mask.Load()&classSystem != 0 {
			resp = append(resp, s.srv.fullyBooted()...)
		}
	default:
		waitBoot = true
	}
	if !s.send(frame{b: resp}) {
		return false
	}
	// Listen only after the response is queued, so that no event
	// overtakes it.
	s.loggedIn.Store(true)
	s.srv.updateListeners()
	s.srv.log.Info("manager login", "remote", s.remote, "username", user)
	if waitBoot {
		s.srv.wg.Add(1)
		go func() {
			defer s.srv.wg.Done()
			select {
			case <-booted:
			case <-s.done:
				return
			}
			if s.mask.Load()&classSystem != 0 {
				s.send(frame{b: s.srv.fullyBooted()})
			}
		}()
	}
	return true
}

// loggableUser is the username of a failed login as it may be logged: the
// configured name, or only its length, since people type the secret where
// the username goes.
func (srv *Server) loggableUser(user string) string {
	if strings.EqualFold(user, srv.users.Load().username) {
		return user
	}
	return fmt.Sprintf("(other, %d bytes)", len(user))
}

// loginFailed answers a failed or refused login after the delay, and
// closes the session at the failure limit or when closeNow.
func (s *session) loginFailed(m Message, closeNow bool) bool {
	s.failed++
	if d := s.srv.cfg.FailedLoginDelay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return false
		}
	}
	if closeNow || s.failed >= s.srv.cfg.MaxFailedLogins {
		s.closeAfter(s.response(m, "Error", Header{"Message", "Authentication failed"}), "too many failed logins")
		return false
	}
	return s.sendError(m, "Authentication failed")
}

// checkMD5 is Asterisk's challenge login: Key is hex(md5(challenge+secret)).
func (s *session) checkMD5(user, key string) bool {
	us := s.srv.users.Load()
	if s.challenge == "" || us.secret == "" || us.username == "" {
		return false
	}
	sum := md5.Sum([]byte(s.challenge + us.secret))
	want := hex.EncodeToString(sum[:])
	u := strings.EqualFold(user, us.username)
	k := subtle.ConstantTimeCompare([]byte(strings.ToLower(key)), []byte(want)) == 1
	return u && k
}

// fullyBooted is the event Asterisk sends after login once it is up;
// Uptime counts from the agent's start, LastReload from the last
// successful Reload (the start before any).
func (srv *Server) fullyBooted() []byte {
	up := strconv.FormatInt(int64(time.Since(srv.started)/time.Second), 10)
	last := up
	if t := srv.lastReload.Load(); t != 0 {
		last = strconv.FormatInt(int64(time.Since(time.Unix(0, t))/time.Second), 10)
	}
	return Event{Name: "FullyBooted", Privilege: privilegeSystem, Headers: []Header{
		{"Uptime", up},
		{"LastReload", last},
		{"Status", "Fully Booted"},
	}}.render()
}

func (s *session) events(m Message) bool {
	raw := m.Get("EventMask")
	mask, bad, ok := parseEventMask(raw)
	if !ok {
		if bad != "" {
			return s.sendError(m, "Invalid event mask: unknown class "+bad)
		}
		return s.sendError(m, "Invalid event mask")
	}
	s.mask.Store(mask)
	s.srv.updateListeners()
	state := "Off"
	if mask != 0 {
		state = "On"
	}
	return s.sendSuccess(m, Header{"Events", state})
}

// deviceStateVar reads DEVICE_STATE(dev); ok is false for any other
// variable.
func deviceStateVar(v string) (device string, ok bool) {
	const prefix = "DEVICE_STATE("
	if len(v) < len(prefix)+1 || !strings.EqualFold(v[:len(prefix)], prefix) || v[len(v)-1] != ')' {
		return "", false
	}
	return strings.TrimSpace(v[len(prefix) : len(v)-1]), true
}

// checkName applies the one rule for names (devstate.CheckName) and
// says what is wrong in AMI's words.
func checkName(kind, name string) string {
	err := devstate.CheckName(name)
	switch {
	case err == nil:
		return ""
	case name == "":
		return "Missing " + kind + " name"
	case len(name) > devstate.MaxNameLen:
		return fmt.Sprintf("%s name too long (limit %d bytes)", kind, devstate.MaxNameLen)
	}
	return fmt.Sprintf("Bad %s name: %v", kind, err)
}

func (s *session) getvar(m Message) bool {
	v := m.Get("Variable")
	if v == "" {
		return s.sendError(m, "No variable specified")
	}
	dev, ok := deviceStateVar(v)
	if !ok {
		return s.sendError(m, "Only DEVICE_STATE(device) is supported, not "+v)
	}
	if msg := checkName("device", dev); msg != "" {
		return s.sendError(m, msg)
	}
	st, known := s.srv.backend.DeviceState(s.ctx, dev)
	if !known {
		st = devstate.Unknown // what Asterisk's DEVICE_STATE reads for a device it does not know
	}
	return s.sendSuccess(m, Header{"Variable", v}, Header{"Value", st.String()})
}

func (s *session) setvar(m Message) bool {
	v := m.Get("Variable")
	if v == "" {
		return s.sendError(m, "No variable specified")
	}
	dev, ok := deviceStateVar(v)
	if !ok {
		return s.sendError(m, "Only DEVICE_STATE(device) is supported, not "+v)
	}
	if msg := checkName("device", dev); msg != "" {
		return s.sendError(m, msg)
	}
	value, present := m.Lookup("Value")
	if !present || value == "" {
		return s.sendError(m, "No value specified")
	}
	st, ok := devstate.Parse(value)
	if !ok {
		return s.sendError(m, fmt.Sprintf("Invalid device state %q: want one of UNKNOWN, NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD", value))
	}
	if h := s.srv.cfg.Hops; h != nil {
		h(hop.AMIRead, dev, s.readAt)
	}
	if err := s.srv.backend.SetDeviceState(s.ctx, dev, st); err != nil {
		return s.sendError(m, "Variable not set: "+err.Error())
	}
	return s.sendSuccess(m, Header{"Message", "Variable Set"})
}

// listWriter streams a list response in chunks of whole messages, so that
// a long list is neither held whole in memory nor written past a client
// that stopped reading.
type listWriter struct {
	s   *session
	buf []byte
	ok  bool
}

func (s *session) startList(m Message, message string) *listWriter {
	b := make([]byte, 0, chunkSize+1024)
	b = appendHeader(b, "Response", "Success")
	if id := m.Get("ActionID"); id != "" {
		b = appendHeader(b, "ActionID", id)
	}
	b = appendHeader(b, "EventList", "start")
	b = appendMessage(b, Header{"Message", message})
	return &listWriter{s: s, buf: b, ok: true}
}

func (w *listWriter) add(hs ...Header) {
	w.buf = appendMessage(w.buf, hs...)
	if len(w.buf) >= chunkSize && w.ok {
		w.ok = w.s.send(frame{b: w.buf})
		w.buf = make([]byte, 0, chunkSize+1024)
	}
}

func (w *listWriter) end() bool {
	if !w.ok {
		return false
	}
	return w.s.send(frame{b: w.buf})
}

func (s *session) deviceStateList(m Message) bool {
	id := m.Get("ActionID")
	devs := s.srv.backend.Devices(s.ctx)
	w := s.startList(m, "Device State Changes will follow")
	// Asterisk puts ActionID right after Event in this list.
	for _, d := range devs {
		if !w.ok {
			return false
		}
		if id != "" {
			w.add(Header{"Event", "DeviceStateChange"}, Header{"ActionID", id},
				Header{"Device", d.Device}, Header{"State", d.State.String()})
		} else {
			w.add(Header{"Event", "DeviceStateChange"},
				Header{"Device", d.Device}, Header{"State", d.State.String()})
		}
	}
	complete := []Header{{"Event", "DeviceStateListComplete"}}
	if id != "" {
		complete = append(complete, Header{"ActionID", id})
	}
	complete = append(complete, Header{"EventList", "Complete"}, Header{"ListItems", strconv.Itoa(len(devs))})
	w.add(complete...)
	return w.end()
}

// mailboxMatcher reads MWIGet's and MWIDelete's Mailbox: an exact mailbox,
// or /regex/ as in res_mwi_external_ami. Go's regexp runs in time linear in
// the input, so a hostile pattern cannot stall the session; its length is
// bounded too.
func mailboxMatcher(mailbox string) (exact string, re *regexp.Regexp, errMsg string) {
	if mailbox == "" {
		return "", nil, "Missing mailbox parameter in request"
	}
	if mailbox[0] != '/' {
		if msg := checkName("mailbox", mailbox); msg != "" {
			return "", nil, msg
		}
		return mailbox, nil, ""
	}
	if len(mailbox) < 2 || mailbox[len(mailbox)-1] != '/' {
		return "", nil, "Mailbox regex format invalid in: " + mailbox
	}
	pattern := mailbox[1 : len(mailbox)-1]
	if len(pattern) > maxPattern {
		return "", nil, fmt.Sprintf("Mailbox regex too long (limit %d bytes)", maxPattern)
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return "", nil, "Mailbox regex invalid in: " + mailbox + ": " + err.Error()
	}
	return "", re, ""
}

// mailboxes returns the mailboxes the Mailbox header selects.
func (s *session) mailboxes(exact string, re *regexp.Regexp) []MailboxState {
	if re == nil {
		c, ok := s.srv.backend.Mailbox(s.ctx, exact)
		if !ok {
			return nil
		}
		return []MailboxState{{Mailbox: exact, Counts: c}}
	}
	all := s.srv.backend.Mailboxes(s.ctx)
	out := all[:0:0]
	for _, mb := range all {
		if re.MatchString(mb.Mailbox) {
			out = append(out, mb)
		}
	}
	return out
}

func (s *session) mwiGet(m Message) bool {
	exact, re, msg := mailboxMatcher(m.Get("Mailbox"))
	if msg != "" {
		return s.sendError(m, msg)
	}
	id := m.Get("ActionID")
	mbs := s.mailboxes(exact, re)
	w := s.startList(m, "Mailboxes will follow")
	// res_mwi_external_ami puts ActionID last in these events.
	for _, mb := range mbs {
		if !w.ok {
			return false
		}
		hs := []Header{
			{"Event", "MWIGet"},
			{"Mailbox", mb.Mailbox},
			{"OldMessages", strconv.Itoa(mb.Counts.Old)},
			{"NewMessages", strconv.Itoa(mb.Counts.New)},
		}
		if id != "" {
			hs = append(hs, Header{"ActionID", id})
		}
		w.add(hs...)
	}
	complete := []Header{
		{"Event", "MWIGetComplete"},
		{"EventList", "Complete"},
		{"ListItems", strconv.Itoa(len(mbs))},
	}
	if id != "" {
		complete = append(complete, Header{"ActionID", id})
	}
	w.add(complete...)
	return w.end()
}

// count reads OldMessages or NewMessages: missing is zero, as in
// res_mwi_external_ami; otherwise a non-negative decimal that fits Asterisk's
// int.
func count(m Message, key string) (int, string) {
	v := m.Get(key)
	if v == "" {
		return 0, ""
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Sprintf("Invalid %s: %s (want a whole number 0..%d)", key, v, math.MaxInt32)
	}
	return int(n), ""
}

func (s *session) mwiUpdate(m Message) bool {
	mailbox := m.Get("Mailbox")
	if mailbox == "" {
		return s.sendError(m, "Missing mailbox parameter in request")
	}
	if msg := checkName("mailbox", mailbox); msg != "" {
		return s.sendError(m, msg)
	}
	if mailbox[0] == '/' {
		// It could never be named alone again: MWIGet and MWIDelete
		// read a leading '/' as a regex.
		return s.sendError(m, "Invalid mailbox: "+mailbox+" (must not begin with '/')")
	}
	oldN, msg := count(m, "OldMessages")
	if msg != "" {
		return s.sendError(m, msg)
	}
	newN, msg := count(m, "NewMessages")
	if msg != "" {
		return s.sendError(m, msg)
	}
	if err := s.srv.backend.SetMailbox(s.ctx, mailbox, mwi.Counts{New: newN, Old: oldN}); err != nil {
		return s.sendError(m, "Update attempt failed: "+err.Error())
	}
	return s.sendSuccess(m)
}

func (s *session) mwiDelete(m Message) bool {
	exact, re, msg := mailboxMatcher(m.Get("Mailbox"))
	if msg != "" {
		return s.sendError(m, msg)
	}
	names := []string{exact}
	if re != nil {
		names = names[:0]
		for _, mb := range s.mailboxes("", re) {
			names = append(names, mb.Mailbox)
		}
	}
	for _, name := range names {
		if err := s.srv.backend.DeleteMailbox(s.ctx, name); err != nil {
			return s.sendError(m, "Delete attempt failed: "+err.Error())
		}
	}
	return s.sendSuccess(m)
}

func (s *session) command(m Message) bool {
	line := m.Get("Command")
	if line == "" {
		return s.sendError(m, "No command provided")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.CommandTimeout)
	out, err := s.srv.backend.Command(ctx, line)
	cancel()
	status := "Success"
	if err != nil {
		status = "Error"
		if out != "" && !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		out += err.Error()
	}
	// Asterisk 14 and later: one Output header per line of text.
	out = strings.TrimSuffix(out, "\n")
	lines := strings.Split(out, "\n")
	hs := make([]Header, 0, len(lines)+1)
	hs = append(hs, Header{"Message", "Command output follows"})
	for _, l := range lines {
		hs = append(hs, Header{"Output", strings.TrimSuffix(l, "\r")})
	}
	return s.send(frame{b: s.response(m, status, hs...)})
}

// reload is Asterisk's Reload action for busylamp's one module: the config
// file is read again. Module, if given, must name busylamp's config.
func (s *session) reload(m Message) bool {
	switch strings.ToLower(m.Get("Module")) {
	case "", "busylamp", "xmpp", "res_xmpp", "res_xmpp.so", "xmpp.conf", "busylamp.conf":
	default:
		return s.sendError(m, "No such module")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.CommandTimeout)
	notes, err := s.srv.backend.Reload(ctx)
	cancel()
	if err != nil {
		hs := []Header{{"Message", "Config not reloaded: the running one is kept"}}
		for _, l := range strings.Split(strings.TrimSuffix(err.Error(), "\n"), "\n") {
			hs = append(hs, Header{"Output", strings.TrimSuffix(l, "\r")})
		}
		return s.send(frame{b: s.response(m, "Error", hs...)})
	}
	s.srv.lastReload.Store(time.Now().UnixNano())
	hs := []Header{{"Message", "Module Reloaded."}}
	for _, l := range notes {
		hs = append(hs, Header{"Output", strings.ReplaceAll(strings.ReplaceAll(l, "\r", " "), "\n", " ")})
	}
	return s.send(frame{b: s.response(m, "Success", hs...)})
}

func (s *session) listCommands(m Message) bool {
	names := make([]string, 0, len(actions))
	for k := range actions {
		names = append(names, k)
	}
	slices.Sort(names)
	hs := make([]Header, 0, len(names))
	for _, k := range names {
		a := actions[k]
		priv := "all"
		if a.preAuth {
			priv = "<none>"
		}
		hs = append(hs, Header{a.name, a.synopsis + " (Priv: " + priv + ")"})
	}
	return s.sendSuccess(m, hs...)
}
