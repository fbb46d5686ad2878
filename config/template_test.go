package config

import (
	"reflect"
	"strings"
	"testing"
)

// An xmpp.conf that builds its client from templates, as Asterisk's own
// configs do (pjsip.conf style).
const templated = `[general]
debug=no

[xmpp-common](!)          ; line 4: a template, never a client
type=client
serverhost=xmpp.example.org
pubsub_node=pubsub.example.org
usetls=yes
port=5223
buddy=node2@example.org/node2

[cluster-buddies](!,xmpp-common)   ; line 12: a template built on a template
buddy=node3@example.org/node3
distribute_events=yes

[asterisk](cluster-buddies)   ; line 16
username=node1@example.org/node1
secret=s3cret-pass
port=5222                     ; overrides the template: no warning
buddy=node4@example.org/node4

[asterisk](+)                 ; line 22
buddy=node5@example.org/node5
`

func TestTemplates(t *testing.T) {
	cfg, warns := mustParse(t, "xmpp.conf", templated)
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	c := cfg.Client
	want := []string{"node2@example.org/node2", "node3@example.org/node3", "node4@example.org/node4", "node5@example.org/node5"}
	if c.Name != "asterisk" || c.Port != 5222 || c.ServerHost != "xmpp.example.org" || !c.DistributeEvents ||
		!reflect.DeepEqual(c.Buddies, want) {
		t.Errorf("Client = %+v", c)
	}
	// The templates are not sections: no client, no warning about them.
	for _, sec := range cfg.src.sections {
		if sec.template || strings.HasPrefix(sec.name, "xmpp-") || strings.HasPrefix(sec.name, "cluster-") {
			t.Errorf("template %s read as a section", sec.name)
		}
	}
	// An inherited key keeps its template's line.
	if at := (validator{c: cfg}).keyAt("asterisk", "serverhost"); at.line != 6 {
		t.Errorf("serverhost at %v, want line 6", at)
	}
}

func TestTemplateIssues(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		errs      []string
		warns     []string
	}{
		{"unknown template", client + "[b](nosuch)\n", []string{`f.conf:8: section [b]: template [nosuch] is not defined above`}, nil},
		{"template defined below", "[a](t)\nport=1\n[t](!)\nport=2\n" + client,
			[]string{`f.conf:1: section [a]: template [t] is not defined above`}, []string{`f.conf:3: template [t] is not used`}},
		{"bad options", client + "[b](!\n", []string{`f.conf:8: section [b]: bad options (!: want (!), (+) or (template,...)`}, nil},
		{"empty option", client + "[b](!,)\n", []string{`f.conf:8: section [b]: empty name in options (!,)`}, nil},
		{"itself", client + "[asterisk](asterisk)\n", []string{`f.conf:8: section [asterisk]: cannot inherit from itself`}, nil},
		{"template and section of one name", client + "[asterisk](!)\n", []string{`f.conf:8: section [asterisk]: already a section (at line 1)`}, nil},
		{"a template's bad line is reported once, at its line", "[t](!)\nport=x\n" + client + "[a](t)\n[b](t)\n",
			[]string{`f.conf:2: key "port": bad port "x"`}, []string{
				`f.conf:10: client section [a] does not have distribute_events=yes`,
				`f.conf:11: client section [b] does not have distribute_events=yes`}},
		{"unused template", "[t](!)\nport=1\n" + client, nil, []string{`f.conf:1: template [t] is not used by any section`}},
		{"own key repeated still warns", "[t](!)\nport=1\n" + client + "[a](t)\nport=2\nport=3\n", nil, []string{
			`f.conf:10: client section [a] does not have distribute_events=yes`,
			`f.conf:12: key "port": repeated (also on line 11)`}},
		{"inherit from a section, as Asterisk allows", client + "[agent]\nstale=keep\n[x](agent)\n",
			[]string{`f.conf:9: key "stale": unknown key in client section [x]`}, []string{
				`f.conf:10: client section [x] does not have distribute_events=yes`}},
		{"a template for [agent]", "[tpl](!)\nstale=keep\n[agent](tpl)\n" + client, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, warns, err := parse("f.conf", []byte(tc.src), noSources)
			var got, gotW []string
			for _, is := range errorsOf(err) {
				got = append(got, is.Error())
			}
			for _, w := range warns {
				gotW = append(gotW, w.Error())
			}
			hasPrefixes(t, got, tc.errs)
			hasPrefixes(t, gotW, tc.warns)
		})
	}
}

// Asterisk's documented way to generate buddy lines: the client section
// names a file (or a command) that holds only buddy= lines.
func TestGeneratedBuddies(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"xmpp.conf": "[general]\nexecincludes=yes\n\n[buddies](!)\n#include xmpp_buddies.conf\n\n" +
			"[asterisk](buddies)\ntype=client\nserverhost=xmpp.example.org\nusername=node1@example.org/node1\n" +
			"secret=pw\ndistribute_events=yes\n#exec \"printf 'buddy=%s@example.org\\n' node7 node8\"\n",
		"xmpp_buddies.conf": "buddy=node2@example.org\nbuddy=node3@example.org\n",
	})
	cfg, _, err := Load(dir + "/xmpp.conf")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"node2@example.org", "node3@example.org", "node7@example.org", "node8@example.org"}
	if !reflect.DeepEqual(cfg.Client.Buddies, want) || !cfg.General.ExecIncludes {
		t.Errorf("buddies = %v (exec %v), want %v", cfg.Client.Buddies, cfg.General.ExecIncludes, want)
	}
}

func TestTemplateAdd(t *testing.T) {
	cfg, warns := mustParse(t, "f.conf", "[t](!)\nport=5223\n[t](+)\nbuddy=b@example.org\n"+
		strings.Replace(client, "[asterisk]", "[asterisk](t)", 1))
	if len(warns) != 0 || cfg.Client.Port != 5223 || len(cfg.Client.Buddies) != 1 {
		t.Errorf("Client %+v, warnings %v", cfg.Client, warns)
	}
}
