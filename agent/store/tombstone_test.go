package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func deleted(s *Store) []string { return s.DeletedMailboxes() }

// A deleted mailbox leaves a tombstone that survives a reopen, until the
// mailbox is set again.
func TestTombstone(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	put(t, s, func() error { return s.PutMailbox("1000@default", 3, 1) })
	put(t, s, func() error { return s.PutMailbox("1001@default", 1, 0) })
	put(t, s, func() error { return s.DeleteMailbox("1000@default") })
	if got := deleted(s); !reflect.DeepEqual(got, []string{"1000@default"}) {
		t.Fatalf("tombstones %q", got)
	}
	s.Close()

	s = open(t, dir)
	if got := deleted(s); !reflect.DeepEqual(got, []string{"1000@default"}) {
		t.Fatalf("after reopen: tombstones %q", got)
	}
	if got := s.Mailboxes(); !reflect.DeepEqual(got, []Mailbox{{"1001@default", 1, 0}}) {
		t.Fatalf("after reopen: mailboxes %+v", got)
	}
	if st := s.Stats(); st.Tombstones != 1 || st.Mailboxes != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Set again: the tombstone goes, in memory and on disk.
	put(t, s, func() error { return s.PutMailbox("1000@default", 0, 2) })
	if got := deleted(s); len(got) != 0 {
		t.Fatalf("after a put: tombstones %q", got)
	}
	s.Close()

	s = open(t, dir)
	defer s.Close()
	if got := deleted(s); len(got) != 0 {
		t.Fatalf("after a put and reopen: tombstones %q", got)
	}
	want := []Mailbox{{"1000@default", 0, 2}, {"1001@default", 1, 0}}
	if got := s.Mailboxes(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a put and reopen: mailboxes %+v", got)
	}
}

// Compaction keeps tombstones (oldest first) and not those a put cleared.
func TestTombstoneCompaction(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	for i := range 5 {
		put(t, s, func() error { return s.PutMailbox(fmt.Sprintf("%d@c", i), i+1, 0) })
	}
	for _, i := range []int{3, 0, 4, 1} {
		put(t, s, func() error { return s.DeleteMailbox(fmt.Sprintf("%d@c", i)) })
	}
	put(t, s, func() error { return s.PutMailbox("4@c", 9, 9) }) // set again
	put(t, s, func() error { return s.PutDevice("d", 2, true) })
	want := []string{"3@c", "0@c", "1@c"}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	// Written while nothing else is: only the live set and the tombstones.
	if st := s.Stats(); st.Records != 1+2+3 || st.Compactions != 1 {
		t.Fatalf("after compaction: %+v", st)
	}
	put(t, s, func() error { return s.DeleteMailbox("2@c") }) // after the snapshot
	want = append(want, "2@c")
	s.Close()

	s = open(t, dir)
	defer s.Close()
	if got := deleted(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after compaction and reopen: tombstones %q, want %q", got, want)
	}
	if got := s.Mailboxes(); !reflect.DeepEqual(got, []Mailbox{{"4@c", 9, 9}}) {
		t.Fatalf("after compaction and reopen: mailboxes %+v", got)
	}
	// The threshold counts tombstones as live: a log of tombstones alone
	// is not compacted again and again.
	if s.shouldCompact() {
		t.Fatal("a compacted log wants compacting")
	}
}

// At most MaxTombstones are remembered: the oldest go first, the same
// ones after a reopen and after a compaction.
func TestTombstoneBound(t *testing.T) {
	dir := t.TempDir()
	openMax := func() *Store {
		cfg := DefaultConfig()
		cfg.Dir, cfg.Log, cfg.MaxTombstones = dir, quiet(), 3
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s := openMax()
	for i := range 6 {
		put(t, s, func() error { return s.PutMailbox(fmt.Sprintf("%d@b", i), 1, 0) })
		put(t, s, func() error { return s.DeleteMailbox(fmt.Sprintf("%d@b", i)) })
	}
	want := []string{"3@b", "4@b", "5@b"}
	if got := deleted(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("tombstones %q, want %q", got, want)
	}
	s.Close()
	s = openMax()
	if got := deleted(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopen: tombstones %q, want %q", got, want)
	}
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 3 {
		t.Fatalf("after compaction: %d records, want 3", st.Records)
	}
	s.Close()
	s = openMax()
	defer s.Close()
	if got := deleted(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("after compaction and reopen: tombstones %q, want %q", got, want)
	}
	if DefaultConfig().MaxTombstones != DefaultMaxTombstones {
		t.Fatal("no default bound")
	}
}

// oldRecord is a record as the code before tombstones wrote it, encoded
// here on its own so that a change of the writer cannot hide a change of
// the format.
func oldRecord(op byte, name string, value ...byte) []byte {
	p := []byte{op}
	p = binary.AppendUvarint(p, uint64(len(name)))
	p = append(p, name...)
	p = append(p, value...)
	h := make([]byte, 8, 8+len(p))
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(p)))
	binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(p, crc32.MakeTable(crc32.Castagnoli)))
	return append(h, p...)
}

// A store written before tombstones loads as it did (its deletes, which
// that code wrote only for what it held, become tombstones), and takes
// new records after it.
func TestOldFormatLoads(t *testing.T) {
	dir := t.TempDir()
	data := []byte("BLWAL\x00\x01\n")
	data = append(data, oldRecord(opDevice, "PJSIP/100", 2, 1)...)
	data = append(data, oldRecord(opMailbox, "1000@default", 3, 1)...)
	data = append(data, oldRecord(opMailbox, "1001@default", 1, 0)...)
	data = append(data, oldRecord(opDeleteMailbox, "1001@default")...)
	data = append(data, oldRecord(opDevice, "Custom:x", 1, 0)...)
	if err := os.WriteFile(filepath.Join(dir, LogName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, dir)
	want := snapshot{
		Devices:   []Device{{"Custom:x", 1, false}, {"PJSIP/100", 2, true}},
		Mailboxes: []Mailbox{{"1000@default", 3, 1}},
	}
	if got := snap(s); !reflect.DeepEqual(got, want) {
		t.Fatalf("old store: %+v, want %+v", got, want)
	}
	if st := s.Stats(); st.Records != 5 || st.SetAside != "" || st.Bytes != int64(len(data)) {
		t.Fatalf("old store: stats %+v", st)
	}
	if got := deleted(s); !reflect.DeepEqual(got, []string{"1001@default"}) {
		t.Fatalf("old store: tombstones %q", got)
	}
	put(t, s, func() error { return s.PutMailbox("1001@default", 5, 5) })
	s.Close()
	s = open(t, dir)
	defer s.Close()
	want.Mailboxes = append(want.Mailboxes, Mailbox{"1001@default", 5, 5})
	if got := snap(s); !reflect.DeepEqual(got, want) || len(deleted(s)) != 0 {
		t.Fatalf("old store after a put: %+v, tombstones %q", got, deleted(s))
	}

	// A store without a delete has no tombstones.
	dir = t.TempDir()
	data = append([]byte("BLWAL\x00\x01\n"), oldRecord(opMailbox, "1000@default", 3, 1)...)
	os.WriteFile(filepath.Join(dir, LogName), data, 0o600)
	s2 := open(t, dir)
	defer s2.Close()
	if got := s2.Mailboxes(); len(got) != 1 || len(deleted(s2)) != 0 {
		t.Fatalf("old store without deletes: %+v, tombstones %q", got, deleted(s2))
	}
}

// A delete torn at the end of the log (a crash while writing it) is cut
// off as any record is: the mailbox is held, no tombstone; a damaged
// delete in the middle sets the log aside.
func TestTornTombstone(t *testing.T) {
	base := t.TempDir()
	s := open(t, base)
	put(t, s, func() error { return s.PutMailbox("m", 4, 5) })
	before := s.Stats().Bytes
	put(t, s, func() error { return s.DeleteMailbox("m") })
	after := s.Stats().Bytes
	s.Close()
	full, err := os.ReadFile(filepath.Join(base, LogName))
	if err != nil {
		t.Fatal(err)
	}
	for cut := before; cut < after; cut++ {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, LogName), full[:cut], 0o600)
		s := open(t, dir)
		if got := s.Mailboxes(); !reflect.DeepEqual(got, []Mailbox{{"m", 4, 5}}) || len(deleted(s)) != 0 || s.Stats().SetAside != "" {
			t.Fatalf("cut at %d: %+v, tombstones %q, %+v", cut, got, deleted(s), s.Stats())
		}
		s.Close()
	}

	dir := t.TempDir()
	damaged := append([]byte(nil), full...)
	damaged[before+9] ^= 0xff // the delete's op
	damaged = append(damaged, oldRecord(opDevice, "after", 1, 1)...)
	os.WriteFile(filepath.Join(dir, LogName), damaged, 0o600)
	s = open(t, dir)
	defer s.Close()
	if st := s.Stats(); st.SetAside == "" || st.Mailboxes != 0 || st.Tombstones != 0 {
		t.Fatalf("damaged delete: %+v", st)
	}
}
