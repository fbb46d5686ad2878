package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The baseline behind two local sockets: the floor of an AMI agent's
// latency on this machine, measured in the same run.
//
// busylamp's path has two hops the bare clients' has not: a change comes
// in over agent A's AMI socket, and goes out over agent B's. Each is a
// loopback TCP write and the wake-up of the goroutine that reads it,
// which no code of the agent's can take away. relaySystem puts exactly
// these two hops, and nothing else, in front of and behind the
// baseline's clients (the same node, the same clients, the same pool of
// devices):
//   - in: the bench writes the Setvar it writes to agent A to a loopback
//     connection; a relay goroutine reads it, publishes it with the bare
//     publisher, and answers "Response: Success" as the agent does;
//   - out: each bare receiver, on its read loop, writes the
//     DeviceStateChange event agent B would write to a loopback connection
//     of its own, which a goroutine of the bench reads and parses as it
//     reads agent B's events (readDeviceEvents).
//
// busylamp ÷ this is what busylamp's own code costs on top of the
// sockets any agent in front of a PBX has.
type relaySystem struct {
	inner  system
	sender *amiSender // the bench's end of the in socket
	peer   net.Conn   // the relay's end
	outs   []relayOut
	f      atomic.Pointer[func(r int, device, state string)]
	err    atomic.Pointer[error] // the last publish that failed
	wg     sync.WaitGroup

	// Each socket hop's time, as the hop table has it for busylamp:
	// Setvar sent → read by the relay, event write starts → read.
	mu      sync.Mutex
	sentAt  map[string]time.Time
	wroteAt []map[string]time.Time // per receiver
	in, out []time.Duration
}

// maxRelaySamples bounds each hop's samples (a run takes a few thousand).
const maxRelaySamples = 1 << 18

// relayOut is one receiver's out socket.
type relayOut struct {
	w   net.Conn // the receiver's end, written on its read loop
	r   net.Conn // the bench's end
	buf []byte   // the event being written (one goroutine per receiver)
}

// loopbackPair is the two ends of one TCP connection on 127.0.0.1.
func loopbackPair() (a, b net.Conn, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ch <- accepted{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close() // ends the Accept, which no dial will
	}
	acc := <-ch
	if err == nil {
		err = acc.err
	}
	if err != nil {
		if a != nil {
			a.Close()
		}
		if acc.c != nil {
			acc.c.Close()
		}
		return nil, nil, err
	}
	return a, acc.c, nil
}

func startRelay(inner system) (*relaySystem, error) {
	s := &relaySystem{inner: inner, sentAt: map[string]time.Time{}}
	bench, peer, err := loopbackPair()
	if err != nil {
		return nil, err
	}
	s.peer = peer
	s.sender = &amiSender{conn: bench, bw: bufio.NewWriterSize(bench, 64<<10), notify: make(chan struct{}, 1), done: make(chan struct{})}
	go s.sender.readLoop(bufio.NewReaderSize(bench, 64<<10))
	s.wg.Add(1)
	go s.relay(bufio.NewReaderSize(peer, 64<<10))
	for r := range inner.receivers() {
		w, rd, err := loopbackPair()
		if err != nil {
			s.close()
			return nil, err
		}
		s.outs = append(s.outs, relayOut{w: w, r: rd})
		s.wroteAt = append(s.wroteAt, map[string]time.Time{})
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			readDeviceEvents(bufio.NewReaderSize(rd, 64<<10), func(device, state string) {
				s.hop(&s.out, s.wroteAt[r], device, time.Now())
				if f := s.f.Load(); f != nil {
					(*f)(r, device, state)
				}
			})
		}()
	}
	return s, nil
}

// relay reads Setvars off the in socket, publishes each and answers it.
func (s *relaySystem) relay(br *bufio.Reader) {
	defer s.wg.Done()
	answer := []byte("Response: Success\r\nMessage: Variable Set\r\n\r\n")
	for {
		msg, err := readAMIMessage(br)
		if err != nil {
			return
		}
		device, state, ok := parseSetvar(msg)
		if ok {
			s.hop(&s.in, s.sentAt, device, time.Now())
		}
		if !ok {
			err = errors.New("relay: not a Setvar of DEVICE_STATE: " + msg)
		} else if err = s.inner.send(device, state); err == nil {
			err = s.inner.flush()
		}
		if err != nil {
			s.err.Store(&err)
		}
		if _, err := s.peer.Write(answer); err != nil {
			return
		}
	}
}

// parseSetvar takes the device and the state out of the bench's Setvar.
func parseSetvar(msg string) (device, state string, ok bool) {
	var haveDev, haveState bool
	for _, line := range strings.Split(msg, "\r\n") {
		k, v, found := strings.Cut(line, ": ")
		switch {
		case !found:
		case k == "Variable" && strings.HasPrefix(v, "DEVICE_STATE(") && strings.HasSuffix(v, ")"):
			device, haveDev = v[len("DEVICE_STATE("):len(v)-1], true
		case k == "Value":
			state, haveState = v, true
		}
	}
	return device, state, haveDev && haveState
}

// stamp records when device's message started on its way (into m).
func (s *relaySystem) stamp(m map[string]time.Time, device string, t time.Time) {
	s.mu.Lock()
	if len(m) >= maxHopDevices {
		clear(m)
	}
	m[device] = t
	s.mu.Unlock()
}

// hop adds the time from device's stamp in m to t to the samples.
func (s *relaySystem) hop(samples *[]time.Duration, m map[string]time.Time, device string, t time.Time) {
	s.mu.Lock()
	if t0, ok := m[device]; ok && len(*samples) < maxRelaySamples {
		*samples = append(*samples, t.Sub(t0))
	}
	s.mu.Unlock()
}

// hopP50s is the p50 of each socket hop: in, out.
func (s *relaySystem) hopP50s() (in, out time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.in) == 0 || len(s.out) == 0 {
		return 0, 0
	}
	return percentiles(s.in, 0.5)[0], percentiles(s.out, 0.5)[0]
}

// resetHops drops the samples taken so far (the warm-up's).
func (s *relaySystem) resetHops() {
	s.mu.Lock()
	s.in, s.out = s.in[:0], s.out[:0]
	s.mu.Unlock()
}

func (s *relaySystem) close() {
	s.sender.close()
	s.peer.Close()
	for _, o := range s.outs {
		o.w.Close()
		o.r.Close()
	}
	s.wg.Wait()
}

func (s *relaySystem) receivers() int { return s.inner.receivers() }

func (s *relaySystem) onChange(f func(r int, device, state string)) {
	s.f.Store(&f)
	s.inner.onChange(func(r int, device, state string) {
		o := &s.outs[r]
		s.stamp(s.wroteAt[r], device, time.Now())
		o.buf = append(o.buf[:0], "Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: "...)
		o.buf = append(o.buf, device...)
		o.buf = append(o.buf, "\r\nState: "...)
		o.buf = append(o.buf, state...)
		o.buf = append(o.buf, "\r\n\r\n"...)
		o.w.Write(o.buf) // a closed socket ends the run: what it carried is then lost
	})
}

func (s *relaySystem) send(device, state string) error {
	if err := s.err.Load(); err != nil {
		return *err
	}
	s.stamp(s.sentAt, device, time.Now())
	return s.sender.setvar(device, state)
}

func (s *relaySystem) flush() error { return s.sender.flush() }

func (s *relaySystem) sentAll(ctx context.Context) error {
	if err := s.sender.waitAnswered(ctx); err != nil {
		return err
	}
	if err := s.err.Load(); err != nil {
		return *err
	}
	return nil
}

// readDeviceEvents parses AMI events off br, as lean as the baseline's
// reader, and calls f for each DeviceStateChange, until br fails.
func readDeviceEvents(br *bufio.Reader, f func(device, state string)) {
	var event, device, state string
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			if event == "DeviceStateChange" {
				f(device, state)
			}
			event, device, state = "", "", ""
			continue
		}
		k, v, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			continue
		}
		switch string(k) {
		case "Event":
			event = string(v)
		case "Device":
			device = string(v)
		case "State":
			state = string(v)
		}
	}
}
