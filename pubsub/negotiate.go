package pubsub

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"os"
	"strconv"
	"strings"
	"time"

	"gosrc.io/xmpp/stanza"
)

// negotiateTimeout bounds the whole of connecting: TCP, TLS, SASL, bind.
const negotiateTimeout = 30 * time.Second

// AuthError is a SASL failure: wrong password, unknown account, or no
// mechanism in common. Reconnecting is still tried (the account may be
// created later), but the error is logged as what it is.
type AuthError struct {
	Mechanism string
	Condition string // SASL condition, e.g. "not-authorized"
	Text      string
}

func (e *AuthError) Error() string {
	s := "SASL " + e.Mechanism + " authentication failed: " + e.Condition
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// negotiated is what a finished stream negotiation yields.
type negotiated struct {
	c   *conn
	jid string // bound full JID
}

// negotiate connects and runs the stream negotiation of RFC 6120: stream
// header, STARTTLS, SASL, resource binding, and the RFC 3921 session when
// the server still requires it.
func (s *settings) negotiate(ctx context.Context) (*negotiated, error) {
	ctx, cancel := context.WithTimeout(ctx, negotiateTimeout)
	defer cancel()
	c, err := dial(ctx, s.addr, s.log, s.Trace)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", s.addr, err)
	}
	// The deadline and the context both bound the reads and writes below.
	dl, _ := ctx.Deadline()
	_ = c.raw.SetDeadline(dl)
	stop := context.AfterFunc(ctx, c.close)
	n, err := s.negotiateOn(c)
	if !stop() || err != nil {
		c.close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, err
	}
	_ = c.raw.SetDeadline(time.Time{})
	return n, nil
}

func (s *settings) negotiateOn(c *conn) (*negotiated, error) {
	feats, err := s.restart(c)
	if err != nil {
		return nil, err
	}
	starttls := feats.child(nsTLS, "starttls")
	switch {
	case s.UseTLS && starttls == nil:
		return nil, fmt.Errorf("usetls=yes but %s does not offer STARTTLS", s.addr)
	case s.UseTLS:
		if err := c.writeRaw([]byte("<starttls xmlns='" + nsTLS + "'/>")); err != nil {
			return nil, err
		}
		e, err := c.next()
		if err != nil {
			return nil, fmt.Errorf("starttls: %w", err)
		}
		if !e.is(nsTLS, "proceed") {
			return nil, fmt.Errorf("starttls: server answered <%s/>", e.XMLName.Local)
		}
		cfg, err := s.tlsConfig()
		if err != nil {
			return nil, err
		}
		if err := c.startTLS(cfg); err != nil {
			return nil, fmt.Errorf("TLS with %s (name %s): %w", s.addr, s.domain, err)
		}
		if feats, err = s.restart(c); err != nil {
			return nil, err
		}
	case starttls.child("", "required") != nil:
		return nil, fmt.Errorf("%s requires TLS: set usetls=yes", s.addr)
	}

	if err := s.authenticate(c, feats); err != nil {
		return nil, err
	}
	if feats, err = s.restart(c); err != nil {
		return nil, err
	}
	if feats.child(nsBind, "bind") == nil {
		return nil, errors.New("server offers no resource binding")
	}
	bind := &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.IQTypeSet, Id: "bind1"},
		Payload: &stanza.Bind{Resource: s.resource}}
	res, err := negotiationIQ(c, bind)
	if err != nil {
		return nil, fmt.Errorf("bind resource %s: %w", s.resource, err)
	}
	bound := res.child(nsBind, "bind").child("", "jid").text()
	if bound == "" {
		bound = s.JID
	}
	if sess := feats.child(nsSession, "session"); sess != nil && sess.child("", "optional") == nil {
		iq := &stanza.IQ{XMLName: xml.Name{Local: "iq"}, Attrs: stanza.Attrs{Type: stanza.IQTypeSet, Id: "sess1"},
			Payload: &stanza.StreamSession{}}
		if _, err := negotiationIQ(c, iq); err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
	}
	return &negotiated{c: c, jid: bound}, nil
}

// restart opens a (new) stream and reads its features.
func (s *settings) restart(c *conn) (*elem, error) {
	if err := c.openStream(s.domain); err != nil {
		return nil, err
	}
	e, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("read stream features: %w", err)
	}
	if e.is(nsStream, "error") {
		return nil, streamError(e)
	}
	if !e.is(nsStream, "features") {
		return nil, fmt.Errorf("expected stream features, got <%s/>", e.XMLName.Local)
	}
	return e, nil
}

func streamError(e *elem) error {
	cond, text := "undefined-condition", ""
	for i := range e.Nodes {
		n := &e.Nodes[i]
		if n.XMLName.Space != nsStreams {
			continue
		}
		if n.XMLName.Local == "text" {
			text = clip(strings.TrimSpace(n.Content), 512)
		} else {
			cond = n.XMLName.Local
		}
	}
	if text != "" {
		return fmt.Errorf("stream error %s: %s", cond, text)
	}
	return fmt.Errorf("stream error %s", cond)
}

// negotiationIQ sends an IQ and reads the answer before the read loop runs.
func negotiationIQ(c *conn, iq *stanza.IQ) (*elem, error) {
	if err := c.send(iq); err != nil {
		return nil, err
	}
	for {
		e, err := c.next()
		if err != nil {
			return nil, err
		}
		if e.is(nsStream, "error") {
			return nil, streamError(e)
		}
		if e.XMLName.Local != "iq" || e.attr("id") != iq.Id {
			continue
		}
		if e.attr("type") == "error" {
			return nil, parseStanzaError(e.child("", "error"))
		}
		return e, nil
	}
}

func (s *settings) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{ServerName: s.domain, MinVersion: tls.VersionTLS12}
	if s.TLSInsecure {
		s.log.Warn("TLS certificate of the XMPP server is NOT verified (TLSInsecure)", "server", s.addr)
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
func (s *settings) authenticate(c *conn, feats *elem) error {
	offered := map[string]bool{}
	for _, m := range feats.child(nsSASL, "mechanisms").children("", "mechanism") {
		if name := m.text(); s.onlyMech == "" || name == s.onlyMech {
			offered[name] = true
		}
	}
	user, _, _ := strings.Cut(s.bare, "@")
	// SASL exchanges carry the password (PLAIN) or what stands for it:
	// never into the trace log.
	if c.tr {
		c.tr = false
		defer func() { c.tr = true }()
		c.log.Debug("xmpp SASL exchange (not traced)")
	}
	switch {
	case offered["SCRAM-SHA-256"]:
		return s.scram(c, "SCRAM-SHA-256", sha256.New, user)
	case offered["SCRAM-SHA-1"]:
		return s.scram(c, "SCRAM-SHA-1", sha1.New, user)
	case offered["PLAIN"]:
		if c.tls == nil {
			s.log.Warn("SASL PLAIN without TLS: the password crosses the network in clear", "server", s.addr)
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
func saslStep(c *conn, mech string) (*elem, error) {
	e, err := c.next()
	if err != nil {
		return nil, fmt.Errorf("SASL %s: %w", mech, err)
	}
	switch {
	case e.is(nsSASL, "challenge"), e.is(nsSASL, "success"):
		return e, nil
	case e.is(nsSASL, "failure"):
		ae := &AuthError{Mechanism: mech, Condition: "failure"}
		for i := range e.Nodes {
			n := &e.Nodes[i]
			if n.XMLName.Local == "text" {
				ae.Text = clip(strings.TrimSpace(n.Content), 256)
			} else {
				ae.Condition = n.XMLName.Local
			}
		}
		return nil, ae
	case e.is(nsStream, "error"):
		return nil, streamError(e)
	}
	return nil, fmt.Errorf("SASL %s: unexpected <%s/>", mech, e.XMLName.Local)
}

// scram is RFC 5802 without channel binding.
func (s *settings) scram(c *conn, mech string, h func() hash.Hash, user string) error {
	nonce := make([]byte, 18)
	_, _ = rand.Read(nonce)
	cnonce := base64.RawStdEncoding.EncodeToString(nonce)
	name := strings.NewReplacer("=", "=3D", ",", "=2C").Replace(user)
	first := "n=" + name + ",r=" + cnonce
	b64 := base64.StdEncoding
	if err := c.send(stanza.SASLAuth{Mechanism: mech, Value: b64.EncodeToString([]byte("n,," + first))}); err != nil {
		return err
	}
	e, err := saslStep(c, mech)
	if err != nil {
		return err
	}
	if !e.is(nsSASL, "challenge") {
		return fmt.Errorf("SASL %s: success before the proof", mech)
	}
	sf, err := b64.DecodeString(strings.TrimSpace(e.Content))
	if err != nil {
		return fmt.Errorf("SASL %s: bad challenge: %w", mech, err)
	}
	serverFirst := string(sf)
	var snonce, salt string
	iter := 0
	for _, kv := range strings.Split(serverFirst, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "r":
			snonce = v
		case "s":
			salt = v
		case "i":
			iter, _ = strconv.Atoi(v)
		}
	}
	saltB, err := b64.DecodeString(salt)
	if err != nil || !strings.HasPrefix(snonce, cnonce) || len(snonce) == len(cnonce) || iter < 1 || iter > 1_000_000 {
		return fmt.Errorf("SASL %s: bad server-first-message", mech)
	}
	salted, err := pbkdf2.Key(h, s.Password, saltB, iter, h().Size())
	if err != nil {
		return fmt.Errorf("SASL %s: %w", mech, err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(h, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	hh := h()
	hh.Write(clientKey)
	storedKey := hh.Sum(nil)
	finalNoProof := "c=biws,r=" + snonce
	authMsg := first + "," + serverFirst + "," + finalNoProof
	sig := mac(storedKey, authMsg)
	proof := make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	final := finalNoProof + ",p=" + b64.EncodeToString(proof)
	resp := "<response xmlns='" + nsSASL + "'>" + b64.EncodeToString([]byte(final)) + "</response>"
	if err := c.writeRaw([]byte(resp)); err != nil {
		return err
	}
	e, err = saslStep(c, mech)
	if err != nil {
		return err
	}
	data := strings.TrimSpace(e.Content)
	if e.is(nsSASL, "challenge") {
		// Some servers send the verifier as a last challenge.
		if err := c.writeRaw([]byte("<response xmlns='" + nsSASL + "'/>")); err != nil {
			return err
		}
		if _, err := saslStep(c, mech); err != nil {
			return err
		}
	}
	sv, _ := b64.DecodeString(data)
	want := "v=" + b64.EncodeToString(mac(mac(salted, "Server Key"), authMsg))
	if !hmac.Equal(sv, []byte(want)) {
		return fmt.Errorf("SASL %s: the server's signature is wrong (not the server we think it is)", mech)
	}
	return nil
}
