package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestManagerSecurityKeys(t *testing.T) {
	cfg, warns := mustParse(t, "m.conf", client+`[manager]
bindaddr = 10.0.0.5
username = admin
secret = a secret, with spaces # and hash
deny = 0.0.0.0/0.0.0.0
permit = 10.1.0.0/255.255.0.0
permit = 192.0.2.7
deny = ::/0
permit = 2001:db8::/32
tls_cert = /etc/busylamp/ami.pem
tls_key = /etc/busylamp/ami.key
tls_ca = /etc/busylamp/ca.pem
authtimeout = 5
authlimit = 20
`)
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	m := cfg.Manager
	p := netip.MustParsePrefix
	want := []ACLRule{
		{false, p("0.0.0.0/0")}, {true, p("10.1.0.0/16")}, {true, p("192.0.2.7/32")},
		{false, p("::/0")}, {true, p("2001:db8::/32")},
	}
	if !reflect.DeepEqual(m.ACL, want) {
		t.Errorf("ACL = %v\nwant %v", m.ACL, want)
	}
	if !m.TLS() || m.TLSCert != "/etc/busylamp/ami.pem" || m.TLSKey != "/etc/busylamp/ami.key" || m.CAFile() != "/etc/busylamp/ca.pem" {
		t.Errorf("TLS keys: %+v", m)
	}
	if m.AuthTimeout != 5*time.Second || m.AuthLimit != 20 || m.Secret.Reveal() != "a secret, with spaces # and hash" {
		t.Errorf("Manager = %+v", m)
	}

	d := DefaultConfig().Manager
	if d.BindAddr != "127.0.0.1" || d.TLS() || len(d.ACL) != 0 || d.AuthTimeout != 10*time.Second || d.AuthLimit != 50 {
		t.Errorf("defaults: %+v", d)
	}
	cfg, _ = mustParse(t, "m.conf", client+"[manager]\ntls_cert=/c.pem\ntls_key=/k.pem\n")
	if cfg.Manager.CAFile() != "/c.pem" {
		t.Errorf("CAFile default = %q, want the certificate", cfg.Manager.CAFile())
	}
}

func TestManagerSecurityErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"control character in secret", "[manager]\nusername=admin\nsecret=pa\x01ss\n",
			`f.conf:10: key "secret": contains a control character (U+0001 at byte 2)`},
		{"tab in secret", "[manager]\nusername=admin\nsecret=pa\tss\n",
			`f.conf:10: key "secret": contains a control character (U+0009 at byte 2)`},
		{"escape in secret", "[manager]\nusername=admin\nsecret=\x1b[31mx\n",
			`f.conf:10: key "secret": contains a control character (U+001B at byte 0)`},
		{"DEL in secret", "[manager]\nusername=admin\nsecret=ab\x7f\n",
			`f.conf:10: key "secret": contains a control character (U+007F at byte 2)`},
		{"secret too long", "[manager]\nusername=admin\nsecret=" + strings.Repeat("x", 1025) + "\n",
			`f.conf:10: key "secret": longer than 1024 bytes`},
		{"bad permit", "[manager]\npermit=10.0.0.0/33\n", `f.conf:9: key "permit": bad mask in "10.0.0.0/33": want 0 to 32 bits`},
		{"host name in deny", "[manager]\ndeny=pbx.example.org\n", `f.conf:9: key "deny": bad address "pbx.example.org"`},
		{"netmask not contiguous", "[manager]\ndeny=10.0.0.0/255.0.255.0\n", `f.conf:9: key "deny": bad mask in "10.0.0.0/255.0.255.0": the netmask is not contiguous`},
		{"netmask on IPv6", "[manager]\ndeny=::/255.0.0.0\n", `f.conf:9: key "deny": bad mask`},
		{"cert without key", "[manager]\ntls_cert=/c.pem\n", `f.conf:9: key "tls_key": missing: [manager] has tls_cert`},
		{"key without cert", "[manager]\ntls_key=/k.pem\n", `f.conf:9: key "tls_cert": missing: [manager] has tls_key`},
		{"authtimeout 0", "[manager]\nauthtimeout=0\n", `f.conf:9: key "authtimeout": bad value "0"`},
		{"authlimit", "[manager]\nauthlimit=x\n", `f.conf:9: key "authlimit": bad value "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse("f.conf", []byte(client+tc.src))
			var list Errors
			if !errors.As(err, &list) || len(list) != 1 || !strings.HasPrefix(list[0].Error(), tc.want) {
				t.Fatalf("err = %v\nwant one error starting %q", err, tc.want)
			}
			noSecrets(t, err.Error(), "pa\x01ss", "pa\tss", "\x1b[31mx", "ab\x7f", strings.Repeat("x", 20))
		})
	}
	// The client section's secret follows the same rule.
	_, _, err := Parse("f.conf", []byte(strings.Replace(client, "secret=s3cret-pass", "secret=s3cret\x00pass", 1)))
	if err == nil || !strings.Contains(err.Error(), `f.conf:6: key "secret": contains a control character (U+0000 at byte 6)`) {
		t.Fatalf("control character in the client's secret: %v", err)
	}
	noSecrets(t, err.Error(), "s3cret")

	// A Config built in code is held to the same rules.
	cfg, _ := mustParse(t, "f.conf", client)
	cfg.Manager.Username, cfg.Manager.Secret = "admin", "bad\nsecret"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("Validate: %v", err)
	}
}

func TestManagerSecurityWarnings(t *testing.T) {
	_, warns := mustParse(t, "w.conf", client+ // 1-7
		"[manager]\n"+ // 8
		"bindaddr=0.0.0.0\n"+ // 9
		"permit=10.0.0.0/8\n"+ // 10
		"deny=0.0.0.0/0\n"+ // 11
		"permit=192.0.2.1/24\n"+ // 12
		"tls_ca=/ca.pem\n") // 13
	got := join(warns)
	for _, w := range []string{
		`w.conf:9: key "bindaddr": 0.0.0.0 is not a loopback address and [manager] has no tls_cert and tls_key`,
		`w.conf:11: key "deny": undoes permit=10.0.0.0/8 on line 10`,
		`w.conf:12: key "permit": 192.0.2.1/24 has bits set past its mask; read as 192.0.2.0/24`,
		`w.conf:13: key "tls_ca": has no effect without tls_cert and tls_key`,
	} {
		if !strings.Contains(got, w) {
			t.Errorf("warnings lack %q:\n%s", w, got)
		}
	}
	_, warns = mustParse(t, "w.conf", client+"[manager]\npermit=10.0.0.0/8\n")
	if !strings.Contains(join(warns), `w.conf:9: key "permit": permit without a deny lets every address in`) {
		t.Errorf("warnings: %v", warns)
	}
	// Loopback, or TLS: no warning.
	for _, src := range []string{"[manager]\nbindaddr=::1\n", "[manager]\nbindaddr=10.0.0.1\ntls_cert=/c\ntls_key=/k\n"} {
		if _, warns := mustParse(t, "w.conf", client+src); len(warns) != 0 {
			t.Errorf("%q: warnings %v", src, warns)
		}
	}
}

// FuzzParse: whatever the file holds, Parse does not panic, returns a
// Config or an Errors (never both, never neither), and every error names
// the file and, unless it is about the file as a whole, a line of it. The
// seeds run in every go test.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		client,
		client + "[manager]\nusername=admin\nsecret=pa\x01ss\npermit=10.0.0.0/8\ndeny=::/0\ntls_cert=/c\n",
		client + "[manager]\nbindaddr=0.0.0.0\ndeny=0.0.0.0/0.0.0.0\npermit=1.2.3.4/255.255.255.0\ntls_ca=x\nauthtimeout=99999\n",
		client + "[agent]\neid=02:00:00:00:00:01\nstale=keep\n[cluster]\nbind=10.0.0.1\nsecret=QUJD\n",
		"[general]\ndebug=yes\n" + client + "buddy=a@b\nbuddy=a@b\n",
		";-- unterminated\n" + client,
		"#include other.conf\n#exec /bin/true\n[t](!)\nx=1\n[a](t)\n",
		"[\n[]\n=\nk\n[x]]\n",
		"\xef\xbb\xbf[asterisk]\r\ntype=client\r\nsecret=\xff\xfe\r\n",
		client + "secret=" + strings.Repeat("\x00", 3) + "\nstatusmessage=\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, _, err := parse("f.conf", src, noSources) // no file is read, no command run
		if (cfg == nil) == (err == nil) {
			t.Fatalf("cfg %v and err %v", cfg != nil, err)
		}
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted what Validate refuses: %v", verr)
			}
			return
		}
		var list Errors
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error %T %v is not a non-empty Errors", err, err)
		}
		lines := strings.Count(string(src), "\n") + 1
		for _, is := range list {
			if is.File != "f.conf" || is.Line < 0 || is.Line > lines || !strings.HasPrefix(is.Error(), "f.conf") {
				t.Fatalf("issue %q: want f.conf:LINE with 1 <= LINE <= %d", is, lines)
			}
			if is.Line == 0 && !strings.HasPrefix(is.Msg, "no client section") {
				t.Fatalf("issue %q has no line", is)
			}
		}
	})
}
