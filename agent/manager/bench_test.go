package manager

import (
	"bufio"
	"fmt"
	"io"
	"testing"

	"github.com/busylamp/busylamp/devstate"
)

// BenchmarkEmit measures the agent's side of the fan-out: one rendering and
// a queue append per listening session. The sessions' writers drain to
// clients that discard what they read.
func BenchmarkEmit(b *testing.B) {
	for _, n := range []int{1, 300} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			cfg := testConfig()
			cfg.MaxSessions = n + 1
			cfg.QueueLen = 1 << 20 // measure Emit, not disconnects
			ts := startServer(b, cfg, newFakeBackend())
			for range n {
				rc := dialRaw(b, ts.addr)
				rc.login()
				go io.Copy(io.Discard, bufio.NewReader(rc.c))
			}
			waitFor(b, "listeners", func() bool { return ts.listeners() == n })
			ev := DeviceStateChange("PJSIP/alice", devstate.InUse)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ts.Emit(ev)
			}
		})
	}
}
