package e2e

import (
	"net"
	"sync"
	"testing"
	"time"
)

// relay is a TCP relay the test owns between an agent and the XMPP
// server. Black-holed, it stops moving bytes either way but closes
// nothing (no FIN, no RST): what a dead network path looks like to both
// ends, until their keepalives notice. Cut, it drops what it holds and
// closes every connection it has (the path died with the bytes on it).
type relay struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	open  *sync.Cond
	holed bool
	gen   uint64 // counts cuts: a pipe of an earlier generation drops what it holds
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

// newRelay listens at once; setTarget says where to, before the first
// connection comes.
func newRelay(t *testing.T) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{t: t, ln: ln, conns: map[net.Conn]struct{}{}}
	r.open = sync.NewCond(&r.mu)
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(r.close)
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) setTarget(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.target = addr
}

func (r *relay) hole(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holed = on
	r.open.Broadcast()
}

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		target := r.target
		r.mu.Unlock()
		out, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			in.Close()
			continue
		}
		if !r.track(in, out) {
			return
		}
		r.wg.Add(2)
		r.mu.Lock()
		gen := r.gen
		r.mu.Unlock()
		go r.pipe(out, in, gen)
		go r.pipe(in, out, gen)
	}
}

func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, holding each read until the path is open; a
// cut drops it.
func (r *relay) pipe(dst, src net.Conn, gen uint64) {
	defer r.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			for r.holed && !r.done && r.gen == gen {
				r.open.Wait()
			}
			done := r.done || r.gen != gen
			r.mu.Unlock()
			if done {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or a closed conn: the other pipe sees its close
			return
		}
	}
}

// cut drops the bytes held and closes the connections relayed so far;
// later ones are relayed as before.
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	for c := range r.conns {
		c.Close()
	}
	clear(r.conns)
	r.open.Broadcast()
}

func (r *relay) close() {
	r.ln.Close()
	r.mu.Lock()
	r.done = true
	r.open.Broadcast()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
