package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, dir string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = dir, quiet()
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func put(t *testing.T, s *Store, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}

type snapshot struct {
	Devices   []Device
	Mailboxes []Mailbox
}

func snap(s *Store) snapshot { return snapshot{s.Devices(), s.Mailboxes()} }

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	put(t, s, func() error { return s.PutDevice("PJSIP/100", 2, true) })
	put(t, s, func() error { return s.PutDevice("PJSIP/100", 6, true) }) // overwritten
	put(t, s, func() error { return s.PutDevice("Custom:x", 1, false) })
	put(t, s, func() error { return s.PutMailbox("1000@default", 3, 1) })
	put(t, s, func() error { return s.PutMailbox("1001@default", 1, 0) })
	put(t, s, func() error { return s.DeleteMailbox("1001@default") })
	put(t, s, func() error { return s.PutMailbox("1000@default", 2, 7) })
	want := snapshot{
		Devices:   []Device{{"Custom:x", 1, false}, {"PJSIP/100", 6, true}},
		Mailboxes: []Mailbox{{"1000@default", 2, 7}},
	}
	if got := snap(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("before close: %+v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDevice("late", 1, true); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	s = open(t, dir)
	defer s.Close()
	if got := snap(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened: %+v, want %+v", got, want)
	}
	if st := s.Stats(); st.Records != 7 || st.SetAside != "" {
		t.Fatalf("stats %+v", st)
	}
}

// A write that is not the same value again is written; the same value is not.
func TestUnchangedNotWritten(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	for range 3 {
		put(t, s, func() error { return s.PutDevice("d", 2, true) })
		put(t, s, func() error { return s.PutMailbox("m", 1, 1) })
	}
	// A delete of what the store does not hold leaves a tombstone (the
	// core held it, restored from the cluster); once.
	for range 3 {
		put(t, s, func() error { return s.DeleteMailbox("never") })
	}
	if st := s.Stats(); st.Records != 3 || st.Tombstones != 1 {
		t.Fatalf("records %d tombstones %d, want 3 and 1", st.Records, st.Tombstones)
	}
}

// A crash between a write and its sync (power loss) can leave the last
// record cut anywhere, or zeros where it should be: every such log opens
// with everything before that record, and takes new records after it.
func TestTornTail(t *testing.T) {
	base := t.TempDir()
	s := open(t, base)
	put(t, s, func() error { return s.PutDevice("a", 2, true) })
	put(t, s, func() error { return s.PutMailbox("m", 4, 5) })
	before := s.Stats().Bytes
	put(t, s, func() error { return s.PutDevice("last-device", 6, true) })
	after := s.Stats().Bytes
	s.Close()
	full, err := os.ReadFile(filepath.Join(base, LogName))
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot{Devices: []Device{{"a", 2, true}}, Mailboxes: []Mailbox{{"m", 4, 5}}}
	check := func(name string, data []byte) {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, LogName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s := open(t, dir)
		defer s.Close()
		if got := snap(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: %+v, want %+v", name, got, want)
		}
		if st := s.Stats(); st.SetAside != "" || st.Bytes != before {
			t.Fatalf("%s: stats %+v, want %d bytes and nothing set aside", name, st, before)
		}
		put(t, s, func() error { return s.PutDevice("b", 1, true) })
		s.Close()
		s = open(t, dir)
		if got := s.Devices(); len(got) != 2 || got[1] != (Device{"b", 1, true}) {
			t.Fatalf("%s: after a new record: %+v", name, got)
		}
	}
	for cut := before; cut < after; cut++ {
		check(fmt.Sprintf("cut at %d", cut), full[:cut])
	}
	zeroed := append(append([]byte(nil), full[:before]...), make([]byte, after-before+100)...)
	check("zeros", zeroed)
	half := append(append([]byte(nil), full[:before+9]...), make([]byte, after-before-9)...)
	check("half zeros", half)
}

// A log damaged in its middle is set aside, and the store starts empty.
func TestCorruptSetAside(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
		reason string
	}{
		{"flipped byte", func(b []byte) []byte { b[len(magic)+10] ^= 0xff; return b }, "bad checksum"},
		{"bad header", func(b []byte) []byte { copy(b, "GARBAGE!"); return b }, "bad header"},
		{"huge length", func(b []byte) []byte { b[len(magic)+3] = 0x7f; return b }, "bad record length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			put(t, s, func() error { return s.PutDevice("a", 2, true) })
			put(t, s, func() error { return s.PutDevice("b", 2, true) })
			s.Close()
			path := filepath.Join(dir, LogName)
			data, _ := os.ReadFile(path)
			damaged := tc.damage(append([]byte(nil), data...))
			os.WriteFile(path, damaged, 0o600)

			s = open(t, dir)
			defer s.Close()
			st := s.Stats()
			if len(s.Devices()) != 0 || st.Devices != 0 {
				t.Fatalf("devices after damage: %+v", s.Devices())
			}
			if !strings.Contains(st.SetAsideReason, tc.reason) || !strings.HasPrefix(st.SetAside, path+".corrupt-") {
				t.Fatalf("stats %+v", st)
			}
			kept, err := os.ReadFile(st.SetAside)
			if err != nil || string(kept) != string(damaged) {
				t.Fatalf("set-aside file: %v", err)
			}
			put(t, s, func() error { return s.PutDevice("c", 1, true) })
			s.Close()
			s = open(t, dir)
			if got := s.Devices(); len(got) != 1 || got[0].Name != "c" || s.Stats().SetAside != "" {
				t.Fatalf("after restart: %+v %+v", got, s.Stats())
			}
		})
	}
}

func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log, cfg.SyncInterval = dir, quiet(), 5*time.Millisecond
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const live = 100
	for i := range 10 * minCompactRecords {
		put(t, s, func() error { return s.PutDevice(fmt.Sprintf("PJSIP/%d", i%live), uint8(1+i%7), true) })
		if i%live == 0 {
			put(t, s, func() error { return s.PutMailbox(fmt.Sprintf("%d@default", i%7), i, 1) })
		}
	}
	// The syncer compacts until the log is below the threshold again.
	deadline := time.Now().Add(10 * time.Second)
	for st := s.Stats(); st.Compactions == 0 || st.Records >= minCompactRecords; st = s.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("not compacted: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	put(t, s, func() error { return s.PutDevice("after", 3, false) })
	want := snap(s)
	s.Close()
	// Below the threshold of minCompactRecords records (of 20 bytes here)
	// where 10× as many were written.
	info, _ := os.Stat(filepath.Join(dir, LogName))
	if info.Size() > minCompactRecords*20+int64(len(magic)) {
		t.Fatalf("log is %d bytes for %d live entries", info.Size(), live+7)
	}
	s = open(t, dir)
	defer s.Close()
	if got := snap(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after compaction and reopen: %d devices %d mailboxes, want %d %d", len(got.Devices), len(got.Mailboxes), len(want.Devices), len(want.Mailboxes))
	}
	if _, err := os.Stat(filepath.Join(dir, tmpName)); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
}

// Compact with concurrent writers loses none of them.
func TestCompactConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		i := 0
		for {
			select {
			case <-stop:
				done <- i
				return
			default:
			}
			if err := s.PutDevice(fmt.Sprintf("d%d", i%500), uint8(i%8), true); err != nil {
				t.Error(err)
			}
			i++
		}
	}()
	for range 5 {
		if err := s.Compact(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	<-done
	want := snap(s)
	s.Close()
	s = open(t, dir)
	defer s.Close()
	if got := snap(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("lost writes across compaction: %d devices, want %d", len(got.Devices), len(want.Devices))
	}
}

func TestSyncsInBackground(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	put(t, s, func() error { return s.PutDevice("d", 2, true) })
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Syncs == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not synced")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDirNotUsable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = filepath.Join(file, "sub"), quiet() // a file where a directory should be
	if _, err := Open(cfg); err == nil {
		t.Fatal("opened under a file")
	}
	if os.Geteuid() == 0 {
		return // root writes anywhere
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	cfg.Dir = dir
	if _, err := Open(cfg); err == nil {
		t.Fatal("opened in a read-only directory")
	}
}

func TestDirHeldByAnother(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = dir, quiet()
	if _, err := Open(cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
}

// BenchmarkPutDevice is the cost a Setvar pays for the store: one record
// handed to the OS.
func BenchmarkPutDevice(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = b.TempDir(), quiet()
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := s.PutDevice("PJSIP/1000", uint8(1+i%2), true); err != nil {
			b.Fatal(err)
		}
	}
}

// fill100k writes a 100,000-device own set (and 10,000 mailboxes) into dir.
func fill100k(b *testing.B, dir string) {
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = dir, quiet()
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range 100_000 {
		if err := s.PutDevice(fmt.Sprintf("PJSIP/%06d", i), uint8(1+i%7), true); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			if err := s.PutMailbox(fmt.Sprintf("%06d@default", i), i%100, 1); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkOpen100k is the start of a node with 100,000 own devices:
// reading the log back.
func BenchmarkOpen100k(b *testing.B) {
	dir := b.TempDir()
	fill100k(b, dir)
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = dir, quiet()
	for b.Loop() {
		s, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		st := s.Stats()
		s.Close()
		b.ReportMetric(float64(st.Bytes), "bytes")
	}
}

// BenchmarkCompact100k rewrites a 110,000-entry live set.
func BenchmarkCompact100k(b *testing.B) {
	dir := b.TempDir()
	fill100k(b, dir)
	cfg := DefaultConfig()
	cfg.Dir, cfg.Log = dir, quiet()
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if err := s.Compact(); err != nil {
			b.Fatal(err)
		}
	}
}
