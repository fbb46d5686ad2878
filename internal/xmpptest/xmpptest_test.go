package xmpptest

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv("XMPPTEST_ORPHAN") != "" {
		orphan(os.Getenv("XMPPTEST_ORPHAN"))
		return
	}
	os.Exit(Main(m))
}

type creds struct{ jid, pw string }

func cr(jid, pw string) creds { return creds{jid, pw} }

func mustLogin(t *testing.T, s *Server, a creds, useTLS bool) *client {
	t.Helper()
	c, err := login(s, a.jid, a.pw, useTLS)
	if err != nil {
		t.Fatalf("%s: %v%s", s.Kind, err, tail(20, s.impl.drv.logs(s)...))
	}
	t.Cleanup(c.close)
	return c
}

func wantResult(t *testing.T, what string, e element, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if e.attr("type") != "result" {
		t.Fatalf("%s: want result, got %s", what, e)
	}
}

func wantError(t *testing.T, what, condition string, e element, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if e.attr("type") != "error" || !bytes.Contains(e.Inner, []byte("<"+condition)) {
		t.Fatalf("%s: want error %s, got %s", what, condition, e)
	}
}

// Only admins create nodes; admins added to a running server count too.
func TestCreateNodeOnlyAsAdmin(t *testing.T) {
	t.Parallel()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			s := StartT(t, kind, Options{})
			if s.Domain != "busylamp.test" || s.Service != "pubsub.busylamp.test" || s.CAFile != "" {
				t.Fatalf("server fields: %+v", s)
			}
			jid, pw := s.Admin("boss")
			if jid != "boss@busylamp.test" {
				t.Fatalf("admin JID %q", jid)
			}
			if j2, p2 := s.Admin("boss"); j2 != jid || p2 != pw {
				t.Fatalf("second Admin(boss) = %s %s, want %s %s", j2, p2, jid, pw)
			}
			boss := mustLogin(t, s, cr(jid, pw), false)
			if bytes.Contains(boss.features.Inner, []byte("starttls")) {
				t.Errorf("STARTTLS offered without Options.TLS: %s", boss.features)
			}
			joe := mustLogin(t, s, cr(s.User("joe")), false)

			e, err := boss.createNode(s.Service, "device_state")
			wantResult(t, "admin creates node", e, err)
			e, err = boss.publish(s.Service, "device_state", "Custom:lamp",
				`<state xmlns="http://asterisk.org" eid="00:11:22:33:44:55" cachable="1">INUSE</state>`)
			wantResult(t, "admin publishes", e, err)
			e, err = joe.createNode(s.Service, "joes_node")
			wantError(t, "user creates node", "forbidden", e, err)

			// A second admin on the running server.
			boss2 := mustLogin(t, s, cr(s.Admin("boss2")), false)
			e, err = boss2.createNode(s.Service, "message_waiting")
			wantResult(t, "second admin creates node", e, err)
			e, err = joe.createNode(s.Service, "joes_node")
			wantError(t, "user creates node after admin reload", "forbidden", e, err)
		})
	}
}

// Stop/Start and Kill/Start keep the port, the accounts and the nodes.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			s := StartT(t, kind, Options{})
			addr := s.Addr
			jid, pw := s.Admin("boss")
			c := mustLogin(t, s, cr(jid, pw), false)
			e, err := c.createNode(s.Service, "device_state")
			wantResult(t, "create", e, err)
			c.close()

			begin := time.Now()
			if err := s.Stop(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: Stop took %v", kind, time.Since(begin).Round(time.Millisecond))
			wantDown(t, s)
			late, latePW := s.User("late") // registered by Start

			begin = time.Now()
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: Start after Stop took %v", kind, time.Since(begin).Round(time.Millisecond))
			if s.Addr != addr {
				t.Fatalf("Addr moved from %s to %s", addr, s.Addr)
			}
			c = mustLogin(t, s, cr(jid, pw), false)
			e, err = c.items(s.Service, "device_state")
			wantResult(t, "node after Stop/Start", e, err)
			mustLogin(t, s, cr(late, latePW), false)

			pgid := s.impl.g.reaper.Process.Pid
			if err := s.Kill(); err != nil {
				t.Fatal(err)
			}
			wantDown(t, s)
			if left := leftovers(pgid, ""); len(left) > 0 {
				t.Fatalf("processes left after Kill: %v", left)
			}
			if left := dirProcs(s.Dir); len(left) > 0 {
				t.Fatalf("processes left after Kill: %v", left)
			}
			begin = time.Now()
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: Start after Kill took %v", kind, time.Since(begin).Round(time.Millisecond))
			c = mustLogin(t, s, cr(jid, pw), false)
			e, err = c.items(s.Service, "device_state")
			wantResult(t, "node after Kill/Start", e, err)
		})
	}
}

func wantDown(t *testing.T, s *Server) {
	t.Helper()
	if conn, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections on %s", s.Kind, s.Addr)
	}
}

// STARTTLS verifies against CAFile, and is required.
func TestTLS(t *testing.T) {
	t.Parallel()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			s := StartT(t, kind, Options{TLS: true})
			if s.CAFile == "" {
				t.Fatal("no CAFile")
			}
			jid, pw := s.Admin("boss")
			c := mustLogin(t, s, cr(jid, pw), true)
			e, err := c.createNode(s.Service, "device_state")
			wantResult(t, "create over TLS", e, err)
			if c, err := login(s, jid, pw, false); err == nil {
				c.close()
				t.Fatal("logged in without TLS on a TLS server")
			}
		})
	}
}

// Options.Memory keeps Prosody's PubSub data out of the data dir, and it is
// gone after a restart.
func TestProsodyMemory(t *testing.T) {
	t.Parallel()
	for _, memory := range []bool{false, true} {
		t.Run(fmt.Sprintf("memory=%v", memory), func(t *testing.T) {
			t.Parallel()
			s := StartT(t, Prosody, Options{Memory: memory})
			c := mustLogin(t, s, cr(s.Admin("boss")), false)
			e, err := c.createNode(s.Service, "device_state")
			wantResult(t, "create", e, err)
			e, err = c.publish(s.Service, "device_state", "SIP/100",
				`<state xmlns="http://asterisk.org" eid="00:11:22:33:44:55" cachable="1">BUSY</state>`)
			wantResult(t, "publish", e, err)
			c.close()
			if err := s.Stop(); err != nil { // flushes anything buffered
				t.Fatal(err)
			}
			files := pubsubFiles(t, s)
			if memory && len(files) > 0 {
				t.Fatalf("memory storage wrote %v", files)
			}
			if !memory && len(files) == 0 {
				t.Fatal("disk storage wrote no pubsub files (so the memory check proves nothing)")
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			c = mustLogin(t, s, cr(s.Admin("boss")), false)
			e, err = c.items(s.Service, "device_state")
			if memory {
				wantError(t, "items after restart", "item-not-found", e, err)
			} else {
				wantResult(t, "items after restart", e, err)
			}
		})
	}
}

func pubsubFiles(t *testing.T, s *Server) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(s.Dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(p, "pubsub") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestShared(t *testing.T) {
	t.Parallel()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			a, b := Shared(t, kind), Shared(t, kind)
			if a != b {
				t.Fatal("Shared started two servers")
			}
			c := mustLogin(t, a, cr(a.User("sharer")), false)
			e, err := c.iq("get", a.Service, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
			wantResult(t, "disco#info of the service", e, err)
		})
	}
}

// A test binary that dies without Close leaves no server behind.
func TestNoOrphans(t *testing.T) {
	t.Parallel()
	for _, kind := range Kinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			drv, _ := newDriver(kind)
			for _, bin := range drv.binaries() {
				if _, err := exec.LookPath(bin); err != nil {
					fail(t, fmt.Errorf("%w: %v", ErrNotInstalled, err))
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "XMPPTEST_ORPHAN="+string(kind))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pgid int
			var dir string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if _, err := fmt.Sscanf(sc.Text(), "started pgid=%d dir=%s", &pgid, &dir); err == nil {
					break
				}
			}
			if pgid == 0 {
				_ = cmd.Wait()
				t.Fatal("child did not start a server")
			}
			defer os.RemoveAll(dir)
			if len(leftovers(pgid, "")) < 2 {
				t.Fatalf("server group %d has no server in it", pgid)
			}
			_ = cmd.Process.Kill() // no Close, no Main: the reaper's turn
			_ = cmd.Wait()
			deadline := time.Now().Add(60 * time.Second) // a busy machine reaps slowly
			for len(leftovers(pgid, "")) > 0 || len(dirProcs(dir)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("processes outlived the test binary: %v %v", leftovers(pgid, ""), dirProcs(dir))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// orphan starts a server, reports its process group and hangs until killed.
func orphan(kind string) {
	s, err := Start(Kind(kind), Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("started pgid=%d dir=%s\n", s.impl.g.reaper.Process.Pid, s.Dir)
	time.Sleep(time.Minute)
	os.Exit(1)
}

// dirProcs lists processes started for the instance in dir, by the dir in
// their command line or environment (erl_child_setup leaves beam's process
// group, but keeps HOME).
func dirProcs(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndexByte(stat, ')'); i < 0 || bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z")) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		environ, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
		if bytes.Contains(cmdline, []byte(dir)) || bytes.Contains(environ, []byte(dir)) {
			out = append(out, e.Name()+" "+string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return out
}
