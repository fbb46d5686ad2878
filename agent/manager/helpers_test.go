package manager

import (
	"bufio"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/busylamp/busylamp/internal/testlog"
	"io"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

const (
	testUser   = "admin"
	testSecret = "s3cret"
)

// fakeBackend is the agent as the socket sees it, in memory.
type fakeBackend struct {
	mu        sync.Mutex
	devices   map[string]devstate.State
	own       map[string]devstate.State // what SetDeviceState was given
	mailboxes map[string]mwi.Counts
	setErr    error
	booted    chan struct{}
	command   func(ctx context.Context, line string) (string, error)
	reload    func(ctx context.Context) ([]string, error)
}

func newFakeBackend() *fakeBackend {
	b := &fakeBackend{
		devices:   map[string]devstate.State{},
		own:       map[string]devstate.State{},
		mailboxes: map[string]mwi.Counts{},
		booted:    make(chan struct{}),
	}
	close(b.booted)
	return b
}

func (b *fakeBackend) DeviceState(_ context.Context, d string) (devstate.State, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.devices[d]
	return s, ok
}

func (b *fakeBackend) SetDeviceState(_ context.Context, d string, s devstate.State) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.setErr != nil {
		return b.setErr
	}
	b.own[d] = s
	b.devices[d] = s
	return nil
}

func (b *fakeBackend) Devices(context.Context) []DeviceState {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []DeviceState
	for d, s := range b.devices {
		out = append(out, DeviceState{Device: d, State: s})
	}
	slices.SortFunc(out, func(x, y DeviceState) int { return strings.Compare(x.Device, y.Device) })
	return out
}

func (b *fakeBackend) Mailbox(_ context.Context, m string) (mwi.Counts, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.mailboxes[m]
	return c, ok
}

func (b *fakeBackend) Mailboxes(context.Context) []MailboxState {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []MailboxState
	for m, c := range b.mailboxes {
		out = append(out, MailboxState{Mailbox: m, Counts: c})
	}
	slices.SortFunc(out, func(x, y MailboxState) int { return strings.Compare(x.Mailbox, y.Mailbox) })
	return out
}

func (b *fakeBackend) SetMailbox(_ context.Context, m string, c mwi.Counts) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.setErr != nil {
		return b.setErr
	}
	b.mailboxes[m] = c
	return nil
}

func (b *fakeBackend) DeleteMailbox(_ context.Context, m string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.setErr != nil {
		return b.setErr
	}
	delete(b.mailboxes, m)
	return nil
}

func (b *fakeBackend) Command(ctx context.Context, line string) (string, error) {
	if b.command != nil {
		return b.command(ctx, line)
	}
	if line == "show buddies" {
		return "Buddy: a@example.org\nBuddy: b@example.org\n", nil
	}
	return "", fmt.Errorf("No such command '%s'", line)
}

func (b *fakeBackend) Booted() <-chan struct{} { return b.booted }

func (b *fakeBackend) Reload(ctx context.Context) ([]string, error) {
	if b.reload != nil {
		return b.reload(ctx)
	}
	return []string{"nothing changed"}, nil
}

// logBuffer collects the server's log lines for assertions.
type logBuffer = testlog.Buffer

type testServer struct {
	*Server
	addr string
	logs *logBuffer
	stop func() // cancel and wait for Serve
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Username = testUser
	cfg.Secret = testSecret
	cfg.FailedLoginDelay = -1 // no delay in tests
	// The guard across connections out of the way; guard_test.go tests it.
	cfg.LoginBackoff = time.Nanosecond
	cfg.MaxLoginBackoff = time.Nanosecond
	cfg.BanAfter = 1 << 20
	cfg.GlobalFailedLogins = 1 << 20
	return cfg
}

// startServer runs a server on a loopback port until the test ends, then
// checks that Serve returned nil.
func startServer(t testing.TB, cfg Config, b Backend) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	srv := New(cfg, b, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, ln) }()
	var once sync.Once
	ts := &testServer{Server: srv, addr: ln.Addr().String(), logs: logs}
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

// rawConn speaks AMI with bytes, as a client library does.
type rawConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, r: bufio.NewReader(c)}
	if g := rc.line(); g != "Asterisk Call Manager/"+Version+"\r\n" {
		t.Fatalf("greeting = %q", g)
	}
	return rc
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawConn) line() string {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	l, err := rc.r.ReadString('\n')
	if err != nil {
		rc.t.Fatalf("read line: %v (got %q)", err, l)
	}
	return l
}

// msg reads one message, byte for byte, through its empty line.
func (rc *rawConn) msg() string {
	rc.t.Helper()
	var sb strings.Builder
	for {
		l := rc.line()
		sb.WriteString(l)
		if l == "\r\n" {
			return sb.String()
		}
	}
}

// expect reads one message and compares it byte for byte.
func (rc *rawConn) expect(want string) {
	rc.t.Helper()
	if got := rc.msg(); got != want {
		rc.t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// expectRE reads one message and matches it against a regexp.
func (rc *rawConn) expectRE(pattern string) string {
	rc.t.Helper()
	got := rc.msg()
	if !regexp.MustCompile(pattern).MatchString(got) {
		rc.t.Fatalf("got\n%q\nwant match of\n%q", got, pattern)
	}
	return got
}

// expectClosed reads until the server closes the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(rc.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		rc.t.Fatalf("want the server to close; got %v after %q", err, rest)
	}
	if len(rest) != 0 {
		rc.t.Fatalf("unexpected bytes before close: %q", rest)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

const fullyBootedRE = `^Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: \d+\r\nLastReload: \d+\r\nStatus: Fully Booted\r\n\r\n$`

// login logs a raw connection in and reads FullyBooted.
func (rc *rawConn) login() {
	rc.t.Helper()
	rc.send("Action: Login\r\nUsername: " + testUser + "\r\nSecret: " + testSecret + "\r\n\r\n")
	rc.expect("Response: Success\r\nMessage: Authentication accepted\r\n\r\n")
	rc.expectRE(fullyBootedRE)
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkGoroutines fails when more goroutines run than at base, after a
// grace period for exiting ones.
func checkGoroutines(t testing.TB, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (ts *testServer) listeners() int { return len(*ts.Server.listeners.Load()) }

func newBufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// dialClient dials with the package's client and closes it at the end.
func dialClient(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
