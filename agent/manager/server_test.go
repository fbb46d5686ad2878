package manager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// TestRawSessionAsAMILibrary drives the socket with the bytes an AMI client
// library sends and checks every byte that comes back.
func TestRawSessionAsAMILibrary(t *testing.T) {
	b := newFakeBackend()
	b.devices["Custom:lamp1"] = devstate.InUse
	b.devices["PJSIP/alice"] = devstate.NotInUse
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr) // checks "Asterisk Call Manager/9.0.0\r\n"

	rc.send("Action: Login\r\nActionID: 1\r\nUsername: admin\r\nSecret: s3cret\r\nEvents: on\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n")
	rc.expectRE(fullyBootedRE)

	rc.send("Action: DeviceStateList\r\nActionID: 2\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: 2\r\nEventList: start\r\nMessage: Device State Changes will follow\r\n\r\n")
	rc.expect("Event: DeviceStateChange\r\nActionID: 2\r\nDevice: Custom:lamp1\r\nState: INUSE\r\n\r\n")
	rc.expect("Event: DeviceStateChange\r\nActionID: 2\r\nDevice: PJSIP/alice\r\nState: NOT_INUSE\r\n\r\n")
	rc.expect("Event: DeviceStateListComplete\r\nActionID: 2\r\nEventList: Complete\r\nListItems: 2\r\n\r\n")

	// Bare LF and any case on input; Asterisk's spelling on output.
	rc.send("action: ping\nactionid: 3\n\n")
	rc.expectRE(`^Response: Success\r\nActionID: 3\r\nPing: Pong\r\nTimestamp: \d+\.\d{6}\r\n\r\n$`)

	// A broadcast event carries Privilege and no ActionID.
	ts.Emit(DeviceStateChange("PJSIP/alice", devstate.Ringing))
	rc.expect("Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: PJSIP/alice\r\nState: RINGING\r\n\r\n")
	ts.Emit(MessageWaiting("1000@default", mwi.Counts{New: 2, Old: 1}))
	rc.expect("Event: MessageWaiting\r\nPrivilege: call,all\r\nMailbox: 1000@default\r\nWaiting: 1\r\nNew: 2\r\nOld: 1\r\n\r\n")

	rc.send("Action: Logoff\r\nActionID: 4\r\n\r\n")
	rc.expect("Response: Goodbye\r\nActionID: 4\r\nMessage: Thanks for all the fish.\r\n\r\n")
	rc.expectClosed()
}

func TestPermissionBeforeLogin(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	for _, a := range []string{"Getvar", "Setvar", "DeviceStateList", "MWIGet", "MWIUpdate", "MWIDelete", "Command", "Events", "ListCommands", "NoSuchAction"} {
		rc.send("Action: " + a + "\r\nActionID: x\r\nVariable: DEVICE_STATE(a)\r\n\r\n")
		rc.expect("Response: Error\r\nActionID: x\r\nMessage: Permission denied\r\n\r\n")
	}
	// As Asterisk's manager.c: only Login, Logoff and Challenge before
	// login, not even Ping (DESIGN.md: all but Login need a session).
	rc.send("Action: Ping\r\nActionID: p\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: p\r\nMessage: Permission denied\r\n\r\n")
	if ts.listeners() != 0 {
		t.Fatal("an unauthenticated session listens to events")
	}
	rc.login()
	rc.send("Action: Getvar\r\nVariable: DEVICE_STATE(a)\r\n\r\n")
	rc.expect("Response: Success\r\nVariable: DEVICE_STATE(a)\r\nValue: UNKNOWN\r\n\r\n")
	rc.send("Action: Login\r\nActionID: again\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: again\r\nMessage: Already authenticated\r\n\r\n")
}

func TestMissingAndUnknownAction(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("ActionID: 7\r\nFoo: bar\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 7\r\nMessage: Missing action in request\r\n\r\n")
	rc.send("Action:\r\nActionID: 8\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 8\r\nMessage: Missing action in request\r\n\r\n")
	rc.login()
	rc.send("Action: Originate\r\nActionID: 9\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 9\r\nMessage: Invalid/unknown command: Originate. Use Action: ListCommands to show available commands.\r\n\r\n")
	// Blank lines between messages are not messages.
	rc.send("\r\n\r\n\nAction: Ping\r\nActionID: 10\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nActionID: 10\r\nPing: Pong\r\n`)
}

func TestFailedLoginsCloseAfterLimit(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	for i := 1; i < 5; i++ {
		rc.send(fmt.Sprintf("Action: Login\r\nActionID: %d\r\nUsername: admin\r\nSecret: wrong\r\n\r\n", i))
		rc.expect(fmt.Sprintf("Response: Error\r\nActionID: %d\r\nMessage: Authentication failed\r\n\r\n", i))
		// Still usable.
		rc.send("Action: Ping\r\n\r\n")
		rc.expect("Response: Error\r\nMessage: Permission denied\r\n\r\n")
	}
	rc.send("Action: Login\r\nActionID: 5\r\nUsername: ADMIN\r\nSecret: S3CRET\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 5\r\nMessage: Authentication failed\r\n\r\n")
	rc.expectClosed()
	if !strings.Contains(ts.logs.String(), "manager login failed") {
		t.Error("failed logins are not logged")
	}
	if strings.Contains(ts.logs.String(), "S3CRET") || strings.Contains(ts.logs.String(), "wrong") {
		t.Error("a secret was logged")
	}

	// The username is compared without regard to case, as in Asterisk;
	// the secret is not.
	rc = dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: ADMIN\r\nSecret: s3cret\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
}

func TestFailedLoginDelay(t *testing.T) {
	cfg := testConfig()
	cfg.FailedLoginDelay = 200 * time.Millisecond
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	start := time.Now()
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: nope\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("failed login answered after %v, want at least the delay", d)
	}
}

func TestNoCredentialsConfiguredRefusesAll(t *testing.T) {
	cfg := testConfig()
	cfg.Username, cfg.Secret = "", ""
	ts := startServer(t, cfg, newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: \r\nSecret: \r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
}

func TestMD5ChallengeLogin(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Challenge\r\nActionID: c\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: c\r\nMessage: Must specify AuthType\r\n\r\n")
	rc.send("Action: Challenge\r\nActionID: c\r\nAuthType: MD5\r\n\r\n")
	got := rc.expectRE(`^Response: Success\r\nActionID: c\r\nChallenge: \d+\r\n\r\n$`)
	challenge := regexp.MustCompile(`Challenge: (\d+)`).FindStringSubmatch(got)[1]

	rc.send("Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: 00000000000000000000000000000000\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Authentication failed\r\n\r\n")
	rc.send("Action: Login\r\nAuthType: md5\r\nUsername: admin\r\nKey: " + md5hex(challenge+testSecret) + "\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	rc.expectRE(fullyBootedRE)
}

func TestOversizedMessageCloses(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	var sb strings.Builder
	sb.WriteString("Action: Ping\r\nActionID: big\r\n")
	for sb.Len() <= 70<<10 {
		sb.WriteString("X-Filler: " + strings.Repeat("y", 1000) + "\r\n")
	}
	sb.WriteString("\r\n")
	// Write in the background: the server stops reading at the limit.
	go func() {
		rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		rc.c.Write([]byte(sb.String()))
	}()
	rc.expect("Response: Error\r\nActionID: big\r\nMessage: Message too large (limit 65536 bytes)\r\n\r\n")
	rc.expectClosed()

	// One line longer than a message: also closed.
	rc = dialRaw(t, ts.addr)
	go func() {
		rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		rc.c.Write([]byte("Action: Ping\r\nX: " + strings.Repeat("z", 100<<10) + "\r\n\r\n"))
	}()
	rc.expect("Response: Error\r\nMessage: Message too large (limit 65536 bytes)\r\n\r\n")
	rc.expectClosed()
}

func TestMalformedMessagesKeepSession(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.login()
	cases := []struct{ in, want string }{
		{"Action: Ping\r\nActionID: 1\r\nX: " + strings.Repeat("a", 9000) + "\r\n\r\n",
			"Response: Error\r\nActionID: 1\r\nMessage: Failed to parse message: line too long\r\n\r\n"},
		{"Action: Ping\r\nActionID: 2\r\nno colon here\r\n\r\n",
			"Response: Error\r\nActionID: 2\r\nMessage: Failed to parse message: line 3 has no ':' after the header name\r\n\r\n"},
		{"Action: Ping\r\nActionID: 3\r\n: empty name\r\n\r\n",
			"Response: Error\r\nActionID: 3\r\nMessage: Failed to parse message: line 3 has an empty header name\r\n\r\n"},
		{"Action: Ping\r\nActionID: 4\r\nX: a\rResponse: forged\r\n\r\n",
			"Response: Error\r\nActionID: 4\r\nMessage: Failed to parse message: line 3 contains a control character\r\n\r\n"},
		{"Action: Ping\r\nActionID: 5\r\n" + strings.Repeat("X: y\r\n", 200) + "\r\n",
			"Response: Error\r\nActionID: 5\r\nMessage: Failed to parse message: too many lines in message (limit 128)\r\n\r\n"},
	}
	for _, c := range cases {
		rc.send(c.in)
		rc.expect(c.want)
		rc.send("Action: Ping\r\nActionID: ok\r\n\r\n")
		rc.expectRE(`^Response: Success\r\nActionID: ok\r\nPing: Pong\r\n`)
	}
}

// TestSessionLimit: MaxSessions bounds logged-in sessions; a login past it
// is refused and closed, the others go on, and a freed place is taken again.
func TestSessionLimit(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessions = 3
	ts := startServer(t, cfg, newFakeBackend())
	var conns []*rawConn
	for range 3 {
		rc := dialRaw(t, ts.addr)
		rc.login()
		conns = append(conns, rc)
	}
	over := dialRaw(t, ts.addr) // connecting is not refused
	over.send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	over.expect("Response: Error\r\nMessage: Too many sessions (limit 3)\r\n\r\n")
	over.expectClosed()
	if !strings.Contains(ts.logs.String(), "too many sessions") {
		t.Error("refusal not logged")
	}

	conns[0].send("Action: Ping\r\n\r\n")
	conns[0].expectRE(`^Response: Success\r\nPing: Pong\r\n`)
	conns[1].send("Action: Logoff\r\n\r\n")
	conns[1].expectRE(`^Response: Goodbye\r\n`)
	conns[1].expectClosed()
	waitFor(t, "a free session", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.Server.loggedIn < 3
	})
	rc := dialRaw(t, ts.addr)
	rc.login()
}

// TestSlowReaderDisconnected: a logged-in session that stops reading is cut
// off when its queue fills, while another session keeps receiving every
// event in order and Emit never blocks.
func TestSlowReaderDisconnected(t *testing.T) {
	cfg := testConfig()
	cfg.QueueLen = 64
	cfg.WriteTimeout = time.Minute // the queue, not the write timeout, must decide
	ts := startServer(t, cfg, newFakeBackend())

	slow := dialRaw(t, ts.addr)
	slow.login()
	fast := dialRaw(t, ts.addr)
	fast.login()
	waitFor(t, "two listeners", func() bool { return ts.listeners() == 2 })

	const total = 20000
	payload := strings.Repeat("p", 1000)
	var got atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		r := fast.r
		for i := 0; i < total; i++ {
			fast.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var lines []string
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					readErr <- err
					return
				}
				if l == "\r\n" {
					break
				}
				lines = append(lines, l)
			}
			want := fmt.Sprintf("Seq: %d\r\n", i)
			if len(lines) < 3 || lines[2] != want {
				readErr <- fmt.Errorf("event %d out of order: %q", i, lines)
				return
			}
			got.Add(1)
		}
		readErr <- nil
	}()

	// Pace Emit by the fast reader so that only the slow one falls
	// behind.
	for i := 0; i < total; i++ {
		start := time.Now()
		ts.Emit(BuddyStatus(Header{"Seq", fmt.Sprint(i)}, Header{"Payload", payload}))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Emit blocked for %v", d)
		}
		deadline := time.Now().Add(10 * time.Second)
		for int64(i+1)-got.Load() > 32 {
			if time.Now().After(deadline) {
				t.Fatal("fast reader stalled")
			}
			select {
			case err := <-readErr:
				t.Fatalf("fast reader: %v", err)
			default:
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := <-readErr; err != nil {
		t.Fatalf("fast reader: %v", err)
	}
	if !strings.Contains(ts.logs.String(), "not reading its events") {
		t.Fatalf("slow reader disconnect not logged:\n%s", ts.logs.String())
	}
	waitFor(t, "slow session gone", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.listeners() == 1 && len(ts.sessions) == 1
	})
	// The slow client finds its connection closed once it reads what
	// was already sent.
	slow.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var err error
	buf := make([]byte, 64<<10)
	for err == nil {
		_, err = slow.c.Read(buf)
	}
	if !isReset(err) && !errors.Is(err, io.EOF) {
		t.Fatalf("slow client: %v", err)
	}
	fast.send("Action: Ping\r\n\r\n")
	fast.expectRE(`^Response: Success\r\nPing: Pong\r\n`)
}

func TestEventMaskAndOrder(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\nEvents: off\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n") // no FullyBooted with events off
	waitFor(t, "login", func() bool { return ts.loggedIn() == 1 })
	if ts.listeners() != 0 {
		t.Fatal("a session with events off listens")
	}
	ts.Emit(DeviceStateChange("a", devstate.Busy))

	rc.send("Action: Events\r\nActionID: e\r\nEventMask: system\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: e\r\nEvents: On\r\n\r\n")
	ts.Emit(DeviceStateChange("b", devstate.Busy)) // call class: not wanted
	ts.Emit(ClusterMember(Header{"Member", "n2"}, Header{"Status", "Alive"}))
	rc.expect("Event: ClusterMember\r\nPrivilege: system,all\r\nMember: n2\r\nStatus: Alive\r\n\r\n")

	rc.send("Action: Events\r\nEventMask: on\r\n\r\n")
	rc.expect("Response: Success\r\nEvents: On\r\n\r\n")
	for i := range 100 {
		ts.Emit(DeviceStateChange(fmt.Sprint("d", i), devstate.InUse))
	}
	for i := range 100 {
		rc.expect(fmt.Sprintf("Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: d%d\r\nState: INUSE\r\n\r\n", i))
	}

	rc.send("Action: Events\r\nEventMask: bogus\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Invalid event mask: unknown class bogus\r\n\r\n")
	rc.send("Action: Events\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Invalid event mask\r\n\r\n")
	rc.send("Action: Events\r\nEventMask: off\r\n\r\n")
	rc.expect("Response: Success\r\nEvents: Off\r\n\r\n")
	ts.Emit(DeviceStateChange("c", devstate.Busy))
	rc.send("Action: Ping\r\n\r\n") // the next thing on the wire is the response, not the event
	rc.expectRE(`^Response: Success\r\nPing: Pong\r\n`)
}

func (ts *testServer) loggedIn() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for s := range ts.sessions {
		if s.loggedIn.Load() {
			n++
		}
	}
	return n
}

func TestFullyBootedWaitsForBoot(t *testing.T) {
	b := newFakeBackend()
	b.booted = make(chan struct{})
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr)
	rc.send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	rc.send("Action: Ping\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nPing: Pong\r\n`) // not FullyBooted yet
	close(b.booted)
	rc.expectRE(fullyBootedRE)

	// A session that is never booted still shuts down cleanly.
	b2 := newFakeBackend()
	b2.booted = make(chan struct{})
	ts2 := startServer(t, testConfig(), b2)
	rc2 := dialRaw(t, ts2.addr)
	rc2.send("Action: Login\r\nUsername: admin\r\nSecret: s3cret\r\n\r\n")
	rc2.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	ts2.stop()
	rc2.expectClosed()
}

func TestGetvarSetvar(t *testing.T) {
	b := newFakeBackend()
	b.devices["PJSIP/bob"] = devstate.OnHold
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr)
	rc.login()
	cases := []struct{ in, want string }{
		{"Action: Getvar\r\nActionID: 1\r\nVariable: DEVICE_STATE(PJSIP/bob)\r\n\r\n",
			"Response: Success\r\nActionID: 1\r\nVariable: DEVICE_STATE(PJSIP/bob)\r\nValue: ONHOLD\r\n\r\n"},
		{"Action: GetVar\r\nActionID: 2\r\nvariable: device_state(PJSIP/nobody)\r\n\r\n",
			"Response: Success\r\nActionID: 2\r\nVariable: device_state(PJSIP/nobody)\r\nValue: UNKNOWN\r\n\r\n"},
		{"Action: Getvar\r\nActionID: 3\r\n\r\n",
			"Response: Error\r\nActionID: 3\r\nMessage: No variable specified\r\n\r\n"},
		{"Action: Getvar\r\nActionID: 4\r\nVariable: CHANNEL(name)\r\n\r\n",
			"Response: Error\r\nActionID: 4\r\nMessage: Only DEVICE_STATE(device) is supported, not CHANNEL(name)\r\n\r\n"},
		{"Action: Getvar\r\nActionID: 5\r\nVariable: DEVICE_STATE()\r\n\r\n",
			"Response: Error\r\nActionID: 5\r\nMessage: Missing device name\r\n\r\n"},
		{"Action: Getvar\r\nActionID: 6\r\nVariable: DEVICE_STATE(" + strings.Repeat("d", 300) + ")\r\n\r\n",
			"Response: Error\r\nActionID: 6\r\nMessage: device name too long (limit 256 bytes)\r\n\r\n"},
		{"Action: Setvar\r\nActionID: 7\r\nVariable: DEVICE_STATE(Custom:lamp)\r\nValue: busy\r\n\r\n",
			"Response: Success\r\nActionID: 7\r\nMessage: Variable Set\r\n\r\n"},
		{"Action: Getvar\r\nActionID: 8\r\nVariable: DEVICE_STATE(Custom:lamp)\r\n\r\n",
			"Response: Success\r\nActionID: 8\r\nVariable: DEVICE_STATE(Custom:lamp)\r\nValue: BUSY\r\n\r\n"},
		{"Action: Setvar\r\nActionID: 9\r\nVariable: DEVICE_STATE(Custom:lamp)\r\nValue: SLEEPY\r\n\r\n",
			"Response: Error\r\nActionID: 9\r\nMessage: Invalid device state \"SLEEPY\": want one of UNKNOWN, NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD\r\n\r\n"},
		{"Action: Setvar\r\nActionID: 10\r\nVariable: DEVICE_STATE(Custom:lamp)\r\n\r\n",
			"Response: Error\r\nActionID: 10\r\nMessage: No value specified\r\n\r\n"},
		{"Action: Setvar\r\nActionID: 11\r\nVariable: GLOBALVAR\r\nValue: 1\r\n\r\n",
			"Response: Error\r\nActionID: 11\r\nMessage: Only DEVICE_STATE(device) is supported, not GLOBALVAR\r\n\r\n"},
		{"Action: Setvar\r\nActionID: 12\r\nValue: 1\r\n\r\n",
			"Response: Error\r\nActionID: 12\r\nMessage: No variable specified\r\n\r\n"},
	}
	for _, c := range cases {
		rc.send(c.in)
		rc.expect(c.want)
	}
	if b.own["Custom:lamp"] != devstate.Busy {
		t.Fatalf("SetDeviceState not called: %v", b.own)
	}
	b.mu.Lock()
	b.setErr = errors.New("device table full")
	b.mu.Unlock()
	rc.send("Action: Setvar\r\nActionID: 13\r\nVariable: DEVICE_STATE(Custom:new)\r\nValue: INUSE\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 13\r\nMessage: Variable not set: device table full\r\n\r\n")
}

func TestMWIActions(t *testing.T) {
	b := newFakeBackend()
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr)
	rc.login()
	cases := []struct{ in, want string }{
		{"Action: MWIUpdate\r\nActionID: 1\r\nMailbox: 1000@default\r\nNewMessages: 3\r\nOldMessages: 2\r\n\r\n",
			"Response: Success\r\nActionID: 1\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 2\r\nMailbox: 1001@default\r\nNewMessages: 1\r\n\r\n",
			"Response: Success\r\nActionID: 2\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 3\r\nMailbox: 2000@sales\r\n\r\n",
			"Response: Success\r\nActionID: 3\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 4\r\nMailbox: 1000@default\r\n\r\n",
			"Response: Success\r\nActionID: 4\r\nEventList: start\r\nMessage: Mailboxes will follow\r\n\r\n" +
				"Event: MWIGet\r\nMailbox: 1000@default\r\nOldMessages: 2\r\nNewMessages: 3\r\nActionID: 4\r\n\r\n" +
				"Event: MWIGetComplete\r\nEventList: Complete\r\nListItems: 1\r\nActionID: 4\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 5\r\nMailbox: /@default$/\r\n\r\n",
			"Response: Success\r\nActionID: 5\r\nEventList: start\r\nMessage: Mailboxes will follow\r\n\r\n" +
				"Event: MWIGet\r\nMailbox: 1000@default\r\nOldMessages: 2\r\nNewMessages: 3\r\nActionID: 5\r\n\r\n" +
				"Event: MWIGet\r\nMailbox: 1001@default\r\nOldMessages: 0\r\nNewMessages: 1\r\nActionID: 5\r\n\r\n" +
				"Event: MWIGetComplete\r\nEventList: Complete\r\nListItems: 2\r\nActionID: 5\r\n\r\n"},
		{"Action: MWIGet\r\nMailbox: 9999@none\r\n\r\n",
			"Response: Success\r\nEventList: start\r\nMessage: Mailboxes will follow\r\n\r\n" +
				"Event: MWIGetComplete\r\nEventList: Complete\r\nListItems: 0\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 6\r\n\r\n",
			"Response: Error\r\nActionID: 6\r\nMessage: Missing mailbox parameter in request\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 7\r\nMailbox: /unterminated\r\n\r\n",
			"Response: Error\r\nActionID: 7\r\nMessage: Mailbox regex format invalid in: /unterminated\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 8\r\nMailbox: /(/\r\n\r\n",
			"Response: Error\r\nActionID: 8\r\nMessage: Mailbox regex invalid in: /(/: error parsing regexp: missing closing ): `(`\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 9\r\nMailbox: /" + strings.Repeat("a", 300) + "/\r\n\r\n",
			"Response: Error\r\nActionID: 9\r\nMessage: Mailbox regex too long (limit 256 bytes)\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 10\r\nMailbox: 1000@default\r\nNewMessages: -1\r\n\r\n",
			"Response: Error\r\nActionID: 10\r\nMessage: Invalid NewMessages: -1 (want a whole number 0..2147483647)\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 11\r\nMailbox: 1000@default\r\nOldMessages: many\r\n\r\n",
			"Response: Error\r\nActionID: 11\r\nMessage: Invalid OldMessages: many (want a whole number 0..2147483647)\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 12\r\nMailbox: 1000@default\r\nNewMessages: 99999999999\r\n\r\n",
			"Response: Error\r\nActionID: 12\r\nMessage: Invalid NewMessages: 99999999999 (want a whole number 0..2147483647)\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 13\r\nNewMessages: 1\r\n\r\n",
			"Response: Error\r\nActionID: 13\r\nMessage: Missing mailbox parameter in request\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 14\r\nMailbox: " + strings.Repeat("m", 300) + "\r\n\r\n",
			"Response: Error\r\nActionID: 14\r\nMessage: mailbox name too long (limit 256 bytes)\r\n\r\n"},
		{"Action: MWIUpdate\r\nActionID: 15\r\nMailbox: /x/\r\n\r\n",
			"Response: Error\r\nActionID: 15\r\nMessage: Invalid mailbox: /x/ (must not begin with '/')\r\n\r\n"},
		{"Action: MWIDelete\r\nActionID: 16\r\nMailbox: 2000@sales\r\n\r\n",
			"Response: Success\r\nActionID: 16\r\n\r\n"},
		{"Action: MWIDelete\r\nActionID: 17\r\nMailbox: /^100[01]@/\r\n\r\n",
			"Response: Success\r\nActionID: 17\r\n\r\n"},
		{"Action: MWIDelete\r\nActionID: 18\r\n\r\n",
			"Response: Error\r\nActionID: 18\r\nMessage: Missing mailbox parameter in request\r\n\r\n"},
		{"Action: MWIGet\r\nActionID: 19\r\nMailbox: /./\r\n\r\n",
			"Response: Success\r\nActionID: 19\r\nEventList: start\r\nMessage: Mailboxes will follow\r\n\r\n" +
				"Event: MWIGetComplete\r\nEventList: Complete\r\nListItems: 0\r\nActionID: 19\r\n\r\n"},
	}
	for _, c := range cases {
		rc.send(c.in)
		var got strings.Builder
		for got.Len() < len(c.want) {
			got.WriteString(rc.msg())
		}
		if got.String() != c.want {
			t.Fatalf("for %q\ngot  %q\nwant %q", c.in, got.String(), c.want)
		}
	}
	b.mu.Lock()
	b.setErr = errors.New("mailbox table full")
	b.mu.Unlock()
	rc.send("Action: MWIUpdate\r\nActionID: 20\r\nMailbox: 3000@x\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 20\r\nMessage: Update attempt failed: mailbox table full\r\n\r\n")
}

func TestCommandAction(t *testing.T) {
	b := newFakeBackend()
	ts := startServer(t, testConfig(), b)
	rc := dialRaw(t, ts.addr)
	rc.login()
	rc.send("Action: Command\r\nActionID: 1\r\nCommand: show buddies\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: 1\r\nMessage: Command output follows\r\nOutput: Buddy: a@example.org\r\nOutput: Buddy: b@example.org\r\n\r\n")
	rc.send("Action: Command\r\nActionID: 2\r\nCommand: frobnicate\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 2\r\nMessage: Command output follows\r\nOutput: No such command 'frobnicate'\r\n\r\n")
	rc.send("Action: Command\r\nActionID: 3\r\n\r\n")
	rc.expect("Response: Error\r\nActionID: 3\r\nMessage: No command provided\r\n\r\n")

	// Command output cannot forge frames, and a slow command is bounded.
	b.command = func(ctx context.Context, line string) (string, error) {
		if line == "slow" {
			<-ctx.Done()
			return "partial\n", ctx.Err()
		}
		return "a\r\n\r\nEvent: forged\r\n", nil
	}
	rc.send("Action: Command\r\nActionID: 4\r\nCommand: forge\r\n\r\n")
	rc.expect("Response: Success\r\nActionID: 4\r\nMessage: Command output follows\r\nOutput: a\r\nOutput: \r\nOutput: Event: forged\r\n\r\n")
}

func TestCommandTimeout(t *testing.T) {
	b := newFakeBackend()
	b.command = func(ctx context.Context, line string) (string, error) {
		<-ctx.Done()
		return "partial\n", ctx.Err()
	}
	cfg := testConfig()
	cfg.CommandTimeout = 50 * time.Millisecond
	ts := startServer(t, cfg, b)
	rc := dialRaw(t, ts.addr)
	rc.login()
	rc.send("Action: Command\r\nCommand: slow\r\n\r\n")
	rc.expect("Response: Error\r\nMessage: Command output follows\r\nOutput: partial\r\nOutput: context deadline exceeded\r\n\r\n")
}

func TestListCommands(t *testing.T) {
	ts := startServer(t, testConfig(), newFakeBackend())
	rc := dialRaw(t, ts.addr)
	rc.login()
	rc.send("Action: ListCommands\r\nActionID: l\r\n\r\n")
	got := rc.msg()
	for _, want := range []string{"Response: Success\r\nActionID: l\r\n", "DeviceStateList: List the current known device states. (Priv: all)\r\n", "Login: Login Manager. (Priv: <none>)\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("ListCommands lacks %q:\n%s", want, got)
		}
	}
}

// TestLargeDeviceList streams a list bigger than a chunk while events flow.
func TestLargeDeviceList(t *testing.T) {
	b := newFakeBackend()
	for i := range 5000 {
		b.devices[fmt.Sprintf("PJSIP/%05d", i)] = devstate.NotInUse
	}
	ts := startServer(t, testConfig(), b)
	c := dialClient(t, ts.addr)
	if err := c.Login(context.Background(), testUser, testSecret); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				ts.Emit(DeviceStateChange("PJSIP/x", devstate.Busy))
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	resp, items, err := c.List(context.Background(), "DeviceStateList")
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Get("EventList") != "start" || len(items) != 5000 {
		t.Fatalf("resp %v, %d items", resp, len(items))
	}
	for i, it := range items {
		if it.Get("Device") != fmt.Sprintf("PJSIP/%05d", i) || it.Get("Event") != "DeviceStateChange" {
			t.Fatalf("item %d = %v", i, it)
		}
	}
}

// TestServeShutdownNoLeaks: Serve returns when its context ends, with every
// session closed and every goroutine gone.
func TestServeShutdownNoLeaks(t *testing.T) {
	base := runtime.NumGoroutine()
	b := newFakeBackend()
	b.devices["a"] = devstate.Busy
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(testConfig(), b, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, ln) }()

	var clients []*Client
	for range 10 {
		c, err := Dial(context.Background(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(context.Background(), testUser, testSecret); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	// Some unauthenticated, some idle mid-message, one not reading.
	var raws []net.Conn
	for i := range 5 {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			conn.Write([]byte("Action: Ping\r\nActionID: half"))
		}
		raws = append(raws, conn)
	}
	for i := range 1000 {
		srv.Emit(DeviceStateChange(fmt.Sprint("dev", i), devstate.InUse))
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	for _, c := range clients {
		c.Close()
	}
	for _, r := range raws {
		r.Close()
	}
	checkGoroutines(t, base)
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still open after Serve returned")
	}
	srv.Emit(DeviceStateChange("after", devstate.Busy)) // harmless
}

func TestServeListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(testConfig(), newFakeBackend(), nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(context.Background(), ln) }()
	ln.Close() // before or after Serve took it: either way it must end
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := srv.Serve(context.Background(), ln); err == nil {
		t.Fatal("second Serve succeeded")
	}
}

func TestEventRendering(t *testing.T) {
	cases := []struct {
		ev   Event
		want string
	}{
		{DeviceStateChange("Custom:x", devstate.RingInUse),
			"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: Custom:x\r\nState: RINGINUSE\r\n\r\n"},
		{MessageWaiting("1@d", mwi.Counts{New: 0, Old: 5}),
			"Event: MessageWaiting\r\nPrivilege: call,all\r\nMailbox: 1@d\r\nWaiting: 0\r\nNew: 0\r\nOld: 5\r\n\r\n"},
		{BuddyStatus(Header{"JID", "b@x/r"}, Header{"Status", "available"}),
			"Event: BuddyStatus\r\nPrivilege: system,all\r\nJID: b@x/r\r\nStatus: available\r\n\r\n"},
		// A name from the network cannot split the frame.
		{DeviceStateChange("evil\r\nEvent: forged", devstate.Busy),
			"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: evil  Event: forged\r\nState: BUSY\r\n\r\n"},
	}
	for _, c := range cases {
		got := c.ev.render()
		if string(got) != c.want {
			t.Errorf("got %q want %q", got, c.want)
		}
		if cap(got) != len(got) && !strings.Contains(c.want, "evil") {
			t.Errorf("render sized %d for %d bytes", cap(got), len(got))
		}
	}
}

func TestParseEventMask(t *testing.T) {
	cases := []struct {
		in   string
		mask uint32
		ok   bool
	}{
		{"on", classAll, true}, {"ON", classAll, true}, {"yes", classAll, true}, {"all", classAll, true},
		{"off", 0, true}, {"no", 0, true}, {"none", 0, true},
		{"system", classSystem, true}, {"system, call", classSystem | classCall, true},
		{"call,all", classAll, true}, {"6", 6, true},
		{"", 0, false}, {"bogus", 0, false}, {"call,bogus", 0, false},
	}
	for _, c := range cases {
		mask, _, ok := parseEventMask(c.in)
		if mask != c.mask || ok != c.ok {
			t.Errorf("parseEventMask(%q) = %x %v, want %x %v", c.in, mask, ok, c.mask, c.ok)
		}
	}
	if eventClass("call,all") != classCall || eventClass("system,all") != classSystem {
		t.Error("eventClass")
	}
	if !wants(classAll, classCall) || wants(classSystem, classCall) || wants(0, 0) {
		t.Error("wants")
	}
}

func TestAuthTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.AuthTimeout = 100 * time.Millisecond
	ts := startServer(t, cfg, newFakeBackend())
	var idle []*rawConn
	for range 10 {
		idle = append(idle, dialRaw(t, ts.addr))
	}
	rc := dialRaw(t, ts.addr)
	rc.login()
	for _, c := range idle {
		c.expectClosed()
	}
	time.Sleep(200 * time.Millisecond) // past the timeout, logged in
	rc.send("Action: Ping\r\n\r\n")
	rc.expectRE(`^Response: Success\r\nPing: Pong\r\n`)
	// Logged, but not once per connection: a flood of idle connections
	// would flood the log.
	if n := strings.Count(ts.logs.String(), "no login in time"); n != 1 {
		t.Errorf("auth timeout logged %d times for 10 connections, want once", n)
	}
	if DefaultConfig().AuthTimeout > 10*time.Second {
		t.Errorf("default AuthTimeout %v: want a short one", DefaultConfig().AuthTimeout)
	}
}
