package wanpath

import (
	"fmt"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

// TestMain fails the tests if a goroutine of a Transport outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startImpaired(t *testing.T, p Path) (*Transport, string) {
	t.Helper()
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	tr := New(inner, p)
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr, fmt.Sprintf("127.0.0.1:%d", inner.GetAutoBindPort())
}

// TestPath checks the path: datagrams arrive a one-way
// delay late or not at all, at about the loss asked for; a stream
// connects in a round trip and delivers its writes in order, a one-way
// delay late; Shutdown stops it (goleak, in TestMain, checks its
// goroutines end).
func TestPath(t *testing.T) {
	imp := Path{RTT: 80 * time.Millisecond, Jitter: 10 * time.Millisecond, Loss: 0.05, Seed: 1}
	a, _ := startImpaired(t, imp)
	b, bAddr := startImpaired(t, imp)

	// In batches, each read before the next is sent, so that the socket's
	// buffer never overflows: the only losses are the path's.
	const n, batch = 1000, 50
	sent := make(map[string]time.Time, n)
	got := 0
	minDelay := imp.RTT/2 - imp.Jitter/2
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	for i := 0; i < n; {
		for end := i + batch; i < end; i++ {
			msg := fmt.Sprint(i)
			at, err := a.WriteToAddress([]byte(msg), memberlist.Address{Addr: bAddr})
			if err != nil {
				t.Fatal(err)
			}
			sent[msg] = at
		}
		for got < i-int(a.Counts().Dropped) {
			select {
			case p := <-b.PacketCh():
				at, ok := sent[string(p.Buf)]
				if !ok {
					t.Fatalf("unknown datagram %q", p.Buf)
				}
				if d := p.Timestamp.Sub(at); d < minDelay-time.Millisecond {
					t.Fatalf("datagram %q arrived after %v, under the one-way delay %v", p.Buf, d, minDelay)
				}
				got++
			case <-timeout.C:
				t.Fatalf("%d of %d datagrams arrived, %d dropped", got, i, a.Counts().Dropped)
			}
		}
	}
	if lost := float64(n-got) / n; lost < imp.Loss/2 || lost > 2*imp.Loss {
		t.Errorf("%.1f%% of datagrams lost, want about %.0f%%", 100*lost, 100*imp.Loss)
	}
	if o := a.Counts().Overflow; o != 0 {
		t.Errorf("%d datagrams over the queue's limit", o)
	}

	start := time.Now()
	conn, err := a.DialAddressTimeout(memberlist.Address{Addr: bAddr}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < imp.RTT-imp.Jitter {
		t.Errorf("connected in %v, under a round trip", d)
	}
	var server net.Conn
	select {
	case server = <-b.StreamCh():
	case <-time.After(10 * time.Second):
		t.Fatal("no stream accepted")
	}
	written := time.Now()
	for i := range 100 {
		if _, err := fmt.Fprintf(conn, "%03d", i); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(written); d > imp.RTT/2 {
		t.Errorf("100 writes took %v: a write should return once queued", d)
	}
	buf := make([]byte, 300)
	if _, err := io.ReadFull(server, buf[:3]); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(written); d < minDelay-time.Millisecond {
		t.Errorf("first write read after %v, under the one-way delay %v", d, minDelay)
	}
	if _, err := io.ReadFull(server, buf[3:]); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if s := string(buf[3*i : 3*i+3]); s != fmt.Sprintf("%03d", i) {
			t.Fatalf("write %d read as %q: out of order", i, s)
		}
	}
	// Closing lets the queued bytes out, then the peer reads EOF.
	if _, err := conn.Write([]byte("end")); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	rest, err := io.ReadAll(server)
	if err != nil || string(rest) != "end" {
		t.Errorf("after close read %q, %v; want \"end\", EOF", rest, err)
	}
	_ = server.Close()
	t.Logf("%d datagrams, %d lost; %d stream writes, %d retransmitted", a.Counts().Packets,
		a.Counts().Dropped, a.Counts().Writes, a.Counts().Retransmits)

	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteToAddress([]byte("x"), memberlist.Address{Addr: bAddr}); err == nil {
		t.Error("write after Shutdown succeeded")
	}
}
