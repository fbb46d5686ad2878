package xmppstream

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gosrc.io/xmpp/stanza"
)

const testStreamHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' ` +
	`xmlns:stream='http://etherx.jabber.org/streams' id='x' version='1.0'>`

// viaDecoder reads the first stanza of stream with encoding/xml, as the
// read loop did before xmlReader.
func viaDecoder(stream string) (*Element, error) {
	d := xml.NewDecoder(bufio.NewReader(strings.NewReader(stream)))
	if _, err := stanza.InitStream(d); err != nil {
		return nil, err
	}
	t, err := stanza.NextXmppToken(d)
	if err != nil {
		return nil, err
	}
	se, ok := t.(xml.StartElement)
	if !ok {
		return nil, io.EOF
	}
	return readElem(d, se)
}

func viaReader(stream string) (*Element, error) {
	x := newXMLReader(bufio.NewReaderSize(strings.NewReader(stream), 16))
	if err := x.header(); err != nil {
		return nil, err
	}
	return x.next()
}

// sameElem compares two trees; "" when equal.
func sameElem(path string, a, b *Element) string {
	if a.XMLName != b.XMLName {
		return fmt.Sprintf("%s: name %v vs %v", path, a.XMLName, b.XMLName)
	}
	if len(a.Attrs) != len(b.Attrs) {
		return fmt.Sprintf("%s: attrs %v vs %v", path, a.Attrs, b.Attrs)
	}
	for i := range a.Attrs {
		if a.Attrs[i] != b.Attrs[i] {
			return fmt.Sprintf("%s: attr %d %v vs %v", path, i, a.Attrs[i], b.Attrs[i])
		}
	}
	if a.Content != b.Content {
		return fmt.Sprintf("%s: content %q vs %q", path, a.Content, b.Content)
	}
	if len(a.Nodes) != len(b.Nodes) {
		return fmt.Sprintf("%s: %d children vs %d", path, len(a.Nodes), len(b.Nodes))
	}
	for i := range a.Nodes {
		if d := sameElem(fmt.Sprintf("%s/%s[%d]", path, a.Nodes[i].XMLName.Local, i), &a.Nodes[i], &b.Nodes[i]); d != "" {
			return d
		}
	}
	return ""
}

// stricter reports whether xmlReader may refuse what encoding/xml takes:
// what RFC 6120 restricts, and names that are not ASCII.
func stricter(err error) bool {
	return errors.Is(err, errRestrictedXML) || errors.Is(err, errTextBetween) || errors.Is(err, errTooManyNS) ||
		strings.Contains(err.Error(), "not ASCII")
}

func checkSame(t *testing.T, body string) {
	t.Helper()
	stream := testStreamHeader + body
	want, werr := viaDecoder(stream)
	got, gerr := viaReader(stream)
	switch {
	case werr == nil && gerr == nil:
		if d := sameElem(want.XMLName.Local, want, got); d != "" {
			t.Fatalf("%q: trees differ: %s", body, d)
		}
	case werr != nil && gerr == nil:
		t.Fatalf("%q: encoding/xml refuses it (%v), xmlReader took it: %+v", body, werr, got)
	case werr == nil && gerr != nil && !stricter(gerr):
		t.Fatalf("%q: encoding/xml takes it, xmlReader refuses it: %v", body, gerr)
	}
}

var xmlSeeds = []string{
	eventMsg(`<items node="device_state">` + stateItem("PJSIP/1000", otherEID, ` cachable="1"`, "INUSE") + `</items>`),
	eventMsg(`<items node="mwi">` + mboxItem("100@default", otherEID, "2", "1") + `</items>`),
	`<iq type='result' id='1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='a'/></pubsub></iq>`,
	`<a x="1" y='2'>t&lt;&#65;&#x42;&amp;&quot;&apos;&gt;</a>`,
	`<a x='&#13;&#10;a&#9;'>l1` + "\r\n" + `l2` + "\r" + `l3</a>`,
	`<a><![CDATA[<b>&amp;]]>` + "\r\n" + `</a>`,
	`<p:a xmlns:p='urn:p' p:x='1' xml:lang='en' q:y='2'><b xmlns=''/><p:c/></p:a>`,
	`<a><b><c/></b>  <d e='f'>g</d></a>`,
	`<a/>`,
	`<a x='1'y='2'/>`,
	`<a ></a >`,
	`<a>]]></a>`,
	`<a>&foo;</a>`,
	`<a>&#0;</a>`,
	`<a>&#xD800;</a>`,
	`<a x=1/>`,
	`<a><b></a>`,
	`<a><!-- c --></a>`,
	`<a><?pi x?></a>`,
	`<a:b:c/>`,
	`<:a/>`,
	`<a: x='1'/>`,
	`<a>` + "\x01" + `</a>`,
	`<a>` + "\xff" + `</a>`,
	`<a x='<'/>`,
	`<a x='>'>></a>`,
	`<a / >`,
	`<a>é ü 中</a>`,
	"<a\n\tx\n=\n'1'\n/>",
	`<message xmlns='jabber:client'><body>x</body></message>`,
	`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
	strings.Repeat("<a>", maxDepth) + strings.Repeat("</a>", maxDepth),
	strings.Repeat("<a>", maxDepth+1) + strings.Repeat("</a>", maxDepth+1),
}

// xmlReader reads every stanza as encoding/xml did (or, where XMPP
// restricts XML, refuses it).
func TestXMLReaderMatchesDecoder(t *testing.T) {
	for _, s := range xmlSeeds {
		checkSame(t, s)
	}
	// pubsub's golden stanzas (PROTOCOL.md's shapes) are read here too:
	// real stanzas the differential test holds xmlReader to.
	files, _ := filepath.Glob("../../pubsub/testdata/*.xml")
	if len(files) == 0 {
		t.Fatal("no golden stanzas in testdata")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, string(b))
	}
}

func FuzzXMLReader(f *testing.F) {
	for _, s := range xmlSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		if !strings.HasPrefix(body, "<") {
			return
		}
		checkSame(t, body)
	})
}

// A stream of stanzas, keepalive white space between them, then its end.
func TestXMLReaderStream(t *testing.T) {
	stream := testStreamHeader + "<a/> \n<b x='1'>t</b>\t</stream:stream>"
	x := newXMLReader(bufio.NewReaderSize(strings.NewReader(stream), 16))
	if err := x.header(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a", "b"} {
		e, err := x.next()
		if err != nil {
			t.Fatal(err)
		}
		if e.XMLName.Local != want || e.XMLName.Space != nsClient {
			t.Fatalf("got %v, want %s in jabber:client", e.XMLName, want)
		}
	}
	if _, err := x.next(); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
	x = newXMLReader(bufio.NewReader(strings.NewReader(testStreamHeader + "junk<a/>")))
	if err := x.header(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.next(); !errors.Is(err, errTextBetween) {
		t.Fatalf("text between stanzas: %v", err)
	}
	x = newXMLReader(bufio.NewReader(strings.NewReader("<html>")))
	if err := x.header(); err == nil {
		t.Fatal("a header that is not <stream:stream> was taken")
	}
}

// A stanza cannot make name resolution quadratic with namespace
// declarations: past maxNSDecls in scope it is refused.
func TestXMLReaderBoundsDeclarations(t *testing.T) {
	var b strings.Builder
	b.WriteString("<a")
	for i := range maxNSDecls + 1 {
		fmt.Fprintf(&b, " xmlns:p%d='urn:%d'", i, i)
	}
	b.WriteString("/>")
	if _, err := viaReader(testStreamHeader + b.String()); !errors.Is(err, errTooManyNS) {
		t.Fatalf("%d declarations: %v, want errTooManyNS", maxNSDecls+1, err)
	}
	// The stream header's two declarations count: 62 more still pass.
	ok := "<a" + strings.Repeat(" ", 1)
	for i := range maxNSDecls - 2 {
		ok += fmt.Sprintf(" xmlns:p%d='urn:%d'", i, i)
	}
	if _, err := viaReader(testStreamHeader + ok + "/>"); err != nil {
		t.Fatalf("%d declarations refused: %v", maxNSDecls-2, err)
	}
}

// Text in many pieces (around many children) is gathered in linear time:
// 200,000 pieces would take minutes when appended one by one.
func TestXMLReaderManyTextPieces(t *testing.T) {
	body := "<a>" + strings.Repeat("x<b/>", 200000) + "</a>"
	e, err := viaReader(testStreamHeader + body)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Content) != 200000 || len(e.Nodes) != 200000 {
		t.Fatalf("content %d bytes, %d children", len(e.Content), len(e.Nodes))
	}
}
