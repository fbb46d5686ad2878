-- Written by xmpptest; rewritten when admins are added.
pidfile = {{q .Dir "prosody.pid"}}
data_path = {{q .Dir "data"}}
certificates = {{q .Dir "certs"}}
admin_socket = {{q .Dir "data/prosody.sock"}}
log = { debug = {{q .Dir "logs/prosody.log"}} }

-- Only admins may create PubSub nodes.
admins = { {{range .Admins}}{{printf "%q" .}}; {{end}}}

-- Client connections on loopback only: no s2s, components or HTTP.
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { {{.Port}} }
c2s_direct_tls_ports = { {{if .DirectTLSPort}}{{.DirectTLSPort}}{{end}} }
s2s_ports = { }
s2s_direct_tls_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }

modules_enabled = {
	"roster"; "saslauth"; "disco"; "ping"; "posix"; "admin_shell";{{if .TLS}} "tls";{{end}}
}
modules_disabled = { "s2s" }

authentication = "internal_hashed"
storage = "internal"
{{if .TLS}}
ssl = { certificate = {{printf "%q" .Cert}}; key = {{printf "%q" .Key}} }
c2s_require_encryption = true
{{else}}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
{{end}}
{{- if .Memory}}
-- The memory store refuses a node's 1001st item (internal-server-error).
storage_archive_item_limit = 1000000
{{- end}}
VirtualHost {{printf "%q" .Domain}}
{{- if not .NoPubSub}}

Component {{printf "%q" .Service}} "pubsub"
	expose_publisher = true
	-- A node keeps one item per device; Prosody's default cap is 256.
	pubsub_max_items = 1000000
{{- if .Memory}}
	storage = { pubsub_nodes = "memory"; pubsub_data = "memory" }
{{- end}}
{{- end}}
{{- if .ExtraPubSub}}

Component {{printf "%q" .ExtraPubSub}} "pubsub"
{{- end}}
