package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeTree writes files (name → text) under a new temp dir and returns
// the dir.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// errorList is every error of err, as strings with dir taken out of the
// file names.
func errorList(t *testing.T, err error, dir string) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("error %T %v is not an Errors", err, err)
	}
	var out []string
	for _, is := range list {
		out = append(out, strings.ReplaceAll(is.Error(), dir+string(filepath.Separator), ""))
	}
	return out
}

func hasPrefixes(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d issues, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("issue %d = %q\nwant prefix %q", i, got[i], want[i])
		}
	}
}

const clientHead = "[asterisk]\ntype=client\nserverhost=xmpp.example.org\npubsub_node=pubsub.example.org\n" +
	"username=node1@example.org/res1\nsecret=s3cret-pass\ndistribute_events=yes\n"

func TestInclude(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string // main.conf is loaded
		buddies []string
		errs    []string // prefixes, in order
	}{
		{"quoted, relative to the including file, nested", map[string]string{
			"main.conf":         clientHead + "#include \"sub/buddies.conf\"\n",
			"sub/buddies.conf":  "buddy=b1@example.org\n#include <more.conf>\n",
			"sub/more.conf":     "buddy=b2@example.org\n",
			"more.conf":         "buddy=wrong@example.org\n",
			"sub/unused.conf":   "buddy=never@example.org\n",
			"sub/unused2.conf2": "",
		}, []string{"b1@example.org", "b2@example.org"}, nil},
		{"bare name, a section in the included file goes on after it", map[string]string{
			"main.conf":   "#include client.conf\nbuddy=b9@example.org\n",
			"client.conf": clientHead,
		}, []string{"b9@example.org"}, nil},
		{"glob, sorted", map[string]string{
			"main.conf":        clientHead + "#include buddies.d/*.conf\n",
			"buddies.d/b.conf": "buddy=b@example.org\n",
			"buddies.d/a.conf": "buddy=a@example.org\n",
			"buddies.d/c.txt":  "buddy=c@example.org\n",
		}, []string{"a@example.org", "b@example.org"}, nil},
		{"tryinclude of a missing file or an empty glob is nothing", map[string]string{
			"main.conf": clientHead + "#tryinclude missing.conf\n#tryinclude \"nothing/*.conf\"\nbuddy=b@example.org\n",
		}, []string{"b@example.org"}, nil},
		{"missing file", map[string]string{
			"main.conf": clientHead + "#include \"missing.conf\"\n",
		}, nil, []string{`main.conf:8: #include "missing.conf": no such file`}},
		{"glob matching nothing", map[string]string{
			"main.conf": clientHead + "#include d/*.conf\n",
		}, nil, []string{`main.conf:8: #include "d/*.conf": no file matches`}},
		{"no name", map[string]string{
			"main.conf": clientHead + "#include \"\"\n",
		}, nil, []string{`main.conf:8: #include needs a file name`}},
		{"loop", map[string]string{
			"main.conf": clientHead + "#include a.conf\n",
			"a.conf":    "buddy=a@example.org\n#include b.conf\n",
			"b.conf":    "\n#include a.conf\n",
		}, nil, []string{`b.conf:2: #include "a.conf": include loop: a.conf -> b.conf -> a.conf`}},
		{"self", map[string]string{
			"main.conf": clientHead + "#include main.conf\n",
		}, nil, []string{`main.conf:8: #include "main.conf": include loop: main.conf -> main.conf`}},
		{"errors keep their own file and line", map[string]string{
			"main.conf": clientHead + "#include a.conf\nport=x\n",
			"a.conf":    "buddy=a@example.org\nusetls=maybe\n",
		}, nil, []string{
			`main.conf:9: key "port": bad port "x"`,
			`a.conf:2: key "usetls": bad boolean "maybe"`}},
		{"a directory", map[string]string{
			"main.conf": clientHead + "#include d\n",
			"d/x":       "",
		}, nil, []string{`main.conf:8: #include "d": d: cannot read: is a directory`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, tc.files)
			cfg, _, err := Load(filepath.Join(dir, "main.conf"))
			hasPrefixes(t, errorList(t, err, dir), tc.errs)
			if err == nil && !reflect.DeepEqual(cfg.Client.Buddies, tc.buddies) {
				t.Errorf("buddies = %v, want %v", cfg.Client.Buddies, tc.buddies)
			}
		})
	}
}

func TestIncludeDepthBound(t *testing.T) {
	files := map[string]string{"main.conf": clientHead + "#include 0.conf\n"}
	for i := 0; i < 40; i++ {
		files[itoa(i)+".conf"] = "#include " + itoa(i+1) + ".conf\n"
	}
	dir := writeTree(t, files)
	_, _, err := Load(filepath.Join(dir, "main.conf"))
	hasPrefixes(t, errorList(t, err, dir), []string{`15.conf:1: #include "16.conf": includes nest deeper than 16`})
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestIncludeTotalBound(t *testing.T) {
	big := strings.Repeat(";"+strings.Repeat("x", 1023)+"\n", 1000) // ~1 MB of comments
	files := map[string]string{"main.conf": clientHead}
	for i := 0; i < 10; i++ {
		files["main.conf"] += "#include big" + itoa(i) + ".conf\n"
		files["big"+itoa(i)+".conf"] = big
	}
	dir := writeTree(t, files)
	_, _, err := Load(filepath.Join(dir, "main.conf"))
	got := errorList(t, err, dir)
	if len(got) != 1 || !strings.Contains(got[0], "the files read come to more than 8388608 bytes") {
		t.Errorf("errors = %q", got)
	}
}

func TestExec(t *testing.T) {
	const on = "[general]\nexecincludes=yes\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		buddies []string
		errs    []string
		warns   []string
	}{
		{"generates buddy lines, in the file's directory", map[string]string{
			"main.conf": on + clientHead + "#exec \"cat names | sed 's/^/buddy=/'\"\n",
			"names":     "b1@example.org\nb2@example.org\n",
		}, []string{"b1@example.org", "b2@example.org"}, nil, nil},
		{"execincludes may come after the #exec", map[string]string{
			"main.conf": clientHead + "#exec echo buddy=b@example.org\n" + on,
		}, []string{"b@example.org"}, nil, nil},
		{"off by default", map[string]string{
			"main.conf": clientHead + "#exec echo buddy=b@example.org\n",
		}, nil, []string{`main.conf:8: #exec is off: set execincludes = yes in [general] of `}, nil},
		{"off when set to no", map[string]string{
			"main.conf": "[general]\nexecincludes=no\n" + clientHead + "#exec echo buddy=b@example.org\n",
		}, nil, []string{`main.conf:10: #exec is off`}, nil},
		{"an included file cannot turn it on", map[string]string{
			"main.conf": "#include gen.conf\n" + clientHead + "#exec echo buddy=b@example.org\n",
			"gen.conf":  on,
		}, nil, []string{`main.conf:9: #exec is off`}, []string{`gen.conf:2: key "execincludes": counts only in [general] of the top-level file`}},
		{"non-zero exit with stderr's first line", map[string]string{
			"main.conf": on + clientHead + "#exec \"echo first >&2 && echo second >&2 && exit 3\"\n",
		}, nil, []string{`main.conf:10: #exec "echo first >&2 && echo second >&2 && exit 3": exit status 3: first`}, nil},
		{"output errors name the command", map[string]string{
			"main.conf": on + clientHead + "#exec printf 'buddy=ok@example.org\\nport=x\\n'\n",
		}, nil, []string{`exec:printf 'buddy=ok@example.org\nport=x\n':2: key "port": bad port "x"`}, nil},
		{"a command that runs itself", map[string]string{
			"main.conf": on + clientHead + "#exec cat loop.txt\n",
			"loop.txt":  "#exec cat loop.txt\n",
		}, nil, []string{`exec:cat loop.txt:1: #exec "cat loop.txt": include loop`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, tc.files)
			cfg, warns, err := Load(filepath.Join(dir, "main.conf"))
			hasPrefixes(t, errorList(t, err, dir), tc.errs)
			var ws []string
			for _, w := range warns {
				ws = append(ws, strings.ReplaceAll(w.Error(), dir+"/", ""))
			}
			hasPrefixes(t, ws, tc.warns)
			if err == nil && !reflect.DeepEqual(cfg.Client.Buddies, tc.buddies) {
				t.Errorf("buddies = %v, want %v", cfg.Client.Buddies, tc.buddies)
			}
		})
	}
}

func TestRunCommandBounds(t *testing.T) {
	for _, tc := range []struct {
		name, command string
		timeout       time.Duration
		limit         int
		out, err      string
	}{
		{"output", "printf abc", time.Minute, 10, "abc", ""},
		{"too much output", "yes", time.Minute, 1000, "", "output is larger than 1000 bytes"},
		{"timeout", "exec sleep 60", 50 * time.Millisecond, 10, "", "did not finish within 50ms"},
		{"exit", "exit 2", time.Minute, 10, "", "exit status 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCommand(t.TempDir(), tc.command, tc.timeout, tc.limit)
			if string(out) != tc.out || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
				t.Errorf("out %q err %v, want %q %q", out, err, tc.out, tc.err)
			}
		})
	}
}

// A repeat across files names the other file.
func TestIncludeRepeatNamesTheFile(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"main.conf": clientHead + "port=5222\n#include a.conf\n",
		"a.conf":    "\nport=5223\n",
	})
	cfg, warns, err := Load(filepath.Join(dir, "main.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "a.conf") + `:2: key "port": repeated (also on ` + filepath.Join(dir, "main.conf") + `:8); the last one is used`
	if len(warns) != 1 || warns[0].Error() != want || cfg.Client.Port != 5223 {
		t.Errorf("port %d, warnings %v\nwant %s", cfg.Client.Port, warns, want)
	}
}
