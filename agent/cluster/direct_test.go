package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// A direct message goes to one member over the encrypted stream, whole;
// one over MaxDirectSize is refused by the sender, and by the receiver
// when another sender writes it anyway (memberlist's own SendReliable),
// with a log line and a count; a message past the reader's room is
// refused, not waited for.
func TestDirectMessages(t *testing.T) {
	inbox := make(chan []byte, 1)
	a := startMember(t, 1, nil, func(c *Config) { c.Direct = inbox })
	b := startMember(t, 2, []string{a.c.Addr()}, nil)
	waitConverged(t, 10*time.Second, []*member{a, b})

	body := bytes.Repeat([]byte("states "), MaxDirectSize/7)
	if err := b.c.SendDirect(a.c.Name(), body); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-inbox:
		if !bytes.Equal(got, body) {
			t.Fatalf("received %d bytes, want the %d sent", len(got), len(body))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("direct message not received")
	}
	if err := b.c.SendDirect(a.c.Name(), make([]byte, MaxDirectSize+1)); err == nil {
		t.Fatal("sent a body over MaxDirectSize")
	}
	if err := b.c.SendDirect("nobody", []byte("x")); !errors.Is(err, ErrNotMember) {
		t.Fatalf("to a stranger: %v, want ErrNotMember", err)
	}

	// Past the bound, written by memberlist directly.
	var to = a.c.ml.LocalNode()
	if err := b.c.ml.SendReliable(to, append([]byte{msgDirect}, make([]byte, MaxDirectSize+1)...)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "oversized message refused", func() (bool, string) {
		s := a.c.DirectStats()
		return s.Refused == 1, a.logs.String()
	})
	if !strings.Contains(a.logs.String(), "direct message refused") || !strings.Contains(a.logs.String(), "over 1048576 bytes") {
		t.Errorf("no clear log line for the oversized message:\n%s", a.logs.String())
	}
	// The reader's room (one) is taken: the next is refused at once.
	for range 2 {
		if err := b.c.SendDirect(a.c.Name(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "message past the reader's room refused", func() (bool, string) {
		s := a.c.DirectStats()
		return s.Refused == 2 && s.Received == 2, ""
	})
	if s := b.c.DirectStats(); s.Sent != 3 {
		t.Errorf("sender counted %d sent, want 3", s.Sent)
	}
}
