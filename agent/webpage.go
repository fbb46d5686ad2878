package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/agent/web"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// The [http] lamp field and the [metrics] endpoint: their listeners are
// opened in New (a busy port is a start-up error, as the AMI socket's
// is), served by Run, and closed when Run ends.
type webParts struct {
	hub       *web.Hub
	metrics   *web.Metrics
	pageLn    net.Listener
	metricsLn net.Listener
}

// newHub makes the page's hub when [http] is on; it is one of the core's
// sinks from the start.
func (a *Agent) newHub() {
	if a.cfg.HTTPAddr == "" {
		return
	}
	wc := web.DefaultConfig()
	wc.Log = a.log
	if !loopbackAddr(a.cfg.HTTPAddr) {
		// Off loopback the page shows the whole cluster: only for the
		// [manager] account (HTTP Basic; put TLS in front of it).
		wc.Auth = a.ami.CheckLogin
	}
	a.web.hub = web.NewHub(webSource{a}, wc)
}

// sink is where the core's changes go: the AMI sessions, and the page.
func (a *Agent) sink() core.Sink {
	s := amiSink{a.ami, a.cfg.Manager.Hops}
	if a.web.hub == nil {
		return s
	}
	return sinks{ami: s, hub: a.web.hub}
}

// openWeb opens the listeners Config's HTTPAddr and MetricsAddr ask for.
func (a *Agent) openWeb() error {
	if a.cfg.HTTPAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
		if err != nil {
			return fmt.Errorf("[http] bind: %w", err)
		}
		a.web.pageLn = ln
	}
	if a.cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			a.closeWeb()
			return fmt.Errorf("[metrics] bind: %w", err)
		}
		a.web.metricsLn = ln
	}
	return nil
}

// closeWeb closes listeners New opened when Run will not.
func (a *Agent) closeWeb() {
	for _, ln := range []net.Listener{a.web.pageLn, a.web.metricsLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// HTTPAddr and MetricsAddr are where the page and the metrics listen
// ("" when off).
func (a *Agent) HTTPAddr() string    { return lnAddr(a.web.pageLn) }
func (a *Agent) MetricsAddr() string { return lnAddr(a.web.metricsLn) }

func lnAddr(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

func loopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveWeb serves the page and the metrics until ctx ends.
func (a *Agent) serveWeb(ctx context.Context) {
	serve := func(name string, ln net.Listener, h http.Handler, beforeStop func()) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			MaxHeaderBytes: 16 << 10, ErrorLog: nil}
		a.goRun(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error(name+" stopped", "err", err)
			}
		})
		a.goRun(func() {
			<-ctx.Done()
			if beforeStop != nil {
				beforeStop() // the event streams are never idle: end them first
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
		})
		a.log.Info(name+" listening", "addr", ln.Addr().String())
	}
	if ln := a.web.pageLn; ln != nil {
		serve("lamp field (http)", ln, a.web.hub, a.web.hub.Close)
	}
	if ln := a.web.metricsLn; ln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.web.metrics.Handler())
		serve("metrics", ln, mux, nil)
	}
}

// buddiesChanged tells the page that a buddy came, went or changed.
func (a *Agent) buddiesChanged() {
	if a.web.hub != nil {
		a.web.hub.BuddiesChanged()
	}
}

// metricsSnapshot reads the counters the agent keeps, at scrape time.
func (a *Agent) metricsSnapshot() web.Snapshot {
	p := a.xmpp.Stats()
	cs := a.core.Stats()
	fs := a.core.FilterStats()
	s := web.Snapshot{
		Publishes: p.Published, PublishesCoalesced: p.Coalesced, PublishRetries: p.Retried, PublishFailures: p.Errors,
		EventsIn: a.eventsIn.snapshot(),
		Refused: web.Refused{Spoof: cs.Spoofed, Filter: fs.InDevices + fs.InMailboxes, Limit: cs.Refused,
			Malformed: p.Malformed},
		Devices: cs.Devices, Mailboxes: cs.Mailboxes, Servers: cs.Servers,
		LastResync: time.Duration(a.lastResync.Load()),
	}
	if p.Sessions > 1 {
		s.Reconnects = p.Sessions - 1
	}
	for _, b := range a.xmpp.Buddies() {
		if len(b.Resources) > 0 {
			s.BuddiesUp++
		}
	}
	if a.cluster != nil {
		s.Members = map[string]int{}
		for _, m := range a.cluster.Members() {
			s.Members[m.State]++
		}
	}
	return s
}

// webSource is the agent as the page reads it.
type webSource struct{ a *Agent }

func (s webSource) Devices() []core.Device                 { return s.a.core.Devices(false) }
func (s webSource) Device(name string) (core.Device, bool) { return s.a.core.Device(name) }
func (s webSource) Mailboxes() []core.Mailbox              { return s.a.core.Mailboxes(false) }

func (s webSource) Buddies() []web.Buddy {
	bs := s.a.xmpp.Buddies()
	out := make([]web.Buddy, 0, len(bs))
	for _, b := range bs {
		wb := web.Buddy{JID: b.JID, Online: len(b.Resources) > 0, Subscription: b.Subscription}
		for _, r := range b.Resources {
			wb.Resources = append(wb.Resources, r.Resource)
		}
		out = append(out, wb)
	}
	return out
}

func (s webSource) Members() []web.Member {
	if s.a.cluster == nil {
		return nil
	}
	ms := s.a.cluster.Members()
	out := make([]web.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, web.Member{Name: m.Name, Addr: m.Addr, State: m.State, JID: m.Meta.JID, Since: m.Since})
	}
	return out
}

// sinks hands every cluster-wide change to the AMI sessions and, when the
// page is on, to it; neither blocks.
type sinks struct {
	ami amiSink
	hub *web.Hub
}

func (s sinks) DeviceChanged(device string, st devstate.State) {
	s.ami.DeviceChanged(device, st)
	s.hub.DeviceChanged(device, st)
}

func (s sinks) MailboxChanged(mailbox string, c mwi.Counts) {
	s.ami.MailboxChanged(mailbox, c)
	s.hub.MailboxChanged(mailbox, c)
}
