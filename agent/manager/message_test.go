package manager

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReadMessage(t *testing.T) {
	type result struct {
		m   Message
		err string // "" none, else a substring
	}
	cases := []struct {
		name string
		in   string
		want []result
	}{
		{"crlf", "Action: Login\r\nUsername: a\r\n\r\n",
			[]result{{m: Message{{"Action", "Login"}, {"Username", "a"}}}, {err: "EOF"}}},
		{"bare lf and blanks", "\n\r\naction:ping \n  ActionID :\t x y \n\n",
			[]result{{m: Message{{"action", "ping"}, {"ActionID", "x y"}}}, {err: "EOF"}}},
		{"colon in value", "Variable: DEVICE_STATE(a:b)\r\n\r\n",
			[]result{{m: Message{{"Variable", "DEVICE_STATE(a:b)"}}}, {err: "EOF"}}},
		{"empty value", "Action:\r\n\r\n",
			[]result{{m: Message{{"Action", ""}}}, {err: "EOF"}}},
		{"no colon", "Action: Ping\r\nbad\r\n\r\nAction: Ping\r\n\r\n",
			[]result{{m: Message{{"Action", "Ping"}}, err: "line 2 has no ':'"}, {m: Message{{"Action", "Ping"}}}}},
		{"nul", "A: b\x00c\r\n\r\n", []result{{err: "control character"}}},
		{"cut mid message", "Action: Ping\r\n", []result{{err: "unexpected EOF"}}},
		{"cut mid line", "Action: Pi", []result{{err: "unexpected EOF"}}},
		{"line too long", "Action: Ping\r\nX: " + strings.Repeat("x", 100) + "\r\nY: z\r\n\r\n",
			[]result{{m: Message{{"Action", "Ping"}, {"Y", "z"}}, err: "line too long"}}},
		{"too many headers", strings.Repeat("A: b\r\n", 5) + "\r\n",
			[]result{{m: Message{{"A", "b"}, {"A", "b"}, {"A", "b"}, {"A", "b"}}, err: "too many lines"}}},
		{"too large", "A: " + strings.Repeat("b", 70) + "\r\nC: " + strings.Repeat("d", 70) + "\r\nE: " + strings.Repeat("f", 70) + "\r\n",
			[]result{{m: Message{{"A", strings.Repeat("b", 70)}, {"C", strings.Repeat("d", 70)}}, err: "too large"}}},
		{"too large in one line", "A: " + strings.Repeat("b", 1000) + "\r\n\r\n",
			[]result{{err: "too large"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newReader(strings.NewReader(c.in), 80, 200, 4)
			for i, w := range c.want {
				m, err := r.readMessage()
				if w.err == "" && err != nil || w.err != "" && (err == nil || !strings.Contains(err.Error(), w.err)) {
					t.Fatalf("message %d: err = %v, want %q", i, err, w.err)
				}
				if w.m != nil && !reflect.DeepEqual(m, w.m) {
					t.Fatalf("message %d: got %q want %q", i, m, w.m)
				}
			}
		})
	}
}

func TestMessageGet(t *testing.T) {
	m := Message{{"Response", "Success"}, {"Output", "a"}, {"output", "b"}, {"Action", ""}, {"ACTION", "Ping"}}
	if m.Get("RESPONSE") != "Success" || m.Get("missing") != "" {
		t.Fatal("Get")
	}
	if _, ok := m.Lookup("Action"); !ok {
		t.Fatal("Lookup")
	}
	if v := m.Values("Output"); !reflect.DeepEqual(v, []string{"a", "b"}) {
		t.Fatalf("Values = %q", v)
	}
	if m.action() != "Ping" {
		t.Fatal("action() must skip the empty Action, as Asterisk does")
	}
}

// FuzzReadMessage feeds the parser arbitrary bytes: it must not panic, must
// keep its bounds, and what it accepts must render and read back the same.
func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{
		"Action: Login\r\nUsername: admin\r\nSecret: x\r\n\r\n",
		"action: ping\nactionid: 1\n\n",
		"\r\n\r\nAction: Ping\r\n\r\n",
		"Action: Ping\r\nno colon\r\n\r\n",
		"A: b\rc\r\n\r\n",
		": v\r\n\r\n",
		"Action: Command\r\nCommand: show buddies\r\n\r\nAction: Logoff\r\n\r\n",
		"X: " + strings.Repeat("y", 300) + "\r\n\r\n",
		strings.Repeat("H: v\r\n", 40) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxLine, maxMessage, maxHeaders = 64, 512, 16
		r := newReader(bytes.NewReader(data), maxLine, maxMessage, maxHeaders)
		for range 1000 {
			m, err := r.readMessage()
			var perr *parseError
			switch {
			case err == nil, errors.As(err, &perr):
			case errors.Is(err, errMessageTooLarge):
				checkMessage(t, m, maxLine, maxHeaders)
				return
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				return
			default:
				t.Fatalf("unexpected error %v", err)
			}
			checkMessage(t, m, maxLine, maxHeaders)
			if err != nil {
				continue
			}
			// Round trip: render and read back.
			back, err := newReader(bytes.NewReader(appendMessage(nil, m...)), 1<<20, 1<<20, 1<<20).readMessage()
			if len(m) == 0 {
				continue
			}
			if err != nil || !reflect.DeepEqual(back, m) {
				t.Fatalf("round trip: %q -> %q (%v)", m, back, err)
			}
		}
	})
}

func checkMessage(t *testing.T, m Message, maxLine, maxHeaders int) {
	t.Helper()
	if len(m) > maxHeaders {
		t.Fatalf("%d headers > %d", len(m), maxHeaders)
	}
	for _, h := range m {
		if h.Key == "" || strings.ContainsAny(h.Key, ":\r\n\x00") || strings.ContainsAny(h.Value, "\r\n\x00") {
			t.Fatalf("bad header %q", h)
		}
		if len(h.Key)+len(h.Value) > maxLine {
			t.Fatalf("header longer than a line: %q", h)
		}
	}
}

func TestParseHeaderKeepsOutputIndentation(t *testing.T) {
	h, bad := parseHeader([]byte("Output: \t\tResource: r1  "))
	if bad != "" || h.Value != "\t\tResource: r1  " {
		t.Fatalf("got %q (%s)", h.Value, bad)
	}
	h, _ = parseHeader([]byte("ActionID:   42 "))
	if h.Value != "42" {
		t.Fatalf("got %q", h.Value)
	}
}
