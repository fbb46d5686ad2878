package xmpptest

import (
	"embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"text/template"
)

//go:embed templates
var templates embed.FS

var configTemplates = template.Must(template.New("").Funcs(template.FuncMap{
	// q quotes a path under the instance dir for Lua or YAML (both
	// accept Go's double-quoted form for ASCII).
	"q": func(dir, rel string) string { return strconv.Quote(filepath.Join(dir, rel)) },
}).ParseFS(templates, "templates/*"))

// configData feeds the config templates.
type configData struct {
	Dir, Domain, Service string
	Port, DistPort       int
	DirectTLSPort        int
	Node                 string
	Admins               []string
	Memory, TLS          bool
	NoPubSub             bool
	ExtraPubSub          string
	Cert, Key, CertKey   string
}

func (s *Server) configData() configData {
	in := s.impl
	return configData{
		Dir: s.Dir, Domain: s.Domain, Service: s.Service,
		Port: in.port, DirectTLSPort: in.tlsPort, Node: in.node, Admins: s.admins(),
		Memory: in.opts.Memory, TLS: in.opts.TLS, NoPubSub: in.opts.NoPubSub, ExtraPubSub: in.opts.ExtraPubSub,
		Cert: in.cert.Cert, Key: in.cert.Key, CertKey: in.cert.Both,
	}
}

func writeTemplate(name, path string, data any) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := configTemplates.ExecuteTemplate(f, name, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// prosody runs `prosody -F --config DIR/prosody.cfg.lua`; accounts are made
// with prosodyctl, which writes the account files directly (the server
// reads them on each login), and the admin list is reloaded through the
// admin shell socket.
type prosody struct{}

func (prosody) binaries() []string { return []string{"prosody", "prosodyctl"} }
func (prosody) sysUser() string    { return "prosody" }

func (prosody) config(s *Server) string { return filepath.Join(s.Dir, "prosody.cfg.lua") }

func (p prosody) writeConfig(s *Server) error {
	return writeTemplate("prosody.cfg.lua", p.config(s), s.configData())
}

func (p prosody) env(s *Server) []string {
	return []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + filepath.Join(s.Dir, "data"), "LANG=C.UTF-8"}
}

func (p prosody) command(s *Server) *exec.Cmd {
	cmd := exec.Command("prosody", "-F", "--config", p.config(s))
	cmd.Dir = s.Dir
	cmd.Env = p.env(s)
	return cmd
}

func (prosody) stop(s *Server) error {
	return s.impl.g.signal(syscall.SIGTERM)
}

func (p prosody) ctl(s *Server, args ...string) error {
	_, err := runCtl(s.impl.as, s.Dir, p.env(s), "prosodyctl", append([]string{"--config", p.config(s)}, args...)...)
	return err
}

func (p prosody) register(s *Server, name, password string) error {
	return p.ctl(s, "register", name, s.Domain, password)
}

// reloadAdmins re-reads the config and reloads the PubSub component's
// authorization module, which copied the admin list when it loaded (the
// component checks admins as remote JIDs, on its own host). Prosody 0.12
// keeps the old module in hosts[...].authz after a module reload, so the
// host is pointed at the new one: one line of Lua through the admin shell.
func (p prosody) reloadAdmins(s *Server) error {
	lua := fmt.Sprintf(`>local mm = require "core.modulemanager"; prosody.reload_config(); `+
		`assert(mm.reload(%[1]q, "authz_internal")); hosts[%[1]q].authz = assert(mm.get_module(%[1]q, "authz_internal"))`, s.Service)
	// prosodyctl shell exits with the number of errors.
	_, err := runCtl(s.impl.as, s.Dir, p.env(s), "prosodyctl", "--config", p.config(s), "shell", lua)
	return err
}

func (prosody) logs(s *Server) []string {
	return []string{filepath.Join(s.Dir, "logs", "console.log"), filepath.Join(s.Dir, "logs", "prosody.log")}
}
