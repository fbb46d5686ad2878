package config

import (
	"reflect"
	"strings"
	"testing"
)

// sectionText is a file that sets key (of catalog section sec) to val,
// beside a valid client.
func sectionText(sec, key, val string) string {
	if sec == ClientSection {
		return client + key + "=" + val + "\n"
	}
	if sec == "cluster" && key != "bind" {
		// advertise and join need bind.
		return client + "[cluster]\nbind=127.0.0.1\n" + key + "=" + val + "\n"
	}
	return client + "[" + sec + "]\n" + key + "=" + val + "\n"
}

// TestCatalogIsTheParser: every key the catalog lists is read (its
// example loads without an error about the key), and a key it does not
// list is refused in every section, so Keys cannot drift from the readers.
func TestCatalogIsTheParser(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Keys() {
		seen[k.Section] = true
		if k.Doc == "" || k.Example == "" || (k.Default != "" && k.Example != k.Default) {
			t.Errorf("[%s] %s: want a doc and an example (the default when there is one): %+v", k.Section, k.Key, k)
		}
		_, warns, err := parse("f.conf", []byte(sectionText(k.Section, k.Key, k.Example)), noSources)
		issues := append(errorsOf(err), warns...)
		for _, is := range issues {
			if is.Key == k.Key && (strings.Contains(is.Msg, "unknown") || strings.Contains(is.Msg, "belongs in") || strings.Contains(is.Msg, "internal")) {
				t.Errorf("[%s] %s=%s: %v", k.Section, k.Key, k.Example, is)
			}
		}
		// [manager]'s keys come in pairs (username and secret, tls_cert and
		// tls_key); distribute_events=no leaves no client.
		if err != nil && k.Key != "distribute_events" && k.Section != "manager" {
			t.Errorf("[%s] %s=%s: the example does not load: %v", k.Section, k.Key, k.Example, err)
		}
		if k.Ignored && (len(warns) == 0 || warns[len(warns)-1].Key != k.Key) {
			t.Errorf("[%s] %s is Ignored but not warned about: %v", k.Section, k.Key, warns)
		}
	}
	for _, sec := range Sections() {
		if !seen[sec] {
			t.Errorf("section %s has no keys", sec)
		}
		_, _, err := parse("f.conf", []byte(client+"["+strings.Replace(sec, ClientSection, "other", 1)+"]\nno_such_key=1\n"), noSources)
		got := errorsOf(err)
		if len(got) != 1 || got[0].Key != "no_such_key" || !strings.HasPrefix(got[0].Msg, "unknown key in") {
			t.Errorf("[%s] no_such_key: %v", sec, got)
		}
	}
}

// TestCatalogDefaults: a file that writes every documented default
// reads as DefaultConfig.
func TestCatalogDefaults(t *testing.T) {
	texts := map[string]string{}
	for _, k := range Keys() {
		if k.Default != "" && !k.Repeat && !strings.Contains(client, "\n"+k.Key+"=") {
			texts[k.Section] += k.Key + " = " + k.Default + "\n"
		}
	}
	var src strings.Builder
	src.WriteString(client + texts[ClientSection])
	for _, sec := range Sections() {
		if sec != ClientSection && texts[sec] != "" {
			src.WriteString("[" + sec + "]\n" + texts[sec])
		}
	}
	// The keys client sets (type, distribute_events, ...) are left out.
	cfg, warns := mustParse(t, "d.conf", src.String())
	def := DefaultConfig()
	base, _ := mustParse(t, "d.conf", client)
	if !reflect.DeepEqual(cfg.General, def.General) || !reflect.DeepEqual(cfg.Agent, def.Agent) ||
		!reflect.DeepEqual(cfg.Manager, def.Manager) || !reflect.DeepEqual(cfg.Cluster, def.Cluster) ||
		cfg.Metrics != def.Metrics || cfg.HTTP != def.HTTP || !reflect.DeepEqual(cfg.Client, base.Client) {
		t.Errorf("defaults as written read as\n%+v\nwant\n%+v\n(client %+v)", cfg, def, base.Client)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
}

func errorsOf(err error) Errors {
	if err == nil {
		return nil
	}
	return err.(Errors)
}

func TestNewKeys(t *testing.T) {
	src := "[general]\nlog_format = JSON\nexecincludes = no\n" + client + `
[agent]
device_state_filter = ^pjsip/
mailbox_state_filter = @default$
device_state_accept =
[metrics]
bind = 127.0.0.1
[http]
bind = 0.0.0.0:8080
`
	cfg, warns := mustParse(t, "n.conf", src)
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	a := cfg.Agent
	if cfg.General.LogFormat != LogJSON || cfg.General.ExecIncludes ||
		cfg.Metrics.Bind != "127.0.0.1:9638" || cfg.HTTP.Bind != "0.0.0.0:8080" || !cfg.Metrics.Enabled() ||
		a.DeviceStateFilter.String() != "^pjsip/" || !a.DeviceStateFilter.Match("PJSIP/100") || a.DeviceStateFilter.Match("SIP/PJSIP/1") ||
		!a.MailboxStateFilter.Match("100@default") || a.DeviceStateAccept != nil || a.MailboxStateAccept != nil {
		t.Errorf("config = %+v %+v %+v %+v", cfg.General, cfg.Agent, cfg.Metrics, cfg.HTTP)
	}
	def := DefaultConfig()
	if def.Metrics.Enabled() || def.HTTP.Enabled() || def.General.LogFormat != LogText {
		t.Errorf("defaults %+v %+v %+v", def.Metrics, def.HTTP, def.General)
	}

	for _, tc := range []struct{ name, src, want string }{
		{"log_format", "[general]\nlog_format=xml\n" + client, `f.conf:2: key "log_format": bad value "xml": want text or json`},
		{"execincludes", "[general]\nexecincludes=maybe\n" + client, `f.conf:2: key "execincludes": bad boolean "maybe"`},
		{"bad regex", client + "[agent]\ndevice_state_filter=^(PJSIP\n", `f.conf:9: key "device_state_filter": bad regex "^(PJSIP": missing closing ): ^(PJSIP`},
		{"perl regex", client + "[agent]\nmailbox_state_accept=\\d+\n", `f.conf:9: key "mailbox_state_accept": bad regex "\\d+": invalid escape sequence: \d (want POSIX extended syntax)`},
		{"perl flags", client + "[agent]\ndevice_state_accept=(?i)x\n", `f.conf:9: key "device_state_accept": bad regex "(?i)x"`},
		{"metrics bind", client + "[metrics]\nbind=localhost:9638\n", `f.conf:9: key "bind": bad address "localhost:9638": want IP:port`},
		{"http port", client + "[http]\nbind=127.0.0.1:0\n", `f.conf:9: key "bind": bad address "127.0.0.1:0": bad port 0`},
		{"metrics unknown", client + "[metrics]\nport=9\n", `f.conf:9: key "port": unknown key in [metrics]`},
		{"general in client", client + "log_format=json\n", `f.conf:8: key "log_format": belongs in [general], not in client section [asterisk]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parse("f.conf", []byte(tc.src), noSources)
			if got := errorsOf(err); len(got) != 1 || !strings.HasPrefix(got[0].Error(), tc.want) {
				t.Errorf("errors %v\nwant %s", got, tc.want)
			}
		})
	}
}

func TestPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"", []string{"", "anything"}, nil},
		{"^PJSIP/", []string{"PJSIP/100", "pjsip/alice"}, []string{"SIP/PJSIP/1", "Custom:x"}},
		{"[[:digit:]]{3}$", []string{"PJSIP/100", "x999"}, []string{"PJSIP/10", "PJSIP/1000a"}},
		{"alice|bob", []string{"PJSIP/Alice", "Custom:BOB-1"}, []string{"carol"}},
		{"a.b", []string{"a\nb", "axb"}, []string{"ab"}},
		{"^(Custom:|PJSIP/)", []string{"custom:x", "PJSIP/y"}, []string{"SIP/z"}},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("String() = %q, want %q", p.String(), tc.pattern)
		}
		for _, s := range tc.match {
			if !p.Match(s) {
				t.Errorf("%q does not match %q", tc.pattern, s)
			}
		}
		for _, s := range tc.miss {
			if p.Match(s) {
				t.Errorf("%q matches %q", tc.pattern, s)
			}
		}
	}
	var nilP *Pattern
	if !nilP.Match("x") || nilP.String() != "" {
		t.Error("a nil Pattern must match everything and print as empty")
	}
	for _, bad := range []string{`\d`, `\w+`, `(?i)a`, `(`, `[z-a]`, `a{2,1}`} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
