package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// The baseline: plain XMPP clients publishing Asterisk-shaped
// items (PROTOCOL.md) to one node and receiving its notifications, with
// nothing of busylamp in between. It is what the server carries here.

// bareEID is the EID the baseline's payloads carry.
const bareEID = "00:00:00:00:be:0c"

// bareClient is one plain client of its own, about as lean as an XMPP
// client can be: SASL PLAIN without TLS, bind, initial presence, raw
// stanzas out, one ordered read loop that decodes each stanza in. (The
// gosrc.io/xmpp Client would need two more modules in go.mod, and routes
// every stanza in a goroutine of its own.)
type bareClient struct {
	conn net.Conn
	bare string
	seq  atomic.Uint64
	wmu  sync.Mutex

	mu      sync.Mutex
	pending map[string]chan *inStanza

	onItem atomic.Pointer[func(id, state string)]
	closed atomic.Bool
	done   chan struct{}
}

// inStanza is what the read loop decodes of every stanza.
type inStanza struct {
	XMLName xml.Name
	Type    string `xml:"type,attr"`
	ID      string `xml:"id,attr"`
	Event   *struct {
		Items struct {
			Item []struct {
				ID    string `xml:"id,attr"`
				State string `xml:"http://asterisk.org state"`
			} `xml:"item"`
		} `xml:"items"`
	} `xml:"http://jabber.org/protocol/pubsub#event event"`
	Error *struct {
		Inner string `xml:",innerxml"`
	} `xml:"error"`
	// Only in answers to the fair baseline's questions (nodeFacts).
	Owner *struct {
		Fields []formField `xml:"configure>x>field"`
		Subs   []struct {
			JID string `xml:"jid,attr"`
		} `xml:"subscriptions>subscription"`
	} `xml:"http://jabber.org/protocol/pubsub#owner pubsub"`
	Disco *struct {
		Items []struct{} `xml:"item"`
	} `xml:"http://jabber.org/protocol/disco#items query"`
}

// formField is one field of a node's configuration form.
type formField struct {
	Var    string   `xml:"var,attr"`
	Type   string   `xml:"type,attr"`
	Values []string `xml:"value"`
}

func dialBare(ctx context.Context, srv *xmpptest.Server, name string) (*bareClient, error) {
	return dialBareAs(ctx, srv, name, "bench", true)
}

// dialBareAs is dialBare with a resource of its own (the fair baseline
// reads busylamp's node as one of the agents' accounts, beside the
// agent). Without available, it sends no presence: the server then
// routes none of the account's messages to it. An available second
// resource of agent1 got a copy of every notification to agent1 for the
// whole run, work for the server on busylamp's side only (it cost
// busylamp's throughput about 10%).
func dialBareAs(ctx context.Context, srv *xmpptest.Server, name, resource string, available bool) (*bareClient, error) {
	jid, pw := srv.Admin(name)
	user, _, _ := strings.Cut(jid, "@")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", srv.Addr)
	if err != nil {
		return nil, fmt.Errorf("baseline client %s: %w", name, err)
	}
	b := &bareClient{conn: conn, bare: jid, pending: map[string]chan *inStanza{}, done: make(chan struct{})}
	fail := func(err error) (*bareClient, error) {
		conn.Close()
		return nil, fmt.Errorf("baseline client %s: %w", name, err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReaderSize(conn, 64<<10)
	var dec *xml.Decoder
	open := func() error {
		if err := b.write(`<?xml version='1.0'?><stream:stream to="` + srv.Domain +
			`" xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams" version="1.0">`); err != nil {
			return err
		}
		dec = xml.NewDecoder(br)
		for { // the server's stream header, then its features
			t, err := dec.Token()
			if err != nil {
				return err
			}
			if se, ok := t.(xml.StartElement); ok && se.Name.Local == "features" {
				return dec.Skip()
			}
		}
	}
	next := func() (xml.StartElement, error) {
		for {
			t, err := dec.Token()
			if err != nil {
				return xml.StartElement{}, err
			}
			if se, ok := t.(xml.StartElement); ok {
				return se, nil
			}
		}
	}
	if err := open(); err != nil {
		return fail(fmt.Errorf("stream: %w", err))
	}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pw))
	if err := b.write(`<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">` + auth + `</auth>`); err != nil {
		return fail(err)
	}
	if se, err := next(); err != nil || se.Name.Local != "success" {
		return fail(fmt.Errorf("SASL PLAIN: %v %v", se.Name.Local, err))
	}
	if err := dec.Skip(); err != nil {
		return fail(err)
	}
	if err := open(); err != nil {
		return fail(fmt.Errorf("stream after SASL: %w", err))
	}
	if err := b.write(`<iq type="set" id="bind"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>` + resource + `</resource></bind></iq>`); err != nil {
		return fail(err)
	}
	var res inStanza
	if se, err := next(); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	} else if err := dec.DecodeElement(&res, &se); err != nil || res.Type != "result" {
		return fail(fmt.Errorf("bind: %s %v", res.Type, err))
	}
	conn.SetDeadline(time.Time{})
	go b.readLoop(dec, name)
	if !available {
		return b, nil
	}
	if err := b.write(`<presence/>`); err != nil {
		return fail(err)
	}
	return b, nil
}

func (b *bareClient) write(s string) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	_, err := io.WriteString(b.conn, s)
	return err
}

func (b *bareClient) readLoop(dec *xml.Decoder, name string) {
	defer close(b.done)
	for {
		t, err := dec.Token()
		if err != nil {
			if !b.closed.Load() {
				logf("baseline client %s: %v", name, err)
			}
			return
		}
		se, ok := t.(xml.StartElement)
		if !ok {
			continue
		}
		var st inStanza
		if err := dec.DecodeElement(&st, &se); err != nil {
			logf("baseline client %s: %v", name, err)
			return
		}
		switch st.XMLName.Local {
		case "iq":
			if st.Type != "result" && st.Type != "error" {
				continue
			}
			b.mu.Lock()
			ch := b.pending[st.ID]
			delete(b.pending, st.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- &st
			}
		case "message":
			if st.Event == nil {
				continue
			}
			if f := b.onItem.Load(); f != nil {
				for _, it := range st.Event.Items.Item {
					(*f)(it.ID, it.State)
				}
			}
		}
	}
}

func (b *bareClient) close() {
	b.closed.Store(true)
	_ = b.write("</stream:stream>")
	b.conn.Close()
	<-b.done
}

// iq sends a raw IQ (inner is its payload) and waits for the answer.
func (b *bareClient) iq(ctx context.Context, typ, to, inner string) error {
	_, err := b.query(ctx, typ, to, inner)
	return err
}

// query is iq that returns the answer.
func (b *bareClient) query(ctx context.Context, typ, to, inner string) (*inStanza, error) {
	id := "b" + strconv.FormatUint(b.seq.Add(1), 10)
	ch := make(chan *inStanza, 1)
	b.mu.Lock()
	b.pending[id] = ch
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}()
	if err := b.write(fmt.Sprintf(`<iq type="%s" to="%s" id="%s">%s</iq>`, typ, to, id, inner)); err != nil {
		return nil, err
	}
	select {
	case st := <-ch:
		if st.Type == "error" {
			e := ""
			if st.Error != nil {
				e = st.Error.Inner
			}
			return nil, fmt.Errorf("iq %s: error %s", id, e)
		}
		return st, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("iq %s: %w", id, ctx.Err())
	}
}

// publish writes one Asterisk-shaped device state publish and does not
// wait for the answer (Asterisk does not either).
func (b *bareClient) publish(service, node, device, state string) error {
	id := "p" + strconv.FormatUint(b.seq.Add(1), 10)
	return b.write(`<iq type="set" to="` + service + `" id="` + id + `">` +
		`<pubsub xmlns="http://jabber.org/protocol/pubsub"><publish node="` + node + `">` +
		`<item id="` + xmlText(device) + `"><state xmlns="http://asterisk.org" eid="` + bareEID + `" cachable="1">` +
		state + `</state></item></publish></pubsub></iq>`)
}

func xmlText(s string) string {
	var sb strings.Builder
	_ = xml.EscapeText(&sb, []byte(s))
	return sb.String()
}

// bareSystem is n plain clients, all subscribed to the baseline node as
// every PBX of a cluster is; client 0 publishes, the others receive.
type bareSystem struct {
	srv     *xmpptest.Server
	node    string
	clients []*bareClient
}

// startBare connects n clients named account1..n and makes node for them,
// configured with like (busylamp's node's configuration) when given.
func startBare(ctx context.Context, srv *xmpptest.Server, node, account string, n int, subscribePublisher bool, like []formField) (*bareSystem, error) {
	s := &bareSystem{srv: srv, node: node}
	bareNode := node
	for i := range n {
		c, err := dialBare(ctx, srv, fmt.Sprintf("%s%d", account, i+1))
		if err != nil {
			s.close()
			return nil, err
		}
		s.clients = append(s.clients, c)
	}
	// The node as busylamp creates it (PROTOCOL.md's form, max_items and
	// itemreply), every client an owner.
	form := `<field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#node_config</value></field>` +
		`<field var="pubsub#deliver_payloads"><value>1</value></field>` +
		`<field var="pubsub#persist_items"><value>1</value></field>` +
		`<field var="pubsub#access_model"><value>whitelist</value></field>` +
		`<field var="pubsub#max_items"><value>max</value></field>` +
		`<field var="pubsub#itemreply"><value>publisher</value></field>`
	pub := s.clients[0]
	create := func(form string) error {
		return pub.iq(ctx, "set", srv.Service, `<pubsub xmlns="http://jabber.org/protocol/pubsub"><create node="`+bareNode+`"/>`+
			`<configure><x xmlns="jabber:x:data" type="submit">`+form+`</x></configure></pubsub>`)
	}
	var err error
	if like != nil {
		if err = create(submitForm(like)); err != nil {
			logf("baseline node %s: the server refused busylamp's node configuration as a create form (%v); "+
				"creating it with busylamp's create form instead (the differences are reported)", node, err)
		}
	}
	if like == nil || err != nil {
		err = create(form)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("create baseline node: %w", err)
	}
	var affs strings.Builder
	for _, c := range s.clients[1:] {
		fmt.Fprintf(&affs, `<affiliation jid="%s" affiliation="owner"/>`, c.bare)
	}
	if len(s.clients) > 1 {
		err = pub.iq(ctx, "set", srv.Service, `<pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><affiliations node="`+
			bareNode+`">`+affs.String()+`</affiliations></pubsub>`)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("baseline node owners: %w", err)
		}
	}
	for i, c := range s.clients {
		if i == 0 && !subscribePublisher {
			continue
		}
		if err := c.iq(ctx, "set", srv.Service, `<pubsub xmlns="http://jabber.org/protocol/pubsub"><subscribe node="`+
			bareNode+`" jid="`+c.bare+`"/></pubsub>`); err != nil {
			s.close()
			return nil, fmt.Errorf("baseline subscribe: %w", err)
		}
	}
	return s, nil
}

func (s *bareSystem) close() {
	for _, c := range s.clients {
		c.close()
	}
}

func (s *bareSystem) receivers() int { return len(s.clients) - 1 }

func (s *bareSystem) onChange(f func(r int, device, state string)) {
	for i, c := range s.clients[1:] {
		g := func(id, state string) { f(i, id, state) }
		c.onItem.Store(&g)
	}
}

func (s *bareSystem) send(device, state string) error {
	return s.clients[0].publish(s.srv.Service, s.node, device, state)
}

func (s *bareSystem) flush() error { return nil }

// sentAll: every publish is written by the time publish returns.
func (s *bareSystem) sentAll(context.Context) error { return nil }

// copiedFields are the node options the fair baseline copies from
// busylamp's node: what the server does per publish depends on them.
var copiedFields = map[string]bool{
	"pubsub#deliver_payloads": true, "pubsub#deliver_notifications": true, "pubsub#persist_items": true,
	"pubsub#access_model": true, "pubsub#publish_model": true, "pubsub#max_items": true, "pubsub#itemreply": true,
	"pubsub#notification_type": true, "pubsub#notify_retract": true, "pubsub#notify_delete": true,
	"pubsub#notify_config": true, "pubsub#notify_sub": true, "pubsub#presence_based_delivery": true,
	"pubsub#send_last_published_item": true, "pubsub#purge_offline": true, "pubsub#max_payload_size": true,
	"pubsub#node_type": true,
}

// submitForm is a node_config submit form of the copied fields of like.
func submitForm(like []formField) string {
	var b strings.Builder
	b.WriteString(`<field var="FORM_TYPE" type="hidden"><value>http://jabber.org/protocol/pubsub#node_config</value></field>`)
	for _, f := range like {
		if !copiedFields[f.Var] || len(f.Values) == 0 {
			continue
		}
		fmt.Fprintf(&b, `<field var="%s">`, xmlText(f.Var))
		for _, v := range f.Values {
			fmt.Fprintf(&b, `<value>%s</value>`, xmlText(v))
		}
		b.WriteString(`</field>`)
	}
	return b.String()
}

// nodeFacts is what the fair baseline compares between two nodes: their
// configuration, how many items they hold and how many subscribers they
// have. c must be an owner of node.
type nodeFacts struct {
	fields []formField
	items  int
	subs   int
}

func readNodeFacts(ctx context.Context, c *bareClient, service, node string) (nodeFacts, error) {
	var f nodeFacts
	st, err := c.query(ctx, "get", service, `<pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><configure node="`+xmlText(node)+`"/></pubsub>`)
	if err != nil {
		return f, fmt.Errorf("node %s configuration: %w", node, err)
	}
	if st.Owner == nil {
		return f, fmt.Errorf("node %s configuration: no form in the answer", node)
	}
	f.fields = st.Owner.Fields
	if st, err = c.query(ctx, "get", service, `<pubsub xmlns="http://jabber.org/protocol/pubsub#owner"><subscriptions node="`+xmlText(node)+`"/></pubsub>`); err != nil {
		return f, fmt.Errorf("node %s subscriptions: %w", node, err)
	}
	if st.Owner != nil {
		f.subs = len(st.Owner.Subs)
	}
	if st, err = c.query(ctx, "get", service, `<query xmlns="http://jabber.org/protocol/disco#items" node="`+xmlText(node)+`"/>`); err != nil {
		return f, fmt.Errorf("node %s items: %w", node, err)
	}
	if st.Disco != nil {
		f.items = len(st.Disco.Items)
	}
	return f, nil
}

// value is the first value of field v, or "".
func (f nodeFacts) value(v string) string {
	for _, x := range f.fields {
		if x.Var == v && len(x.Values) > 0 {
			return x.Values[0]
		}
	}
	return ""
}

// differences lists the copied options whose values differ.
func (f nodeFacts) differences(g nodeFacts) []string {
	var out []string
	for _, x := range f.fields {
		if copiedFields[x.Var] && strings.Join(x.Values, ",") != strings.Join(g.valueList(x.Var), ",") {
			out = append(out, fmt.Sprintf("%s %v/%v", x.Var, x.Values, g.valueList(x.Var)))
		}
	}
	return out
}

func (f nodeFacts) valueList(v string) []string {
	for _, x := range f.fields {
		if x.Var == v {
			return x.Values
		}
	}
	return nil
}
