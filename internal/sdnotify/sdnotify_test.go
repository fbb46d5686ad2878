package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens a datagram socket like systemd's at name and points
// $NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(EnvSocket, name)
	return conn
}

// receive reads one datagram, failing after a second.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no datagram: %v", err)
	}
	return string(buf[:n])
}

func TestMessages(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	for _, tc := range []struct {
		send func() error
		want string
	}{
		{Ready, "READY=1"},
		{Stopping, "STOPPING=1"},
		{Watchdog, "WATCHDOG=1"},
		{func() error { return Status("connected to xmpp.example.com, 3 buddies") }, "STATUS=connected to xmpp.example.com, 3 buddies"},
		{func() error { return Status("two\nlines\r\nhere") }, "STATUS=two lines here"},
		{func() error { return Notify("READY=1\nSTATUS=up") }, "READY=1\nSTATUS=up"},
	} {
		if err := tc.send(); err != nil {
			t.Fatalf("send %q: %v", tc.want, err)
		}
		if got := receive(t, conn); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// Type=notify-reload wants RELOADING=1 with MONOTONIC_USEC, a
// CLOCK_MONOTONIC reading close to now.
func TestReloadingCarriesMonotonicTime(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CLOCK_MONOTONIC is read on Linux only")
	}
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	before, _ := monotonicUsec()
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := monotonicUsec()
	lines := strings.Split(receive(t, conn), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC=", lines)
	}
	us, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if us < before || us > after || before == 0 {
		t.Errorf("MONOTONIC_USEC=%d, want within [%d, %d]", us, before, after)
	}
}

func TestMonotonicAdvancesWithTime(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CLOCK_MONOTONIC is read on Linux only")
	}
	// start before a and b before elapsed: b-a can only be shorter than
	// elapsed, however the test is preempted.
	start := time.Now()
	a, ok := monotonicUsec()
	time.Sleep(20 * time.Millisecond)
	b, ok2 := monotonicUsec()
	elapsed := time.Since(start)
	if !ok || !ok2 {
		t.Fatal("clock_gettime failed")
	}
	got := time.Duration(b-a) * time.Microsecond
	if got < 20*time.Millisecond || got > elapsed+time.Millisecond {
		t.Errorf("monotonic clock moved %v over %v", got, elapsed)
	}
}

func TestAbstractSocket(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("abstract sockets are Linux only")
	}
	conn := listen(t, fmt.Sprintf("@busylamp-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("got %q", got)
	}
}

func TestNoSocketIsNoOp(t *testing.T) {
	t.Setenv(EnvSocket, "")
	os.Unsetenv(EnvSocket)
	for _, f := range []func() error{Ready, Reloading, Stopping, Watchdog, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("without %s: %v, want nil", EnvSocket, err)
		}
	}
}

func TestBadSocket(t *testing.T) {
	for _, name := range []string{
		filepath.Join(t.TempDir(), "nobody-listens"),
		"relative/path",
		"@",
		"vsock:2:1234",
	} {
		t.Setenv(EnvSocket, name)
		if err := Ready(); err == nil {
			t.Errorf("%s=%q: no error", EnvSocket, name)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		wantErr   bool
	}{
		{"", "", 0, true},
		{"30000000", "", 30 * time.Second, false},
		{"30000000", "42", 30 * time.Second, false},
		{"30000000", "43", 0, true}, // meant for another process
		{"0", "", 0, true},
		{"-5", "", 0, true},
		{"soon", "", 0, true},
		{"1000", "x", 0, true},
	} {
		got, err := watchdogInterval(tc.usec, tc.pid, 42)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("watchdogInterval(%q, %q) = %v, %v; want %v, error %v", tc.usec, tc.pid, got, err, tc.want, tc.wantErr)
		}
	}
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, ok := WatchdogInterval(); !ok || d != 2*time.Second {
		t.Errorf("WatchdogInterval() = %v, %v; want 2s, true", d, ok)
	}
	t.Setenv("WATCHDOG_USEC", "")
	if _, ok := WatchdogInterval(); ok {
		t.Error("WatchdogInterval() without WATCHDOG_USEC: true")
	}
}
