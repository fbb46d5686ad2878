-- Prosody for a busylamp cluster (used by `make demo`; @DIR@ is replaced
-- by the demo's temporary directory). What matters for busylamp:
--  * the PubSub component, with expose_publisher = true so that every
--    notification says which account published it (busylamp ties each
--    server's EID to its account with it);
--  * the node accounts listed in admins, so they may create the
--    device_state and message_waiting nodes;
--  * pubsub_max_items raised: a node keeps one item per device (per
--    mailbox), and Prosody's default cap is 256 items per node;
--  * PubSub storage in memory: agents republish their own states when
--    they reconnect, so nothing is lost on a server restart, and Prosody
--    carries about ten times more publishes per second than with files;
--    storage_archive_item_limit raised with it: the memory store refuses
--    a node's 1001st item (internal-server-error) by default.
daemonize = false
run_as_root = true
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { info = "@DIR@/prosody.log" }
network_backend = "select"
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { 15222 }
s2s_ports = {}
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "posix" }
modules_disabled = { "s2s" }
authentication = "internal_hashed"
-- Loopback only; on a network use TLS (usetls=yes in the client sections).
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
admins = { "node1@demo.busylamp.test", "node2@demo.busylamp.test", "node3@demo.busylamp.test" }
storage = { pubsub_nodes = "memory", pubsub_data = "memory" }
storage_archive_item_limit = 1000000

VirtualHost "demo.busylamp.test"

Component "pubsub.demo.busylamp.test" "pubsub"
    expose_publisher = true
    pubsub_max_items = 1000000
