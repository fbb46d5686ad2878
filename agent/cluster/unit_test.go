package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
)

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{JID: "pbx1@example.com/busylamp", EID: testEID(1), Version: "1.2.3"},
		{JID: "example.com", EID: devstate.EID{1, 2, 3, 4, 5, 6}},
		{JID: "ästerisk@exämple.org/ñ", EID: testEID(9), Version: "v2.0.0-rc1 (devel)"},
		{JID: strings.Repeat("a", 400) + "@x/y", EID: testEID(3), Version: strings.Repeat("9", 64)},
	} {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal %+v: %v", m, err)
		}
		if len(b) > 512 {
			t.Errorf("%d bytes", len(b))
		}
		var got Meta
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("unmarshal %+v: %v", m, err)
		}
		if got != m {
			t.Errorf("round trip: got %+v, want %+v", got, m)
		}
	}
}

func TestMetaExactBytes(t *testing.T) {
	b, err := Meta{JID: "a@b/c", EID: devstate.EID{2, 0, 0, 0, 0, 1}, Version: "1.0"}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 2, 0, 0, 0, 0, 1, 5, 'a', '@', 'b', '/', 'c', 3, '1', '.', '0'}
	if !bytes.Equal(b, want) {
		t.Errorf("got % x, want % x", b, want)
	}
}

func TestMetaMarshalRejects(t *testing.T) {
	for name, m := range map[string]Meta{
		"no EID":          {JID: "a@b/c"},
		"no JID":          {EID: testEID(1)},
		"space in JID":    {JID: "a b@c/d", EID: testEID(1)},
		"control in JID":  {JID: "a\n@c/d", EID: testEID(1)},
		"bad UTF-8 JID":   {JID: "a\xff@c/d", EID: testEID(1)},
		"too big":         {JID: strings.Repeat("a", 510) + "@c", EID: testEID(1)},
		"long version":    {JID: "a@b", EID: testEID(1), Version: strings.Repeat("1", 65)},
		"control version": {JID: "a@b", EID: testEID(1), Version: "1\x00"},
	} {
		if _, err := m.MarshalBinary(); err == nil {
			t.Errorf("%s: marshal accepted %+v", name, m)
		}
	}
}

func TestMetaUnmarshalRejects(t *testing.T) {
	good, _ := Meta{JID: "a@b/c", EID: testEID(1), Version: "1.0"}.MarshalBinary()
	huge := binary.AppendUvarint([]byte{1, 2, 0, 0, 0, 0, 1}, 1<<62)
	for name, b := range map[string][]byte{
		"nil":            nil,
		"version 0":      append([]byte{0}, good[1:]...),
		"short EID":      {1, 2, 0, 0},
		"no JID length":  good[:7],
		"JID cut":        good[:10],
		"no version":     good[:13],
		"trailing":       append(append([]byte{}, good...), 0),
		"huge length":    huge,
		"bad varint":     append(append([]byte{}, good[:7]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"zero EID":       append([]byte{1, 0, 0, 0, 0, 0, 0}, good[7:]...),
		"over 512":       append(append([]byte{}, good...), make([]byte, 600)...),
		"text":           []byte(`{"jid":"a@b/c","eid":"02:00:00:00:00:01"}`),
		"empty JID":      {1, 2, 0, 0, 0, 0, 1, 0, 0},
		"control in JID": {1, 2, 0, 0, 0, 0, 1, 2, 'a', 0x07, 0},
	} {
		var m Meta
		if err := m.UnmarshalBinary(b); err == nil {
			t.Errorf("%s: accepted % x as %+v", name, b, m)
		}
		if !m.IsZero() {
			t.Errorf("%s: rejected meta left %+v", name, m)
		}
	}
}

// A newer member appends fields; this version reads what it knows.
func TestMetaNewerVersionAppends(t *testing.T) {
	good, _ := Meta{JID: "a@b/c", EID: testEID(1), Version: "1.0"}.MarshalBinary()
	b := append([]byte{2}, good[1:]...)
	b = append(b, 0x03, 'x', 'y', 'z')
	var m Meta
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if m.JID != "a@b/c" || m.Version != "1.0" {
		t.Errorf("got %+v", m)
	}
}

// Random bytes never panic, and what is accepted is valid.
func TestMetaGarbage(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		if r.IntN(2) == 0 && len(b) > 0 {
			b[0] = 1
		}
		var m Meta
		if err := m.UnmarshalBinary(b); err == nil {
			if err := m.validate(); err != nil {
				t.Fatalf("accepted invalid % x: %v", b, err)
			}
		}
	}
}

func FuzzMeta(f *testing.F) {
	good, _ := Meta{JID: "a@b/c", EID: testEID(1), Version: "1.0"}.MarshalBinary()
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Meta
		if m.UnmarshalBinary(b) != nil {
			return
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		var again Meta
		if err := again.UnmarshalBinary(out); err != nil || again != m {
			t.Fatalf("re-decode: %+v, %v", again, err)
		}
	})
}

func TestConfigRejects(t *testing.T) {
	base := func() Config {
		return Config{Bind: "127.0.0.1:0", JID: "a@b/c", EID: testEID(1), Profile: ProfileLocal}
	}
	for name, mod := range map[string]func(*Config){
		"no secret on a public bind":   func(c *Config) { c.Bind = "0.0.0.0:7946" },
		"no secret on a LAN address":   func(c *Config) { c.Bind = "10.0.0.1:7946" },
		"no secret, public advertise":  func(c *Config) { c.Advertise = "10.0.0.1:7946" },
		"key of 10 bytes":              func(c *Config) { c.SecretKey = make([]byte, 10) },
		"key of 33 bytes":              func(c *Config) { c.SecretKey = make([]byte, 33) },
		"bind without port":            func(c *Config) { c.Bind = "127.0.0.1" },
		"bind host name":               func(c *Config) { c.Bind = "localhost:7946" },
		"bind empty":                   func(c *Config) { c.Bind = "" },
		"bad port":                     func(c *Config) { c.Bind = "127.0.0.1:70000" },
		"advertise host name":          func(c *Config) { c.Advertise = "pbx1:7946" },
		"advertise port 0":             func(c *Config) { c.Advertise = "10.0.0.1:0" },
		"profile":                      func(c *Config) { c.Profile = "fast" },
		"no JID":                       func(c *Config) { c.JID = "" },
		"no EID":                       func(c *Config) { c.EID = devstate.EID{} },
		"name with a space":            func(c *Config) { c.Name = "pbx 1" },
		"JID too long for memberlist":  func(c *Config) { c.JID = strings.Repeat("a", 505) + "@b"; c.Name = "n" },
		"JID too long for member name": func(c *Config) { c.JID = strings.Repeat("a", 300) + "@b" },
	} {
		cfg := base()
		mod(&cfg)
		cfg.Logger = discard
		c, err := Start(cfg, nil)
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: Start accepted %+v", name, cfg)
		}
	}
}

func TestConfigAcceptsKeySizes(t *testing.T) {
	for _, n := range []int{16, 24, 32} {
		c, err := Start(Config{Bind: "0.0.0.0:0", Advertise: "127.0.0.1:7946", JID: "a@b/c", EID: testEID(1),
			Profile: ProfileLocal, SecretKey: make([]byte, n), Logger: discard}, nil)
		if err != nil {
			t.Fatalf("key of %d bytes: %v", n, err)
		}
		if got := c.Addr(); got != "127.0.0.1:7946" {
			t.Errorf("advertised %s", got)
		}
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

func TestCoalesce(t *testing.T) {
	ev := func(k EventKind, v string) Event {
		return Event{Kind: k, Member: Member{Name: "m", Meta: Meta{Version: v}}}
	}
	for name, tc := range map[string]struct{ in, want []Event }{
		"join":                 {[]Event{ev(EventJoin, "1")}, []Event{ev(EventJoin, "1")}},
		"join update":          {[]Event{ev(EventJoin, "1"), ev(EventUpdate, "2")}, []Event{ev(EventJoin, "2")}},
		"update update":        {[]Event{ev(EventUpdate, "1"), ev(EventUpdate, "2")}, []Event{ev(EventUpdate, "2")}},
		"join dead":            {[]Event{ev(EventJoin, "1"), ev(EventDead, "1")}, []Event{ev(EventDead, "1")}},
		"dead join":            {[]Event{ev(EventDead, "1"), ev(EventJoin, "2")}, []Event{ev(EventDead, "1"), ev(EventJoin, "2")}},
		"dead join update":     {[]Event{ev(EventDead, "1"), ev(EventJoin, "2"), ev(EventUpdate, "3")}, []Event{ev(EventDead, "1"), ev(EventJoin, "3")}},
		"dead join leave":      {[]Event{ev(EventDead, "1"), ev(EventJoin, "2"), ev(EventLeave, "2")}, []Event{ev(EventLeave, "2")}},
		"leave dead":           {[]Event{ev(EventLeave, "1"), ev(EventDead, "1")}, []Event{ev(EventDead, "1")}},
		"update leave join":    {[]Event{ev(EventUpdate, "1"), ev(EventLeave, "1"), ev(EventJoin, "2")}, []Event{ev(EventLeave, "1"), ev(EventJoin, "2")}},
		"many flaps stay at 2": {[]Event{ev(EventJoin, "1"), ev(EventDead, "1"), ev(EventJoin, "2"), ev(EventDead, "2"), ev(EventJoin, "3"), ev(EventDead, "3"), ev(EventJoin, "4")}, []Event{ev(EventDead, "3"), ev(EventJoin, "4")}},
	} {
		q := newQueue()
		for _, e := range tc.in {
			q.push(e)
		}
		var got []Event
		for {
			e, ok := q.pop()
			if !ok {
				break
			}
			got = append(got, e)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: got %v, want %v", name, got, tc.want)
				break
			}
		}
	}
}

// Members leave the queue in the order of their first pending event, each
// with all its pending events; an event pushed later waits its turn.
func TestQueueOrder(t *testing.T) {
	q := newQueue()
	for _, e := range []Event{
		{Kind: EventJoin, Member: Member{Name: "b"}},
		{Kind: EventJoin, Member: Member{Name: "a"}},
		{Kind: EventDead, Member: Member{Name: "b"}},
		{Kind: EventJoin, Member: Member{Name: "b"}},
		{Kind: EventJoin, Member: Member{Name: "c"}},
	} {
		q.push(e)
	}
	if q.len() != 4 {
		t.Errorf("len %d, want 4", q.len())
	}
	var got []string
	for {
		e, ok := q.pop()
		if !ok {
			break
		}
		got = append(got, e.Member.Name+":"+e.Kind.String())
		if e.Member.Name == "a" {
			q.push(Event{Kind: EventLeave, Member: Member{Name: "b"}})
		}
	}
	want := "b:dead b:join a:join c:join b:leave"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestParseLogLine(t *testing.T) {
	for in, want := range map[string]struct {
		level slog.Level
		msg   string
	}{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1\n":  {slog.LevelDebug, "Stream connection from=127.0.0.1:1"},
		"[INFO] memberlist: Suspect x has failed, no acks received": {slog.LevelDebug, "Suspect x has failed, no acks received"},
		"[WARN] memberlist: Refuting a suspect message (from: y)\n": {slog.LevelWarn, "Refuting a suspect message (from: y)"},
		"[ERR] memberlist: Failed to decrypt\n":                     {slog.LevelError, "Failed to decrypt"},
		"[ERROR] memberlist: failed to receive: x\n":                {slog.LevelError, "failed to receive: x"},
		"Err: Could not set the deadline: x\n":                      {slog.LevelInfo, "Err: Could not set the deadline: x"},
		"[":                                                         {slog.LevelInfo, "["},
	} {
		level, msg := parseLogLine([]byte(in))
		if level != want.level || msg != want.msg {
			t.Errorf("%q: got %v %q, want %v %q", in, level, msg, want.level, want.msg)
		}
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"1 error occurred:\n\t* failed to join a: refused\n\n":                     "failed to join a: refused",
		"2 errors occurred:\n\t* failed to join a: x\n\t* failed to join b: y\n\n": "failed to join a: x; failed to join b: y",
		"plain": "plain",
	} {
		if got := oneLine(errors.New(in)); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestIntentRoundTrip(t *testing.T) {
	for _, in := range []intent{
		{leave: true, seq: 1, name: "pbx1@example.com/busylamp"},
		{leave: false, seq: 1<<64 - 1, name: "x"},
		{leave: true, seq: 0, name: strings.Repeat("n", 255)},
	} {
		b := in.marshal()
		if len(b) > maxIntentSize {
			t.Errorf("%+v: %d bytes, over %d", in, len(b), maxIntentSize)
		}
		got, err := parseIntent(b)
		if err != nil || got != in {
			t.Errorf("round trip %+v: got %+v, %v", in, got, err)
		}
	}
	if b := (intent{leave: true, seq: 300, name: "a@b"}).marshal(); !bytes.Equal(b, []byte{1, 0xac, 0x02, 3, 'a', '@', 'b'}) {
		t.Errorf("got % x", b)
	}
}

func TestIntentRejects(t *testing.T) {
	good := intent{leave: true, seq: 7, name: "a@b/c"}.marshal()
	for name, b := range map[string][]byte{
		"empty":         nil,
		"unknown type":  append([]byte{9}, good[1:]...),
		"no number":     {msgLeave},
		"bad varint":    {msgLeave, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"no name":       {msgLeave, 7},
		"empty name":    {msgLeave, 7, 0},
		"name cut":      good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), 'x'),
		"long name":     intent{leave: true, seq: 7, name: strings.Repeat("n", 256)}.marshal(),
		"oversized":     append(append([]byte{}, good...), make([]byte, maxIntentSize)...),
		"space in name": intent{leave: true, seq: 7, name: "a b"}.marshal(),
		"control":       intent{leave: true, seq: 7, name: "a\x00b"}.marshal(),
	} {
		if in, err := parseIntent(b); err == nil {
			t.Errorf("%s: accepted % x as %+v", name, b, in)
		}
	}
}

// A refutation wins a tie; a newer number wins either way; an older loses.
func TestIntentNewer(t *testing.T) {
	leave := intentRecord{seq: 5, leave: true}
	stay := intentRecord{seq: 5}
	for _, tc := range []struct {
		r    intentRecord
		in   intent
		want bool
	}{
		{leave, intent{leave: false, seq: 5}, true},
		{leave, intent{leave: true, seq: 5}, false},
		{stay, intent{leave: true, seq: 5}, false},
		{stay, intent{leave: false, seq: 5}, false},
		{stay, intent{leave: true, seq: 6}, true},
		{leave, intent{leave: false, seq: 4}, false},
	} {
		if got := tc.r.newer(tc.in); got != tc.want {
			t.Errorf("%+v newer(%+v) = %v, want %v", tc.r, tc.in, got, tc.want)
		}
	}
}

func FuzzIntent(f *testing.F) {
	f.Add(intent{leave: true, seq: 7, name: "a@b/c"}.marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := parseIntent(b)
		if err != nil {
			return
		}
		if again, err := parseIntent(in.marshal()); err != nil || again != in {
			t.Fatalf("re-parse of %+v: %+v, %v", in, again, err)
		}
	})
}
