package main

import (
	"strings"
	"testing"
	"time"
)

// The control's verdict: the figures of make bench run 2's ejabberd
// cell with 2 agents (2026-12-07), where the sockets alone missed p50
// and p99 and busylamp against them met all three.
func TestControlVerdict(t *testing.T) {
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	base := latencyResult{p50: ms(1.31), p99: ms(2.04), p999: ms(3.15)}
	relay := latencyResult{p50: ms(1.50), p99: ms(5.02), p999: ms(9.78)}
	busy := latencyResult{p50: ms(1.54), p99: ms(3.59), p999: ms(5.87)}
	got := controlVerdict(2, base, relay, busy)
	ctl, bl, ok := strings.Cut(got, "; busylamp / the baseline behind the sockets: ")
	if !ok {
		t.Fatalf("no busylamp part: %s", got)
	}
	for _, w := range []string{"2 agents, 1000 devices", "p50 1.15× (MISSED)", "p99 2.46× (MISSED)", "p999 3.10× (MISSED)"} {
		if !strings.Contains(ctl, w) {
			t.Errorf("control part %q lacks %q", ctl, w)
		}
	}
	for _, w := range []string{"p50 1.03× (met)", "p99 0.72× (met)", "p999 0.60× (met)"} {
		if !strings.Contains(bl, w) {
			t.Errorf("busylamp part %q lacks %q", bl, w)
		}
	}
}
