package devstate

import (
	"fmt"
	"math/rand"
	"runtime"
	"slices"
	"testing"
)

const (
	benchDevices = 100000
	benchServers = 16
)

func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("PJSIP/%07d", (i*7919)%n) // not in sorted order
	}
	return names
}

func benchEIDs(n int) []EID {
	eids := make([]EID, n)
	for i := range eids {
		eids[i] = EID{0x02, 0, 0, 0, byte(i >> 8), byte(i)}
	}
	return eids
}

// fullTable holds devices × servers entries.
func fullTable(tb testing.TB, names []string, eids []EID) *Table {
	tab := NewTable(len(names) + 16) // room for the List benchmarks' extra device
	for i, name := range names {
		for j, eid := range eids {
			if _, _, err := tab.Set(name, eid, States[(i+j)%numStates], true, testTime); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return tab
}

type benchOp struct {
	dev   int32
	eid   uint8
	state State
}

func benchOps(devices, servers int) []benchOp {
	rng := rand.New(rand.NewSource(1))
	ops := make([]benchOp, 1<<16)
	for i := range ops {
		ops[i] = benchOp{int32(rng.Intn(devices)), uint8(rng.Intn(servers)), States[rng.Intn(numStates)]}
	}
	return ops
}

// BenchmarkTableSet sets states of existing entries of random devices and
// servers in a full table (100,000 devices × 16 servers).
func BenchmarkTableSet(b *testing.B) {
	names, eids := benchNames(benchDevices), benchEIDs(benchServers)
	tab := fullTable(b, names, eids)
	ops := benchOps(benchDevices, benchServers)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op := ops[i&(len(ops)-1)]
		tab.Set(names[op.dev], eids[op.eid], op.state, true, testTime)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}

// BenchmarkMapSetBaseline is the floor to compare BenchmarkTableSet with:
// the same random keys into a plain map[string]State of 100,000 devices.
func BenchmarkMapSetBaseline(b *testing.B) {
	names := benchNames(benchDevices)
	m := make(map[string]State, benchDevices)
	for _, name := range names {
		m[name] = NotInUse
	}
	ops := benchOps(benchDevices, benchServers)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op := ops[i&(len(ops)-1)]
		m[names[op.dev]] = op.state
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")
}

// BenchmarkTableSetNew adds new devices (one server each) until the table
// holds 100,000, then starts again with an empty table.
func BenchmarkTableSetNew(b *testing.B) {
	names := benchNames(benchDevices)
	tab := NewTable(benchDevices)
	eid := EID{2, 0, 0, 0, 0, 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % benchDevices
		if k == 0 && i > 0 {
			b.StopTimer()
			tab = NewTable(benchDevices)
			b.StartTimer()
		}
		if _, _, err := tab.Set(names[k], eid, InUse, true, testTime); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapSetNewBaseline: the same new keys into a plain map.
func BenchmarkMapSetNewBaseline(b *testing.B) {
	names := benchNames(benchDevices)
	m := make(map[string]State)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % benchDevices
		if k == 0 && i > 0 {
			b.StopTimer()
			m = make(map[string]State)
			b.StartTimer()
		}
		m[names[k]] = InUse
	}
}

// BenchmarkList lists 100,000 devices: with no device come or gone since
// the last List (unchanged), after one new device (new1: the index is
// repaired by a merge), and, as the baseline, sorting every name anew
// (sortAll: what List would cost without the index).
func BenchmarkList(b *testing.B) {
	names := benchNames(benchDevices)
	tab := fullTable(b, names, benchEIDs(1))
	tab.List()
	b.Run("unchanged", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if len(tab.List()) != benchDevices {
				b.Fatal("short list")
			}
		}
	})
	b.Run("new1", func(b *testing.B) {
		// One device comes and another (a random one, so that the index
		// must be filtered) goes; then List repairs the index.
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			name := names[i%len(names)]
			if _, _, err := tab.Set("PJSIP/x", EID{1}, InUse, true, testTime); err != nil {
				b.Fatal(err)
			}
			if _, _, gone := tab.Remove(name, EID{2}); !gone {
				b.Fatal("not gone")
			}
			b.StartTimer()
			if len(tab.List()) != benchDevices {
				b.Fatal("wrong length")
			}
			b.StopTimer()
			tab.Set(name, EID{2}, InUse, true, testTime)
			tab.Remove("PJSIP/x", EID{1})
			tab.List()
			b.StartTimer()
		}
	})
	b.Run("sortAll", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			out := make([]DeviceState, 0, len(tab.index))
			for name, es := range tab.index {
				out = append(out, DeviceState{name, es[0].state})
			}
			slices.SortFunc(out, func(a, b DeviceState) int {
				if a.Device < b.Device {
					return -1
				}
				if a.Device > b.Device {
					return 1
				}
				return 0
			})
		}
	})
}

// BenchmarkRemoveServer drops one of 16 servers from 100,000 devices
// (each device keeps 15 entries, so nothing goes).
func BenchmarkRemoveServer(b *testing.B) {
	names, eids := benchNames(benchDevices), benchEIDs(benchServers)
	tab := fullTable(b, names, eids)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		eid := eids[i%benchServers]
		tab.RemoveServer(eid)
		b.StopTimer()
		for j, name := range names {
			tab.Set(name, eid, States[j%numStates], true, testTime)
		}
		b.StartTimer()
	}
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkTableMemory fills 100,000 devices × 16 servers and reports the
// live heap the table holds, in total and per entry.
func BenchmarkTableMemory(b *testing.B) {
	names, eids := benchNames(benchDevices), benchEIDs(benchServers)
	var total uint64
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		tab := fullTable(b, names, eids)
		tab.List()
		total = heapInUse() - before
		runtime.KeepAlive(tab)
	}
	b.ReportMetric(float64(total)/(1<<20), "MiB")
	b.ReportMetric(float64(total)/(benchDevices*benchServers), "B/entry")
}

// BenchmarkMapMemoryBaseline: the obvious layout, a map per device of
// server → {state, cachable, time}, filled the same way.
func BenchmarkMapMemoryBaseline(b *testing.B) {
	names, eids := benchNames(benchDevices), benchEIDs(benchServers)
	type val struct {
		s        State
		cachable bool
		updated  int64
	}
	var total uint64
	for i := 0; i < b.N; i++ {
		before := heapInUse()
		m := make(map[string]map[EID]val)
		for _, name := range names {
			name = string([]byte(name)) // own the name, as Table does
			per := make(map[EID]val)
			for _, eid := range eids {
				per[eid] = val{InUse, true, 1}
			}
			m[name] = per
		}
		total = heapInUse() - before
		runtime.KeepAlive(m)
	}
	b.ReportMetric(float64(total)/(1<<20), "MiB")
	b.ReportMetric(float64(total)/(benchDevices*benchServers), "B/entry")
}

// TestTableMemoryBudget holds the table to its memory target: 100,000
// devices × 16 servers in well under 200 MB (here: under 100 MiB).
func TestTableMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 1.6 million entries")
	}
	names, eids := benchNames(benchDevices), benchEIDs(benchServers)
	before := heapInUse()
	tab := fullTable(t, names, eids)
	tab.List()
	used := heapInUse() - before
	runtime.KeepAlive(tab)
	t.Logf("100,000 × 16: %.1f MiB, %.1f B/entry", float64(used)/(1<<20), float64(used)/(benchDevices*benchServers))
	if used > 100<<20 {
		t.Fatalf("table of 100,000 × 16 holds %d bytes, want under 100 MiB", used)
	}
}
