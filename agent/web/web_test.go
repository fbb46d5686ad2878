package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a Source held in memory; set and the Hub's change methods
// are called together by the tests, as the core does under its lock.
type fakeSource struct {
	mu        sync.Mutex
	devices   map[string]core.Device
	order     []string
	mailboxes []core.Mailbox
	buddies   []Buddy
	members   []Member
}

func newFakeSource(n int) *fakeSource {
	f := &fakeSource{devices: make(map[string]core.Device)}
	for i := range n {
		f.set(fmt.Sprintf("PJSIP/%05d", i), devstate.NotInUse)
	}
	f.mailboxes = []core.Mailbox{{Mailbox: "100@default", Counts: mwi.Counts{New: 2, Old: 5}}}
	f.buddies = []Buddy{{JID: "b@example.net", Online: true, Subscription: "both", Resources: []string{"asterisk"}}}
	f.members = []Member{{Name: "node-b", Addr: "127.0.0.1:7946", State: "alive", JID: "b@example.net"}}
	return f
}

var testEID = devstate.EID{2, 0, 0, 0, 0, 1}

func (f *fakeSource) set(name string, s devstate.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.devices[name]; !ok {
		f.order = append(f.order, name)
	}
	f.devices[name] = core.Device{Device: name, State: s, Servers: []core.DeviceServer{
		{EID: testEID, JID: "a@example.net/agent", State: s, Cachable: true, Updated: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}}
}

func (f *fakeSource) Devices() []core.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]core.Device, 0, len(f.order))
	for _, n := range f.order {
		out = append(out, f.devices[n])
	}
	return out
}

func (f *fakeSource) Device(name string) (core.Device, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[name]
	return d, ok
}

func (f *fakeSource) Mailboxes() []core.Mailbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]core.Mailbox(nil), f.mailboxes...)
}

func (f *fakeSource) Buddies() []Buddy {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Buddy(nil), f.buddies...)
}

func (f *fakeSource) Members() []Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Member(nil), f.members...)
}

// startHub serves a hub over src on 127.0.0.1:0; it is closed at cleanup.
func startHub(t *testing.T, src Source, cfg Config) (*Hub, *httptest.Server) {
	t.Helper()
	h := NewHub(src, cfg)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return h, srv
}

// sse is one frame of an event stream: an event, or a comment.
type sse struct {
	event, data, comment string
}

type sseReader struct {
	body io.ReadCloser
	r    *bufio.Reader
}

func openEvents(t *testing.T, ctx context.Context, url string) *sseReader {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET /events: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	s := &sseReader{body: resp.Body, r: bufio.NewReader(resp.Body)}
	t.Cleanup(func() { s.body.Close() })
	return s
}

// next reads one frame; retry: lines are skipped.
func (s *sseReader) next() (sse, error) {
	var f sse
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return f, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if f != (sse{}) {
				return f, nil
			}
		case strings.HasPrefix(line, ":"):
			f.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "event: "):
			f.event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			f.data = line[len("data: "):]
		}
	}
}

// nextEvent skips comments.
func (s *sseReader) nextEvent(t *testing.T) sse {
	t.Helper()
	for {
		f, err := s.next()
		if err != nil {
			t.Fatalf("read event: %v", err)
		}
		if f.event != "" {
			return f
		}
	}
}

func decode[T any](t *testing.T, data string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

func TestEventsSnapshotThenChanges(t *testing.T) {
	src := newFakeSource(3)
	h, srv := startHub(t, src, Config{})
	es := openEvents(t, t.Context(), srv.URL)

	f := es.nextEvent(t)
	if f.event != "snapshot" {
		t.Fatalf("first event %q, want snapshot", f.event)
	}
	snap := decode[snapshotMsg](t, f.data)
	if len(snap.Devices) != 3 || snap.Devices[0] != [2]string{"PJSIP/00000", "NOT_INUSE"} {
		t.Fatalf("snapshot devices %v", snap.Devices)
	}
	if len(snap.Mailboxes) != 1 || len(snap.Buddies) != 1 || len(snap.Members) != 1 {
		t.Fatalf("snapshot %+v", snap)
	}

	src.set("PJSIP/00001", devstate.Busy)
	h.DeviceChanged("PJSIP/00001", devstate.Busy)
	f = es.nextEvent(t)
	ch := decode[changeMsg](t, f.data)
	if f.event != "change" || len(ch.Devices) != 1 || ch.Devices[0] != [2]string{"PJSIP/00001", "BUSY"} {
		t.Fatalf("got %s %s, want the change of PJSIP/00001 to BUSY", f.event, f.data)
	}

	h.MailboxChanged("100@default", mwi.Counts{New: 7, Old: 1})
	f = es.nextEvent(t)
	if want := `{"mailboxes":[["100@default",7,1]]}`; f.data != want {
		t.Fatalf("got %s, want %s", f.data, want)
	}

	src.mu.Lock()
	src.members[0].State = "suspect"
	src.mu.Unlock()
	h.MembersChanged()
	f = es.nextEvent(t)
	ch = decode[changeMsg](t, f.data)
	if len(ch.Members) != 1 || ch.Members[0].State != "suspect" {
		t.Fatalf("got %s, want the members with node-b suspect", f.data)
	}
	h.BuddiesChanged()
	f = es.nextEvent(t)
	if ch = decode[changeMsg](t, f.data); len(ch.Buddies) != 1 {
		t.Fatalf("got %s, want the buddies", f.data)
	}
}

// A burst of changes to one device ends on its last state, however the
// writer's wake-ups fall.
func TestEventsLatestWins(t *testing.T) {
	src := newFakeSource(1)
	h, srv := startHub(t, src, Config{})
	es := openEvents(t, t.Context(), srv.URL)
	es.nextEvent(t) // snapshot
	const n = 1000
	for i := range n {
		h.DeviceChanged("PJSIP/00000", devstate.States[i%len(devstate.States)])
	}
	h.DeviceChanged("PJSIP/00000", devstate.OnHold)
	h.DeviceChanged("PJSIP/00001", devstate.Ringing) // a marker: after it, nothing is pending
	seen := 0
	last := map[string]string{}
	for last["PJSIP/00001"] != "RINGING" {
		f := es.nextEvent(t)
		for _, d := range decode[changeMsg](t, f.data).Devices {
			last[d[0]] = d[1]
			seen++
		}
	}
	if last["PJSIP/00000"] != "ONHOLD" {
		t.Fatalf("PJSIP/00000 ended %s, want ONHOLD", last["PJSIP/00000"])
	}
	t.Logf("%d changes arrived as %d device entries", n+2, seen)
}

// A page that does not read holds at most MaxPending changes per kind,
// the latest per device; past that it is owed a snapshot, not a queue.
func TestPendingIsBoundedPerPage(t *testing.T) {
	h := NewHub(newFakeSource(0), Config{MaxPending: 4})
	defer h.Close()
	c, status := h.join()
	if c == nil {
		t.Fatalf("join: %d", status)
	}
	defer h.leave(c)

	for i := range 1000 {
		h.DeviceChanged("PJSIP/1", devstate.States[i%len(devstate.States)])
	}
	h.DeviceChanged("PJSIP/1", devstate.Busy)
	h.MailboxChanged("1@default", mwi.Counts{New: 1})
	h.MailboxChanged("1@default", mwi.Counts{New: 3})
	b := c.take()
	if b.resync || len(b.devices) != 1 || b.devices["PJSIP/1"] != devstate.Busy || b.mailboxes["1@default"] != (mwi.Counts{New: 3}) {
		t.Fatalf("got %+v, want only the latest of each", b)
	}
	if b := c.take(); b.devices != nil || b.mailboxes != nil || b.resync {
		t.Fatalf("take after take: %+v, want nothing", b)
	}

	for i := range 100 {
		h.DeviceChanged(fmt.Sprintf("PJSIP/%d", i), devstate.InUse)
	}
	c.mu.Lock()
	held := len(c.devices)
	c.mu.Unlock()
	if held != 0 {
		t.Fatalf("holds %d devices past the bound, want none (a snapshot owed)", held)
	}
	if b := c.take(); !b.resync {
		t.Fatalf("got %+v, want a resync", b)
	}
}

// A page that fell behind is sent a snapshot that has every device's
// latest state.
func TestEventsResyncAfterOverflow(t *testing.T) {
	src := newFakeSource(10)
	h, srv := startHub(t, src, Config{MaxPending: 2})
	es := openEvents(t, t.Context(), srv.URL)
	es.nextEvent(t)
	for i := range 10 {
		src.set(fmt.Sprintf("PJSIP/%05d", i), devstate.InUse)
	}
	// The bound is TestPendingIsBoundedPerPage's; here the page is owed
	// a snapshot as the overflow leaves it.
	c := onlyClient(t, h)
	c.mu.Lock()
	c.overflowLocked()
	c.mu.Unlock()
	c.notify()
	for {
		f := es.nextEvent(t)
		if f.event != "snapshot" {
			continue // changes taken before the overflow
		}
		snap := decode[snapshotMsg](t, f.data)
		for _, d := range snap.Devices {
			if d[1] != "INUSE" {
				t.Fatalf("snapshot has %v, want every device INUSE", d)
			}
		}
		return
	}
}

func onlyClient(t *testing.T, h *Hub) *client {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) != 1 {
		t.Fatalf("%d clients, want 1", len(h.clients))
	}
	for c := range h.clients {
		return c
	}
	return nil
}

func TestEventsClientCap(t *testing.T) {
	h, srv := startHub(t, newFakeSource(1), Config{MaxClients: 2})
	for range 2 {
		openEvents(t, t.Context(), srv.URL).nextEvent(t)
	}
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "at most 2") {
		t.Fatalf("third stream: %s %q, want 503 naming the limit", resp.Status, body)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if n := h.Clients(); n != 2 {
		t.Fatalf("%d clients, want 2", n)
	}
}

func TestEventsHeartbeat(t *testing.T) {
	_, srv := startHub(t, newFakeSource(1), Config{Heartbeat: 10 * time.Millisecond})
	es := openEvents(t, t.Context(), srv.URL)
	for {
		f, err := es.next()
		if err != nil {
			t.Fatal(err)
		}
		if f.comment == "heartbeat" {
			return
		}
	}
}

// Close ends open streams (http.Server.Shutdown would otherwise wait for
// them) and refuses new ones.
func TestCloseEndsStreams(t *testing.T) {
	h, srv := startHub(t, newFakeSource(1), Config{})
	es := openEvents(t, t.Context(), srv.URL)
	es.nextEvent(t)
	h.Close()
	for {
		if _, err := es.next(); err != nil {
			break // the stream ended
		}
	}
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Close: %s, want 503", resp.Status)
	}
}

// A page that goes away frees its slot.
func TestEventsRequestEndFreesSlot(t *testing.T) {
	h, srv := startHub(t, newFakeSource(1), Config{MaxClients: 1})
	ctx, cancel := context.WithCancel(t.Context())
	es := openEvents(t, ctx, srv.URL)
	es.nextEvent(t)
	cancel()
	es.body.Close()
	h.wg.Wait() // the handler returned
	if n := h.Clients(); n != 0 {
		t.Fatalf("%d clients after the page left", n)
	}
	openEvents(t, t.Context(), srv.URL).nextEvent(t)
}

func get(t *testing.T, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestAuth(t *testing.T) {
	var gotUser, gotSecret string
	var mu sync.Mutex
	check := func(user, secret string) bool {
		mu.Lock()
		gotUser, gotSecret = user, secret
		mu.Unlock()
		return user == "admin" && secret == "s3cret"
	}
	_, srv := startHub(t, newFakeSource(1), Config{Auth: check})
	for _, path := range []string{"/", "/events", "/api/state", "/app.js"} {
		resp, _ := get(t, srv.URL+path)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
			t.Fatalf("%s without credentials: %s %q", path, resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/state", nil)
	req.SetBasicAuth("admin", "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %s", resp.Status)
	}
	req.SetBasicAuth("admin", "s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("right secret: %s", resp.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if gotUser != "admin" || gotSecret != "s3cret" {
		t.Fatalf("check saw %q %q", gotUser, gotSecret)
	}
}

func TestOpenWithoutAuth(t *testing.T) {
	_, srv := startHub(t, newFakeSource(1), Config{})
	if resp, _ := get(t, srv.URL+"/api/state"); resp.StatusCode != http.StatusOK {
		t.Fatalf("open page: %s", resp.Status)
	}
}

func TestReadOnly(t *testing.T) {
	_, srv := startHub(t, newFakeSource(1), Config{})
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, srv.URL+"/api/state", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("%s: %s, want 405", m, resp.Status)
		}
	}
}

func TestAPIStateAndDevice(t *testing.T) {
	src := newFakeSource(2)
	_, srv := startHub(t, src, Config{})
	resp, body := get(t, srv.URL+"/api/state")
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	st := decode[stateJSON](t, body)
	if len(st.Devices) != 2 || st.Devices[0].Servers[0].EID != "02:00:00:00:00:01" || st.Mailboxes[0].New != 2 {
		t.Fatalf("state %s", body)
	}

	_, body = get(t, srv.URL+"/api/device?name="+"PJSIP%2F00001")
	d := decode[deviceJSON](t, body)
	if d.Device != "PJSIP/00001" || d.State != "NOT_INUSE" || len(d.Servers) != 1 || d.Servers[0].JID != "a@example.net/agent" || !d.Servers[0].Updated.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Fatalf("device %s", body)
	}
	if resp, _ := get(t, srv.URL+"/api/device?name=nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown device: %s", resp.Status)
	}
	if resp, _ := get(t, srv.URL+"/api/device"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("no name: %s", resp.Status)
	}
}

// The page loads nothing from elsewhere: its scripts and styles are ours,
// and the CSP says so to the browser.
func TestPageSelfContained(t *testing.T) {
	_, srv := startHub(t, newFakeSource(1), Config{})
	resp, body := get(t, srv.URL+"/")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/ Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("CSP %q", resp.Header.Get("Content-Security-Policy"))
	}
	for _, bad := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(body, bad) {
			t.Fatalf("page refers to %q", bad)
		}
	}
	for path, ctype := range map[string]string{"/app.js": "text/javascript", "/app.css": "text/css"} {
		resp, body := get(t, srv.URL+path)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Fatalf("%s: %s %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if strings.Contains(body, "https://") || strings.Contains(body, "http://") {
			t.Fatalf("%s refers elsewhere", path)
		}
	}
	if resp, _ := get(t, srv.URL+"/nope"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/nope: %s", resp.Status)
	}
}

// A page that stops reading costs the agent nothing: the change methods
// return at once, what is held for it stays bounded, and once its socket
// is full the stream is dropped after WriteTimeout.
func TestSlowPageIsBoundedAndDropped(t *testing.T) {
	src := newFakeSource(20_000) // a snapshot of some 500 kB
	h, srv := startHub(t, src, Config{MaxPending: 64, WriteTimeout: 200 * time.Millisecond})
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // fill up soon
	}
	if _, err := fmt.Fprintf(conn, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The status line: the stream is open (joined); then read no more.
	status, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("status %q, %v", status, err)
	}
	ended := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(ended)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		select {
		case <-ended:
			t.Logf("the stream was dropped after %d changes", i)
			if n := h.Clients(); n != 0 {
				t.Fatalf("%d clients after the drop", n)
			}
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("a page that does not read was never dropped")
		}
		// Were it to wait on the page, this loop would stop here until go
		// test -timeout; wall time per call is the scheduler's to say.
		h.DeviceChanged(fmt.Sprintf("PJSIP/%05d", i%20_000), devstate.States[i%9])
		held := 0
		h.each(func(c *client) {
			c.mu.Lock()
			held = max(held, len(c.devices))
			c.mu.Unlock()
		})
		if held > 64 {
			t.Fatalf("%d devices pending for one page, bound 64", held)
		}
	}
}

// Every buddy gone is news too: the change carries an empty list.
func TestEventsEmptyListsAreSent(t *testing.T) {
	src := newFakeSource(1)
	h, srv := startHub(t, src, Config{})
	es := openEvents(t, t.Context(), srv.URL)
	es.nextEvent(t)
	src.mu.Lock()
	src.buddies = nil
	src.mu.Unlock()
	h.BuddiesChanged()
	if f := es.nextEvent(t); f.data != `{"buddies":[]}` {
		t.Fatalf("got %s, want an empty buddy list", f.data)
	}
}
