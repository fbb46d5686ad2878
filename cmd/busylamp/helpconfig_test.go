package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/config"
)

var keyLine = regexp.MustCompile(`^;([a-z_]+) = (.*)$`)

// TestHelpConfig: `busylamp help config` lists every key of every
// section under its own header, as a commented config file that loads
// as it is and, with every key's line uncommented, still loads.
func TestHelpConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := execute([]string{"help", "config"}, &out, &errOut); code != 0 || errOut.Len() != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	text := out.String()

	// Every key under its section's header, once, in catalog order.
	type key struct{ section, key string }
	var got []key
	section := ""
	var uncommented strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			if section == clientSectionName {
				section = config.ClientSection
			}
		case keyLine.MatchString(line):
			got = append(got, key{section, keyLine.FindStringSubmatch(line)[1]})
			line = line[1:]
		case line != "" && !strings.HasPrefix(line, ";"):
			t.Errorf("line %q is neither a header, a comment nor a commented key", line)
		}
		uncommented.WriteString(line + "\n")
	}
	var want []key
	for _, k := range config.Keys() {
		want = append(want, key{k.Section, k.Key})
	}
	if len(got) != len(want) {
		t.Fatalf("got %d keys, want %d:\n%v\n%v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("key %d = %v, want %v", i, got[i], want[i])
		}
	}
	for _, k := range config.Keys() {
		if k.Default != "" && !strings.Contains(text, "\n;"+k.Key+" = "+k.Default+"\n") {
			t.Errorf("[%s] %s: default %q not shown", k.Section, k.Key, k.Default)
		}
	}

	// As printed, only the missing client fails it: the syntax is valid.
	_, _, err := config.Parse("help.conf", out.Bytes())
	if err == nil || err.Error() != "help.conf: no client section with distribute_events=yes: busylamp needs one to connect with" {
		t.Errorf("the printed file: %v", err)
	}
	// Uncommented (and distributing), every value shown is valid.
	src := strings.Replace(uncommented.String(), "\ndistribute_events = no\n", "\ndistribute_events = yes\n", 1)
	if _, _, err := config.Parse("help.conf", []byte(src)); err != nil {
		t.Errorf("the uncommented file does not load:\n%v\n%s", err, src)
	}
}

// TestHelpCommands: the help command that holds `config` still gives
// every command's help, and refuses an unknown topic.
func TestHelpCommands(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"help", "check"}, 0, "busylamp check [flags]"},
		{[]string{"help", "version"}, 0, "busylamp version"},
		{[]string{"help"}, 0, "Available Commands:"},
		{[]string{"help", "help"}, 0, "help config"},
		{[]string{"help", "config", "--help"}, 0, "busylamp help config"},
		{[]string{"help", "nosuch"}, 1, `unknown help topic "nosuch"`},
		{[]string{"help", "config", "extra"}, 1, "busylamp --help"},
	} {
		var out, errOut bytes.Buffer
		code := execute(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.contains) {
			t.Errorf("%v: exit %d, want %d with %q\nstdout: %s\nstderr: %s", tc.args, code, tc.code, tc.contains, out.String(), errOut.String())
		}
	}
}
