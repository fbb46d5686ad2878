package xmpptest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ejabberd runs `ejabberdctl --config-dir DIR ... foreground` so the beam
// process stays in our process group; accounts and the admin list go
// through ejabberdctl (register, reload_config).
//
// As root, /usr/sbin/ejabberdctl is run as user ejabberd directly (it would
// otherwise su to it, which starts a new session outside our process
// group). As another user, a copy of ejabberdctl that does not insist on
// user ejabberd is run from the instance dir.
type ejabberd struct{}

const ejabberdctlPath = "/usr/sbin/ejabberdctl"

func (ejabberd) binaries() []string { return []string{ejabberdctlPath, "erl"} }
func (ejabberd) sysUser() string    { return "ejabberd" }

func (e ejabberd) writeConfig(s *Server) error {
	in := s.impl
	d := s.configData()
	// A fresh distribution port for each start; ctl commands read it from
	// the same file.
	if in.g == nil || in.g.exited() {
		port, err := freePort()
		if err != nil {
			return err
		}
		d.DistPort = port
	} else {
		d.DistPort = in.distPort
	}
	in.distPort = d.DistPort
	if err := writeTemplate("ejabberd.yml", filepath.Join(s.Dir, "ejabberd.yml"), d); err != nil {
		return err
	}
	if err := writeTemplate("ejabberdctl.cfg", filepath.Join(s.Dir, "ejabberdctl.cfg"), d); err != nil {
		return err
	}
	for _, sub := range []string{"spool", "modules"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, sub), 0o750); err != nil {
			return err
		}
	}
	if os.Geteuid() != 0 {
		return e.writeUnprivilegedCtl(s)
	}
	return nil
}

// writeUnprivilegedCtl copies ejabberdctl without its check that it runs as
// root or ejabberd.
func (ejabberd) writeUnprivilegedCtl(s *Server) error {
	src, err := os.ReadFile(ejabberdctlPath)
	if err != nil {
		return err
	}
	patched := bytes.Replace(src, []byte("\nINSTALLUSER=ejabberd\n"), []byte("\nINSTALLUSER=\n"), 1)
	if bytes.Equal(patched, src) {
		return fmt.Errorf("%s: no INSTALLUSER=ejabberd line to drop for a non-root run", ejabberdctlPath)
	}
	return os.WriteFile(filepath.Join(s.Dir, "ejabberdctl"), patched, 0o755)
}

func (ejabberd) ctlPath(s *Server) string {
	if os.Geteuid() != 0 {
		return filepath.Join(s.Dir, "ejabberdctl")
	}
	return ejabberdctlPath
}

func (e ejabberd) args(s *Server, cmd ...string) []string {
	return append([]string{
		"--config-dir", s.Dir,
		"--config", filepath.Join(s.Dir, "ejabberd.yml"),
		"--spool", filepath.Join(s.Dir, "spool"),
		"--logs", filepath.Join(s.Dir, "logs"),
		"--node", s.impl.node + "@localhost",
	}, cmd...)
}

func (ejabberd) env(s *Server) []string {
	// HOME holds the Erlang cookie shared by the node and ctl commands.
	return []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + s.Dir, "LANG=C.UTF-8"}
}

func (e ejabberd) command(s *Server) *exec.Cmd {
	cmd := exec.Command(e.ctlPath(s), e.args(s, "foreground")...)
	cmd.Dir = s.Dir
	cmd.Env = e.env(s)
	return cmd
}

func (e ejabberd) ctl(s *Server, args ...string) error {
	_, err := runCtl(s.impl.as, filepath.Join(s.Dir, "spool"), e.env(s), e.ctlPath(s), e.args(s, args...)...)
	return err
}

func (e ejabberd) stop(s *Server) error { return e.ctl(s, "stop") }

func (e ejabberd) register(s *Server, name, password string) error {
	err := e.ctl(s, "register", name, s.Domain, password)
	if err != nil && strings.Contains(err.Error(), "already registered") {
		return nil // Start after a Kill registers every account again
	}
	return err
}

func (e ejabberd) reloadAdmins(s *Server) error { return e.ctl(s, "reload_config") }

func (ejabberd) logs(s *Server) []string {
	return []string{
		filepath.Join(s.Dir, "logs", "console.log"),
		filepath.Join(s.Dir, "logs", "ejabberd.log"),
		filepath.Join(s.Dir, "logs", "error.log"),
	}
}
