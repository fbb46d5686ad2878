package xmpptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Bounds on every wait. They are far above what an idle machine needs
// (Prosody starts in a fraction of a second, ejabberd in 2-4 s, a ctl
// command in 1-2 s) because a loaded one is much slower: with both cores
// busy ejabberd took 13-20 s to boot and an ejabberdctl command over 20 s.
// Each wait ends on the server's own signal, so an idle run never waits
// for the bound.
const (
	startTimeout = 120 * time.Second
	stopTimeout  = 60 * time.Second
	ctlTimeout   = 120 * time.Second
)

// runAs is the account a server runs under. As root the servers run as
// their packages' system users (Prosody refuses root, ejabberdctl insists on
// its own user); otherwise as the current user.
type runAs struct {
	cred     *syscall.Credential // nil: current user
	uid, gid int
}

func lookupRunAs(name string) (runAs, error) {
	if os.Geteuid() != 0 {
		return runAs{uid: os.Geteuid(), gid: os.Getegid()}, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return runAs{}, fmt.Errorf("look up system user %s: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return runAs{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return runAs{}, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return runAs{
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true},
		uid:  uid, gid: gid,
	}, nil
}

// chownTree hands the instance directory to the server's user.
func (r runAs) chownTree(dir string) error {
	if r.cred == nil {
		return nil
	}
	// A running server renames its temporary files (prosody's "*.list~")
	// while the walk goes on: a path gone since it was listed is the
	// server's own file, already its user's, and no error.
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err == nil {
			err = os.Lchown(p, r.uid, r.gid)
		}
		if p != dir && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
}

// group is a running server: a reaper shell leading a process group that
// the server joins. The reaper reads a pipe whose only writer is this test
// process; when the test binary exits for any reason (even a panic or
// SIGKILL) the pipe closes and the reaper kills the whole group, so no
// server outlives its tests.
type group struct {
	home   string // HOME of every process the server starts
	reaper *exec.Cmd
	server *exec.Cmd
	guard  *os.File // write end of the reaper's stdin

	done    chan struct{} // closed when server has exited
	waitErr error
	once    sync.Once
}

const reaperScript = `while read -r _; do :; done; kill -KILL 0`

// startGroup starts cmd (already configured with path, args, env, dir,
// output) in a new process group guarded by a reaper.
func startGroup(cmd *exec.Cmd, as runAs, home string) (*group, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper pipe: %w", err)
	}
	reaper := exec.Command("/bin/sh", "-c", reaperScript)
	reaper.Stdin = pr
	reaper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := reaper.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	pr.Close()
	g := &group{home: home, reaper: reaper, guard: pw, done: make(chan struct{})}

	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: reaper.Process.Pid, Credential: as.cred}
	if err := cmd.Start(); err != nil {
		g.release()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	g.server = cmd
	go func() {
		g.waitErr = cmd.Wait()
		close(g.done)
	}()
	return g, nil
}

// exited reports whether the server process has ended.
func (g *group) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the server process to end.
func (g *group) wait(d time.Duration) bool {
	select {
	case <-g.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL to the whole group, and to processes that left it but
// carry the instance's HOME (Erlang's erl_child_setup and inet_gethost
// start their own sessions), and waits until all have died: beam.smp is
// our grandchild, and its listening socket keeps accepting into the
// backlog until its last thread has exited.
func (g *group) kill() {
	pgid := g.reaper.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if g.server != nil {
		g.wait(stopTimeout)
	}
	g.release()
	deadline := time.Now().Add(stopTimeout)
	for {
		left := leftovers(pgid, g.home)
		if len(left) == 0 || time.Now().After(deadline) {
			return
		}
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leftovers lists the live processes in process group pgid or with
// HOME=home (or below it) in their environment. A zombie counts as live
// while any of its threads still runs.
func leftovers(pgid int, home string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	wantPgid := strconv.Itoa(pgid)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		proc := "/proc/" + e.Name()
		stat, err := os.ReadFile(proc + "/stat")
		if err != nil {
			continue
		}
		// After the parenthesised command: state ppid pgrp ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 {
			continue
		}
		if f[0] == "Z" {
			if tasks, _ := os.ReadDir(proc + "/task"); len(tasks) <= 1 {
				continue
			}
		}
		if f[2] == wantPgid {
			pids = append(pids, pid)
			continue
		}
		if home != "" && hasHome(proc, home) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func hasHome(proc, home string) bool {
	env, _ := os.ReadFile(proc + "/environ")
	for _, kv := range bytes.Split(env, []byte{0}) {
		if h, ok := bytes.CutPrefix(kv, []byte("HOME=")); ok {
			return string(h) == home || strings.HasPrefix(string(h), home+"/")
		}
	}
	return false
}

// release closes the guard, which makes the reaper kill whatever is left in
// the group, and reaps the reaper.
func (g *group) release() {
	g.once.Do(func() {
		g.guard.Close()
		done := make(chan struct{})
		go func() {
			_ = g.reaper.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = g.reaper.Process.Kill()
			<-done
		}
	})
}

// signal sends sig to the server process only.
func (g *group) signal(sig syscall.Signal) error {
	if g.server == nil || g.server.Process == nil {
		return errors.New("no server process")
	}
	return g.server.Process.Signal(sig)
}

// runCtl runs a control command (prosodyctl, ejabberdctl) as the server's
// user, bounded by ctlTimeout, in its own process group so a timeout kills
// every process it started.
func runCtl(as runAs, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: as.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if ctx.Err() != nil {
		return text, fmt.Errorf("%s %s: timed out after %v: %s", filepath.Base(name), strings.Join(args, " "), ctlTimeout, text)
	}
	if err != nil {
		return text, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, text)
	}
	return text, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tail returns the last n lines of the named files, for error messages.
func tail(n int, files ...string) string {
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "\n--- tail of %s ---\n%s", f, strings.Join(lines, "\n"))
	}
	return b.String()
}
