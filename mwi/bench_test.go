package mwi

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/busylamp/busylamp/devstate"
)

const (
	benchMailboxes = 100000
	benchServers   = 16
)

func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%07d@default", (i*7919)%n) // not in sorted order
	}
	return names
}

func benchEIDs(n int) []devstate.EID {
	out := make([]devstate.EID, n)
	for i := range out {
		out[i] = devstate.EID{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
	}
	return out
}

func fullTable(tb testing.TB, merge Merge, names []string, servers []devstate.EID) *Table {
	tab := NewTable(merge, len(names)+16) // room for the List benchmarks' extra mailbox
	for i, name := range names {
		for j, s := range servers {
			if _, _, err := tab.Set(name, s, Counts{i % 5, j}, t0.Add(time.Duration(j)*time.Second)); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return tab
}

type benchOp struct {
	box    int32
	server uint8
	counts Counts
}

func benchOps(boxes, servers int) []benchOp {
	rng := rand.New(rand.NewSource(1))
	ops := make([]benchOp, 1<<16)
	for i := range ops {
		ops[i] = benchOp{int32(rng.Intn(boxes)), uint8(rng.Intn(servers)), Counts{rng.Intn(10), rng.Intn(10)}}
	}
	return ops
}

// BenchmarkTableSet updates existing entries of random mailboxes and
// servers in a table of 100,000 mailboxes × 16 servers, with the time
// moving forward (so under Latest the entry moves to the newest place).
func BenchmarkTableSet(b *testing.B) {
	names, servers := benchNames(benchMailboxes), benchEIDs(benchServers)
	ops := benchOps(benchMailboxes, benchServers)
	for _, merge := range []Merge{Latest, Sum} {
		b.Run(merge.String(), func(b *testing.B) {
			tab := fullTable(b, merge, names, servers)
			now := t0.Add(time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				op := ops[i&(len(ops)-1)]
				tab.Set(names[op.box], servers[op.server], op.counts, now.Add(time.Duration(i)))
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
		})
	}
}

// BenchmarkMapSetBaseline: the same keys into a plain map[string]Counts.
func BenchmarkMapSetBaseline(b *testing.B) {
	names := benchNames(benchMailboxes)
	m := make(map[string]Counts, benchMailboxes)
	for _, name := range names {
		m[name] = Counts{}
	}
	ops := benchOps(benchMailboxes, benchServers)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op := ops[i&(len(ops)-1)]
		m[names[op.box]] = op.counts
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}

// BenchmarkTableSetNew adds new mailboxes (one server each) until the table
// holds 100,000, then starts again with an empty table.
func BenchmarkTableSetNew(b *testing.B) {
	names := benchNames(benchMailboxes)
	tab := NewTable(Latest, benchMailboxes)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % benchMailboxes
		if k == 0 && i > 0 {
			b.StopTimer()
			tab = NewTable(Latest, benchMailboxes)
			b.StartTimer()
		}
		if _, _, err := tab.Set(names[k], devstate.EID{2}, Counts{1, 0}, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList lists 100,000 mailboxes: unchanged since the last List,
// and after one mailbox came (which sorts them all again).
func BenchmarkList(b *testing.B) {
	tab := fullTable(b, Latest, benchNames(benchMailboxes), benchEIDs(1))
	tab.List()
	b.Run("unchanged", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tab.List()
		}
	})
	b.Run("new1", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if _, _, err := tab.Set("x@default", devstate.EID{1}, Counts{1, 0}, t0); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if len(tab.List()) != benchMailboxes+1 {
				b.Fatal("wrong length")
			}
			b.StopTimer()
			tab.Remove("x@default", devstate.EID{1})
			tab.List()
			b.StartTimer()
		}
	})
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTableMemory fills 100,000 mailboxes × 16 servers (far more
// servers per mailbox than usual) and reports the live heap.
func BenchmarkTableMemory(b *testing.B) {
	names, servers := benchNames(benchMailboxes), benchEIDs(benchServers)
	var total uint64
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		tab := fullTable(b, Latest, names, servers)
		tab.List()
		total = heapInUse() - before
		runtime.KeepAlive(tab)
	}
	b.ReportMetric(float64(total)/(1<<20), "MiB")
	b.ReportMetric(float64(total)/(benchMailboxes*benchServers), "B/entry")
}
