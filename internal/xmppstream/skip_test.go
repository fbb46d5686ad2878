package xmppstream

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A stanza nested too deeply, or larger than maxStanza, is read to its end
// and dropped: the reader goes on with the next stanza, and names what it
// dropped (its start tag).
func TestXMLReaderSkipsDeepAndLargeStanzas(t *testing.T) {
	deep := `<message from='mallory@example.org/x' id='d1'>` + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + `</message>`
	big := `<iq type='result' id='big1' from='pubsub.example.org'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='device_state'>` +
		strings.Repeat(`<item id='x'><state xmlns='http://asterisk.org'><![CDATA[`+strings.Repeat("]", 3000)+`]]></state>`+
			strings.Repeat("y", 20000)+`<z q='>'/></item>`, 256) +
		`</items></pubsub></iq>`
	if len(big) <= maxStanza {
		t.Fatalf("big stanza only %d bytes", len(big))
	}
	stream := testStreamHeader + deep + `<message id='after1'/>` + big + ` <message id='after2'><body>ok</body></message></stream:stream>`
	x := newXMLReader(bufio.NewReaderSize(strings.NewReader(stream), 16<<10))
	if err := x.header(); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id     string
		reason error
	}{{"d1", errTooDeep}, {"after1", nil}, {"big1", errStanzaTooLarge}, {"after2", nil}}
	for _, w := range want {
		e, err := x.next()
		if w.reason == nil {
			if err != nil || e.Attr("id") != w.id {
				t.Fatalf("want %s, got %+v, %v", w.id, e, err)
			}
			continue
		}
		var sk *skipped
		if !errors.As(err, &sk) || !errors.Is(err, w.reason) || sk.head == nil || sk.head.Attr("id") != w.id {
			t.Fatalf("want %s skipped for %v, got %+v, %v", w.id, w.reason, e, err)
		}
		if sk.head.XMLName.Space != nsClient || len(sk.head.Nodes) != 0 {
			t.Fatalf("head %+v", sk.head)
		}
		if w.reason == errStanzaTooLarge && (sk.size < len(big)-20 || sk.size > len(big)+20) {
			t.Errorf("skipped %d bytes, the stanza has %d", sk.size, len(big))
		}
	}
	if _, err := x.next(); err.Error() != "EOF" {
		t.Fatalf("end: %v", err)
	}
	if cap(x.buf) > 2*maxStanza {
		t.Errorf("the buffer grew to %d bytes", cap(x.buf))
	}
}

// The read loop counts a skipped stanza and goes on: any account can send
// one to our full JID. A skipped answer fails its IQ at once, a skipped
// request is answered with an error.
func TestReadLoopSkipsAndGoesOn(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	r := newRecorder()
	s.Start(r)
	p.write(`<message id='deep' from='mallory@example.org/x'>%s%s</message><message id='m2'/>`,
		strings.Repeat("<a>", 100), strings.Repeat("</a>", 100))
	if got := r.wait(t, 1); got[0] != "message:m2" {
		t.Fatalf("handled %v", got)
	}
	if n := s.Skipped(); n != 1 {
		t.Fatalf("skipped %d", n)
	}
	call, err := s.SendIQ("get", "pubsub.example.org", &pingReq{})
	if err != nil {
		t.Fatal(err)
	}
	id := p.next().Attr("id")
	t0 := time.Now()
	go p.write(`<iq type='result' id='%s' from='pubsub.example.org'><r>%s</r></iq>`, id, strings.Repeat("x", maxStanza))
	if _, err := call.Wait(context.Background()); !errors.Is(err, ErrAnswerSkipped) {
		t.Fatalf("too large answer: %v", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	p.write(`<iq type='get' id='q1' from='b@example.org/x'><query xmlns='urn:x'>%s</query></iq>`, strings.Repeat("<a>", 40)+strings.Repeat("</a>", 40))
	if e := p.next(); e.Attr("id") != "q1" || e.Attr("type") != "error" || e.Child("", "error").FirstChild().XMLName.Local != "policy-violation" {
		t.Fatalf("answer %+v", e)
	}
	p.write(`<message id='m3'/>`)
	if got := r.wait(t, 1); got[1] != "message:m3" {
		t.Fatalf("handled %v", got)
	}
	if s.Err() != nil || s.Skipped() != 3 {
		t.Fatalf("err %v, skipped %d", s.Err(), s.Skipped())
	}
}

// A stanza that never ends is no stanza: past maxSkip the stream ends.
func TestXMLReaderEndlessStanza(t *testing.T) {
	defer func(n int) { maxSkip = n }(maxSkip)
	maxSkip = 8 << 20
	body := "<a>" + strings.Repeat(strings.Repeat("x", 1<<20)+"<b/>", maxSkip>>20+1)
	x := newXMLReader(bufio.NewReaderSize(strings.NewReader(testStreamHeader+body), 16<<10))
	if err := x.header(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.next(); !errors.Is(err, errStanzaTooLarge) || errors.As(err, new(*skipped)) {
		t.Fatalf("endless stanza: %v", err)
	}
}
