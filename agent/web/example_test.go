package web_test

import (
	"context"
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/agent/web"
)

// source adapts the agent's parts to web.Source.
type source struct{ core *core.Core }

func (s source) Devices() []core.Device                 { return s.core.Devices(false) }
func (s source) Device(name string) (core.Device, bool) { return s.core.Device(name) }
func (s source) Mailboxes() []core.Mailbox              { return s.core.Mailboxes(false) }
func (s source) Buddies() []web.Buddy                   { return nil } // from pubsub.Client.Buddies
func (s source) Members() []web.Member                  { return nil } // from cluster.Cluster.Members

// The wiring of [http] and [metrics]: the hub is the core's sink (in the
// agent, one of the sinks it fans out to), the page needs Basic auth off
// loopback, and Close ends the streams before Shutdown.
func Example() {
	c := core.New(core.DefaultConfig())
	cfg := web.DefaultConfig()
	offLoopback := false
	if offLoopback {
		cfg.Auth = func(user, secret string) bool { // the [manager] users
			return subtle.ConstantTimeCompare([]byte(user), []byte("admin"))&
				subtle.ConstantTimeCompare([]byte(secret), []byte("secret")) == 1
		}
	}
	hub := web.NewHub(source{c}, cfg)
	c.Attach(nil, hub) // whatever the core's attach of a Publisher and a Sink is

	metrics := web.NewMetrics(func() web.Snapshot { return web.Snapshot{Devices: len(c.Devices(false))} })
	metrics.ObserveIQ(3 * time.Millisecond)

	page := &http.Server{Addr: "127.0.0.1:8088", Handler: hub, ReadHeaderTimeout: 10 * time.Second}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler())
	prom := &http.Server{Addr: "127.0.0.1:9638", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	_, _ = page, prom // go page.ListenAndServe(); go prom.ListenAndServe()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hub.Close() // first: a stream is never idle, Shutdown would wait for it
	_ = page.Shutdown(ctx)
}
