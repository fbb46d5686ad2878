package pubsub

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

// A republish of 10,000 own states to Prosody with PubSub in memory: how
// long it takes, and the writes it costs per publish (a batch whenever
// answers free several slots at once), and this process's CPU time per
// publish (user and system: encoding, writing, reading the answer).
func BenchmarkRepublish(b *testing.B) {
	srv := xmpptest.StartT(b, xmpptest.Prosody, xmpptest.Options{Memory: true})
	aj, apw := srv.Admin("a")
	cfg := peerConfig(srv, aj, apw, "bench")
	const n = 10000
	devs := make([]DeviceItem, n)
	for i := range devs {
		devs[i] = DeviceItem{Device: fmt.Sprintf("Custom:R%d", i), State: devstate.States[i%len(devstate.States)], Cachable: true, EID: cfg.EID}
	}
	cfg.OwnStates = func() ([]DeviceItem, []MailboxItem) { return devs, nil }
	ev := make(chan Event, 64)
	c, err := New(cfg, ev)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	go func() {
		for {
			select {
			case <-ev:
			case <-done:
				return
			}
		}
	}()
	defer func() { cancel(); <-done }()
	idle := func() {
		b.Helper()
		deadline := time.Now().Add(5 * time.Minute)
		for st := c.Stats(); st.Pending > 0 || st.InFlight > 0 || st.Published < n; st = c.Stats() {
			if time.Now().After(deadline) {
				b.Fatalf("republish not done: %+v", st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	idle() // the republish at connect: the items exist from here on
	s, err := c.session()
	if err != nil {
		b.Fatal(err)
	}
	st0, w0, cpu0 := c.Stats(), s.st.Writes(), cpuTime()
	for b.Loop() {
		c.republish()
		idle()
	}
	st, w, cpu := c.Stats(), s.st.Writes(), cpuTime()
	if st.Errors != st0.Errors {
		b.Fatalf("publish errors: %+v", st)
	}
	pubs := float64(st.Published - st0.Published)
	b.ReportMetric(pubs/b.Elapsed().Seconds(), "publishes/s")
	b.ReportMetric(float64(w-w0)/pubs, "writes/publish")
	b.ReportMetric(float64((cpu-cpu0).Microseconds())/pubs, "cpu-µs/publish")
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
