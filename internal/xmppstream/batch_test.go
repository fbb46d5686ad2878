package xmppstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// writeCounter counts the writes made on a connection (one syscall each
// on a real socket).
type writeCounter struct {
	net.Conn
	writes atomic.Int64
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(b)
}

// A batch of IQs is one write, each IQ with an id of its own, and every
// one gets its own answer, in whatever order they come.
func TestSendIQsOneWrite(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	wc := &writeCounter{Conn: s.c.nc}
	s.c.nc = wc
	s.Start(newRecorder())
	w0 := s.Writes() // the stream header
	const n = 20
	calls, err := s.SendIQs("pubsub.example.org", n, func(b []byte, i int, id string) []byte {
		return fmt.Appendf(b, `<iq type="set" id="%s" to="pubsub.example.org"><n xmlns="urn:example">%d</n></iq>`, id, i)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := wc.writes.Load(); got != 1 || s.Writes()-w0 != 1 {
		t.Fatalf("%d writes for a batch of %d IQs, want 1", got, n)
	}
	ids := make([]string, n)
	seen := map[string]bool{}
	for i := range n {
		e := p.next()
		if got := e.Child("urn:example", "n").Text(); got != fmt.Sprint(i) {
			t.Fatalf("IQ %d carries %q", i, got)
		}
		ids[i] = e.Attr("id")
		if ids[i] != calls[i].id || seen[ids[i]] {
			t.Fatalf("IQ %d has id %q, its call %q (seen before: %v)", i, ids[i], calls[i].id, seen[ids[i]])
		}
		seen[ids[i]] = true
	}
	for i := n - 1; i >= 0; i-- { // answered last first
		p.write(`<iq type='result' id='%s' from='pubsub.example.org'><a xmlns='urn:example'>%d</a></iq>`, ids[i], i)
	}
	for i, c := range calls {
		e, err := c.Wait(context.Background())
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := e.Child("urn:example", "a").Text(); got != fmt.Sprint(i) {
			t.Fatalf("call %d got the answer to %s", i, got)
		}
	}
	// The buffer is the conn's, kept for the next batch: no allocation
	// for it the second time.
	if cap(s.c.wbuf) == 0 {
		t.Error("write buffer not kept")
	}
}

// A batch that cannot be written ends the stream, and none of its calls
// stays registered.
func TestSendIQsWriteError(t *testing.T) {
	s, p := pipeStream(t, Config{PingInterval: time.Hour})
	_ = p.nc.Close()
	_, err := s.SendIQs("pubsub.example.org", 3, func(b []byte, _ int, id string) []byte {
		return append(b, `<iq type="get" id="`+id+`"/>`...)
	})
	if !errors.Is(err, ErrNotConnected) || !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("batch on a closed pipe: %v", err)
	}
	s.mu.Lock()
	left := len(s.iqs)
	s.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls still registered", left)
	}
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not end")
	}
	if _, err := s.SendIQs("x", 1, func(b []byte, _ int, _ string) []byte { return b }); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("batch on an ended stream: %v", err)
	}
}
