// Package xmppstream owns one XMPP client-to-server stream (RFC 6120):
// where to connect (Resolve: a list of servers, or the domain's
// _xmpp-client and _xmpps-client SRV records, RFC 6120 §3.2.1 and
// XEP-0368, ordered as RFC 2782 says), the TCP connection, STARTTLS or
// direct TLS (verified against the system roots and Config.TLSCAFile,
// always for the XMPP domain, never an SRV target's name), SASL (SCRAM-SHA-256, SCRAM-SHA-1 by
// github.com/xdg-go/scram, PLAIN), resource binding, the bounded stanza
// reader, the single ordered read loop, IQ correlation, the XEP-0199
// keepalive and stream errors. It hands every stanza to a Handler and
// knows nothing of PubSub, rosters or what the stanzas mean; pubsub builds
// busylamp's client on it.
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
// and its own negotiation (negotiate.go), and runs ONE read loop per
// stream (stream.go) that handles stanzas strictly in arrival order: IQ
// answers go to the caller waiting for that id (and only from the entity
// asked), pings are answered, everything else goes to the Handler. From
// the library it uses the stanza package: the IQ and presence envelopes,
// data forms, roster items, bind, SASL auth.
//
// Incoming XML is read by xmlReader (xmlread.go), which frames each stanza
// into one buffer and parses it as encoding/xml would (a differential
// fuzz test holds it to that) at about 10 allocations a notification
// instead of 83: the XML decoder was 40% of a publishing agent's CPU.
// A stanza larger than 4 MiB or nested more than 32 deep (anyone can send
// one to our full JID; a PubSub answer can grow past the bound) is read
// to its end without being kept, counted (Stream.Skipped) and logged at
// most every 10 s, and the stream goes on; an IQ answer skipped so fails
// its call with ErrAnswerSkipped at once.
//
// Liveness: an XEP-0199 ping to the server every PingInterval; no answer
// within IQTimeout ends the stream (found dead within 20 s by default); a
// read deadline backs it up. Ending a stream closes its socket; Wait
// returns once its read loop and keepalive have ended.
package xmppstream
