-- Written by xmpptest for one site of a federation (federation.go);
-- rewritten when admins are added.
pidfile = {{q .Dir "prosody.pid"}}
data_path = {{q .Dir "data"}}
certificates = {{q .Dir "certs"}}
admin_socket = {{q .Dir "data/prosody.sock"}}
log = { debug = {{q .Dir "logs/prosody.log"}} }

-- Only admins may create PubSub nodes; remote accounts count too.
admins = { {{range .Admins}}{{printf "%q" .}}; {{end}}}

-- Clients and servers on this site's loopback address only.
interfaces = { {{printf "%q" .IP}} }
local_interfaces = { {{printf "%q" .IP}} }
c2s_ports = { {{.Port}} }
c2s_direct_tls_ports = { }
s2s_ports = { {{.S2SPort}} }
s2s_direct_tls_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }

modules_enabled = {
	"roster"; "saslauth"; "disco"; "ping"; "posix"; "admin_shell"; "dialback";{{if .TLS}} "tls";{{end}}
}
{{if .TLS}}
-- Server to server: TLS required, the peer's certificate verified
-- against both sites' CAs.
ssl = { certificate = {{printf "%q" .Cert}}; key = {{printf "%q" .Key}}; cafile = {{printf "%q" .CAFile}} }
s2s_require_encryption = true
s2s_secure_auth = true
{{else}}
-- Server to server: dialback over plain TCP (a test on loopback).
s2s_require_encryption = false
s2s_secure_auth = false
{{end}}
-- Names resolve from this site's own hosts file only (libunbound through
-- net.unbound): the static zone answers every other .test name at once
-- with NXDOMAIN (so the SRV lookup falls back to the A record and port
-- 5269) and nothing goes to a real resolver.
unbound = {
	hoststxt = {{q .Dir "hosts"}};
	resolvconf = false;
	options = { ["local-zone:"] = "test. static" };
}

-- Without it a notification over s2s waited ~40 ms (Nagle's algorithm
-- against the peer's delayed ACK: measured 45 ms a.test → b.test, 3 ms
-- without).
network_settings = { nagle = false }
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
{{- if .Memory}}
-- The memory store refuses a node's 1001st item (internal-server-error).
storage_archive_item_limit = 1000000
{{- end}}
VirtualHost {{printf "%q" .Domain}}
{{- if .Service}}

Component {{printf "%q" .Service}} "pubsub"
	expose_publisher = true
	-- A node keeps one item per device; Prosody's default cap is 256.
	pubsub_max_items = 1000000
{{- if .Memory}}
	storage = { pubsub_nodes = "memory"; pubsub_data = "memory" }
{{- end}}
{{- end}}
