package xmpptest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// client is a minimal XMPP client for the smoke tests: STARTTLS, SASL
// PLAIN, bind, and IQ round trips read in order.
type client struct {
	conn net.Conn
	dec  *xml.Decoder
	jid  string
	ids  atomic.Int64
	// First stream features the server offered.
	features element
	// Stanzas read while waiting for an IQ answer, for event.
	pending []element
}

// element is any stanza, kept as raw XML for assertions.
type element struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Inner   []byte     `xml:",innerxml"`
}

func (e element) attr(name string) string {
	for _, a := range e.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (e element) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "<%s", e.XMLName.Local)
	for _, a := range e.Attrs {
		fmt.Fprintf(&b, " %s=%q", a.Name.Local, a.Value)
	}
	fmt.Fprintf(&b, ">%s</%s>", e.Inner, e.XMLName.Local)
	return b.String()
}

// answerWait bounds each exchange with the server: far above the
// milliseconds it takes, for a machine busy with other work.
const answerWait = 60 * time.Second

// login connects to s as bareJID with a resource; useTLS does STARTTLS and
// verifies the server certificate against s.CAFile.
func login(s *Server, bareJID, password string, useTLS bool) (*client, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, answerWait)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn}
	if err := c.negotiate(s, bareJID, password, useTLS); err != nil {
		conn.Close()
		return nil, fmt.Errorf("log in %s: %w", bareJID, err)
	}
	return c, nil
}

func (c *client) negotiate(s *Server, bareJID, password string, useTLS bool) error {
	if err := c.conn.SetDeadline(time.Now().Add(answerWait)); err != nil {
		return err
	}
	features, err := c.open(s.Domain)
	if err != nil {
		return err
	}
	c.features = features
	if useTLS {
		if !bytes.Contains(features.Inner, []byte("<starttls")) {
			return fmt.Errorf("no STARTTLS offered: %s", features)
		}
		if err := c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"); err != nil {
			return err
		}
		if e, err := c.next(); err != nil || e.XMLName.Local != "proceed" {
			return fmt.Errorf("starttls: %v %v", e, err)
		}
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("no CA in " + s.CAFile)
		}
		tc := tls.Client(c.conn, &tls.Config{ServerName: s.Domain, RootCAs: pool, MinVersion: tls.VersionTLS12})
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %w", err)
		}
		c.conn = tc
		if features, err = c.open(s.Domain); err != nil {
			return err
		}
	}
	if !bytes.Contains(features.Inner, []byte(">PLAIN<")) {
		return fmt.Errorf("no SASL PLAIN offered: %s", features)
	}
	user, _, _ := strings.Cut(bareJID, "@")
	creds := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	if err := c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + creds + "</auth>"); err != nil {
		return err
	}
	if e, err := c.next(); err != nil || e.XMLName.Local != "success" {
		return fmt.Errorf("SASL: %v %v", e, err)
	}
	if _, err := c.open(s.Domain); err != nil {
		return err
	}
	res, err := c.iq("set", "", "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>xmpptest</resource></bind>")
	if err != nil {
		return err
	}
	if res.attr("type") != "result" {
		return fmt.Errorf("bind: %s", res)
	}
	c.jid = bareJID + "/xmpptest"
	return c.conn.SetDeadline(time.Time{})
}

// open sends a stream header and returns the stream features.
func (c *client) open(domain string) (element, error) {
	c.dec = xml.NewDecoder(c.conn)
	if err := c.send("<?xml version='1.0'?><stream:stream to='" + domain + "' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"); err != nil {
		return element{}, err
	}
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return element{}, err
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			break
		}
	}
	e, err := c.next()
	if err == nil && e.XMLName.Local != "features" {
		err = fmt.Errorf("want stream features, got %s", e)
	}
	return e, err
}

func (c *client) send(s string) error {
	_, err := c.conn.Write([]byte(s))
	return err
}

// next reads the next top-level element; callers set a deadline.
func (c *client) next() (element, error) {
	for {
		tok, err := c.dec.Token()
		if err != nil {
			return element{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			var e element
			err := c.dec.DecodeElement(&e, &t)
			return e, err
		case xml.EndElement:
			return element{}, errors.New("stream closed by server")
		}
	}
}

// iq sends an IQ and returns its answer, skipping other stanzas.
func (c *client) iq(typ, to, payload string) (element, error) {
	id := fmt.Sprintf("q%d", c.ids.Add(1))
	toAttr := ""
	if to != "" {
		toAttr = " to='" + to + "'"
	}
	if err := c.conn.SetDeadline(time.Now().Add(answerWait)); err != nil {
		return element{}, err
	}
	defer c.conn.SetDeadline(time.Time{})
	if err := c.send("<iq type='" + typ + "' id='" + id + "'" + toAttr + ">" + payload + "</iq>"); err != nil {
		return element{}, err
	}
	for {
		e, err := c.next()
		if err != nil {
			return e, err
		}
		if e.XMLName.Local == "iq" && e.attr("id") == id {
			return e, nil
		}
		c.pending = append(c.pending, e)
	}
}

// event waits up to d for the next stanza that is not an IQ answer.
func (c *client) event(d time.Duration) (element, error) {
	if len(c.pending) > 0 {
		e := c.pending[0]
		c.pending = c.pending[1:]
		return e, nil
	}
	if err := c.conn.SetDeadline(time.Now().Add(d)); err != nil {
		return element{}, err
	}
	defer c.conn.SetDeadline(time.Time{})
	return c.next()
}

func (c *client) close() {
	_ = c.send("</stream:stream>")
	c.conn.Close()
}

const nsPubSub = "http://jabber.org/protocol/pubsub"

// createNode creates a flat node on the service and returns the answer.
func (c *client) createNode(service, node string) (element, error) {
	return c.iq("set", service, "<pubsub xmlns='"+nsPubSub+"'><create node='"+node+"'/></pubsub>")
}

func (c *client) publish(service, node, id, payload string) (element, error) {
	return c.iq("set", service, "<pubsub xmlns='"+nsPubSub+"'><publish node='"+node+"'><item id='"+id+"'>"+payload+"</item></publish></pubsub>")
}

func (c *client) items(service, node string) (element, error) {
	return c.iq("get", service, "<pubsub xmlns='"+nsPubSub+"'><items node='"+node+"'/></pubsub>")
}
