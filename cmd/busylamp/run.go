package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/agent"
	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/config"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/sdnotify"
	"github.com/busylamp/busylamp/mwi"
	"github.com/busylamp/busylamp/pubsub"
)

func newRunCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the agent in the foreground",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadConfig()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var level slog.LevelVar
			ac, err := runConfig(cfg, c, &level)
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			ac.Load = func() (agent.Config, error) {
				cfg, warnings, err := config.Load(c.configPath())
				for _, w := range warnings {
					ac.Log.Warn("config", "warning", w.String())
				}
				if err != nil {
					return agent.Config{}, err
				}
				return runConfig(cfg, c, &level)
			}
			a, err := agent.New(ac)
			if errors.Is(err, agent.ErrConfig) {
				return &exitError{code: exitUsage, err: err}
			}
			if err != nil {
				return &exitError{code: exitRuntime, err: err}
			}
			// SIGHUP reloads, as for most daemons (and systemd's
			// ExecReload): the result goes to the log.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			// Under systemd (Type=notify) the agent is ready once its
			// cluster state is complete (or the boot timeout passed).
			reloads := make(chan struct{})
			go func() {
				defer close(reloads)
				select {
				case <-a.Core().Booted():
					notify(ac.Log, sdnotify.Ready, "ready")
					_ = sdnotify.Status("running")
				case <-ctx.Done():
					return
				}
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						notify(ac.Log, sdnotify.Reloading, "reloading")
						if _, err := a.Reload(ctx); err != nil { // logged by the agent
							_ = sdnotify.Status("reload refused: the running config is kept")
						} else {
							_ = sdnotify.Status("running")
						}
						notify(ac.Log, sdnotify.Ready, "ready")
					}
				}
			}()
			err = a.Run(ctx)
			stop()
			_ = sdnotify.Stopping()
			<-reloads
			if err != nil {
				return &exitError{code: exitRuntime, err: err}
			}
			return nil
		},
	}
}

// loadConfig reads the config file, printing its warnings; a bad file is
// exit code 1 with every error as FILE:LINE: message.
func (c *cli) loadConfig() (*config.Config, error) {
	path := c.configPath()
	cfg, warnings, err := config.Load(path)
	for _, w := range warnings {
		fmt.Fprintf(c.stderr, "%s\n", w)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "%v\n", err)
		return nil, &exitError{code: exitUsage}
	}
	return cfg, nil
}

// notify tells systemd, when it started us; a failure is only logged.
func notify(log *slog.Logger, f func() error, what string) {
	if err := f(); err != nil {
		log.Warn("sd_notify", "state", what, "err", err)
	}
}

// runConfig is agentConfig with what only 'run' needs: the manager's TLS
// (files read now) and the log on the one level variable reloads set.
func runConfig(cfg *config.Config, c *cli, level *slog.LevelVar) (agent.Config, error) {
	ac := agentConfig(cfg, c)
	var err error
	if ac.Manager.TLS, err = managerServerTLS(cfg); err != nil {
		return agent.Config{}, err
	}
	ac.Level = level
	level.Set(ac.LogLevel)
	ac.Log = newLogger(c.stderr, cfg.General.LogFormat, level)
	return ac, nil
}

// newLogger is the agent's log: text (slog's key=value) or JSON lines.
func newLogger(w io.Writer, format string, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// matcher is a config pattern as the core's filter; no pattern lets
// everything pass (a nil interface, not a nil *Pattern in one).
func matcher(p *config.Pattern) core.Matcher {
	if p == nil {
		return nil
	}
	return p
}

// agentConfig maps the file's sections onto the agent's configuration.
func agentConfig(cfg *config.Config, c *cli) agent.Config {
	level := slog.LevelInfo
	if cfg.Client.Debug {
		level = slog.LevelDebug
	}
	log := newLogger(c.stderr, cfg.General.LogFormat, level)

	cl := cfg.Client
	eid := devstate.EID(cfg.Agent.EID)
	if eid.IsZero() {
		host, _ := os.Hostname()
		eid = devstate.DeriveEID(host + "\x00" + cl.FullJID())
	}
	status := cl.Status
	if status == "unavailable" { // config warned already; an agent must be seen
		status = "available"
	}
	x := pubsub.DefaultConfig()
	x.JID = cl.FullJID()
	x.Password = cl.Secret.Reveal()
	x.Address = cl.Addr()
	x.Service = cl.PubSubNode
	x.UseTLS = cl.UseTLS
	x.UseSASL = cl.UseSASL
	x.TLSCAFile = cl.TLSCAFile
	x.TLSInsecure = cl.TLSInsecure
	x.Status = status
	x.StatusMessage = cl.StatusMessage
	x.Priority = cl.Priority
	x.Buddies = cl.Buddies
	x.AutoRegister = cl.AutoRegister
	x.AutoPrune = cl.AutoPrune
	x.AuthPolicy = string(cl.AuthPolicy)
	x.CollectionNodes = cfg.General.CollectionNodes
	x.AutoCreate = cfg.General.PubSubAutoCreate
	x.NoItems = cfg.General.PubSubNoItems
	x.EID = eid
	x.Trace = cl.Debug

	ac := agent.DefaultConfig()
	ac.Core.StaleGrace = cfg.Agent.StaleGrace
	ac.Core.MaxDevices = cfg.Agent.MaxDevices
	if cfg.Agent.Stale == config.StaleKeep {
		ac.Core.Stale = core.StaleKeep
	}
	if cfg.Agent.MWIMerge == config.MWISum {
		ac.Core.MWIMerge = mwi.Sum
	}
	ac.Core.Filters = core.Filters{
		PublishDevice: matcher(cfg.Agent.DeviceStateFilter), PublishMailbox: matcher(cfg.Agent.MailboxStateFilter),
		AcceptDevice: matcher(cfg.Agent.DeviceStateAccept), AcceptMailbox: matcher(cfg.Agent.MailboxStateAccept),
	}
	ac.LogFormat = cfg.General.LogFormat
	ac.MetricsAddr = cfg.Metrics.Bind
	ac.HTTPAddr = cfg.HTTP.Bind
	var cc *cluster.Config
	if cfg.Cluster.Enabled() {
		mc := cluster.DefaultConfig()
		mc.Bind = cfg.Cluster.Bind
		mc.Advertise = cfg.Cluster.Advertise
		mc.Join = cfg.Cluster.Join
		mc.SecretKey = cfg.Cluster.Secret.Reveal()
		if cfg.Cluster.Profile != "" {
			mc.Profile = string(cfg.Cluster.Profile)
		}
		cc = &mc
	}
	ac.Manager.Username = cfg.Manager.Username
	ac.Manager.Secret = cfg.Manager.Secret.Reveal()
	ac.Manager.ACL = managerACL(cfg.Manager)
	ac.Manager.AuthTimeout = cfg.Manager.AuthTimeout
	ac.Manager.MaxUnauthSessions = cfg.Manager.AuthLimit
	ac.Name = cl.Name
	ac.Version = version
	ac.XMPP = x
	ac.ManagerAddr = cfg.Manager.Addr()
	ac.Log = log
	ac.LogLevel = level
	ac.Cluster = cc
	ac.StateDir = cfg.Agent.StateDir
	return ac
}
