package sdnotify_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/busylamp/busylamp/internal/sdnotify"
)

// How `busylamp run` is meant to use it under the unit in
// examples/systemd (Type=notify, ExecReload= sending SIGHUP).
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// ... load the config, open the AMI socket, connect ...
	if err := sdnotify.Ready(); err != nil {
		slog.Warn("sd_notify", "err", err) // never fatal: the agent works without it
	}
	sdnotify.Status("connected to xmpp.example.com")

	var tick <-chan time.Time
	if d, ok := sdnotify.WatchdogInterval(); ok { // only with WatchdogSec= in the unit
		t := time.NewTicker(d / 2)
		defer t.Stop()
		tick = t.C
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP) // without it SIGHUP ends a Go process
	defer signal.Stop(hup)

	for {
		select {
		case <-hup:
			sdnotify.Reloading()
			// ... re-read the config ...
			sdnotify.Ready()
		case <-tick:
			sdnotify.Watchdog()
		case <-ctx.Done():
			sdnotify.Stopping()
			// ... shut down ...
			return
		}
	}
}
