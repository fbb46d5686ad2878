package xmppstream

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// recorder is a Handler that keeps what it got, in order, and answers
// every IQ request with service-unavailable.
type recorder struct {
	mu  sync.Mutex
	got []string
	ch  chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 64)} }

func (r *recorder) add(kind string, e *Element) {
	r.mu.Lock()
	r.got = append(r.got, kind+":"+e.Attr("id"))
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) HandleMessage(_ *Stream, e *Element)  { r.add("message", e) }
func (r *recorder) HandlePresence(_ *Stream, e *Element) { r.add("presence", e) }
func (r *recorder) HandleIQ(s *Stream, e *Element) {
	r.add("iq", e)
	s.ReplyError(e, "cancel", "service-unavailable", "503")
}

func (r *recorder) wait(t *testing.T, n int) []string {
	t.Helper()
	for range n {
		select {
		case <-r.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("handler called fewer than %d times", n)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// The read loop hands stanzas over in arrival order, answers pings and
// payload-less requests itself, and every request the handler gets is
// the handler's to answer.
func TestReadLoopOrderAndRequests(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	r := newRecorder()
	s.Start(r)
	p.write(`<message id='m1' from='pubsub.example.org'/>` +
		`<presence id='p1' from='b@example.org/x'/>` +
		`<iq type='get' id='i1' from='b@example.org/x'><ping xmlns='urn:xmpp:ping'/></iq>` +
		`<iq type='set' id='i2' from='b@example.org/x'/>` +
		`<iq type='get' id='i3' from='b@example.org/x'><query xmlns='jabber:iq:version'/></iq>` +
		`<message id='m2' from='pubsub.example.org'/>`)
	got := r.wait(t, 4)
	if strings.Join(got, " ") != "message:m1 presence:p1 iq:i3 message:m2" {
		t.Fatalf("handled %v", got)
	}
	want := map[string]string{"i1": "result", "i2": "error bad-request", "i3": "error service-unavailable"}
	for range want {
		e := p.next()
		id := e.Attr("id")
		ans := e.Attr("type")
		if ans == "error" {
			ans += " " + e.Child("", "error").FirstChild().XMLName.Local
		}
		if want[id] != ans || e.Attr("to") != "b@example.org/x" {
			t.Errorf("answer to %s: %s to %q, want %s", id, ans, e.Attr("to"), want[id])
		}
	}
}

// An answer counts only from whom the request went to (RFC 6120
// 8.1.2.1); another entity's answer with the same id is ignored.
func TestIQAnswerOnlyFromTheEntityAsked(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	s.Start(newRecorder())
	call, err := s.SendIQ("get", "pubsub.example.org", &pingReq{})
	if err != nil {
		t.Fatal(err)
	}
	id := p.next().Attr("id")
	p.write(`<iq type='result' id='%s' from='mallory@example.org/x'><forged/></iq>`, id)
	p.write(`<iq type='error' id='%s' from='pubsub.example.org'><error type='cancel'>`+
		`<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><nope xmlns='urn:example'/></error></iq>`, id)
	e, err := call.Wait(context.Background())
	var se *StanzaError
	if !errors.As(err, &se) || se.Condition != "item-not-found" || se.App != (xml.Name{Space: "urn:example", Local: "nope"}) {
		t.Fatalf("answer %v, err %v", e, err)
	}
	if e.Attr("from") != "pubsub.example.org" {
		t.Fatalf("took the answer from %q", e.Attr("from"))
	}
	// Our own account's answers may come without from, or from the bare
	// or full JID or the domain.
	for _, from := range []string{"", " from='me@example.org'", " from='ME@example.org/r'", " from='example.org'"} {
		call, err := s.SendIQ("get", "", &pingReq{})
		if err != nil {
			t.Fatal(err)
		}
		p.write(`<iq type='result' id='%s'%s/>`, p.next().Attr("id"), from)
		if _, err := call.Wait(context.Background()); err != nil {
			t.Errorf("answer%s: %v", from, err)
		}
	}
}

// A call on an ended stream, or cut off by its end, wraps both
// ErrNotConnected and why the stream ended.
func TestEndedStreamErrorsWrapTheCause(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	s.Start(newRecorder())
	call, err := s.SendIQ("get", "example.org", &pingReq{})
	if err != nil {
		t.Fatal(err)
	}
	p.next()
	cause := errors.New("node was deleted")
	s.Close(cause)
	_, werr := call.Wait(context.Background())
	_, ierr := s.IQ(context.Background(), "get", "example.org", &pingReq{})
	serr := s.Send(&pingReq{})
	for name, err := range map[string]error{"wait": werr, "IQ": ierr, "Send": serr} {
		if !errors.Is(err, ErrNotConnected) || !errors.Is(err, cause) {
			t.Errorf("%s: %v: want errors.Is ErrNotConnected and the cause", name, err)
		}
	}
	s.Wait()
	if !errors.Is(s.Err(), cause) {
		t.Errorf("Err() = %v", s.Err())
	}
}

// A write that fails ends the stream; the error wraps ErrNotConnected and
// the write's own error.
func TestWriteErrorEndsTheStream(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	_ = p.nc.Close()
	err := s.Send(&pingReq{})
	if !errors.Is(err, ErrNotConnected) || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("send on a closed pipe: %v", err)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end")
	}
}

// No answer to a ping within the IQ timeout ends the stream, and with it
// every goroutine it started.
func TestKeepaliveEndsADeadStream(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s, p := pipeStream(t, Config{PingInterval: 20 * time.Millisecond, IQTimeout: 100 * time.Millisecond})
	s.Start(newRecorder())
	if ping := p.next(); ping.Attr("to") != "example.org" || ping.Child(nsPing, "ping") == nil {
		t.Fatalf("keepalive sent %+v", ping)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stream without answers to its pings did not end")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "no answer to ping") {
		t.Fatalf("ended with %v", err)
	}
	s.Wait()
	_ = p.nc.Close()
	for range p.in { // the test server's reader ends too
	}
	goleak.VerifyNone(t, before)
}

// A stream error from the server ends the stream with its condition.
func TestStreamErrorEndsTheStream(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	s.Start(newRecorder())
	p.write(`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>` +
		`<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>replaced</text></stream:error>`)
	<-s.Done()
	s.Wait()
	if err := s.Err(); err == nil || err.Error() != "stream error conflict: replaced" {
		t.Fatalf("ended with %v", err)
	}
}

func TestErrorReplyShape(t *testing.T) {
	b, err := xml.Marshal(errorIQ{Type: "error", ID: "x1", To: "a@b/c",
		Error: stanzaErrorOut{Type: "cancel", Code: "503", Cond: xml.Name{Space: NSStanzas, Local: "service-unavailable"}}})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParseDocument(`<iq type="error" id="x1" to="a@b/c"><error type="cancel" code="503"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`)
	got, _ := ParseDocument(string(b))
	if d := sameElem("iq", want, got); d != "" {
		t.Errorf("%s: %s", d, b)
	}
	se := parseStanzaError(got.Child("", "error"))
	if se.Condition != "service-unavailable" || se.Type != "cancel" || se.Code != "503" {
		t.Errorf("parsed back %+v", se)
	}
}

func TestReadElemBounds(t *testing.T) {
	deep := strings.Repeat("<a>", maxDepth+1) + strings.Repeat("</a>", maxDepth+1)
	if _, err := ParseDocument(deep); err != errTooDeep {
		t.Errorf("deep nesting: err %v, want errTooDeep", err)
	}
	if _, err := ParseDocument("<a><b></a>"); err == nil {
		t.Error("malformed XML parsed")
	}
	if _, err := ParseDocument("<a><b>"); err == nil {
		t.Error("truncated XML parsed")
	}
}
