package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// client is a minimal valid client section, for tests that vary the rest.
const client = `[asterisk]
type=client
serverhost=xmpp.example.org
pubsub_node=pubsub.example.org
username=node1@example.org/res1
secret=s3cret-pass
distribute_events=yes
`

func mustParse(t *testing.T, name, src string) (*Config, []Issue) {
	t.Helper()
	cfg, warns, err := Parse(name, []byte(src))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return cfg, warns
}

func TestExamplesLoad(t *testing.T) {
	for _, tc := range []struct {
		file, user, buddy string
		debug             bool
	}{
		{"server1.conf", "server1@asterisk.mydomain.tld/astvoip1", "server2@asterisk.mydomain.tld/astvoip2", false},
		{"server2.conf", "server2@asterisk.mydomain.tld/astvoip2", "server1@asterisk.mydomain.tld/astvoip1", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("..", "examples", tc.file)
			cfg, warns, err := Load(path)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(warns) != 0 {
				t.Errorf("warnings: %v", warns)
			}
			want := Client{
				Name:             "asterisk",
				ServerHost:       "asterisk.mydomain.tld",
				Port:             5222,
				Username:         tc.user,
				Secret:           "welcome",
				PubSubNode:       "pubsub.asterisk.mydomain.tld",
				Priority:         1,
				UseTLS:           false,
				UseSASL:          true,
				Buddies:          []string{tc.buddy},
				Status:           "available",
				StatusMessage:    "Online and Available",
				DistributeEvents: true,
				Debug:            tc.debug,
				AutoRegister:     true,
				AuthPolicy:       AuthAccept,
			}
			if !reflect.DeepEqual(cfg.Client, want) {
				t.Errorf("Client =\n%+v\nwant\n%+v", cfg.Client, want)
			}
			if cfg.General != (General{Debug: tc.debug, AutoRegister: true, AuthPolicy: AuthAccept, LogFormat: LogText}) {
				t.Errorf("General = %+v", cfg.General)
			}
			def := DefaultConfig()
			if cfg.Agent != def.Agent || !reflect.DeepEqual(cfg.Manager, def.Manager) || cfg.Cluster.Enabled() {
				t.Errorf("busylamp sections not at defaults: %+v %+v %+v", cfg.Agent, cfg.Manager, cfg.Cluster)
			}
			// No port key: the name's SRV records are looked up at connect.
			if cfg.File != path || cfg.Client.Addr() != "asterisk.mydomain.tld" || !cfg.Client.SRV() || cfg.Client.FullJID() != tc.user {
				t.Errorf("File %q Addr %q FullJID %q", cfg.File, cfg.Client.Addr(), cfg.Client.FullJID())
			}
		})
	}
}

// sampleShape has the layout of Asterisk's configs/samples/xmpp.conf.sample:
// every key commented out with tab-aligned comments, comment-only lines
// indented with tabs, then a filled [asterisk] client.
const sampleShape = "[general]\n" +
	";debug=yes\t\t\t\t; debugging, off by default\n" +
	";autoprune=yes\t\t\t\t; remove users from the buddy list\n" +
	"\t\t\t\t\t; (careful with personal accounts)\n" +
	";autoregister=yes\t\t\t; register users from the buddy list\n" +
	";collection_nodes=yes\t\t\t; XEP-0248 for device state\n" +
	"\t\t\t\t\t; default is no\n" +
	";pubsub_autocreate=yes\t\t\t; server auto-creates nodes\n" +
	";auth_policy=accept\t\t\t; accept subscription requests\n" +
	";[asterisk]\n" +
	";type=client\t\t\t\t; client or component\n" +
	";serverhost=astjab.org\t\t\t; route to the server\n" +
	";pubsub_node=pubsub.astjab.org\t\t; PubSub service\n" +
	";username=asterisk@astjab.org/asterisk\t; user with optional resource\n" +
	";secret=blah\t\t\t\t; password\n" +
	";refresh_token=TOKEN_VALUE\t\t; OAuth refresh token\n" +
	"\t\t\t\t\t; `secret` must not be set with OAuth\n" +
	";oauth_clientid=OAUTH_CLIENT_ID_VALUE\t; OAuth client id\n" +
	";oauth_secret=OAUTH_SECRET_VALUE\t; OAuth client secret\n" +
	";priority=1\t\t\t\t; resource priority\n" +
	";port=5222\t\t\t\t; port, default 5222\n" +
	";usetls=yes\t\t\t\t; TLS or not\n" +
	";usesasl=yes\t\t\t\t; SASL or not\n" +
	";buddy=mogorman@astjab.org\t\t; a buddy\n" +
	";distribute_events=yes\t\t\t; distribute events here\n" +
	";status=available\t\t\t; chat, available, away, xaway or dnd\n" +
	";statusmessage=\"I am available\"\t\t; custom status message\n" +
	";timeout=5\t\t\t\t; message stack timeout\n" +
	";sendtodialplan=yes\t\t\t; messages into the dialplan\n" +
	";context=messages\t\t\t; dialplan context\n" +
	";forceoldssl=no     ; old-style SSL\n" +
	";keepalive=\n" +
	"\n" +
	"[asterisk]\n" +
	"type=client\t\t\t\t; client\n" +
	"serverhost=astjab.org\t\t\t; route\n" +
	"pubsub_node=pubsub.astjab.org\n" +
	"username=asterisk@astjab.org\t; no resource\n" +
	"secret=blah\n" +
	"priority=5\n" +
	"port=5223\n" +
	"usetls=yes\n" +
	"usesasl=yes\n" +
	"buddy=mogorman@astjab.org\n" +
	"buddy=other@astjab.org/res\n" +
	"distribute_events=yes\n" +
	"status=xaway\n" +
	"statusmessage=\"I am available\"\n" +
	"autoprune=yes\n" +
	"auth_policy=deny\n" +
	"debug=on\n"

func TestAsteriskSampleShape(t *testing.T) {
	cfg, warns := mustParse(t, "xmpp.conf", sampleShape)
	c := cfg.Client
	if c.FullJID() != "asterisk@astjab.org/asterisk-xmpp" || c.Port != 5223 || c.Priority != 5 ||
		!c.UseTLS || c.Status != "xa" || c.StatusMessage != "I am available" ||
		!c.AutoPrune || !c.AutoRegister || c.AuthPolicy != AuthDeny || !c.Debug ||
		!reflect.DeepEqual(c.Buddies, []string{"mogorman@astjab.org", "other@astjab.org/res"}) {
		t.Errorf("Client = %+v", c)
	}
	if cfg.General.AutoPrune || cfg.General.AuthPolicy != AuthAccept || cfg.General.Debug {
		t.Errorf("client keys leaked into General: %+v", cfg.General)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
}

func TestGeneralInheritedByClient(t *testing.T) {
	cfg, _ := mustParse(t, "x.conf", "[general]\nautoprune=yes\nautoregister=no\nauth_policy=deny\ndebug=yes\n"+client)
	c := cfg.Client
	if !c.AutoPrune || c.AutoRegister || c.AuthPolicy != AuthDeny || !c.Debug {
		t.Errorf("Client = %+v", c)
	}
	// [general] may come after the client: Asterisk applies it first.
	cfg, _ = mustParse(t, "x.conf", client+"autoregister=yes\n[general]\nautoregister=no\nautoprune=on\n")
	if !cfg.Client.AutoRegister || !cfg.Client.AutoPrune {
		t.Errorf("Client = %+v", cfg.Client)
	}
}

// pubsub_persist_items = no: the nodes are created keeping no items.
func TestPubSubPersistItems(t *testing.T) {
	cfg, _ := mustParse(t, "x.conf", client)
	if cfg.General.PubSubNoItems {
		t.Error("nodes keep no items by default")
	}
	cfg, _ = mustParse(t, "x.conf", "[general]\npubsub_persist_items=no\n"+client)
	if !cfg.General.PubSubNoItems {
		t.Error("pubsub_persist_items=no not read")
	}
}

func TestBusylampSections(t *testing.T) {
	src := client + "tls_ca=/etc/ssl/ca.pem\ntls_insecure=no\nusetls=yes\n" + `
[agent]
eid = 2:0:0:0:0:aB      ; short form, mixed case
stale = KEEP
stale_grace = 0
mwi_merge = sum
max_devices = 5000
state_dir = /var/lib/busylamp/node1/

[manager]
bindaddr = ::1
port = 15039
username = admin
secret = amipass

[cluster]
bind = 10.0.0.1
advertise = 192.0.2.1:7000
join = 10.0.0.2:7946, node3.example.org ,[fd00::1]:99
secret = ` + strings.Repeat("QUJD", 8) + `
profile = wan
`
	cfg, warns := mustParse(t, "x.conf", src)
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	want := Agent{EID: EID{2, 0, 0, 0, 0, 0xab}, Stale: StaleKeep, StaleGrace: 0, MWIMerge: MWISum, MaxDevices: 5000, StateDir: "/var/lib/busylamp/node1"}
	if cfg.Agent != want {
		t.Errorf("Agent = %+v", cfg.Agent)
	}
	if cfg.Agent.EID.String() != "02:00:00:00:00:ab" {
		t.Errorf("EID = %s", cfg.Agent.EID)
	}
	m := cfg.Manager
	if m.Addr() != "[::1]:15039" || m.Username != "admin" || m.Secret.Reveal() != "amipass" {
		t.Errorf("Manager = %+v", m)
	}
	cl := cfg.Cluster
	if cl.Bind != "10.0.0.1:7946" || cl.Advertise != "192.0.2.1:7000" || cl.Profile != ProfileWAN ||
		!reflect.DeepEqual(cl.Join, []string{"10.0.0.2:7946", "node3.example.org:7946", "[fd00::1]:99"}) ||
		len(cl.Secret.Reveal()) != 24 {
		t.Errorf("Cluster = %+v (key %d bytes)", cl, len(cl.Secret))
	}
	if cfg.Client.TLSCAFile != "/etc/ssl/ca.pem" || cfg.Client.TLSInsecure || !cfg.Client.UseTLS {
		t.Errorf("Client TLS = %+v", cfg.Client)
	}
	// A loopback bind needs no secret.
	mustParse(t, "x.conf", client+"[cluster]\nbind=127.0.0.1:7946\njoin=127.0.0.1:7947\n")
}

func TestWarnings(t *testing.T) {
	src := client + // lines 1-7
		"timeout=5\n" + // 8
		"sendtodialplan=yes\n" + // 9
		"context=messages\n" + // 10
		"forceoldssl=no\n" + // 11
		"keepalive=yes\n" + // 12
		"oauth_clientid=id\n" + // 13
		"oauth_secret=OAUTHSECRETVALUE\n" + // 14
		"refresh_token=REFRESHTOKENVALUE\n" + // 15
		"port=5222\n" + // 16
		"port=5223\n" + // 17
		"buddy=a@example.org\n" + // 18
		"buddy=A@Example.org\n" + // 19
		"status=unavailable\n" + // 20
		"[other]\n" + // 21
		"serverhost=x.example.org\n" + // 22
		"[comp]\n" + // 23
		"type=component\n" // 24
	cfg, warns := mustParse(t, "w.conf", src)
	want := []string{
		`w.conf:8: key "timeout": `,
		`w.conf:9: key "sendtodialplan": `,
		`w.conf:10: key "context": `,
		`w.conf:11: key "forceoldssl": `,
		`w.conf:12: key "keepalive": `,
		`w.conf:13: key "oauth_clientid": `,
		`w.conf:14: key "oauth_secret": `,
		`w.conf:15: key "refresh_token": `,
		`w.conf:17: key "port": repeated (also on line 16)`,
		`w.conf:19: key "buddy": buddy "A@Example.org" repeated (first on line 18)`,
		`w.conf:20: key "status": buddies will see this node as offline`,
		`w.conf:21: client section [other] does not have distribute_events=yes`,
		`w.conf:23: key "type": section [comp] is a component`,
	}
	if len(warns) != len(want) {
		t.Errorf("got %d warnings, want %d:\n%s", len(warns), len(want), join(warns))
	}
	for i := 0; i < len(want) && i < len(warns); i++ {
		if !strings.HasPrefix(warns[i].Error(), want[i]) {
			t.Errorf("warning %d = %q, want prefix %q", i, warns[i], want[i])
		}
	}
	noSecrets(t, join(warns), "OAUTHSECRETVALUE", "REFRESHTOKENVALUE", "s3cret-pass")
	if cfg.Client.Port != 5223 || len(cfg.Client.Buddies) != 1 {
		t.Errorf("Client = %+v", cfg.Client)
	}
}

func join(l []Issue) string {
	var b strings.Builder
	for _, i := range l {
		b.WriteString(i.Error() + "\n")
	}
	return b.String()
}

func TestPubSubNodeDefault(t *testing.T) {
	src := strings.Replace(client, "pubsub_node=pubsub.example.org\n", "", 1)
	cfg, warns := mustParse(t, "x.conf", src)
	if cfg.Client.PubSubNode != "" || len(warns) != 1 ||
		warns[0].Error() != `x.conf:1: key "pubsub_node": not set in [asterisk]; the PubSub service is discovered on example.org at every connect (XEP-0030)` {
		t.Errorf("PubSubNode %q, warnings %v", cfg.Client.PubSubNode, warns)
	}
}

// TestErrors: each bad input is rejected with the right file:line.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // every error, in order
	}{
		{"bad boolean", client + "usetls=maybe\n", []string{`f.conf:8: key "usetls": bad boolean "maybe": want yes or no`}},
		{"bad boolean general", "[general]\ndebug=2\n" + client, []string{`f.conf:2: key "debug": bad boolean "2"`}},
		{"bad persist_items", "[general]\npubsub_persist_items=some\n" + client, []string{`f.conf:2: key "pubsub_persist_items": bad boolean "some"`}},
		{"bad port", client + "port=x\n", []string{`f.conf:8: key "port": bad port "x"`}},
		{"port range", client + "port=65536\n", []string{`f.conf:8: key "port": bad port 65536: want 1-65535`}},
		{"bad manager port", client + "[manager]\nport=0\n", []string{`f.conf:9: key "port": bad port 0: want 1-65535`}},
		{"bad EID", client + "[agent]\neid=00:11:22:33:44\n", []string{`f.conf:9: key "eid": bad EID "00:11:22:33:44"`}},
		{"bad EID digits", client + "[agent]\neid=00:11:22:33:44:555\n", []string{`f.conf:9: key "eid": bad EID`}},
		{"bad EID hex", client + "[agent]\neid=00:11:22:33:44:gg\n", []string{`f.conf:9: key "eid": bad EID`}},
		{"zero EID", client + "[agent]\neid=0:0:0:0:0:0\n", []string{`f.conf:9: key "eid": bad EID "0:0:0:0:0:0": all zeros`}},
		{"bad username", strings.Replace(client, "node1@example.org/res1", "node1.example.org", 1),
			[]string{`f.conf:5: key "username": bad JID "node1.example.org": want user@domain`}},
		{"bad username chars", strings.Replace(client, "node1@", "no de@", 1),
			[]string{`f.conf:5: key "username": bad JID "no de@example.org/res1": user part has a character XMPP forbids`}},
		{"bad buddy", client + "buddy=server2@\n", []string{`f.conf:8: key "buddy": bad JID "server2@": domain: empty host name`}},
		{"bad buddy resource", client + "buddy=a@b.org/\n", []string{`f.conf:8: key "buddy": bad JID "a@b.org/": empty resource`}},
		{"no distributing client", strings.Replace(client, "distribute_events=yes", "distribute_events=no", 1),
			[]string{`f.conf: no client section with distribute_events=yes`}},
		{"no client at all", "[general]\ndebug=no\n", []string{`f.conf: no client section with distribute_events=yes`}},
		{"component distributes", "[comp]\ntype=component\ndistribute_events=yes\n", []string{
			`f.conf:1: key "type": section [comp] is a component; busylamp distributes events only over type=client`,
			`f.conf: no client section`}},
		{"bad type", client + "type=server\n", []string{`f.conf:8: key "type": bad type "server": want client`}},
		{"missing required", "[general]\n\n[asterisk]\ndistribute_events=yes\n", []string{
			`f.conf:3: key "serverhost": missing: client section [asterisk] needs it`,
			`f.conf:3: key "username": missing: client section [asterisk] needs it`,
			`f.conf:3: key "secret": missing: client section [asterisk] needs it`}},
		{"empty secret", strings.Replace(client, "secret=s3cret-pass", "secret=", 1),
			[]string{`f.conf:1: key "secret": missing`}},
		{"oauth only", strings.Replace(client, "secret=s3cret-pass", "refresh_token=tok", 1),
			[]string{`f.conf:1: key "secret": missing: client section [asterisk] needs it (busylamp does not log in with refresh_token)`}},
		{"unknown key agent", client + "[agent]\neid=2:0:0:0:0:1\nstales=keep\n", []string{`f.conf:10: key "stales": unknown key in [agent]`}},
		{"unknown key manager", client + "[manager]\nenabled=yes\n", []string{`f.conf:9: key "enabled": unknown key in [manager]`}},
		{"unknown key cluster", client + "[cluster]\nbind_addr=127.0.0.1\n", []string{`f.conf:9: key "bind_addr": unknown key in [cluster]`}},
		{"unknown key client", client + "usetsl=yes\n", []string{`f.conf:8: key "usetsl": unknown key in client section [asterisk]`}},
		{"unknown key general", "[general]\nautocreate=yes\n" + client, []string{`f.conf:2: key "autocreate": unknown key in [general]`}},
		{"general key in client", client + "collection_nodes=yes\n", []string{`f.conf:8: key "collection_nodes": belongs in [general]`}},
		{"client key in general", "[general]\nstatus=away\n" + client, []string{`f.conf:2: key "status": belongs in a client section`}},
		{"bad auth_policy", "[general]\nauth_policy=maybe\n" + client, []string{`f.conf:2: key "auth_policy": bad auth_policy "maybe"`}},
		{"bad status", client + "status=busy\n", []string{`f.conf:8: key "status": bad status "busy"`}},
		{"bad priority", client + "priority=high\n", []string{`f.conf:8: key "priority": bad priority "high"`}},
		{"bad serverhost", client + "serverhost=xmpp..example.org\n", []string{`f.conf:8: key "serverhost": bad server host`}},
		{"bad serverhost port", client + "serverhost=xmpp.example.org:99999\n", []string{`f.conf:8: key "serverhost": bad server host "xmpp.example.org:99999": bad port "99999": want 1-65535`}},
		{"bad serverhost list", client + "serverhost=a.example.org:5222, b..example.org\n", []string{`f.conf:8: key "serverhost": bad server host "a.example.org:5222, b..example.org": "b..example.org": bad host name`}},
		{"empty serverhost entry", client + "serverhost=a.example.org,,b.example.org\n", []string{`f.conf:8: key "serverhost": bad server host "a.example.org,,b.example.org": empty entry in the server list`}},
		{"bad stale", client + "[agent]\nstale=forget\n", []string{`f.conf:9: key "stale": bad value "forget": want expire or keep`}},
		{"bad stale_grace", client + "[agent]\nstale_grace=-1\n", []string{`f.conf:9: key "stale_grace": bad value "-1"`}},
		{"bad mwi_merge", client + "[agent]\nmwi_merge=max\n", []string{`f.conf:9: key "mwi_merge": bad value "max"`}},
		{"bad max_devices", client + "[agent]\nmax_devices=0\n", []string{`f.conf:9: key "max_devices": bad value "0"`}},
		{"relative state_dir", client + "[agent]\nstate_dir=state\n", []string{`f.conf:9: key "state_dir": bad value "state": want an absolute directory path`}},
		{"empty state_dir", client + "[agent]\nstate_dir=\n", []string{`f.conf:9: key "state_dir": bad value "": want an absolute directory path`}},
		{"bad bindaddr", client + "[manager]\nbindaddr=localhost\n", []string{`f.conf:9: key "bindaddr": bad address "localhost"`}},
		{"manager user without secret", client + "[manager]\nusername=admin\n", []string{`f.conf:9: key "secret": missing: [manager] has a username`}},
		{"cluster secret required", client + "[cluster]\nbind=0.0.0.0:7946\n", []string{`f.conf:9: key "secret": missing: bind 0.0.0.0:7946 is not a loopback address`}},
		{"cluster secret required to advertise", client + "[cluster]\nbind=127.0.0.1:7946\nadvertise=192.0.2.7:7946\n", []string{`f.conf:10: key "secret": missing: advertise 192.0.2.7:7946 is not a loopback address`}},
		{"cluster bad base64", client + "[cluster]\nsecret=not*base64\n", []string{`f.conf:9: key "secret": not valid base64`}},
		{"cluster short key", client + "[cluster]\nsecret=QUJD\n", []string{`f.conf:9: key "secret": key is 3 bytes`}},
		{"cluster join without bind", client + "[cluster]\njoin=10.0.0.2\n", []string{`f.conf:9: key "join": needs bind`}},
		{"cluster bad join", client + "[cluster]\nbind=127.0.0.1\njoin=10.0.0.2:x\n", []string{`f.conf:10: key "join": bad address "10.0.0.2:x"`}},
		{"cluster bind hostname", client + "[cluster]\nbind=node1.example.org:7946\n", []string{`f.conf:9: key "bind": bad address "node1.example.org:7946": want IP:port`}},
		{"bad profile", client + "[cluster]\nprofile=dc\n", []string{`f.conf:9: key "profile": bad profile "dc"`}},
		{"key before section", "debug=yes\n" + client, []string{`f.conf:1: key "debug": key before the first [section]`}},
		{"no equals", client + "welcome\n", []string{`f.conf:8: expected "key = value"`}},
		{"unclosed header", client + "[agent\n", []string{`f.conf:8: section header without ']'`}},
		{"unknown template", client + "[a](tpl)\nport=1\n", []string{`f.conf:8: section [a]: template [tpl] is not defined above`}},
		{"include missing", "#include other-missing.conf\n" + client, []string{`f.conf:1: #include "other-missing.conf": no such file`}},
		{"unclosed block comment", client + ";-- start\nport=x\n", []string{`f.conf:8: block comment ";--" is not closed`}},
		{"backquote value", client + "statusmessage=`hi`\n", []string{"f.conf:8: key \"statusmessage\": a value may not start with ` or \"\"\""}},
		{"every error at once", client + "usetls=maybe\nport=x\nbuddy=bad\n[agent]\neid=zz\nfoo=1\n", []string{
			`f.conf:8: key "usetls": bad boolean "maybe"`,
			`f.conf:9: key "port": bad port "x"`,
			`f.conf:10: key "buddy": bad JID "bad"`,
			`f.conf:12: key "eid": bad EID "zz"`,
			`f.conf:13: key "foo": unknown key in [agent]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := Parse("f.conf", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; want %v", tc.want)
			}
			if cfg != nil {
				t.Errorf("cfg is not nil with an error")
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error %T is not Errors", err)
			}
			if len(list) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(list), len(tc.want), err)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(list[i].Error(), w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, list[i], w)
				}
			}
			noSecrets(t, err.Error(), "s3cret-pass")
		})
	}
}

// TestScan covers Asterisk's lexical rules and that every key is mapped to
// its line.
func TestScan(t *testing.T) {
	src := "\xef\xbb\xbf; leading comment\r\n" + // 1 (BOM, CRLF)
		"# a hash comment line\r\n" + // 2
		"[general]   ; section comment\n" + // 3
		"\t\t\t\t\t; indented comment line\n" + // 4
		"debug = yes\t\t;; tabs then two semicolons\n" + // 5
		";-- a block comment\n" + // 6
		"port=bad\n" + // 7 (inside the block)
		"--;\n" + // 8
		"[asterisk]\n" + // 9
		"type => client\n" + // 10
		"serverhost=xmpp.example.org\n" + // 11
		"username=node1@example.org\n" + // 12
		"secret=pa\\;ss#word\\\n" + // 13: escaped ';', literal '#', trailing '\' (no continuation)
		"distribute_events=yes\n" + // 14: not swallowed by line 13
		"statusmessage=a ;-- inline --; b ; c\n" + // 15
		"BUDDY=b1@example.org\n" + // 16
		"\n" + // 17
		"buddy = b2@example.org   \n" + // 18
		"pubsub_node=\"pubsub.example.org\"\n" + // 19: quotes kept, so invalid
		"[asterisk](+)\n" + // 20
		"buddy=b3@example.org\n" + // 21
		"port=5269"
	r := &report{file: "s.conf"}
	s := scan([]byte(src), r, noSources)
	if len(r.errs) != 0 {
		t.Fatalf("scan errors: %v", r.errs)
	}
	lines := map[string][]int{}
	vals := map[string][]string{}
	for _, sec := range s.sections {
		for _, k := range sec.order {
			for _, o := range sec.keys[k] {
				lines[sec.name+"."+k] = append(lines[sec.name+"."+k], o.line)
				vals[sec.name+"."+k] = append(vals[sec.name+"."+k], o.value)
			}
		}
	}
	wantLines := map[string][]int{
		"general.debug":              {5},
		"asterisk.type":              {10},
		"asterisk.serverhost":        {11},
		"asterisk.username":          {12},
		"asterisk.secret":            {13},
		"asterisk.distribute_events": {14},
		"asterisk.statusmessage":     {15},
		"asterisk.buddy":             {16, 18, 21},
		"asterisk.pubsub_node":       {19},
		"asterisk.port":              {22},
	}
	if !reflect.DeepEqual(lines, wantLines) {
		t.Errorf("lines =\n%v\nwant\n%v", lines, wantLines)
	}
	if s.lookup("general").line != 3 || s.lookup("asterisk").line != 9 || len(s.sections) != 2 {
		t.Errorf("sections: %+v", s.sections)
	}
	if got := vals["asterisk.secret"][0]; got != "pa;ss#word\\" {
		t.Errorf("secret = %q", got)
	}
	if got := vals["asterisk.statusmessage"][0]; got != "a  b" {
		t.Errorf("statusmessage = %q", got)
	}

	// The values Parse reads are these, and the line numbers reach the
	// errors.
	_, _, err := Parse("s.conf", []byte(src))
	want := `s.conf:19: key "pubsub_node": bad PubSub service "\"pubsub.example.org\""`
	if err == nil || err.Error() != want+": bad host name" {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	cfg, _ := mustParse(t, "s.conf", strings.Replace(src, `"pubsub.example.org"`, "pubsub.example.org", 1))
	c := cfg.Client
	if c.Secret.Reveal() != "pa;ss#word\\" || c.Port != 5269 || !c.DistributeEvents || c.StatusMessage != "a  b" ||
		!reflect.DeepEqual(c.Buddies, []string{"b1@example.org", "b2@example.org", "b3@example.org"}) || !cfg.General.Debug {
		t.Errorf("Client = %+v", c)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	const key = "c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXk=" // 32 bytes
	src := client + "oauth_secret=OAUTHSECRETVALUE\nrefresh_token=REFRESHTOKENVALUE\n" +
		"[manager]\nusername=admin\nsecret=AMIPASSWORD\n[cluster]\nbind=10.0.0.1\nsecret=" + key + "\n"
	cfg, warns := mustParse(t, "x.conf", src)
	secrets := []string{"s3cret-pass", "AMIPASSWORD", "OAUTHSECRETVALUE", "REFRESHTOKENVALUE", key, "secret-key", "736563726574"}
	var out bytes.Buffer
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&out, f+"\n", cfg)
		fmt.Fprintf(&out, f+"\n", *cfg)
		fmt.Fprintf(&out, f+"\n", cfg.Client.Secret)
		fmt.Fprintf(&out, f+"\n", cfg.Cluster.Secret)
		fmt.Fprintf(&out, f+"\n", cfg.Cluster)
	}
	out.WriteString(cfg.String())
	slog.New(slog.NewTextHandler(&out, nil)).Info("cfg", "cfg", *cfg, "m", cfg.Manager, "c", cfg.Cluster, "s", cfg.Client.Secret)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("cfg", "cfg", *cfg, "s", cfg.Manager.Secret, "k", cfg.Cluster.Secret)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	out.WriteString(join(warns))
	noSecrets(t, out.String(), secrets...)
	if !strings.Contains(out.String(), "******") {
		t.Errorf("no mask in output:\n%s", out.String())
	}
	if cfg.Manager.Secret.Reveal() != "AMIPASSWORD" || string(cfg.Cluster.Secret.Reveal()) != "secret-key-secret-key-secret-key" {
		t.Errorf("Reveal lost the secrets")
	}
	if Secret("").String() != "" || fmt.Sprint(Secret("x")) != "******" {
		t.Errorf("mask of empty/set secret wrong")
	}

	// Malformed secrets are not echoed in errors either.
	_, _, err = Parse("x.conf", []byte(client+"[cluster]\nsecret=BAD*SECRET*VALUE\n"))
	if err == nil {
		t.Fatal("no error")
	}
	noSecrets(t, err.Error(), "BAD*SECRET*VALUE")
}

func noSecrets(t *testing.T, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("secret %q printed in:\n%s", s, out)
		}
	}
}

func TestParseBool(t *testing.T) {
	for _, s := range []string{"yes", "YES", "true", "True", "on", "ON", "1", "y", "t"} {
		if b, ok := parseBool(s); !b || !ok {
			t.Errorf("parseBool(%q) = %v, %v", s, b, ok)
		}
	}
	for _, s := range []string{"no", "No", "false", "FALSE", "off", "Off", "0", "n", "f"} {
		if b, ok := parseBool(s); b || !ok {
			t.Errorf("parseBool(%q) = %v, %v", s, b, ok)
		}
	}
	for _, s := range []string{"", "2", "maybe", "yess", "enabled"} {
		if _, ok := parseBool(s); ok {
			t.Errorf("parseBool(%q) accepted", s)
		}
	}
}

func TestParseEID(t *testing.T) {
	for in, want := range map[string]EID{
		"00:11:22:33:44:55": {0, 0x11, 0x22, 0x33, 0x44, 0x55},
		"0:1:2:3:4:5":       {0, 1, 2, 3, 4, 5},
		"AA:bb:Cc:dD:ee:FF": {0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff},
	} {
		if got, err := ParseEID(in); err != nil || got != want {
			t.Errorf("ParseEID(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "00:11:22:33:44", "00:11:22:33:44:55:66", "000:11:22:33:44:55",
		"00:11:22:33:44:", "00-11-22-33-44-55", "0x:11:22:33:44:55", "+1:11:22:33:44:55", " 0:11:22:33:44:55"} {
		if _, err := ParseEID(in); err == nil {
			t.Errorf("ParseEID(%q) accepted", in)
		}
	}
}

func TestValidateInCode(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "config: no client section") {
		t.Errorf("empty default: %v", err)
	}
	cfg.Client.Name = "node"
	cfg.Client.ServerHost = "xmpp.example.org"
	cfg.Client.Username = "n@example.org"
	cfg.Client.Secret = "x"
	cfg.Client.PubSubNode = "pubsub.example.org"
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	cfg.Client.Port = 0
	cfg.Client.Buddies = []string{"nope"}
	cfg.Agent.Stale = "sometimes"
	cfg.Agent.StaleGrace = 1500 * time.Millisecond
	cfg.Cluster.Bind = "10.0.0.1:7946"
	err := cfg.Validate()
	var list Errors
	if !errors.As(err, &list) || len(list) != 5 {
		t.Errorf("got %v", err)
	}
}

func TestLocate(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	local := false
	exists := func(p string) bool { return local && p == LocalConfig }
	check := func(flag, want string) {
		t.Helper()
		if got := locate(flag, getenv, exists); got != want {
			t.Errorf("locate(%q) = %q, want %q", flag, got, want)
		}
	}
	check("", SystemConfig)
	local = true
	check("", "busylamp.conf")
	env[EnvConfig] = "/env/b.conf"
	check("", "/env/b.conf")
	check("/flag/c.conf", "/flag/c.conf")

	// The real one, against a temporary working directory.
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(EnvConfig, "")
	if got := Locate(""); got != SystemConfig {
		t.Errorf("Locate = %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, LocalConfig), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Locate(""); got != LocalConfig {
		t.Errorf("Locate = %q", got)
	}
	t.Setenv(EnvConfig, "/x.conf")
	if got := Locate(""); got != "/x.conf" {
		t.Errorf("Locate = %q", got)
	}
	if got := Locate("-"); got != "-" {
		t.Errorf("Locate = %q", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.conf")
	_, _, err := Load(path)
	if err == nil || err.Error() != path+": cannot read: no such file or directory" {
		t.Errorf("err = %v", err)
	}
}

// One account is one buddy however it is spelled (capitals, a trailing dot
// of the domain, RFC 7622 §3.2), and the client's own account is never a
// buddy: the parsing is internal/jid's, the same as the XMPP client's.
func TestBuddyOneAccountOneSpelling(t *testing.T) {
	src := client + // lines 1-7; username=node1@example.org/res1
		"buddy=node2@example.org\n" + // 8
		"buddy=NODE2@example.org.\n" + // 9: node2@example.org again
		"buddy=node3@Example.ORG./pbx\n" + // 10
		"buddy=node3@example.org/pbx\n" + // 11: node3@example.org/pbx again
		"buddy=node3@example.org/PBX\n" + // 12: another resource, another buddy
		"buddy=node1@example.org.\n" + // 13: this client's own account
		"buddy=Node1@example.org/res2\n" // 14: the same account, another resource
	cfg, warns := mustParse(t, "b.conf", src)
	want := []string{
		`b.conf:9: key "buddy": buddy "NODE2@example.org." repeated (first on line 8)`,
		`b.conf:11: key "buddy": buddy "node3@example.org/pbx" repeated (first on line 10)`,
		`b.conf:13: key "buddy": buddy "node1@example.org." is this client's own account`,
		`b.conf:14: key "buddy": buddy "Node1@example.org/res2" is this client's own account`,
	}
	if len(warns) != len(want) {
		t.Fatalf("got %d warnings, want %d:\n%s", len(warns), len(want), join(warns))
	}
	for i, w := range want {
		if !strings.HasPrefix(warns[i].Error(), w) {
			t.Errorf("warning %d = %q, want prefix %q", i, warns[i], w)
		}
	}
	if got := cfg.Client.Buddies; !reflect.DeepEqual(got, []string{"node2@example.org", "node3@Example.ORG./pbx", "node3@example.org/PBX"}) {
		t.Errorf("Buddies = %q", got)
	}

	// The own account is found whatever the order of the lines and however
	// the username is spelled.
	src = strings.Replace(client, "username=node1@example.org/res1\n", "buddy=node1@example.org\nusername=NODE1@example.org./res1\n", 1)
	cfg, warns = mustParse(t, "b.conf", src)
	if len(cfg.Client.Buddies) != 0 || len(warns) != 1 ||
		!strings.HasPrefix(warns[0].Error(), `b.conf:5: key "buddy": buddy "node1@example.org" is this client's own account`) {
		t.Errorf("Buddies %q, warnings:\n%s", cfg.Client.Buddies, join(warns))
	}
}

// A trailing dot of the username's domain is the same domain; the
// PubSub service is discovered on the canonical form.
func TestUsernameTrailingDot(t *testing.T) {
	src := strings.Replace(client, "node1@example.org/res1", "node1@Example.org./res1", 1)
	src = strings.Replace(src, "pubsub_node=pubsub.example.org\n", "", 1)
	cfg, warns := mustParse(t, "x.conf", src)
	if cfg.Client.Username != "node1@Example.org./res1" || cfg.Client.PubSubNode != "" ||
		len(warns) != 1 || !strings.Contains(warns[0].Error(), "discovered on example.org at") {
		t.Errorf("Username %q, PubSubNode %q, warnings %v", cfg.Client.Username, cfg.Client.PubSubNode, warns)
	}
}
