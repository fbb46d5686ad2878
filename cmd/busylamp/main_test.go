package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// buildBinary builds busylamp with a version stamped by -ldflags.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "busylamp")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-ldflags", "-X main.version=1.2.3-test", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// run runs the binary and returns its exit code, stdout and stderr.
func run(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return code, stdout.String(), stderr.String()
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBinary(t *testing.T) {
	bin := buildBinary(t)

	for _, f := range []string{"server1.conf", "server2.conf"} {
		path := filepath.Join("..", "..", "examples", f)
		code, out, errOut := run(t, bin, nil, "check", "-c", path)
		if code != 0 || !strings.HasPrefix(out, path+": OK: client [asterisk] ") || errOut != "" {
			t.Errorf("check %s: exit %d\nstdout: %s\nstderr: %s", f, code, out, errOut)
		}
	}

	bad := writeFile(t, "bad.conf", "[general]\n"+
		"debug=perhaps\n"+ // 2
		"[asterisk]\n"+ // 3
		"type=client\n"+
		"serverhost=xmpp.example.org\n"+
		"username=n1@example.org/r\n"+
		"secret=TOPSECRET\n"+
		"pubsub_node=pubsub.example.org\n"+
		"distribute_events=yes\n"+
		"port=x\n"+ // 10
		"timeout=5\n"+ // 11
		"[agent]\n"+
		"eid=1:2:3\n") // 13
	code, out, errOut := run(t, bin, nil, "check", "--config", bad)
	want := bad + `:11: warning: key "timeout": Asterisk's JABBER_RECEIVE message timeout; busylamp does not use it
` + bad + `:2: key "debug": bad boolean "perhaps": want yes or no
` + bad + `:10: key "port": bad port "x"
` + bad + `:13: key "eid": bad EID "1:2:3": want six hex bytes separated by colons, like 02:00:00:00:00:01
`
	if code != 1 || out != "" || errOut != want {
		t.Errorf("check bad: exit %d\nstdout: %s\nstderr:\n%s\nwant:\n%s", code, out, errOut, want)
	}
	if strings.Contains(out+errOut, "TOPSECRET") {
		t.Errorf("secret printed")
	}

	// $BUSYLAMP_CONFIG is used without -c, and -c wins over it.
	good := filepath.Join("..", "..", "examples", "server2.conf")
	if code, out, _ := run(t, bin, []string{"BUSYLAMP_CONFIG=" + good}, "check"); code != 0 || !strings.HasPrefix(out, good+": OK") {
		t.Errorf("check via env: exit %d, %s", code, out)
	}
	if code, _, _ := run(t, bin, []string{"BUSYLAMP_CONFIG=" + good}, "check", "-c", bad); code != 1 {
		t.Errorf("-c does not win over $BUSYLAMP_CONFIG: exit %d", code)
	}

	missing := filepath.Join(t.TempDir(), "missing.conf")
	if code, _, errOut := run(t, bin, nil, "check", "-c", missing); code != 1 || errOut != missing+": cannot read: no such file or directory\n" {
		t.Errorf("check missing: exit %d, %q", code, errOut)
	}

	if code, out, _ := run(t, bin, nil, "version"); code != 0 || out != "busylamp 1.2.3-test\n" {
		t.Errorf("version: exit %d, %q", code, out)
	}

	for _, args := range [][]string{{"nosuchcommand"}, {"check", "extra"}, {"check", "--nosuchflag"}, {"version", "x"}} {
		if code, _, errOut := run(t, bin, nil, args...); code != 1 || !strings.Contains(errOut, "busylamp --help") {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
}

// TestCheckInProcess covers the check command without building.
func TestCheckInProcess(t *testing.T) {
	warn := writeFile(t, "warn.conf", "[asterisk]\nserverhost=h.example.org\nusername=a@example.org\nsecret=x\n"+
		"pubsub_node=pubsub.example.org\ndistribute_events=yes\nkeepalive=yes\n")
	var out, errOut bytes.Buffer
	code := execute([]string{"check", "-c", warn}, &out, &errOut)
	wantErr := warn + ":7: warning: key \"keepalive\": busylamp sends its own XMPP pings; ignored\n"
	if code != 0 || errOut.String() != wantErr ||
		out.String() != warn+": OK: client [asterisk] a@example.org/asterisk-xmpp at h.example.org (DNS SRV records, looked up at connect; else port 5222), buddies: 0\n" {
		t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}

	// Without pubsub_node: OK, with a note that the service is discovered.
	nosvc := writeFile(t, "nosvc.conf", "[asterisk]\nserverhost=h.example.org\nusername=a@example.org\nsecret=x\ndistribute_events=yes\n")
	out.Reset()
	errOut.Reset()
	code = execute([]string{"check", "-c", nosvc}, &out, &errOut)
	wantErr = nosvc + ":1: warning: key \"pubsub_node\": not set in [asterisk]; the PubSub service is discovered on example.org at every connect (XEP-0030)\n"
	if code != 0 || errOut.String() != wantErr || !strings.HasPrefix(out.String(), nosvc+": OK: client [asterisk] ") {
		t.Errorf("without pubsub_node: exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
	}

	out.Reset()
	errOut.Reset()
	t.Chdir(t.TempDir())
	t.Setenv("BUSYLAMP_CONFIG", "")
	if err := os.WriteFile("busylamp.conf", []byte("[general]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code = execute([]string{"check"}, &out, &errOut)
	if code != 1 || errOut.String() != "busylamp.conf: no client section with distribute_events=yes: busylamp needs one to connect with\n" {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
}

// `run` that cannot open its AMI socket is a runtime failure: exit 3,
// not 1 (which says the config is wrong).
func TestRunExitCodes(t *testing.T) {
	bin := buildBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	conf := writeFile(t, "busy.conf", "[asterisk]\ntype=client\nserverhost=127.0.0.1\nport=1\n"+
		"username=a@example.org/pbx\nsecret=x\nusetls=no\ndistribute_events=yes\n\n[manager]\nbindaddr=127.0.0.1\nport="+port+"\nusername=admin\nsecret=s\n")
	code, _, errOut := run(t, bin, nil, "run", "-c", conf)
	if code != 3 || !strings.Contains(errOut, "manager socket") {
		t.Errorf("run with the AMI port taken: exit %d, %q; want 3 and the socket named", code, errOut)
	}
	// A state_dir that cannot be used is a runtime failure too.
	file := writeFile(t, "not-a-dir", "")
	ln.Close()
	noDir := writeFile(t, "nodir.conf", "[asterisk]\ntype=client\nserverhost=127.0.0.1\nport=1\n"+
		"username=a@example.org/pbx\nsecret=x\nusetls=no\ndistribute_events=yes\n\n[agent]\nstate_dir="+file+"/state\n\n"+
		"[manager]\nbindaddr=127.0.0.1\nport="+port+"\nusername=admin\nsecret=s\n")
	code, _, errOut = run(t, bin, nil, "run", "-c", noDir)
	if code != 3 || !strings.Contains(errOut, "state_dir") {
		t.Errorf("run with an unusable state_dir: exit %d, %q; want 3 and state_dir named", code, errOut)
	}
	bad := writeFile(t, "bad.conf", "[asterisk]\ntype=client\nserverhost=127.0.0.1\nusername=nobody\nsecret=x\n")
	if code, _, _ := run(t, bin, nil, "run", "-c", bad); code != 1 {
		t.Errorf("run with a bad config: exit %d, want 1", code)
	}
}
