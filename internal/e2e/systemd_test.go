package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under systemd (Type=notify) the agent says READY=1 once booted,
// RELOADING=1 (with MONOTONIC_USEC) and READY=1 again around a SIGHUP
// reload, and STOPPING=1 on SIGTERM: a socket like systemd's stands in.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 16)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.Contains(m, want) {
				t.Fatalf("notify %q, want %q", m, want)
			}
			return m
		case <-time.After(bootWait):
			t.Fatalf("no %q from the agent within %v", want, bootWait)
		}
		return ""
	}
	skipStatus := func(want string) string {
		t.Helper()
		for {
			m := next("")
			if !strings.HasPrefix(m, "STATUS=") {
				if !strings.Contains(m, want) {
					t.Fatalf("notify %q, want %q", m, want)
				}
				return m
			}
		}
	}

	c := newCluster(t, 1, nodeOpts{logJSON: true})
	nd := c.nodes[0]
	nd.env = []string{"NOTIFY_SOCKET=" + sock}
	nd.start()
	skipStatus("READY=1")
	nd.waitBooted()
	nd.cmd.Process.Signal(syscall.SIGHUP)
	if m := skipStatus("RELOADING=1"); !strings.Contains(m, "MONOTONIC_USEC=") {
		t.Fatalf("reloading without MONOTONIC_USEC: %q", m)
	}
	skipStatus("READY=1")
	nd.stop()
	skipStatus("STOPPING=1")

	// log_format = json: every line the agent logged is one JSON object.
	logText, err := os.ReadFile(nd.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lines(string(logText)) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["msg"] == nil || rec["level"] == nil {
			t.Fatalf("log line not a JSON record (%v): %s", err, l)
		}
		n++
	}
	if n == 0 || !strings.Contains(string(logText), `"msg":"config reloaded"`) {
		t.Fatalf("JSON log lacks the reload (%d lines):\n%s", n, logText)
	}
}
