package packaging

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// testDescribe is the version the test binary and package are built
// with, as git describe would print it.
const testDescribe = "v1.2.3-4-gabcdef0"

// Built once for every test (TestMain): the binary and its .deb.
var (
	testBinary string
	testDeb    string
	buildErr   error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "busylamp-packaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBinary, testDeb, buildErr = buildAll(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildAll(dir string) (binary, deb string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	binary = filepath.Join(dir, "busylamp")
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+testDescribe, "-o", binary, "../cmd/busylamp")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	deb, err = Build(Options{Root: "..", Binary: binary, Version: testDescribe, Arch: runtime.GOARCH, OutDir: filepath.Join(dir, "out")})
	return binary, deb, err
}

// needDeb returns the package built for the tests, or fails the test.
func needDeb(t *testing.T) string {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return testDeb
}

// needTool finds a program, skipping the test where it is missing (not
// on a Debian system). Debian's base system has dpkg and dpkg-deb.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed", name)
	}
	return path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String()
}

func TestFileNameAndVersion(t *testing.T) {
	deb := needDeb(t)
	if got, want := filepath.Base(deb), "busylamp_1.2.3+git4.abcdef0_"+DebianArch(runtime.GOARCH)+".deb"; got != want {
		t.Errorf("package file %s, want %s", got, want)
	}
}

// The package holds exactly these files, owned by root, with these modes,
// and the directories above them.
func TestContents(t *testing.T) {
	deb := needDeb(t)
	dpkgDeb := needTool(t, "dpkg-deb")
	want := map[string]string{
		"./usr/bin/busylamp":                    "-rwxr-xr-x",
		"./lib/systemd/system/busylamp.service": "-rw-r--r--",
		"./usr/lib/sysusers.d/busylamp.conf":    "-rw-r--r--",
		"./etc/busylamp/busylamp.conf":          "-rw-r-----",
		"./usr/share/man/man1/busylamp.1.gz":    "-rw-r--r--",
		"./usr/share/doc/busylamp/copyright":    "-rw-r--r--",
	}
	wantDirs := map[string]bool{}
	for p := range want {
		for d := filepath.Dir(strings.TrimPrefix(p, "./")); d != "."; d = filepath.Dir(d) {
			wantDirs["./"+d+"/"] = true
		}
	}
	got := map[string]string{}
	gotDirs := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(run(t, dpkgDeb, "-c", deb)))
	for sc.Scan() {
		// drwxr-xr-x root/root         0 2026-12-03 11:48 ./etc/
		f := strings.Fields(sc.Text())
		if len(f) != 6 {
			t.Errorf("dpkg-deb -c line %q: want 6 fields (no symlinks)", sc.Text())
			continue
		}
		mode, owner, path := f[0], f[1], f[5]
		if owner != "root/root" {
			t.Errorf("%s owned by %s, want root/root", path, owner)
		}
		if strings.HasSuffix(path, "/") {
			if mode != "drwxr-xr-x" {
				t.Errorf("directory %s mode %s, want drwxr-xr-x", path, mode)
			}
			gotDirs[path] = true
			continue
		}
		got[path] = mode
	}
	for p, m := range want {
		if got[p] != m {
			t.Errorf("%s: mode %q, want %q", p, got[p], m)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected file %s", p)
		}
	}
	for d := range gotDirs {
		if !wantDirs[d] {
			t.Errorf("unexpected directory %s", d)
		}
	}
	for d := range wantDirs {
		if !gotDirs[d] {
			t.Errorf("directory %s missing", d)
		}
	}
}

func TestControl(t *testing.T) {
	deb := needDeb(t)
	dpkgDeb := needTool(t, "dpkg-deb")
	fields := map[string]string{
		"Package":      "busylamp",
		"Version":      "1.2.3+git4.abcdef0",
		"Architecture": DebianArch(runtime.GOARCH),
		"Section":      "net",
		"Priority":     "optional",
		"Maintainer":   Maintainer,
	}
	for k, want := range fields {
		if got := strings.TrimSpace(run(t, dpkgDeb, "-f", deb, k)); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if got := run(t, dpkgDeb, "-f", deb, "Description"); !strings.Contains(got, "XMPP PubSub") || strings.Count(got, "\n") < 3 {
		t.Errorf("Description %q: want a synopsis and a long description", got)
	}
	if got := strings.TrimSpace(run(t, dpkgDeb, "-f", deb, "Depends")); got != "" && got != "libc6" {
		t.Errorf("Depends: %q, want nothing or libc6", got)
	}
	if got := run(t, dpkgDeb, "-I", deb, "conffiles"); got != PathConfig+"\n" {
		t.Errorf("conffiles %q, want %q", got, PathConfig+"\n")
	}

	// The maintainer scripts: present, executable, valid sh.
	control := t.TempDir()
	run(t, dpkgDeb, "-e", deb, control)
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		p := filepath.Join(control, s)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("maintainer script %s: %v", s, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v, want 0755", s, fi.Mode().Perm())
		}
		run(t, "sh", "-n", p)
	}
	postinst, err := os.ReadFile(filepath.Join(control, "postinst"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"systemd-sysusers /usr/lib/sysusers.d/busylamp.conf", "adduser --system", "daemon-reload", "chgrp busylamp /etc/busylamp/busylamp.conf"} {
		if !bytes.Contains(postinst, []byte(want)) {
			t.Errorf("postinst lacks %q", want)
		}
	}
	// Not started on a first install (the shipped config is an example).
	if regexp.MustCompile(`(?m)^[^#]*systemctl (start|enable|restart)\b`).Match(postinst) {
		t.Error("postinst starts or enables the agent; it should only try-restart on upgrade")
	}
	prerm, err := os.ReadFile(filepath.Join(control, "prerm"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(prerm, []byte("systemctl stop busylamp.service")) {
		t.Error("prerm does not stop the agent")
	}
}

// extract unpacks the package into a fresh directory, as dpkg would
// install it there.
func extract(t *testing.T) string {
	t.Helper()
	deb := needDeb(t)
	dpkg := needTool(t, "dpkg")
	root := filepath.Join(t.TempDir(), "root")
	run(t, dpkg, "-x", deb, root)
	return root
}

func TestInstalledBinaryRuns(t *testing.T) {
	root := extract(t)
	bin := filepath.Join(root, PathBinary)
	if got := run(t, bin, "version"); got != "busylamp "+testDescribe+"\n" {
		t.Errorf("busylamp version: %q", got)
	}
	// The shipped config is one `busylamp check` accepts.
	cmd := exec.Command(bin, "check", "-c", filepath.Join(root, PathConfig))
	cmd.Env = append(os.Environ(), "BUSYLAMP_CONFIG=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busylamp check of the shipped config: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte(": OK: ")) {
		t.Errorf("busylamp check: %s", out)
	}
	conf, err := os.ReadFile(filepath.Join(root, PathConfig))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^state_dir\s*=\s*/var/lib/busylamp\s*$`).Match(conf) {
		t.Error("shipped config does not set state_dir=/var/lib/busylamp (the unit's StateDirectory)")
	}
}

// unitDirectives reads a systemd unit file into section -> key -> values.
func unitDirectives(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	units := map[string]map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			units[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			units[section][k] = append(units[section][k], v)
		}
	}
	return units
}

func TestUnit(t *testing.T) {
	root := extract(t)
	unit := filepath.Join(root, PathUnit)
	u := unitDirectives(t, unit)
	for _, d := range []struct{ section, key, value string }{
		{"Unit", "After", "network-online.target"},
		{"Unit", "Wants", "network-online.target"},
		{"Service", "Type", "notify"},
		{"Service", "ExecStart", PathBinary + " run -c " + PathConfig},
		{"Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{"Service", "Restart", "on-failure"},
		{"Service", "User", "busylamp"},
		{"Service", "Group", "busylamp"},
		{"Service", "StateDirectory", "busylamp"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Install", "WantedBy", "multi-user.target"},
	} {
		if !slices.Contains(u[d.section][d.key], d.value) {
			t.Errorf("[%s] %s=%s missing (have %q)", d.section, d.key, d.value, u[d.section][d.key])
		}
	}
	// The agent opens TCP (and UDP, for gossip) sockets: the address
	// families must allow them.
	if af := strings.Join(u["Service"]["RestrictAddressFamilies"], " "); af != "" {
		for _, need := range []string{"AF_INET", "AF_INET6", "AF_UNIX"} {
			if !slices.Contains(strings.Fields(af), need) {
				t.Errorf("RestrictAddressFamilies=%s lacks %s", af, need)
			}
		}
	}
	// The user the unit runs as is the one sysusers.d creates.
	sysusers, err := os.ReadFile(filepath.Join(root, PathSysusers))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^u\s+busylamp\s+-\s+"[^"]*"\s+/var/lib/busylamp\s+/usr/sbin/nologin\s*$`).Match(sysusers) {
		t.Errorf("sysusers.d file does not create user busylamp:\n%s", sysusers)
	}

	// systemd's own check, where systemd-analyze exists (not in every
	// container): the unit with its commands pointed at the extracted
	// binary, and the man page of Documentation= found in the package.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit checked by directives only")
		return
	}
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "busylamp.service")
	if err := os.WriteFile(local, bytes.ReplaceAll(data, []byte(PathBinary), []byte(filepath.Join(root, PathBinary))), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(analyze, "verify", local)
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"), "SYSTEMD_LOG_LEVEL=notice")
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// manPage is the installed man page, decompressed.
func manPage(t *testing.T, root string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(root, PathMan))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	page, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	return page
}

func TestManPage(t *testing.T) {
	root := extract(t)
	page := manPage(t, root)
	if !regexp.MustCompile(`(?m)^\.TH BUSYLAMP 1 `).Match(page) {
		t.Error("man page has no .TH BUSYLAMP 1 line")
	}
	for _, section := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "FILES"} {
		if !bytes.Contains(page, []byte("\n.SH "+section+"\n")) {
			t.Errorf("man page lacks section %s", section)
		}
	}
	for _, path := range []string{PathConfig, "/var/lib/busylamp", "BUSYLAMP_CONFIG"} {
		if !bytes.Contains(page, []byte(path)) {
			t.Errorf("man page does not mention %s", path)
		}
	}
	// Rendered by man where it exists, with groff's warnings as errors.
	if man, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command(man, "--warnings", "-l", filepath.Join(root, PathMan))
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=", "PAGER=cat")
		out, err := cmd.Output()
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		if err != nil || !bytes.Contains(out, []byte("EXIT STATUS")) {
			t.Errorf("man -l: %v\n%s", err, stderr)
		}
	}
}

// manEntries are the command lines the man page documents: the first
// line of each .TP entry that starts with "busylamp", font escapes and
// quotes removed.
func manEntries(page []byte) []string {
	clean := strings.NewReplacer(`\fB`, "", `\fI`, "", `\fR`, "", `\fP`, "", `\-`, "-", `"`, "")
	var entries []string
	lines := strings.Split(string(page), "\n")
	for i := 1; i < len(lines); i++ {
		if lines[i-1] != ".TP" {
			continue
		}
		l := lines[i]
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], ".") {
			l = strings.TrimPrefix(l, f[0])
		}
		l = strings.Join(strings.Fields(clean.Replace(l)), " ")
		if strings.HasPrefix(l, "busylamp ") {
			entries = append(entries, l)
		}
	}
	return entries
}

// commandPaths lists every command of the built binary, as cobra's help
// shows them: "run", "show connected", ... Cobra's own "help" is left
// out, and so are the shells under "completion" (cobra's too).
func commandPaths(t *testing.T, bin string, parent []string) []string {
	t.Helper()
	out := run(t, bin, append(slices.Clone(parent), "--help")...)
	var paths []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "Available Commands:":
			in = true
		case in && strings.HasPrefix(line, "  "):
			name := strings.Fields(line)[0]
			if name == "help" && len(parent) == 0 {
				continue
			}
			path := append(slices.Clone(parent), name)
			paths = append(paths, strings.Join(path, " "))
			if name != "completion" {
				paths = append(paths, commandPaths(t, bin, path)...)
			}
		case in:
			in = false
		}
	}
	return paths
}

func TestManPageNamesEveryCommand(t *testing.T) {
	root := extract(t)
	entries := manEntries(manPage(t, root))
	paths := commandPaths(t, filepath.Join(root, PathBinary), nil)
	if len(paths) < 10 {
		t.Fatalf("found only %d commands in busylamp --help: %q", len(paths), paths)
	}
	for _, p := range paths {
		prefix := "busylamp " + p
		if !slices.ContainsFunc(entries, func(e string) bool {
			return e == prefix || strings.HasPrefix(e, prefix+" ") || strings.HasPrefix(e, prefix+"|")
		}) {
			t.Errorf("man page (packaging/busylamp.1) has no .TP entry for %q", prefix)
		}
	}
	// And DESIGN.md's command line, which may run ahead of the code.
	for _, p := range []string{"run", "check", "show connected", "show buddies", "show members",
		"devstate list", "devstate get", "devstate set", "mwi list", "mwi get", "mwi set", "mwi delete",
		"node purge", "node delete", "node create-collection", "node create-leaf",
		"reload", "debug", "help config", "version"} {
		prefix := "busylamp " + p
		if !slices.ContainsFunc(entries, func(e string) bool { return e == prefix || strings.HasPrefix(e, prefix+" ") }) {
			t.Errorf("man page has no .TP entry for %q (DESIGN.md)", prefix)
		}
	}
}
