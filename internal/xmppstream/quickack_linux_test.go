package xmppstream

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// inQuickAck reads TCP_QUICKACK back: Linux answers 1 when the socket is
// not in pingpong (delayed ACK) mode.
func inQuickAck(t *testing.T, c net.Conn) bool {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v == 1
}

// A write right after a read puts a Linux socket in pingpong mode, where
// its ACKs wait for data to ride on; a server with Nagle on then holds
// its next notification until the delayed ACK. The conn leaves that mode
// after each of its writes.
func TestWriteLeavesPingpongMode(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := dial(t.Context(), ln.Addr().String(), 5*time.Second, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer srv.Close()
	if c.ack == nil {
		t.Fatal("no quick ACK on a TCP connection")
	}

	// The server sends, the client reads and answers at once: the
	// pattern of a ping or an IQ sent while notifications arrive.
	exchange := func(write func([]byte) error) {
		t.Helper()
		if _, err := srv.Write([]byte("<message/>")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len("<message/>"))
		if _, err := io.ReadFull(c.raw, buf); err != nil {
			t.Fatal(err)
		}
		if err := write([]byte("<iq/>")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(srv, make([]byte, len("<iq/>"))); err != nil {
			t.Fatal(err)
		}
	}
	exchange(func(b []byte) error { _, err := c.raw.Write(b); return err })
	// What the kernel does without the conn's help (not asserted: the
	// heuristics are the kernel's).
	t.Logf("after a plain write, quick ACK mode: %v", inQuickAck(t, c.raw))
	exchange(c.writeRaw)
	if !inQuickAck(t, c.raw) {
		t.Error("after the conn's write the socket is in pingpong mode: the server's next small write may wait for a delayed ACK")
	}
}
