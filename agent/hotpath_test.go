package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
)

// BenchmarkHotPath is the agent's whole hot path for a change another
// server published: the event the XMPP client hands over → the device
// table and the merge → the AMI event rendered and written to a logged-in
// session over loopback TCP (the client discards what it reads). Every
// goroutine's allocations count, the session writer's included.
func BenchmarkHotPath(b *testing.B) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := newBenchCore(log)
	n := &Agent{core: a}
	mcfg := manager.DefaultConfig()
	mcfg.Username, mcfg.Secret = "bench", "secret"
	mcfg.QueueLen = 1 << 20 // measure the path, not a slow reader's cut-off
	srv := manager.New(mcfg, backend{n}, log)
	a.Attach(nil, amiSink{s: srv})
	a.MarkBooted()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "Action: Login\r\nUsername: bench\r\nSecret: secret\r\n\r\n")
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(line, "Message: Authentication accepted") {
			break
		}
	}
	// Wait until the session takes events, then drain it.
	probe := core.DeviceItem{Device: "SIP/probe", State: devstate.InUse, EID: eidB, Publisher: "b@x/r"}
	a.RemoteDevice(probe)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("no DeviceStateChange on the session: %v", err)
		}
		if strings.HasPrefix(line, "Device: SIP/probe") {
			break
		}
	}
	c.SetReadDeadline(time.Time{})
	go io.Copy(io.Discard, r)

	benchRemoteChanges(b, a)
}

// BenchmarkRemoteDevice is the core alone: a buddy's change into the
// table and the merge, no AMI session.
func BenchmarkRemoteDevice(b *testing.B) {
	benchRemoteChanges(b, newBenchCore(slog.New(slog.NewTextHandler(io.Discard, nil))))
}

func newBenchCore(log *slog.Logger) *core.Core {
	cfg := core.DefaultConfig()
	cfg.EID, cfg.JID, cfg.Log = eidA, "a@x/r", log
	return core.New(cfg)
}

var (
	eidA = devstate.EID{2, 0, 0, 0, 0, 1}
	eidB = devstate.EID{2, 0, 0, 0, 0, 2}
)

// benchRemoteChanges feeds a a buddy's changes over 1,000 devices.
func benchRemoteChanges(b *testing.B, a *core.Core) {
	devices := make([]string, 1000)
	for i := range devices {
		devices[i] = fmt.Sprintf("SIP/%d", i)
	}
	states := []devstate.State{devstate.InUse, devstate.NotInUse, devstate.Ringing}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.RemoteDevice(core.DeviceItem{Device: devices[i%len(devices)], State: states[i%3], EID: eidB, Publisher: "b@x/r"})
	}
}
