package xmppstream

import (
	"net"
	"syscall"
)

// quickAck makes the kernel acknowledge what the server sends at once,
// again. Linux delays ACKs on a connection that looks interactive: each
// write we make soon after a read (a ping, an IQ) puts it in "pingpong"
// mode, where an ACK waits up to 40 ms for data to ride on. A server
// with Nagle's algorithm on (Prosody's default, nagle = true) then holds
// its next small write, the next notification, until that ACK comes: a
// stall of 20-40 ms on one agent, seen a few times a minute
// (BENCHMARKS.md, 2026-12-04, night). A bare client that never writes
// does not see it. TCP_QUICKACK leaves pingpong mode; only our writes
// enter it, so it is set after each one.
func quickAck(c net.Conn) func() {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	set := func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	}
	return func() { _ = rc.Control(set) }
}
