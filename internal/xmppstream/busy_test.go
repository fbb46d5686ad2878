package xmppstream

import (
	"strings"
	"testing"
	"time"
)

// A server that does not answer our pings but keeps sending stanzas is
// busy, not dead: the stream goes on. Once it falls silent too, the next
// unanswered ping ends the stream.
func TestUnansweredPingWhileServerSends(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: 50 * time.Millisecond, IQTimeout: time.Second})
	s.Start(discard{})
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() { // a notification every 20 ms, as a busy server's
		defer close(sent)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := p.nc.Write([]byte(`<message from='pubsub.example.org' id='n` + string(rune('a'+i%26)) + `'/>`)); err != nil {
				return
			}
		}
	}()
	// Four pings, none answered: at least three timed out (each after
	// 1 s) while the server went on sending.
	for pings := 0; pings < 4; {
		if e := p.next(); e.XMLName.Local == "iq" && e.Child(nsPing, "ping") != nil {
			pings++
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("stream ended while the server was sending: %v", err)
	}
	close(stop)
	<-sent
	go func() { // keep taking what the client writes
		for range p.in {
		}
	}()
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a silent server's unanswered ping did not end the stream")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "no answer to ping") {
		t.Fatalf("stream ended with %v, want the ping's", err)
	}
}

// discard is a Handler that takes every stanza and keeps none.
type discard struct{}

func (discard) HandleMessage(*Stream, *Element)  {}
func (discard) HandlePresence(*Stream, *Element) {}
func (discard) HandleIQ(*Stream, *Element)       {}
