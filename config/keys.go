package config

import (
	"fmt"
	"strconv"
	"strings"
)

// KeyDoc documents one key of one section: the catalog that Keys returns
// is the list the readers accept (a key it does not list is an error, and
// every key it lists is read), so it cannot drift from the parser.
type KeyDoc struct {
	// Section is the section's name: "general", "agent", "manager",
	// "metrics", "http", "cluster", or ClientSection for the keys of a
	// client section (any other name; Asterisk's sample calls it
	// [asterisk]).
	Section string
	Key     string
	// Default is the value when the key is left out, as written in the
	// file; "" when there is none (the key is required, off, or derived:
	// Doc says which).
	Default string
	// Example is a valid value, for documentation; it equals Default when
	// there is one.
	Example string
	Doc     string // one line
	// Repeat is set for a key whose every line counts (buddy, permit,
	// deny); for the others the last line wins.
	Repeat bool
	// Ignored is set for Asterisk's keys that busylamp accepts with a
	// warning and does not use.
	Ignored bool
}

// ClientSection is KeyDoc.Section for the keys of a client section.
const ClientSection = "client"

// Sections lists the sections in the order Keys lists them (and
// busylamp help config prints them).
func Sections() []string {
	return []string{"general", ClientSection, "agent", "manager", "metrics", "http", "cluster"}
}

// Keys returns every key of every section, grouped by section in the
// order of Sections.
func Keys() []KeyDoc {
	out := make([]KeyDoc, len(catalog))
	copy(out, catalog)
	for i := range out {
		if out[i].Example == "" {
			out[i].Example = out[i].Default
		}
	}
	return out
}

const ignoredDoc = "busylamp does not use it"

var catalog = []KeyDoc{
	// Asterisk's [general].
	{Section: "general", Key: "debug", Default: "no", Doc: "trace XMPP stanzas in the log (every client)"},
	{Section: "general", Key: "autoprune", Default: "no", Doc: "remove roster entries that are not buddies (careful with a personal account)"},
	{Section: "general", Key: "autoregister", Default: "yes", Doc: "add the buddies to the roster"},
	{Section: "general", Key: "collection_nodes", Default: "no", Doc: "use XEP-0248 collection nodes for device state and MWI"},
	{Section: "general", Key: "pubsub_autocreate", Default: "no", Doc: "the PubSub service creates nodes on publish (else busylamp creates them)"},
	{Section: "general", Key: "pubsub_persist_items", Default: "yes", Doc: "busylamp: no creates the nodes keeping no items, so that ejabberd lets every server publish every device (Asterisk nodes need it there)"},
	{Section: "general", Key: "auth_policy", Default: string(AuthAccept), Doc: "subscription requests from strangers: accept or deny"},
	{Section: "general", Key: "execincludes", Default: "no", Doc: "allow #exec; counts only in this [general] of the top-level file (Asterisk has it in asterisk.conf)"},
	{Section: "general", Key: "log_format", Default: LogText, Doc: "the agent's log lines: text or json"},

	// A client section, as Asterisk's res_xmpp reads it.
	{Section: ClientSection, Key: "type", Default: "client", Doc: "client (component sections are not supported and are ignored)"},
	{Section: ClientSection, Key: "serverhost", Example: "xmpp.example.org", Doc: "the XMPP server to connect to, or a list tried in order: host1:5222, host2 (a host without a port gets port's); a single host name without a port, and no port key, is looked up in DNS: _xmpp-client._tcp SRV records (and _xmpps-client._tcp, direct TLS, with usetls=yes), else the name at 5222 (required)"},
	{Section: ClientSection, Key: "port", Example: strconv.Itoa(DefaultXMPPPort), Doc: "the XMPP server's port, for serverhost's hosts that name none (unset: " + strconv.Itoa(DefaultXMPPPort) + ", or what SRV records say); setting it, even to " + strconv.Itoa(DefaultXMPPPort) + ", turns the SRV lookup off"},
	{Section: ClientSection, Key: "username", Example: "node1@example.org/node1", Doc: "the account, user@domain[/resource]; the resource defaults to " + defaultResource + " (required)"},
	{Section: ClientSection, Key: "secret", Example: "password", Doc: "the account's password (required)"},
	{Section: ClientSection, Key: "pubsub_node", Example: "pubsub.example.org", Doc: "the PubSub service; default: discovered at every connect on the username's domain (XEP-0030)"},
	{Section: ClientSection, Key: "priority", Default: "1", Doc: "the resource's presence priority, -128 to 127"},
	{Section: ClientSection, Key: "usetls", Default: "yes", Doc: "STARTTLS"},
	{Section: ClientSection, Key: "usesasl", Default: "yes", Doc: "busylamp always uses SASL; no is ignored with a warning"},
	{Section: ClientSection, Key: "tls_ca", Example: "/etc/ssl/certs/xmpp-ca.pem", Doc: "busylamp: the CA file to verify the server with; default the system's"},
	{Section: ClientSection, Key: "tls_insecure", Default: "no", Doc: "busylamp: do not verify the server's certificate"},
	{Section: ClientSection, Key: "buddy", Example: "node2@example.org/node2", Repeat: true, Doc: "another node's account"},
	{Section: ClientSection, Key: "status", Default: defaultStatus, Doc: "presence: available, chat, away, xaway, dnd or unavailable"},
	{Section: ClientSection, Key: "statusmessage", Default: defaultMessage, Doc: "presence status text"},
	{Section: ClientSection, Key: "distribute_events", Default: "no", Doc: "busylamp connects with the one client that has yes"},
	{Section: ClientSection, Key: "debug", Example: "no", Doc: "as [general]'s; either one on turns tracing on"},
	{Section: ClientSection, Key: "autoprune", Example: "no", Doc: "as [general]'s, which is the default"},
	{Section: ClientSection, Key: "autoregister", Example: "yes", Doc: "as [general]'s, which is the default"},
	{Section: ClientSection, Key: "auth_policy", Example: string(AuthAccept), Doc: "as [general]'s, which is the default"},
	{Section: ClientSection, Key: "timeout", Example: "5", Ignored: true, Doc: "Asterisk's JABBER_RECEIVE message timeout; " + ignoredDoc},
	{Section: ClientSection, Key: "sendtodialplan", Example: "no", Ignored: true, Doc: "Asterisk's dialplan messaging; " + ignoredDoc},
	{Section: ClientSection, Key: "context", Example: "default", Ignored: true, Doc: "Asterisk's dialplan messaging; " + ignoredDoc},
	{Section: ClientSection, Key: "keepalive", Example: "yes", Ignored: true, Doc: "busylamp sends its own XMPP pings; ignored"},
	{Section: ClientSection, Key: "forceoldssl", Example: "no", Ignored: true, Doc: "old-style SSL (direct TLS) is not supported; busylamp uses STARTTLS (usetls); ignored"},
	{Section: ClientSection, Key: "refresh_token", Example: "token", Ignored: true, Doc: "Google OAuth is not supported; ignored"},
	{Section: ClientSection, Key: "oauth_clientid", Example: "id", Ignored: true, Doc: "Google OAuth is not supported; ignored"},
	{Section: ClientSection, Key: "oauth_secret", Example: "secret", Ignored: true, Doc: "Google OAuth is not supported; ignored"},

	{Section: "agent", Key: "eid", Example: "02:00:00:00:00:01", Doc: "entity id, Asterisk's MAC-like form; default derived from the host"},
	{Section: "agent", Key: "stale", Default: string(StaleExpire), Doc: "a server's states when it leaves: expire or keep"},
	{Section: "agent", Key: "stale_grace", Default: strconv.Itoa(int(DefaultStaleGrace.Seconds())), Doc: "seconds a server may be away before its states expire"},
	{Section: "agent", Key: "mwi_merge", Default: string(MWILatest), Doc: "one mailbox's counts from several servers: latest (Asterisk's rule) or sum"},
	{Section: "agent", Key: "max_devices", Default: strconv.Itoa(DefaultMaxDevices), Doc: "bound on devices (and on mailboxes) held"},
	{Section: "agent", Key: "state_dir", Default: DefaultStateDir, Doc: "this node's own states, kept across crashes (an absolute path)"},
	{Section: "agent", Key: "device_state_filter", Example: "^PJSIP/", Doc: "publish only devices this regex matches (POSIX ERE, no case); default all"},
	{Section: "agent", Key: "mailbox_state_filter", Example: "@default$", Doc: "publish only mailboxes this regex matches; default all"},
	{Section: "agent", Key: "device_state_accept", Example: "^PJSIP/", Doc: "take in only other servers' devices this regex matches; default all"},
	{Section: "agent", Key: "mailbox_state_accept", Example: "@default$", Doc: "take in only other servers' mailboxes this regex matches; default all"},

	{Section: "manager", Key: "bindaddr", Default: "127.0.0.1", Doc: "the AMI-style socket's IP address"},
	{Section: "manager", Key: "port", Default: strconv.Itoa(DefaultManagerPort), Doc: "the AMI-style socket's port"},
	{Section: "manager", Key: "username", Example: "admin", Doc: "the login; default no login needed"},
	{Section: "manager", Key: "secret", Example: "password", Doc: "the login's secret; needed with username"},
	{Section: "manager", Key: "deny", Example: "0.0.0.0/0.0.0.0", Repeat: true, Doc: "refuse clients from this network (the last matching permit or deny line decides)"},
	{Section: "manager", Key: "permit", Example: "127.0.0.1/255.255.255.255", Repeat: true, Doc: "let clients from this network in (IP, IP/bits or IPv4/netmask)"},
	{Section: "manager", Key: "tls_cert", Example: "/etc/busylamp/manager.pem", Doc: "PEM certificate; with tls_key the socket speaks TLS"},
	{Section: "manager", Key: "tls_key", Example: "/etc/busylamp/manager.key", Doc: "PEM private key for tls_cert"},
	{Section: "manager", Key: "tls_ca", Example: "/etc/busylamp/ca.pem", Doc: "the CA the client commands verify the socket with; default tls_cert"},
	{Section: "manager", Key: "authtimeout", Default: strconv.Itoa(int(DefaultAuthTimeout.Seconds())), Doc: "seconds a connection may take to log in"},
	{Section: "manager", Key: "authlimit", Default: strconv.Itoa(DefaultAuthLimit), Doc: "connections not logged in at once"},

	{Section: "metrics", Key: "bind", Example: "127.0.0.1:" + strconv.Itoa(DefaultMetricsPort), Doc: "IP[:port] for Prometheus metrics; default off"},

	{Section: "http", Key: "bind", Example: "127.0.0.1:" + strconv.Itoa(DefaultHTTPPort), Doc: "IP[:port] for the live lamp field page; default off (off loopback it asks for the [manager] login)"},

	{Section: "cluster", Key: "bind", Example: "127.0.0.1:" + strconv.Itoa(DefaultClusterPort), Doc: "IP[:port] for gossip membership; default off"},
	{Section: "cluster", Key: "advertise", Example: "127.0.0.1:" + strconv.Itoa(DefaultClusterPort), Doc: "IP[:port] other members reach this one at; default bind's"},
	{Section: "cluster", Key: "join", Example: "127.0.0.1:7947, 127.0.0.1:7948", Doc: "host[:port] of members to join, comma-separated"},
	{Section: "cluster", Key: "secret", Example: "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", Doc: "gossip encryption key, base64 of 32 (or 16 or 24) bytes; needed off loopback"},
	{Section: "cluster", Key: "profile", Default: string(ProfileLAN), Doc: "memberlist's timing: lan or wan"},
}

// catalogIndex is catalog by section, then key.
var catalogIndex = func() map[string]map[string]KeyDoc {
	m := map[string]map[string]KeyDoc{}
	for _, k := range catalog {
		if m[k.Section] == nil {
			m[k.Section] = map[string]KeyDoc{}
		}
		if _, dup := m[k.Section][k.Key]; dup {
			panic(fmt.Sprintf("config: key %s listed twice in [%s]", k.Key, k.Section))
		}
		m[k.Section][k.Key] = k
	}
	return m
}()

// sectionKind is the catalog's section for a section of the file.
func sectionKind(name string) string {
	switch n := strings.ToLower(name); n {
	case "general", "agent", "manager", "metrics", "http", "cluster":
		return n
	}
	return ClientSection
}

// accept reports whether the catalog lists v's key for section kind sec
// (label names the section in messages); if not, it reports the key as
// belonging elsewhere or unknown.
func accept(sec, label string, v value, r *report) (KeyDoc, bool) {
	if d, ok := catalogIndex[sec][v.key]; ok {
		return d, true
	}
	switch _, client := catalogIndex[ClientSection][v.key]; {
	case sec == "general" && client:
		r.errorf(v.pos, v.key, "belongs in a client section, not in [general]")
	case sec == ClientSection && catalogIndex["general"][v.key].Key != "":
		r.errorf(v.pos, v.key, "belongs in [general], not in %s", label)
	default:
		r.errorf(v.pos, v.key, "unknown key in %s", label)
	}
	return KeyDoc{}, false
}

// unread is the readers' default case: a key the catalog lists that no
// reader takes. Keys' test makes sure it never happens.
func unread(v value, r *report) {
	r.errorf(v.pos, v.key, "internal: listed in the catalog but not read")
}
