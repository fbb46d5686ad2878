package web

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/busylamp/busylamp/agent/core"
)

//go:embed static
var static embed.FS

// maxNameParam bounds the name asked of /api/device; the core's own bound
// on names is far below it.
const maxNameParam = 1024

func (h *Hub) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.serveStatic("static/index.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /app.js", h.serveStatic("static/app.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /app.css", h.serveStatic("static/app.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /events", h.serveEvents)
	mux.HandleFunc("GET /api/state", h.serveState)
	mux.HandleFunc("GET /api/device", h.serveDevice)
	return mux
}

// ServeHTTP serves the page, its event stream and the JSON snapshot:
// GET (and HEAD) only, behind Config.Auth when it is set.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	if h.cfg.Auth != nil {
		user, secret, ok := r.BasicAuth()
		if !ok || !h.cfg.Auth(user, secret) {
			h.log.Debug("web: authentication failed", "remote", r.RemoteAddr, "user", user)
			w.Header().Set("WWW-Authenticate", `Basic realm="busylamp", charset="UTF-8"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
	}
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

func (h *Hub) serveStatic(name, ctype string) http.HandlerFunc {
	body, err := static.ReadFile(name)
	if err != nil {
		panic(fmt.Sprintf("web: embedded %s: %v", name, err)) // a build mistake
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body)
	}
}

// The wire shapes. The stream sends devices as [name, state] and
// mailboxes as [name, new, old]: a snapshot of many thousand devices stays
// small.
type (
	snapshotMsg struct {
		Devices   [][2]string  `json:"devices"`
		Mailboxes []mailboxRow `json:"mailboxes"`
		Buddies   []Buddy      `json:"buddies"`
		Members   []Member     `json:"members"`
	}
	// A nil list is left out; an empty one says "none now".
	changeMsg struct {
		Devices   [][2]string  `json:"devices,omitzero"`
		Mailboxes []mailboxRow `json:"mailboxes,omitzero"`
		Buddies   []Buddy      `json:"buddies,omitzero"`
		Members   []Member     `json:"members,omitzero"`
	}
	mailboxRow [3]any // name, new, old

	deviceJSON struct {
		Device  string       `json:"device"`
		State   string       `json:"state"`
		Servers []serverJSON `json:"servers"`
	}
	serverJSON struct {
		EID      string    `json:"eid"`
		JID      string    `json:"jid"`
		State    string    `json:"state"`
		Cachable bool      `json:"cachable"`
		Updated  time.Time `json:"updated"`
	}
	mailboxJSON struct {
		Mailbox string `json:"mailbox"`
		New     int    `json:"new"`
		Old     int    `json:"old"`
		Servers []struct {
			EID     string    `json:"eid"`
			JID     string    `json:"jid"`
			New     int       `json:"new"`
			Old     int       `json:"old"`
			Updated time.Time `json:"updated"`
		} `json:"servers"`
	}
	stateJSON struct {
		Devices   []deviceJSON  `json:"devices"`
		Mailboxes []mailboxJSON `json:"mailboxes"`
		Buddies   []Buddy       `json:"buddies"`
		Members   []Member      `json:"members"`
	}
)

func toDeviceJSON(d core.Device) deviceJSON {
	v := deviceJSON{Device: d.Device, State: d.State.String(), Servers: make([]serverJSON, 0, len(d.Servers))}
	for _, s := range d.Servers {
		v.Servers = append(v.Servers, serverJSON{EID: s.EID.String(), JID: s.JID, State: s.State.String(), Cachable: s.Cachable, Updated: s.Updated.UTC()})
	}
	return v
}

func toMailboxJSON(m core.Mailbox) mailboxJSON {
	v := mailboxJSON{Mailbox: m.Mailbox, New: m.Counts.New, Old: m.Counts.Old}
	v.Servers = make([]struct {
		EID     string    `json:"eid"`
		JID     string    `json:"jid"`
		New     int       `json:"new"`
		Old     int       `json:"old"`
		Updated time.Time `json:"updated"`
	}, len(m.Servers))
	for i, s := range m.Servers {
		v.Servers[i].EID, v.Servers[i].JID = s.EID.String(), s.JID
		v.Servers[i].New, v.Servers[i].Old, v.Servers[i].Updated = s.Counts.New, s.Counts.Old, s.Updated.UTC()
	}
	return v
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// serveState is the JSON snapshot, with whatever per-server detail
// Source.Devices gives.
func (h *Hub) serveState(w http.ResponseWriter, r *http.Request) {
	devs, boxes := h.src.Devices(), h.src.Mailboxes()
	v := stateJSON{
		Devices:   make([]deviceJSON, 0, len(devs)),
		Mailboxes: make([]mailboxJSON, 0, len(boxes)),
		Buddies:   nonNil(h.src.Buddies()),
		Members:   nonNil(h.src.Members()),
	}
	for _, d := range devs {
		v.Devices = append(v.Devices, toDeviceJSON(d))
	}
	for _, m := range boxes {
		v.Mailboxes = append(v.Mailboxes, toMailboxJSON(m))
	}
	writeJSON(w, v)
}

// serveDevice is one device with its per-server detail: /api/device?name=.
func (h *Hub) serveDevice(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" || len(name) > maxNameParam {
		http.Error(w, "want ?name=DEVICE", http.StatusBadRequest)
		return
	}
	d, ok := h.src.Device(name)
	if !ok {
		http.Error(w, "no such device", http.StatusNotFound)
		return
	}
	writeJSON(w, toDeviceJSON(d))
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func (h *Hub) snapshot() snapshotMsg {
	devs, boxes := h.src.Devices(), h.src.Mailboxes()
	m := snapshotMsg{
		Devices:   make([][2]string, len(devs)),
		Mailboxes: make([]mailboxRow, len(boxes)),
		Buddies:   nonNil(h.src.Buddies()),
		Members:   nonNil(h.src.Members()),
	}
	for i, d := range devs {
		m.Devices[i] = [2]string{d.Device, d.State.String()}
	}
	for i, b := range boxes {
		m.Mailboxes[i] = mailboxRow{b.Mailbox, b.Counts.New, b.Counts.Old}
	}
	return m
}

func (h *Hub) change(b batch) changeMsg {
	var m changeMsg
	for name, s := range b.devices {
		m.Devices = append(m.Devices, [2]string{name, s.String()})
	}
	for name, c := range b.mailboxes {
		m.Mailboxes = append(m.Mailboxes, mailboxRow{name, c.New, c.Old})
	}
	// A stable order, for humans and tests reading the stream.
	slices.SortFunc(m.Devices, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	slices.SortFunc(m.Mailboxes, func(a, b mailboxRow) int { return strings.Compare(a[0].(string), b[0].(string)) })
	if b.buddies {
		m.Buddies = nonNil(h.src.Buddies())
	}
	if b.members {
		m.Members = nonNil(h.src.Members())
	}
	return m
}

// serveEvents is the event stream: "snapshot" first (and again whenever
// this page fell too far behind), then "change" events holding the latest
// of what changed since the last one, and a comment every Heartbeat. It
// ends with the request, with Close, or when a write times out.
func (h *Hub) serveEvents(w http.ResponseWriter, r *http.Request) {
	c, status := h.join()
	if c == nil {
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("too many event streams (at most %d) or shutting down", h.cfg.MaxClients), status)
		return
	}
	defer h.leave(c)
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	s := &stream{w: w, rc: rc, timeout: h.cfg.WriteTimeout}
	if err := s.send("snapshot", h.snapshot(), "retry: 2000\n"); err != nil {
		return
	}
	tick := time.NewTicker(h.cfg.Heartbeat)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-tick.C:
			err = s.comment("heartbeat")
		case <-c.wake:
			switch b := c.take(); {
			case b.resync:
				err = s.send("snapshot", h.snapshot(), "")
			case b.empty(): // taken by the previous wake-up
			default:
				err = s.send("change", h.change(b), "")
			}
		}
		if err != nil {
			h.log.Debug("web: event stream dropped", "remote", r.RemoteAddr, "err", err)
			return
		}
	}
}

// stream writes SSE frames, each under a write deadline, and flushes.
type stream struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
}

func (s *stream) deadline() error {
	err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if errors.Is(err, http.ErrNotSupported) {
		return nil
	}
	return err
}

func (s *stream) send(event string, v any, prefix string) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", event, err)
	}
	s.buf = append(s.buf[:0], prefix...)
	s.buf = append(s.buf, "event: "...)
	s.buf = append(s.buf, event...)
	s.buf = append(s.buf, "\ndata: "...)
	s.buf = append(s.buf, data...) // JSON has no raw newline
	s.buf = append(s.buf, "\n\n"...)
	return s.write()
}

func (s *stream) comment(text string) error {
	s.buf = append(s.buf[:0], ": "...)
	s.buf = append(s.buf, strings.ReplaceAll(text, "\n", " ")...)
	s.buf = append(s.buf, "\n\n"...)
	return s.write()
}

func (s *stream) write() error {
	if err := s.deadline(); err != nil {
		return err
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil {
		return err
	}
	// A snapshot of many devices should not pin its buffer for the
	// stream's life.
	if cap(s.buf) > 1<<20 {
		s.buf = nil
	}
	return nil
}
