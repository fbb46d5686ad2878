// Package pubsub owns busylamp's XMPP client on top of one stream
// (internal/xmppstream): the buddies' roster and presence (roster.go, the
// one owner of a buddy's resources), the PubSub stanzas of Asterisk's
// res_xmpp distributed device state (PROTOCOL.md): node creation and
// affiliations, publishing device states and MWI (the coalescing
// publisher), subscribing, fetching, purging, deleting and listing nodes,
// and parsing notifications into typed events; busylamp's own-states
// exchange between agents (ownstates.go); finding the PubSub service by
// XEP-0030 when none is configured, and checking it at every connect
// (disco.go; each session keeps the service it uses); and reconnecting.
// It knows nothing of the tables or the AMI socket.
//
// A session (session.go) is the stream's Handler: the stream's one read
// loop hands it stanzas in arrival order, and notifications and presences
// become events in that order; requests to us are answered (roster
// pushes, own-states requests, disco#info; anything else gets
// service-unavailable).
//
// Events reach the owner's channel in stream order through a queue
// (capped at 65536 events, then TCP back-pressure), so the read loop does
// not wait on a consumer that may be waiting on an IQ answer itself.
// While a session is set up (roster, presence, subscribe, items fetch) its
// events are held back and follow the Connected event that carries the
// fetched items.
//
// Every 5 s the subscriptions are checked, since a node deleted and
// created again drops them silently on ejabberd, and so is the last own
// item published: gone, the node was purged by a service that did not
// notify it (both here do), which is reported as Purged, as a purge
// notification is, and
// Config.OwnStates are republished. Run reconnects with a jittered
// backoff that starts within 0.5 s and doubles up to 30 s, subscribes,
// resyncs and republishes Config.OwnStates. A republish waits behind live
// changes in the publisher (RepublishDevice, RepublishMailbox).
//
// The items fetch is bounded: a page that is too large for a stanza is
// read again by id (disco#items of the node), in smaller batches down to
// one item; what cannot be read is skipped and counted, and a failed
// fetch does not end the session.
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
