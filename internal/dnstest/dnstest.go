// Package dnstest runs a small authoritative DNS server on 127.0.0.1 (UDP
// and TCP, one random port) for tests, by github.com/miekg/dns, and a
// net.Resolver that asks only it: SRV records, A records and "." targets
// are set per test and may be changed while clients run.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is one running DNS server.
type Server struct {
	Addr string // 127.0.0.1:port, UDP and TCP

	mu      sync.Mutex
	rrs     map[string][]dns.RR // by lower-case FQDN
	queries map[string]int      // "name type", for assertions
	udp     *dns.Server
	tcp     *dns.Server
}

// Start starts a server; it stops when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{rrs: map[string][]dns.RR{}, queries: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if attempt == 10 {
			t.Fatalf("dnstest: no port free for both UDP and TCP: %v", err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	var started sync.WaitGroup
	started.Add(2)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: started.Done}
	s.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: started.Done}
	var done sync.WaitGroup
	done.Add(2)
	go func() { defer done.Done(); _ = s.udp.ActivateAndServe() }()
	go func() { defer done.Done(); _ = s.tcp.ActivateAndServe() }()
	started.Wait()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.udp.ShutdownContext(ctx)
		_ = s.tcp.ShutdownContext(ctx)
		done.Wait()
	})
	return s
}

// Set replaces the records of every name the given records name, each in
// zone-file form: "_xmpp-client._tcp.busylamp.test. 60 IN SRV 0 5 5222
// xmpp1.busylamp.test." or "xmpp1.busylamp.test. 60 IN A 127.0.0.1".
// A name given no records at all is removed with Clear.
func (s *Server) Set(t testing.TB, records ...string) {
	t.Helper()
	byName := map[string][]dns.RR{}
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("dnstest: record %q: %v", r, err)
		}
		name := strings.ToLower(rr.Header().Name)
		byName[name] = append(byName[name], rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, rrs := range byName {
		s.rrs[name] = rrs
	}
}

// Clear removes every record of name (then NXDOMAIN).
func (s *Server) Clear(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rrs, strings.ToLower(dns.Fqdn(name)))
}

// Queries is how many questions of this name and type ("SRV", "A") were
// asked.
func (s *Server) Queries(name, qtype string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[strings.ToLower(dns.Fqdn(name))+" "+qtype]
}

// Resolver is a pure-Go resolver that asks this server only, over UDP or
// TCP as it chooses.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		if strings.HasPrefix(network, "tcp") {
			return d.DialContext(ctx, "tcp", s.Addr)
		}
		return d.DialContext(ctx, "udp", s.Addr)
	}}
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		s.mu.Lock()
		if len(s.queries) < 4096 {
			s.queries[name+" "+dns.TypeToString[q.Qtype]]++
		}
		rrs, ok := s.rrs[name]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		s.mu.Unlock()
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		// Too much for a datagram: truncated, so the client asks again
		// over TCP.
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}
