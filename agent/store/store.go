// Package store keeps this node's own states on disk so that they survive
// a crash: the device states and mailbox counts the node's PBX set, as the
// core holds them as this node's own entries. It owns one directory
// ([agent] state_dir) and the files in it.
//
// # Why a log of our own and not bbolt
//
// The store is a write-ahead log: one small record (about 30 bytes: an op,
// the name, the value, a length and a CRC-32C) is appended with one
// write(2) per accepted change, before the AMI Success is sent, so a
// SIGKILL loses nothing that was acknowledged. A background syncer fsyncs
// the file at most every SyncInterval (100 ms) while something is unsynced,
// so a power loss loses at most that window and Setvar never waits for a
// disk flush. bbolt cannot offer that split: each Update rewrites at least
// a leaf page, the freelist and a meta page (kilobytes per Setvar) and
// fsyncs twice; its NoSync mode defers the fsyncs but then a power loss
// may leave meta pages pointing at pages that never reached the disk (a
// corrupt file, losing everything rather than the last 100 ms). Its
// batching (DB.Batch) makes every caller wait for the shared fsync. The
// log needs no dependency (stdlib only, nothing added to the binary) and
// its recovery is simple to reason about: records are checked one by one;
// an unfinished last record (a crash in the middle of a write, or the
// unsynced tail of a power loss) is cut off, anything else that does not
// check is corruption and the whole file is set aside.
//
// The log compacts: when it holds CompactRatio times more records than
// there are live entries (and at least minCompactRecords), the syncer
// writes the live set to a new file, fsyncs it, appends what was written
// meanwhile and renames it over the log. The snapshot is written outside
// the lock, so Setvars go on while it is written and synced. For a
// 100,000-device own set the live file is about 3 MB, loaded at start in
// tens of milliseconds, and held in memory as two maps (the store needs
// them to write a snapshot without asking anyone).
//
// # Deletes are kept too
//
// A deleted own mailbox leaves a tombstone: its delete record is kept
// through compaction until the mailbox is set again, so that at start the
// agent knows the PBX deleted it and does not take it back from the
// cluster (a PubSub item or a buddy that never heard the delete: the zero
// counts a delete publishes may not have left before a crash). The log
// format does not change: a tombstone is the delete record the store has
// always written, which a store without tombstones (written by earlier
// code) replays as before, and earlier code replays a compacted store's
// tombstones as deletes of what it does not hold. Tombstones are bounded
// (Config.MaxTombstones, DefaultMaxTombstones): past the bound the oldest
// is forgotten, and that mailbox is again restored from the cluster
// should an item still hold it.
package store

import (
	"bytes"
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File names inside the state directory.
const (
	LogName  = "own-states.wal"
	lockName = "own-states.lock"
	tmpName  = "own-states.wal.tmp"
)

// magic opens every log file: what it is and its format version.
var magic = []byte("BLWAL\x00\x01\n")

// Record ops.
const (
	opDevice        = 1
	opMailbox       = 2
	opDeleteMailbox = 3
)

const (
	recordHeader      = 8    // length (4 bytes, little endian) and CRC-32C (4)
	maxPayload        = 1024 // a name is at most 256 bytes (devstate.MaxNameLen); anything longer is damage
	maxName           = 512
	maxCount          = 1<<31 - 1
	minCompactRecords = 4096 // a small log is not worth rewriting
)

// DefaultMaxTombstones bounds the deleted own mailboxes remembered (about
// 30 bytes each on disk and twice that in memory).
const DefaultMaxTombstones = 10_000

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Config configures a store. Start from DefaultConfig.
type Config struct {
	Dir string
	// SyncInterval is how long a change may stay unsynced (a power loss
	// loses at most this much).
	SyncInterval time.Duration
	// CompactRatio: the log is rewritten when it holds this many times
	// more records than live entries.
	CompactRatio int
	// MaxTombstones bounds the deleted mailboxes remembered; past it the
	// oldest is forgotten.
	MaxTombstones int
	Log           *slog.Logger
}

// DefaultConfig syncs every 100 ms, compacts at 4× the live set and
// remembers DefaultMaxTombstones deleted mailboxes.
func DefaultConfig() Config {
	return Config{SyncInterval: 100 * time.Millisecond, CompactRatio: 4, MaxTombstones: DefaultMaxTombstones, Log: slog.Default()}
}

// Device is one own device state as stored (the state is devstate.State's
// number).
type Device struct {
	Name     string
	State    uint8
	Cachable bool
}

// Mailbox is one own mailbox's counts as stored.
type Mailbox struct {
	Name     string
	New, Old int
}

type devValue struct {
	state    uint8
	cachable bool
}

type boxValue struct{ new, old int }

// Stats describe the store for `show stats`.
type Stats struct {
	Path               string
	Devices, Mailboxes int
	Tombstones         int   // deleted mailboxes remembered
	Records            int   // records in the log, live or not
	Bytes              int64 // size of the log
	Syncs, Compactions uint64
	SetAside           string // the file set aside at open, if any
	SetAsideReason     string
	Err                string // the last write, sync or compaction error, if any
}

// Store is the open store. Its methods are safe for concurrent use.
type Store struct {
	cfg  Config
	log  *slog.Logger
	path string
	lock *os.File

	// fileMu serializes what replaces or fsyncs the file (the syncer,
	// Compact, Close); mu guards the rest and is all a write takes.
	fileMu    sync.Mutex
	mu        sync.Mutex
	f         *os.File
	size      int64 // bytes of f that hold whole records
	records   int
	devices   map[string]devValue
	mailboxes map[string]boxValue
	tombs     tombstones
	dirty     bool
	tail      *bytes.Buffer // records written while a snapshot is being written
	buf       []byte
	closed    bool
	stats     Stats

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("store closed")

// Open opens (or creates) the store in cfg.Dir and reads it back. A log
// that does not check is renamed to LogName.corrupt-<timestamp>, logged,
// shown in Stats, and the store starts empty; Open fails only when the
// directory cannot be used (not writable, held by another agent).
func Open(cfg Config) (*Store, error) {
	def := DefaultConfig()
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = def.SyncInterval
	}
	if cfg.CompactRatio < 2 {
		cfg.CompactRatio = def.CompactRatio
	}
	if cfg.Log == nil {
		cfg.Log = def.Log
	}
	if cfg.MaxTombstones <= 0 {
		cfg.MaxTombstones = def.MaxTombstones
	}
	if cfg.Dir == "" {
		return nil, errors.New("state store: no directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cfg.Dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state store: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state store: %s is in use by another busylamp agent: %w", cfg.Dir, err)
	}
	s := &Store{
		cfg:       cfg,
		log:       cfg.Log,
		path:      filepath.Join(cfg.Dir, LogName),
		lock:      lock,
		devices:   make(map[string]devValue),
		mailboxes: make(map[string]boxValue),
		tombs:     newTombstones(cfg.MaxTombstones),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.stats.Path = s.path
	if err := s.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state store: %w", err)
	}
	go s.syncLoop()
	return s, nil
}

// load reads the log back, cuts off an unfinished last record, sets a
// damaged log aside, and leaves s.f open for appending.
func (s *Store) load() error {
	os.Remove(filepath.Join(s.cfg.Dir, tmpName)) // a compaction that did not finish
	data, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = nil
	case err != nil:
		if aerr := s.setAside(fmt.Sprintf("unreadable: %v", err)); aerr != nil {
			return aerr
		}
		data = nil
	}
	good, reason := s.replay(data)
	if reason != "" {
		s.devices, s.mailboxes, s.records = make(map[string]devValue), make(map[string]boxValue), 0
		s.tombs = newTombstones(s.cfg.MaxTombstones)
		if err := s.setAside(reason); err != nil {
			return err
		}
		data, good = nil, 0
	}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	s.f = f
	if good < len(magic) { // new, or its header was cut short
		if err := f.Truncate(0); err != nil {
			f.Close()
			return err
		}
		if _, err := f.WriteAt(magic, 0); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		syncDir(s.cfg.Dir)
		good = len(magic)
	} else if good < len(data) {
		s.log.Warn("state store: dropped an unfinished record at the end (a crash while writing)",
			"path", s.path, "offset", good, "bytes", len(data)-good)
		if err := f.Truncate(int64(good)); err != nil {
			f.Close()
			return err
		}
	}
	// A write probe: a read-only file or directory fails here, at start.
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	s.size = int64(good)
	s.log.Info("state store opened", "path", s.path, "devices", len(s.devices),
		"mailboxes", len(s.mailboxes), "deleted_mailboxes", s.tombs.len(), "records", s.records, "bytes", s.size)
	return nil
}

// replay applies the records of data and returns how many bytes of it are
// good; a reason when data is damaged beyond an unfinished last record.
func (s *Store) replay(data []byte) (good int, reason string) {
	if len(data) == 0 {
		return 0, ""
	}
	if len(data) < len(magic) {
		if bytes.HasPrefix(magic, data) {
			return 0, "" // the header itself was being written
		}
		return 0, "not a busylamp state log (bad header)"
	}
	if !bytes.Equal(data[:len(magic)], magic) {
		return 0, "not a busylamp state log (bad header)"
	}
	off := len(magic)
	for off < len(data) {
		rest := data[off:]
		if len(rest) < recordHeader {
			return off, "" // unfinished header
		}
		n := int(binary.LittleEndian.Uint32(rest[0:4]))
		sum := binary.LittleEndian.Uint32(rest[4:8])
		if n == 0 || n > maxPayload {
			if allZero(rest) {
				return off, ""
			}
			return off, fmt.Sprintf("bad record length %d at offset %d", n, off)
		}
		if len(rest) < recordHeader+n {
			return off, "" // unfinished payload
		}
		payload := rest[recordHeader : recordHeader+n]
		if crc32.Checksum(payload, crcTable) != sum {
			// Damage with nothing after it is the unsynced end of the
			// log (a power loss); followed by records, it is corruption.
			if allZero(rest[recordHeader+n:]) {
				return off, ""
			}
			return off, fmt.Sprintf("bad checksum at offset %d", off)
		}
		if err := s.apply(payload); err != nil {
			return off, fmt.Sprintf("bad record at offset %d: %v", off, err)
		}
		s.records++
		off += recordHeader + n
	}
	return off, ""
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// apply decodes one payload into the maps.
func (s *Store) apply(p []byte) error {
	op := p[0]
	p = p[1:]
	nl, k := binary.Uvarint(p)
	if k <= 0 || nl == 0 || nl > maxName || int(nl) > len(p)-k {
		return errors.New("bad name length")
	}
	name := string(p[k : k+int(nl)])
	p = p[k+int(nl):]
	switch op {
	case opDevice:
		if len(p) != 2 || p[1] > 1 {
			return errors.New("bad device value")
		}
		s.devices[name] = devValue{state: p[0], cachable: p[1] == 1}
	case opMailbox:
		nw, k1 := binary.Uvarint(p)
		if k1 <= 0 {
			return errors.New("bad mailbox value")
		}
		old, k2 := binary.Uvarint(p[k1:])
		if k2 <= 0 || k1+k2 != len(p) || nw > maxCount || old > maxCount {
			return errors.New("bad mailbox value")
		}
		s.mailboxes[name] = boxValue{new: int(nw), old: int(old)}
		s.tombs.remove(name)
	case opDeleteMailbox:
		if len(p) != 0 {
			return errors.New("bad delete")
		}
		delete(s.mailboxes, name)
		s.tombs.add(name)
	default:
		return fmt.Errorf("unknown op %d", op)
	}
	return nil
}

// setAside renames the damaged log out of the way, so the agent starts
// empty rather than failing on it at every start.
func (s *Store) setAside(reason string) error {
	aside := fmt.Sprintf("%s.corrupt-%s", s.path, time.Now().UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(s.path, aside); err != nil {
		return fmt.Errorf("set aside the damaged %s (%s): %w", s.path, reason, err)
	}
	syncDir(s.cfg.Dir)
	s.log.Error("state store damaged: set aside, starting with no own states (the cluster's copy restores them)",
		"path", s.path, "reason", reason, "moved_to", aside)
	s.stats.SetAside, s.stats.SetAsideReason = aside, reason
	return nil
}

// Devices are the stored own device states, sorted by name.
func (s *Store) Devices() []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Device, 0, len(s.devices))
	for name, v := range s.devices {
		out = append(out, Device{Name: name, State: v.state, Cachable: v.cachable})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Mailboxes are the stored own mailbox counts, sorted by name.
func (s *Store) Mailboxes() []Mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mailbox, 0, len(s.mailboxes))
	for name, v := range s.mailboxes {
		out = append(out, Mailbox{Name: name, New: v.new, Old: v.old})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// DeletedMailboxes are the own mailboxes deleted and not set again since
// (their tombstones), oldest first.
func (s *Store) DeletedMailboxes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tombs.names()
}

// PutDevice stores the own state of device. When it returns nil the
// record has been handed to the OS.
func (s *Store) PutDevice(device string, state uint8, cachable bool) error {
	v := devValue{state: state, cachable: cachable}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.devices[device]; ok && old == v {
		return s.errIfClosed()
	}
	b := s.begin(opDevice, device)
	var c byte
	if cachable {
		c = 1
	}
	b = append(b, state, c)
	if err := s.appendLocked(b); err != nil {
		return fmt.Errorf("store device %s: %w", device, err)
	}
	if _, ok := s.devices[device]; !ok {
		device = strings.Clone(device) // not a slice of a larger message
	}
	s.devices[device] = v
	return nil
}

// PutMailbox stores the own counts of mailbox.
func (s *Store) PutMailbox(mailbox string, newMsgs, oldMsgs int) error {
	if newMsgs < 0 || oldMsgs < 0 || newMsgs > maxCount || oldMsgs > maxCount {
		return fmt.Errorf("store mailbox %s: counts out of range", mailbox)
	}
	v := boxValue{new: newMsgs, old: oldMsgs}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.mailboxes[mailbox]; ok && old == v {
		return s.errIfClosed()
	}
	b := s.begin(opMailbox, mailbox)
	b = binary.AppendUvarint(b, uint64(newMsgs))
	b = binary.AppendUvarint(b, uint64(oldMsgs))
	if err := s.appendLocked(b); err != nil {
		return fmt.Errorf("store mailbox %s: %w", mailbox, err)
	}
	if _, ok := s.mailboxes[mailbox]; !ok {
		mailbox = strings.Clone(mailbox)
	}
	s.mailboxes[mailbox] = v
	s.tombs.remove(mailbox)
	return nil
}

// DeleteMailbox drops the own counts of mailbox and leaves its tombstone.
// A mailbox the store does not hold gets one too (the core held it,
// restored from the cluster and not saved yet): what the AMI acknowledged
// as deleted must stay deleted. Deleting it again writes nothing.
func (s *Store) DeleteMailbox(mailbox string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.mailboxes[mailbox]; !ok && s.tombs.has(mailbox) {
		return s.errIfClosed()
	}
	if err := s.appendLocked(s.begin(opDeleteMailbox, mailbox)); err != nil {
		return fmt.Errorf("delete mailbox %s: %w", mailbox, err)
	}
	delete(s.mailboxes, mailbox)
	s.tombs.add(strings.Clone(mailbox))
	return nil
}

func (s *Store) errIfClosed() error {
	if s.closed {
		return ErrClosed
	}
	return nil
}

// begin starts a record in s.buf: room for the header, the op, the name.
func (s *Store) begin(op byte, name string) []byte {
	b := append(s.buf[:0], 0, 0, 0, 0, 0, 0, 0, 0) // the header, filled in by record
	b = append(b, op)
	b = binary.AppendUvarint(b, uint64(len(name)))
	return append(b, name...)
}

// appendLocked finishes the record b (its header) and writes it at the end
// of the log with one write(2).
func (s *Store) appendLocked(b []byte) error {
	s.buf = b[:0]
	if s.closed {
		return ErrClosed
	}
	payload := b[recordHeader:]
	if len(payload) > maxPayload {
		return errors.New("record too long")
	}
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, crcTable))
	if _, err := s.f.WriteAt(b, s.size); err != nil {
		// Never leave half a record in the middle of the log.
		s.f.Truncate(s.size)
		s.stats.Err = err.Error()
		return err
	}
	s.size += int64(len(b))
	s.records++
	s.dirty = true
	if s.tail != nil {
		s.tail.Write(b)
	}
	return nil
}

// syncLoop fsyncs the log while it is dirty and compacts it when it has
// grown past CompactRatio times the live set.
func (s *Store) syncLoop() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sync()
			if s.shouldCompact() {
				if err := s.compact(); err != nil {
					s.log.Error("state store: compaction failed; the log goes on growing", "path", s.path, "err", err)
					s.mu.Lock()
					s.stats.Err = err.Error()
					s.mu.Unlock()
				}
			}
		}
	}
}

// sync fsyncs the log if anything was written since the last sync.
func (s *Store) sync() {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.Lock()
	if !s.dirty || s.closed {
		s.mu.Unlock()
		return
	}
	s.dirty = false
	f := s.f
	s.mu.Unlock()
	if err := f.Sync(); err != nil {
		s.log.Error("state store: fsync failed", "path", s.path, "err", err)
		s.mu.Lock()
		s.dirty = true
		s.stats.Err = err.Error()
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	s.stats.Syncs++
	s.mu.Unlock()
}

func (s *Store) shouldCompact() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := len(s.devices) + len(s.mailboxes) + s.tombs.len()
	return !s.closed && s.records >= minCompactRecords && s.records > s.cfg.CompactRatio*live
}

// Compact rewrites the log as the live set now.
func (s *Store) Compact() error { return s.compact() }

// compact writes the live set to a new file outside the lock (the
// records written meanwhile are kept in s.tail), fsyncs it, then under
// the lock appends the tail and renames the new file over the log.
func (s *Store) compact() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	snap := bytes.NewBuffer(make([]byte, 0, 32*(len(s.devices)+len(s.mailboxes)+s.tombs.len())+len(magic)))
	snap.Write(magic)
	live := 0
	for name, v := range s.devices {
		var c byte
		if v.cachable {
			c = 1
		}
		snap.Write(record(s.begin(opDevice, name), v.state, c))
		live++
	}
	for name, v := range s.mailboxes {
		b := s.begin(opMailbox, name)
		b = binary.AppendUvarint(b, uint64(v.new))
		b = binary.AppendUvarint(b, uint64(v.old))
		snap.Write(record(b))
		live++
	}
	// Oldest first, so that a reopen past the bound forgets the same ones.
	for _, name := range s.tombs.names() {
		snap.Write(record(s.begin(opDeleteMailbox, name)))
		live++
	}
	s.buf = s.buf[:0]
	s.tail = new(bytes.Buffer)
	s.mu.Unlock()

	tmpPath := filepath.Join(s.cfg.Dir, tmpName)
	abort := func(err error) error {
		s.mu.Lock()
		s.tail = nil
		s.mu.Unlock()
		os.Remove(tmpPath)
		return err
	}
	tmp, err := os.OpenFile(tmpPath, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return abort(err)
	}
	if _, err := tmp.Write(snap.Bytes()); err != nil {
		tmp.Close()
		return abort(err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return abort(err)
	}

	s.mu.Lock()
	tail := s.tail.Bytes()
	s.tail = nil
	if s.closed {
		s.mu.Unlock()
		tmp.Close()
		os.Remove(tmpPath)
		return ErrClosed
	}
	if _, err := tmp.Write(tail); err != nil {
		s.mu.Unlock()
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	if err := os.Rename(tmpPath, s.path); err != nil {
		s.mu.Unlock()
		tmp.Close()
		os.Remove(tmpPath)
		return err
	}
	old := s.f
	before := s.records
	s.f = tmp
	s.size = int64(snap.Len() + len(tail))
	s.records = live + countRecords(tail)
	s.dirty = true // the tail is not synced yet
	s.stats.Compactions++
	s.mu.Unlock()
	old.Close()
	syncDir(s.cfg.Dir)
	s.log.Info("state store compacted", "path", s.path, "records_before", before, "records", live, "bytes", snap.Len()+len(tail))
	return nil
}

// record fills in the header of the record b with extra value bytes.
func record(b []byte, value ...byte) []byte {
	b = append(b, value...)
	payload := b[recordHeader:]
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, crcTable))
	return b
}

func countRecords(b []byte) int {
	n := 0
	for len(b) >= recordHeader {
		l := int(binary.LittleEndian.Uint32(b[0:4]))
		b = b[min(len(b), recordHeader+l):]
		n++
	}
	return n
}

// Stats describe the store now.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Devices, st.Mailboxes, st.Records, st.Bytes = len(s.devices), len(s.mailboxes), s.records, s.size
	st.Tombstones = s.tombs.len()
	return st
}

// Close stops the syncer, fsyncs what is unsynced and releases the
// directory. Later writes return ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
		s.sync()
		s.mu.Lock()
		s.closed = true
		s.closeErr = s.f.Close()
		s.mu.Unlock()
		s.lock.Close() // releases the flock
	})
	return s.closeErr
}

// syncDir makes a rename or a new file in dir durable.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	d.Sync()
	d.Close()
}

var _ io.Closer = (*Store)(nil)

// tombstones are the deleted own mailboxes, in the order they were
// deleted, at most max of them (the oldest goes first).
type tombstones struct {
	max   int
	order *list.List // of string, oldest at the front
	at    map[string]*list.Element
}

func newTombstones(max int) tombstones {
	return tombstones{max: max, order: list.New(), at: make(map[string]*list.Element)}
}

func (t *tombstones) len() int { return len(t.at) }

func (t *tombstones) has(name string) bool { _, ok := t.at[name]; return ok }

// add makes name the newest tombstone.
func (t *tombstones) add(name string) {
	if e, ok := t.at[name]; ok {
		t.order.MoveToBack(e)
		return
	}
	t.at[name] = t.order.PushBack(name)
	for len(t.at) > t.max {
		oldest := t.order.Front()
		delete(t.at, t.order.Remove(oldest).(string))
	}
}

func (t *tombstones) remove(name string) {
	if e, ok := t.at[name]; ok {
		t.order.Remove(e)
		delete(t.at, name)
	}
}

func (t *tombstones) names() []string {
	out := make([]string, 0, len(t.at))
	for e := t.order.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(string))
	}
	return out
}
