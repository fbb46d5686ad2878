package config

import (
	"strings"
	"testing"
)

// TestServerHostForms: what serverhost and port become (pubsub.Config's
// Address), and when the server is found through SRV records.
func TestServerHostForms(t *testing.T) {
	for _, tc := range []struct {
		serverhost, port string // port "" leaves the key out
		addr             string
		srv              bool
	}{
		{"xmpp.example.org", "", "xmpp.example.org", true},
		{"xmpp.example.org", "5222", "xmpp.example.org:5222", false},
		{"xmpp.example.org", "5223", "xmpp.example.org:5223", false},
		{"xmpp.example.org:5269", "", "xmpp.example.org:5269", false},
		{"1.2.3.4", "", "1.2.3.4:5222", false},
		{"::1", "", "[::1]:5222", false},
		{"[::1]:5300", "", "[::1]:5300", false},
		{"127.0.0.1:5223, 127.0.0.1:5224", "", "127.0.0.1:5223, 127.0.0.1:5224", false},
		{"host1.example.org:5222, host2.example.org", "", "host1.example.org:5222, host2.example.org:5222", false},
		{"host1.example.org, host2.example.org", "5300", "host1.example.org:5300, host2.example.org:5300", false},
	} {
		src := strings.Replace(client, "serverhost=xmpp.example.org\n", "serverhost="+tc.serverhost+"\n", 1)
		if tc.port != "" {
			src += "port=" + tc.port + "\n"
		}
		cfg, warns := mustParse(t, "x.conf", src)
		if len(warns) != 0 {
			t.Errorf("%s port %q: warnings %v", tc.serverhost, tc.port, warns)
		}
		if got := cfg.Client.Addr(); got != tc.addr || cfg.Client.SRV() != tc.srv {
			t.Errorf("%s port %q: Addr %q SRV %v, want %q %v", tc.serverhost, tc.port, got, cfg.Client.SRV(), tc.addr, tc.srv)
		}
	}
}
