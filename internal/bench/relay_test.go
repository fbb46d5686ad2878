package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// echoSystem is a system whose every receiver sees each change at once,
// on the sending goroutine (as a bare receiver's read loop would).
type echoSystem struct {
	n    int
	mu   sync.Mutex
	f    func(r int, device, state string)
	sent []string
	fail error
}

func (e *echoSystem) receivers() int { return e.n }

func (e *echoSystem) onChange(f func(r int, device, state string)) {
	e.mu.Lock()
	e.f = f
	e.mu.Unlock()
}

func (e *echoSystem) send(device, state string) error {
	e.mu.Lock()
	f, fail := e.f, e.fail
	e.sent = append(e.sent, device+"="+state)
	e.mu.Unlock()
	if fail != nil {
		return fail
	}
	for r := range e.n {
		f(r, device, state)
	}
	return nil
}

func (e *echoSystem) flush() error                      { return nil }
func (e *echoSystem) sentAll(ctx context.Context) error { return nil }

// The relay carries each change over its in socket to the inner system,
// and what each receiver sees over that receiver's out socket, and times
// both hops.
func TestRelayCarriesBothWays(t *testing.T) {
	inner := &echoSystem{n: 3}
	s, err := startRelay(inner)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	const changes = 20
	type seen struct {
		r             int
		device, state string
	}
	got := make(chan seen, 3*changes)
	s.onChange(func(r int, device, state string) { got <- seen{r, device, state} })
	for i := range changes {
		if err := s.send(fmt.Sprintf("Custom:D%d", i), poolStates[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.sentAll(ctx); err != nil {
		t.Fatalf("sentAll: %v", err)
	}
	// Each receiver's out socket is read in order.
	next := make([]int, 3)
	for range 3 * changes {
		select {
		case g := <-got:
			want := seen{g.r, fmt.Sprintf("Custom:D%d", next[g.r]), poolStates[next[g.r]%2]}
			if g != want {
				t.Fatalf("receiver %d saw %+v, want %+v", g.r, g, want)
			}
			next[g.r]++
		case <-ctx.Done():
			t.Fatalf("receivers saw %v of %d changes each", next, changes)
		}
	}
	inner.mu.Lock()
	if len(inner.sent) != changes || inner.sent[0] != "Custom:D0=INUSE" {
		t.Errorf("inner got %d changes, first %q", len(inner.sent), inner.sent[0])
	}
	inner.mu.Unlock()
	in, out := s.hopP50s()
	if in <= 0 || out <= 0 {
		t.Errorf("hop p50s in %v, out %v: want both timed", in, out)
	}
	s.resetHops()
	if in, out := s.hopP50s(); in != 0 || out != 0 {
		t.Errorf("after reset: %v, %v", in, out)
	}
}

// A publish that fails is the next send's error, and sentAll's.
func TestRelayReportsFailedPublish(t *testing.T) {
	inner := &echoSystem{n: 1, fail: errors.New("server gone")}
	s, err := startRelay(inner)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.onChange(func(int, string, string) {})
	if err := s.send("Custom:D1", "INUSE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.sentAll(ctx); err == nil || err.Error() != "server gone" {
		t.Fatalf("sentAll = %v, want the publish's error", err)
	}
	if err := s.send("Custom:D2", "INUSE"); err == nil {
		t.Fatal("send after a failed publish: no error")
	}
}

func TestParseSetvar(t *testing.T) {
	for _, c := range []struct {
		msg, device, state string
		ok                 bool
	}{
		{"Action: Setvar\r\nVariable: DEVICE_STATE(Custom:D1)\r\nValue: INUSE\r\n", "Custom:D1", "INUSE", true},
		{"Action: Setvar\r\nValue: BUSY\r\nVariable: DEVICE_STATE(PJSIP/a(b))\r\n", "PJSIP/a(b)", "BUSY", true},
		{"Action: Setvar\r\nVariable: FOO\r\nValue: INUSE\r\n", "", "INUSE", false},
		{"Action: Setvar\r\nVariable: DEVICE_STATE(Custom:D1)\r\n", "Custom:D1", "", false},
	} {
		d, s, ok := parseSetvar(c.msg)
		if d != c.device || s != c.state || ok != c.ok {
			t.Errorf("parseSetvar(%q) = %q %q %v, want %q %q %v", c.msg, d, s, ok, c.device, c.state, c.ok)
		}
	}
}
