package manager

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

func TestClient(t *testing.T) {
	b := newFakeBackend()
	b.devices["PJSIP/alice"] = devstate.Busy
	b.mailboxes["1000@default"] = mwi.Counts{New: 1, Old: 4}
	ts := startServer(t, testConfig(), b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c := dialClient(t, ts.addr)
	if g := c.Greeting(); g != "Asterisk Call Manager/"+Version {
		t.Fatalf("greeting %q", g)
	}
	var ae *ActionError
	if err := c.Login(ctx, testUser, "wrong"); !errors.As(err, &ae) || ae.Message != "Authentication failed" {
		t.Fatalf("bad login: %v", err)
	}
	if err := c.Login(ctx, testUser, testSecret); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-c.Events():
		if ev.Get("Event") != "FullyBooted" || ev.Get("Status") != "Fully Booted" {
			t.Fatalf("first event %v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no FullyBooted")
	}

	resp, err := c.Action(ctx, "Getvar", Header{"Variable", "DEVICE_STATE(PJSIP/alice)"})
	if err != nil || resp.Get("value") != "BUSY" {
		t.Fatalf("Getvar: %v %v", resp, err)
	}
	if _, err := c.Action(ctx, "Setvar", Header{"Variable", "DEVICE_STATE(x)"}, Header{"Value", "nope"}); !errors.As(err, &ae) {
		t.Fatalf("Setvar bad state: %v", err)
	}
	resp, err = c.Action(ctx, "Command", Header{"Command", "show buddies"})
	if err != nil {
		t.Fatal(err)
	}
	if out := resp.Values("Output"); len(out) != 2 || out[1] != "Buddy: b@example.org" {
		t.Fatalf("Output %q", out)
	}

	_, items, err := c.List(ctx, "MWIGet", Header{"Mailbox", "/.*/"})
	if err != nil || len(items) != 1 || items[0].Get("NewMessages") != "1" || items[0].Get("OldMessages") != "4" {
		t.Fatalf("MWIGet: %v %v", items, err)
	}
	_, items, err = c.List(ctx, "DeviceStateList")
	if err != nil || len(items) != 1 || items[0].Get("Device") != "PJSIP/alice" {
		t.Fatalf("DeviceStateList: %v %v", items, err)
	}
	if _, _, err := c.List(ctx, "MWIGet"); !errors.As(err, &ae) || ae.Message != "Missing mailbox parameter in request" {
		t.Fatalf("MWIGet without mailbox: %v", err)
	}
	// A non-list response through List comes back as it is.
	if resp, items, err := c.List(ctx, "Ping"); err != nil || resp.Get("Ping") != "Pong" || items != nil {
		t.Fatalf("List(Ping): %v %v %v", resp, items, err)
	}
	if _, err := c.Action(ctx, "Ping", Header{"Bad:Key", "x"}); err == nil {
		t.Fatal("a header name with ':' was sent")
	}

	// Broadcast events arrive on Events, in order; list events do not.
	for _, d := range []string{"a", "b", "c"} {
		ts.Emit(DeviceStateChange(d, devstate.Ringing))
	}
	for _, d := range []string{"a", "b", "c"} {
		select {
		case ev := <-c.Events():
			if ev.Get("Device") != d || ev.Get("Privilege") != "call,all" {
				t.Fatalf("event %v, want device %s", ev, d)
			}
		case <-ctx.Done():
			t.Fatal("event missing")
		}
	}

	if err := c.Logoff(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-c.Events():
		for ok {
			_, ok = <-c.Events()
		}
	case <-ctx.Done():
		t.Fatal("Events not closed after Logoff")
	}
	if _, err := c.Action(ctx, "Ping"); err == nil {
		t.Fatal("action after the connection closed succeeded")
	}
}

func TestClientDialRefused(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSessions = 1
	ts := startServer(t, cfg, newFakeBackend())
	c := dialClient(t, ts.addr)
	if err := c.Login(context.Background(), testUser, testSecret); err != nil {
		t.Fatal(err)
	}
	// The place is taken at login, not at connect.
	c2 := dialClient(t, ts.addr)
	err := c2.Login(context.Background(), testUser, testSecret)
	if err == nil || !strings.Contains(err.Error(), "Too many sessions (limit 1)") {
		t.Fatalf("Login over the limit: %v", err)
	}

	// Not an AMI server at all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.Write([]byte("SSH-2.0-OpenSSH\r\n"))
			conn.Close()
		}
	}()
	if _, err := Dial(context.Background(), ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "SSH-2.0") {
		t.Fatalf("Dial to a non-AMI server: %v", err)
	}
}

func TestClientActionContext(t *testing.T) {
	b := newFakeBackend()
	release := make(chan struct{})
	b.command = func(ctx context.Context, line string) (string, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "late", nil
	}
	ts := startServer(t, testConfig(), b)
	c := dialClient(t, ts.addr)
	if err := c.Login(context.Background(), testUser, testSecret); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Action(ctx, "Command", Header{"Command", "wait"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	close(release)
	// The late response is dropped; the next action gets its own.
	resp, err := c.Action(context.Background(), "Ping")
	if err != nil || resp.Get("Ping") != "Pong" {
		t.Fatalf("Ping after a cancelled action: %v %v", resp, err)
	}
}
