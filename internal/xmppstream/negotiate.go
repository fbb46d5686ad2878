package xmppstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xdg-go/scram"
	"gosrc.io/xmpp/stanza"

	"github.com/busylamp/busylamp/internal/jid"
)

// negotiateTimeout bounds the whole of connecting: TCP, TLS, SASL, bind.
const negotiateTimeout = 30 * time.Second

// negotiate connects to t and runs the stream negotiation of RFC 6120:
// (direct TLS,) stream header, STARTTLS, SASL, resource binding, and the
// RFC 3921 session when the server still requires it.
func negotiate(ctx context.Context, cfg Config, j jid.JID, t Target) (*conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, negotiateTimeout)
	defer cancel()
	c, err := dial(ctx, t.Addr, cfg.ConnectTimeout, cfg.Resolver, cfg.Logger, cfg.Trace)
	if err != nil {
		return nil, "", unavailable{fmt.Errorf("connect %s: %w", t.Addr, err)}
	}
	// The deadline and the context both bound the reads and writes below.
	dl, _ := ctx.Deadline()
	_ = c.raw.SetDeadline(dl)
	stop := context.AfterFunc(ctx, c.close)
	n := &negotiation{Config: cfg, j: j, addr: t.Addr}
	var bound string
	if t.DirectTLS {
		err = n.directTLS(c)
	}
	if err == nil {
		bound, err = n.run(c)
	}
	if !stop() || err != nil {
		c.close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		if !n.authenticated && connectionLost(err) {
			err = unavailable{err}
		}
		return nil, "", err
	}
	_ = c.raw.SetDeadline(time.Time{})
	return c, bound, nil
}

// negotiation is one run of it: the config and the parsed account.
type negotiation struct {
	Config
	j             jid.JID
	addr          string // the target's host:port
	probe         bool   // a Probe: no warnings logged (they come at every connect)
	authenticated bool   // SASL succeeded: the server is serving this account
}

// directTLS is XEP-0368: the TLS handshake at once, SNI and the
// certificate's name the XMPP domain (never the SRV target: RFC 6125),
// ALPN xmpp-client.
func (s *negotiation) directTLS(c *conn) error {
	if !s.UseTLS {
		return fmt.Errorf("%s is a direct TLS target but usetls=no", s.addr)
	}
	cfg, err := s.tlsConfig()
	if err != nil {
		return err
	}
	cfg.NextProtos = []string{"xmpp-client"}
	if err := c.startTLS(cfg); err != nil {
		return fmt.Errorf("direct TLS with %s (name %s): %w", s.addr, s.j.Domain, err)
	}
	return nil
}

// ErrUnavailable is in the chain of a Dial error when the server did not
// serve the connection: it refused or could not be reached, or it
// accepted and then closed, reset or stalled the stream before the
// account was authenticated (a server still starting, or stopping). A
// retry may be made soon: it costs the server next to nothing. Any other
// failure (authentication, TLS verification, a stream error, a refusal
// after authentication) is the server answering, and wants a longer
// wait.
var ErrUnavailable = errors.New("server not serving")

type unavailable struct{ error }

func (e unavailable) Unwrap() error        { return e.error }
func (e unavailable) Is(target error) bool { return target == ErrUnavailable }

// connectionLost reports whether err is the connection going away (end
// of stream, reset, refused, a timeout) rather than the server's answer.
func connectionLost(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout())
}

func (s *negotiation) run(c *conn) (string, error) {
	feats, err := s.restart(c)
	if err != nil {
		return "", err
	}
	starttls := feats.Child(nsTLS, "starttls")
	switch {
	case c.tls != nil: // direct TLS: STARTTLS must not be used (XEP-0368)
	case s.UseTLS && starttls == nil:
		return "", fmt.Errorf("usetls=yes but %s does not offer STARTTLS", s.addr)
	case s.UseTLS:
		if err := c.writeRaw([]byte("<starttls xmlns='" + nsTLS + "'/>")); err != nil {
			return "", err
		}
		e, err := c.next()
		if err != nil {
			return "", fmt.Errorf("starttls: %w", err)
		}
		if !e.Is(nsTLS, "proceed") {
			return "", fmt.Errorf("starttls: server answered <%s/>", e.XMLName.Local)
		}
		cfg, err := s.tlsConfig()
		if err != nil {
			return "", err
		}
		if err := c.startTLS(cfg); err != nil {
			return "", fmt.Errorf("TLS with %s (name %s): %w", s.addr, s.j.Domain, err)
		}
		if feats, err = s.restart(c); err != nil {
			return "", err
		}
	case starttls.Child("", "required") != nil:
		return "", fmt.Errorf("%s requires TLS: set usetls=yes", s.addr)
	}

	if err := s.authenticate(c, feats); err != nil {
		return "", err
	}
	s.authenticated = true
	if feats, err = s.restart(c); err != nil {
		return "", err
	}
	if feats.Child(nsBind, "bind") == nil {
		return "", errors.New("server offers no resource binding")
	}
	bind := &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.IQTypeSet, Id: "bind1"},
		Payload: &stanza.Bind{Resource: s.j.Resource}}
	res, err := negotiationIQ(c, bind)
	if err != nil {
		return "", fmt.Errorf("bind resource %s: %w", s.j.Resource, err)
	}
	bound := res.Child(nsBind, "bind").Child("", "jid").Text()
	if bound == "" {
		bound = s.j.String()
	}
	if sess := feats.Child(nsSession, "session"); sess != nil && sess.Child("", "optional") == nil {
		iq := &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.IQTypeSet, Id: "sess1"},
			Payload: &stanza.StreamSession{}}
		if _, err := negotiationIQ(c, iq); err != nil {
			return "", fmt.Errorf("session: %w", err)
		}
	}
	return bound, nil
}

// restart opens a (new) stream and reads its features.
func (s *negotiation) restart(c *conn) (*Element, error) {
	if err := c.openStream(s.j.Domain); err != nil {
		return nil, err
	}
	e, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("read stream features: %w", err)
	}
	if e.Is(nsStream, "error") {
		return nil, streamError(e)
	}
	if !e.Is(nsStream, "features") {
		return nil, fmt.Errorf("expected stream features, got <%s/>", e.XMLName.Local)
	}
	return e, nil
}

// negotiationIQ sends an IQ and reads the answer before the read loop runs.
func negotiationIQ(c *conn, iq *stanza.IQ) (*Element, error) {
	if err := c.send(iq); err != nil {
		return nil, err
	}
	for {
		e, err := c.next()
		if err != nil {
			return nil, err
		}
		if e.Is(nsStream, "error") {
			return nil, streamError(e)
		}
		if e.XMLName.Local != "iq" || e.Attr("id") != iq.Id {
			continue
		}
		if e.Attr("type") == "error" {
			return nil, parseStanzaError(e.Child("", "error"))
		}
		return e, nil
	}
}

func (s *negotiation) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: s.j.Domain, MinVersion: tls.VersionTLS12}
	if s.TLSInsecure {
		if !s.probe {
			s.Logger.Warn("TLS certificate of the XMPP server is NOT verified (TLSInsecure)", "server", s.addr)
		}
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	if s.TLSCAFile != "" {
		pem, err := os.ReadFile(s.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", s.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// authenticate runs SASL with the best mechanism both sides have:
// SCRAM-SHA-256, SCRAM-SHA-1, then PLAIN.
func (s *negotiation) authenticate(c *conn, feats *Element) error {
	offered := map[string]bool{}
	for _, m := range feats.Child(nsSASL, "mechanisms").Children("", "mechanism") {
		if name := m.Text(); s.Mechanism == "" || name == s.Mechanism {
			offered[name] = true
		}
	}
	user := s.j.Local
	// SASL exchanges carry the password (PLAIN) or what stands for it:
	// never into the trace log.
	if c.tracing() {
		c.log.Debug("xmpp SASL exchange (not traced)")
	}
	c.sasl = true
	defer func() { c.sasl = false }()
	switch {
	case offered["SCRAM-SHA-256"]:
		return s.scram(c, "SCRAM-SHA-256", scram.SHA256, user)
	case offered["SCRAM-SHA-1"]:
		return s.scram(c, "SCRAM-SHA-1", scram.SHA1, user)
	case offered["PLAIN"]:
		if c.tls == nil {
			s.Logger.Warn("SASL PLAIN without TLS: the password crosses the network in clear", "server", s.addr)
		}
		msg := "\x00" + user + "\x00" + s.Password
		if err := c.send(stanza.SASLAuth{Mechanism: "PLAIN", Value: base64.StdEncoding.EncodeToString([]byte(msg))}); err != nil {
			return err
		}
		_, err := saslStep(c, "PLAIN")
		return err
	}
	var names []string
	for m := range offered {
		names = append(names, m)
	}
	return &AuthError{Mechanism: "-", Condition: "no common mechanism", Text: "server offers " + strings.Join(names, " ")}
}

// saslStep reads a challenge (returned) or the final success (nil, nil and
// the success data in last).
func saslStep(c *conn, mech string) (*Element, error) {
	e, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("SASL %s: %w", mech, err)
	}
	switch {
	case e.Is(nsSASL, "challenge"), e.Is(nsSASL, "success"):
		return e, nil
	case e.Is(nsSASL, "failure"):
		ae := &AuthError{Mechanism: mech, Condition: "failure"}
		for i := range e.Nodes {
			n := &e.Nodes[i]
			if n.XMLName.Local == "text" {
				ae.Text = Clip(strings.TrimSpace(n.Content), 256)
			} else {
				ae.Condition = n.XMLName.Local
			}
		}
		return nil, ae
	case e.Is(nsStream, "error"):
		return nil, streamError(e)
	}
	return nil, fmt.Errorf("SASL %s: unexpected <%s/>", mech, e.XMLName.Local)
}

// maxIterations bounds the PBKDF2 rounds a server may ask for: more would
// let it make us burn CPU at every connect.
const maxIterations = 1_000_000

// scram is RFC 5802 (SCRAM-SHA-1) and RFC 7677 (SCRAM-SHA-256) without
// channel binding, the client side by github.com/xdg-go/scram; this
// carries its messages in RFC 6120's SASL elements.
func (s *negotiation) scram(c *conn, mech string, h scram.HashGeneratorFcn, user string) error {
	client, err := h.NewClient(user, s.Password, "")
	if err != nil {
		return fmt.Errorf("SASL %s: %w", mech, err)
	}
	// The library refuses fewer than 4096 rounds (RFC 7677's SHOULD);
	// busylamp has always taken any count from 1 to maxIterations, and a
	// server configured lower must keep working.
	return scramExchange(c, mech, client.WithMinIterations(1).NewConversation())
}

func scramExchange(c *conn, mech string, conv *scram.ClientConversation) error {
	b64 := base64.StdEncoding
	first, err := conv.Step("")
	if err != nil {
		return fmt.Errorf("SASL %s: %w", mech, err)
	}
	if err := c.send(stanza.SASLAuth{Mechanism: mech, Value: b64.EncodeToString([]byte(first))}); err != nil {
		return err
	}
	e, err := saslStep(c, mech)
	if err != nil {
		return err
	}
	if !e.Is(nsSASL, "challenge") {
		return fmt.Errorf("SASL %s: success before the proof", mech)
	}
	sf, err := b64.DecodeString(strings.TrimSpace(e.Content))
	if err != nil {
		return fmt.Errorf("SASL %s: bad challenge: %w", mech, err)
	}
	if iter := scramIterations(string(sf)); iter < 1 || iter > maxIterations {
		return fmt.Errorf("SASL %s: bad server-first-message (iteration count)", mech)
	}
	final, err := conv.Step(string(sf))
	if err != nil {
		return fmt.Errorf("SASL %s: bad server-first-message: %w", mech, err)
	}
	resp := "<response xmlns='" + nsSASL + "'>" + b64.EncodeToString([]byte(final)) + "</response>"
	if err := c.writeRaw([]byte(resp)); err != nil {
		return err
	}
	e, err = saslStep(c, mech)
	if err != nil {
		return err
	}
	data := strings.TrimSpace(e.Content)
	if e.Is(nsSASL, "challenge") {
		// Some servers send the verifier as a last challenge.
		if err := c.writeRaw([]byte("<response xmlns='" + nsSASL + "'/>")); err != nil {
			return err
		}
		if _, err := saslStep(c, mech); err != nil {
			return err
		}
	}
	sv, _ := b64.DecodeString(data)
	if _, err := conv.Step(string(sv)); err != nil || !conv.Valid() {
		return fmt.Errorf("SASL %s: the server's signature is wrong (not the server we think it is)", mech)
	}
	return nil
}

// scramIterations reads i= of a server-first-message; 0 when missing.
func scramIterations(serverFirst string) int {
	for _, kv := range strings.Split(serverFirst, ",") {
		if v, ok := strings.CutPrefix(kv, "i="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}
