// Package pubsub owns busylamp's XMPP client session: the stream
// (TCP, STARTTLS, SASL, resource binding), keepalive and reconnect, the
// buddies' roster and presence, and the PubSub stanzas of Asterisk's
// res_xmpp distributed device state (PROTOCOL.md): node creation and
// affiliations, publishing device states and MWI, subscribing, fetching,
// purging, deleting and listing nodes, and parsing notifications into
// typed events. It also speaks busylamp's own-states exchange between
// agents (ownstates.go). It knows nothing of the tables or the AMI socket.
//
// # Why not gosrc.io/xmpp's Client
//
// The library's xmpp.Client hands every received stanza to its router on a
// new goroutine (`go c.router.route(...)`), so two notifications about one
// device can be handled in the wrong order; its StreamManager resumes a
// stream without restarting the receive loop; its keepalive is a
// whitespace ping that never finds a dead peer; and it speaks only SASL
// PLAIN. Its XMPPTransport gives no access to the net.Conn, so the dial,
// the stream header, the TLS handshake and every write run without a
// deadline, and its Close waits up to ConnectTimeout for a stream close
// that only a blocking send on an unbuffered channel delivers. So this
// package keeps a small transport of its own (conn.go: deadlines on every
// write, a context on connecting, a size limit on every incoming stanza)
// and its own negotiation (negotiate.go: STARTTLS verified against the
// system roots and Config.TLSCAFile, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN),
// and runs ONE read loop per connection (session.go) that handles stanzas
// strictly in arrival order: IQ answers go to the caller waiting for that
// id (and only from the entity asked), notifications and presences become
// events, requests to us are answered (pings; anything unhandled gets
// service-unavailable). From the library it uses the stanza package: the
// IQ and presence envelopes, data forms, roster items, bind, SASL auth.
// Incoming XML is read by xmlReader (xmlread.go), which frames each stanza
// into one buffer and parses it as encoding/xml would (a differential
// fuzz test holds it to that) at about 10 allocations a notification
// instead of 83: the XML decoder was 40% of a publishing agent's CPU.
//
// Events reach the owner's channel in stream order through a queue
// (capped at 65536 events, then TCP back-pressure), so the read loop does
// not wait on a consumer that may be waiting on an IQ answer itself. While a session is set up (roster,
// presence, subscribe, items fetch) its events are held back and follow
// the Connected event that carries the fetched items.
//
// Liveness: an XEP-0199 ping to the server every PingInterval; no answer
// within IQTimeout ends the session (found dead within 20 s by default);
// a read deadline backs it up. Every minute the subscriptions are checked,
// since a node deleted and created again drops them silently on ejabberd.
// Run reconnects with a jittered backoff of at most 30 s, subscribes,
// resyncs and republishes Config.OwnStates.
//
// # What the servers here do (tested: integration tests, both servers)
//
// Prosody 0.12: a node keeps 20 items unless told otherwise, so busylamp
// adds pubsub#max_items=max to PROTOCOL.md's node form (that is the
// component's pubsub_max_items, 256 by default: raise it for more devices,
// the own-states exchange covers the rest). Items carry a publisher (the
// bare JID) only with expose_publisher = true; pubsub#itemreply is
// accepted and ignored. No RSM on items: all come in one answer. Removing
// the affiliation of a JID still subscribed to a whitelist node fails with
// forbidden (yet is stored): RemoveBuddy unsubscribes it first.
//
// ejabberd 23.01: pubsub#itemreply=publisher puts the publisher's full JID
// on items (without it, none). Items page with RSM. Only the account that
// created an item may overwrite it (node_flat): a second server publishing
// the same device or mailbox gets forbidden, so busylamp, being an owner,
// retracts the item and publishes again, and subscribers see a retraction
// followed by the new value (Asterisk nodes on ejabberd simply fail
// there). A publish to a missing node creates it with ejabberd's defaults
// (open access, the publisher sole owner) instead of item-not-found; the
// next connect (or subscription check) makes the buddies owners again.
// Deleting a node does not notify subscribers. Killed with SIGKILL,
// ejabberd may lose recently published items (its pubsub_item table is a
// dets file); the republish after reconnecting restores own states.
//
// Both servers refuse Asterisk's publish-options (persist_items=0) for
// non-cachable states on a persistent node with precondition-not-met;
// busylamp then publishes without them (the payload still says
// cachable="0"). Both accept PROTOCOL.md's node form and owner
// affiliations as they are.
//
// XEP-0248 collection mode: neither server delivers. ejabberd 23.01 as
// packaged ships only the flat and pep node plugins and the tree node tree
// (no nodetree_dag; `nodetree: dag` stops mod_pubsub from starting). It
// accepts node_type=collection (disco shows a collection), a leaf create
// with pubsub#collection (the leaf stays at the top level: disco#items of
// the collection is empty) and the subscribe options, but a subscriber of
// the collection gets nothing when the leaf is published; a publish to a
// missing leaf creates it at the top level. Prosody ignores node_type and
// pubsub#collection. So in collection mode nothing arrives and the resync
// (disco#items of each collection, then each leaf's items) finds nothing;
// only the own-states exchange resyncs. TestCollectionModeFindings keeps
// checking this.
package pubsub
