package manager

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client is a small AMI client for the CLI and tests. It matches responses
// and list events to actions by ActionID; events of no action of its own go
// to Events.
type Client struct {
	conn     net.Conn
	greeting string

	writeMu sync.Mutex
	nextID  atomic.Uint64

	mu      sync.Mutex
	pending map[string]*call
	err     error // why the read loop ended

	events  chan Message
	dropped atomic.Uint64
	done    chan struct{}
}

// ActionError is an action the server answered with Response: Error.
type ActionError struct {
	Action  string
	Message string
}

func (e *ActionError) Error() string {
	return fmt.Sprintf("%s: %s", e.Action, e.Message)
}

type call struct {
	list     bool
	resp     chan Message // the response, once
	items    []Message    // list events, guarded by Client.mu
	complete chan Message // the list's Complete event, once
}

// Client bounds: what the agent sends is trusted more than what it reads,
// but a Command output may be long.
const (
	clientMaxLine    = 1 << 20
	clientMaxMessage = 64 << 20
	clientMaxHeaders = 1 << 20
	clientEvents     = 1024
)

// Dial connects to an AMI socket and reads its greeting.
func Dial(ctx context.Context, addr string) (*Client, error) {
	return DialTLS(ctx, addr, nil)
}

// DialTLS is Dial over TLS with cfg; a nil cfg is plain TCP.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Client, error) {
	var conn net.Conn
	var err error
	if cfg != nil {
		d := tls.Dialer{Config: cfg}
		conn, err = d.DialContext(ctx, "tcp", addr)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetReadDeadline(deadline)
	r := newReader(conn, clientMaxLine, clientMaxMessage, clientMaxHeaders)
	line, err := r.br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "Asterisk Call Manager/") {
		// A server over its session limit says why instead.
		msg := line
		if strings.HasPrefix(line, "Response:") {
			if m, err := r.readMessage(); err == nil && m.Get("Message") != "" {
				msg = m.Get("Message")
			}
		}
		conn.Close()
		return nil, fmt.Errorf("%s refused the session: %s", addr, msg)
	}
	conn.SetReadDeadline(time.Time{})
	c := &Client{
		conn:     conn,
		greeting: line,
		pending:  make(map[string]*call),
		events:   make(chan Message, clientEvents),
		done:     make(chan struct{}),
	}
	go c.readLoop(r)
	return c, nil
}

// Greeting is the server's first line ("Asterisk Call Manager/9.0.0").
func (c *Client) Greeting() string { return c.greeting }

// Events delivers the events that belong to no action of this client, in
// order. It is closed when the connection ends. When the reader falls more
// than 1024 events behind, further events are dropped and counted.
func (c *Client) Events() <-chan Message { return c.events }

// Dropped is how many events were dropped because Events was not read.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// Close closes the connection.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Login logs in with a username and secret.
func (c *Client) Login(ctx context.Context, user, secret string) error {
	_, err := c.Action(ctx, "Login", Header{"Username", user}, Header{"Secret", secret})
	return err
}

// Logoff ends the session politely.
func (c *Client) Logoff(ctx context.Context) error {
	_, err := c.Action(ctx, "Logoff")
	return err
}

// Action sends an action and returns its response. A Response: Error comes
// back with an *ActionError.
func (c *Client) Action(ctx context.Context, name string, headers ...Header) (Message, error) {
	id, cl, err := c.start(name, false, headers)
	if err != nil {
		return nil, err
	}
	resp, err := c.wait(ctx, id, cl.resp)
	if err != nil {
		return nil, err
	}
	if strings.EqualFold(resp.Get("Response"), "Error") {
		return resp, &ActionError{Action: name, Message: resp.Get("Message")}
	}
	return resp, nil
}

// List sends an action that answers with a list (EventList: start … an
// event with EventList: Complete) and returns the response and the list's
// events, without the Complete event. It checks the Complete event's
// ListItems against what came.
func (c *Client) List(ctx context.Context, name string, headers ...Header) (Message, []Message, error) {
	id, cl, err := c.start(name, true, headers)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.wait(ctx, id, cl.resp)
	if err != nil {
		return nil, nil, err
	}
	if strings.EqualFold(resp.Get("Response"), "Error") {
		c.forget(id)
		return resp, nil, &ActionError{Action: name, Message: resp.Get("Message")}
	}
	if !strings.EqualFold(resp.Get("EventList"), "start") {
		c.forget(id)
		return resp, nil, nil
	}
	done, err := c.wait(ctx, id, cl.complete)
	if err != nil {
		return resp, nil, err
	}
	c.mu.Lock()
	items := cl.items
	c.mu.Unlock()
	if n := done.Get("ListItems"); n != "" {
		if want, err := strconv.Atoi(n); err == nil && want != len(items) {
			return resp, items, fmt.Errorf("%s: list says %d items, got %d", name, want, len(items))
		}
	}
	return resp, items, nil
}

func (c *Client) start(name string, list bool, headers []Header) (string, *call, error) {
	id := "busylamp-" + strconv.FormatUint(c.nextID.Add(1), 10)
	cl := &call{list: list, resp: make(chan Message, 1), complete: make(chan Message, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return "", nil, err
	}
	c.pending[id] = cl
	c.mu.Unlock()

	b := appendHeader(nil, "Action", name)
	b = appendHeader(b, "ActionID", id)
	for _, h := range headers {
		if strings.ContainsAny(h.Key, ":\r\n") || h.Key == "" {
			c.forget(id)
			return "", nil, fmt.Errorf("%s: bad header name %q", name, h.Key)
		}
		b = appendHeader(b, h.Key, h.Value)
	}
	b = append(b, "\r\n"...)
	c.writeMu.Lock()
	_, err := c.conn.Write(b)
	c.writeMu.Unlock()
	if err != nil {
		c.forget(id)
		return "", nil, fmt.Errorf("send %s: %w", name, err)
	}
	return id, cl, nil
}

func (c *Client) wait(ctx context.Context, id string, ch chan Message) (Message, error) {
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	case <-c.done:
		// The message may have come just before the connection ended.
		select {
		case m := <-ch:
			return m, nil
		default:
		}
		c.mu.Lock()
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
}

func (c *Client) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *Client) readLoop(r *reader) {
	defer close(c.done)
	defer close(c.events)
	var err error
	for {
		var m Message
		m, err = r.readMessage()
		var perr *parseError
		if errors.As(err, &perr) {
			continue // skip what we cannot read; it is not ours to judge
		}
		if err != nil {
			break
		}
		c.dispatch(m)
	}
	c.mu.Lock()
	c.err = fmt.Errorf("manager connection closed: %w", err)
	c.mu.Unlock()
}

func (c *Client) dispatch(m Message) {
	id := m.Get("ActionID")
	if _, isResp := m.Lookup("Response"); isResp {
		c.mu.Lock()
		cl := c.pending[id]
		if cl != nil && !(cl.list && strings.EqualFold(m.Get("EventList"), "start") &&
			strings.EqualFold(m.Get("Response"), "Success")) {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		if cl != nil {
			select {
			case cl.resp <- m:
			default:
			}
		}
		return
	}
	if id != "" {
		c.mu.Lock()
		cl := c.pending[id]
		if cl != nil && cl.list {
			if strings.EqualFold(m.Get("EventList"), "Complete") {
				delete(c.pending, id)
				c.mu.Unlock()
				cl.complete <- m
				return
			}
			cl.items = append(cl.items, m)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	select {
	case c.events <- m:
	default:
		c.dropped.Add(1)
	}
}
