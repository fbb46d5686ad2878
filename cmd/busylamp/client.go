package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
)

// clientTimeout bounds a client command's whole exchange with the agent.
const clientTimeout = 30 * time.Second

// dial logs in to the running agent's AMI-style socket with the config's
// [manager] credentials. Failures are exit code 2.
func (c *cli) dial(ctx context.Context) (*manager.Client, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, err
	}
	addr := managerDialAddr(cfg.Manager)
	if cfg.Manager.Username == "" {
		return nil, &exitError{code: exitUsage, err: fmt.Errorf("%s: [manager] has no username and secret: the client commands log in with them", cfg.File)}
	}
	tc, err := managerClientTLS(cfg)
	if err != nil {
		return nil, &exitError{code: exitUsage, err: err}
	}
	mc, err := manager.DialTLS(ctx, addr, tc)
	if err != nil {
		return nil, &exitError{code: exitUnreachable, err: fmt.Errorf("agent not reachable at %s: %w", addr, err)}
	}
	if err := mc.Login(ctx, cfg.Manager.Username, cfg.Manager.Secret.Reveal()); err != nil {
		mc.Close()
		return nil, &exitError{code: exitUnreachable, err: fmt.Errorf("login to %s: %w", addr, err)}
	}
	return mc, nil
}

// withAgent runs f with a logged-in client; an action error is exit 1.
func (c *cli) withAgent(f func(ctx context.Context, mc *manager.Client) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	mc, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer mc.Close()
	defer mc.Logoff(ctx)
	if err := f(ctx, mc); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		var ae *manager.ActionError
		if errors.As(err, &ae) {
			return &exitError{code: exitUsage, err: errors.New(ae.Message)}
		}
		return &exitError{code: exitUnreachable, err: err}
	}
	return nil
}

// command runs a CLI command line on the agent and prints its output.
func (c *cli) command(line string) error {
	return c.withAgent(func(ctx context.Context, mc *manager.Client) error {
		resp, err := mc.Action(ctx, "Command", manager.Header{Key: "Command", Value: line})
		out := c.stdout
		if err != nil {
			out = c.stderr
		}
		for _, l := range resp.Values("Output") {
			fmt.Fprintln(out, l)
		}
		var ae *manager.ActionError
		if errors.As(err, &ae) && len(resp.Values("Output")) > 0 {
			return &exitError{code: exitUsage} // the output said why
		}
		return err
	})
}

func commandCmd(c *cli, use, short string, args cobra.PositionalArgs) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.command(strings.Join(append(strings.Fields(cmd.CommandPath())[1:], a...), " "))
		},
	}
}

func newShowCmd(c *cli) *cobra.Command {
	show := &cobra.Command{Use: "show", Short: "Show the running agent's connection, buddies, members"}
	show.AddCommand(
		commandCmd(c, "connected", "The XMPP connection (like Asterisk's 'xmpp show connections')", cobra.NoArgs),
		commandCmd(c, "buddies", "Buddies and their resources (like Asterisk's 'xmpp show buddies')", cobra.NoArgs),
		commandCmd(c, "members", "Gossip members, their state and JIDs", cobra.NoArgs),
		commandCmd(c, "stats", "Table sizes and publish counters", cobra.NoArgs),
	)
	return show
}

func newDevstateCmd(c *cli) *cobra.Command {
	ds := &cobra.Command{Use: "devstate", Short: "Device states: list, get, set"}
	set := &cobra.Command{
		Use:   "set DEVICE STATE",
		Short: "Publish this node's state of DEVICE",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			st, ok := devstate.Parse(a[1])
			if !ok {
				return &exitError{code: exitUsage, err: fmt.Errorf("unknown state %q (one of UNKNOWN NOT_INUSE INUSE BUSY INVALID UNAVAILABLE RINGING RINGINUSE ONHOLD)", a[1])}
			}
			return c.withAgent(func(ctx context.Context, mc *manager.Client) error {
				_, err := mc.Action(ctx, "Setvar",
					manager.Header{Key: "Variable", Value: "DEVICE_STATE(" + a[0] + ")"},
					manager.Header{Key: "Value", Value: st.String()})
				return err
			})
		},
	}
	ds.AddCommand(
		commandCmd(c, "list", "Every device: cluster-wide state, and per server", cobra.NoArgs),
		commandCmd(c, "get DEVICE", "One device: cluster-wide state, and per server", cobra.ExactArgs(1)),
		set,
	)
	return ds
}

func newMWICmd(c *cli) *cobra.Command {
	m := &cobra.Command{Use: "mwi", Short: "Mailbox counts: list, get, set, delete"}
	set := &cobra.Command{
		Use:   "set MAILBOX NEW OLD",
		Short: "Publish this node's counts of MAILBOX",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, a []string) error {
			for _, n := range a[1:] {
				if v, err := strconv.Atoi(n); err != nil || v < 0 {
					return &exitError{code: exitUsage, err: fmt.Errorf("bad count %q: want a whole number ≥ 0", n)}
				}
			}
			return c.withAgent(func(ctx context.Context, mc *manager.Client) error {
				_, err := mc.Action(ctx, "MWIUpdate",
					manager.Header{Key: "Mailbox", Value: a[0]},
					manager.Header{Key: "NewMessages", Value: a[1]},
					manager.Header{Key: "OldMessages", Value: a[2]})
				return err
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete MAILBOX",
		Short: "Drop this node's counts of MAILBOX",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			return c.withAgent(func(ctx context.Context, mc *manager.Client) error {
				_, err := mc.Action(ctx, "MWIDelete", manager.Header{Key: "Mailbox", Value: a[0]})
				return err
			})
		},
	}
	m.AddCommand(
		commandCmd(c, "list", "Every mailbox: cluster-wide counts, and per server", cobra.NoArgs),
		commandCmd(c, "get MAILBOX", "One mailbox: cluster-wide counts, and per server", cobra.ExactArgs(1)),
		set, del,
	)
	return m
}

func newNodeCmd(c *cli) *cobra.Command {
	n := &cobra.Command{Use: "node", Short: "PubSub nodes: purge, delete, create"}
	n.AddCommand(
		commandCmd(c, "purge [NODE]", "Remove every item of NODE (default: device_state and message_waiting)", cobra.MaximumNArgs(1)),
		commandCmd(c, "delete NODE", "Delete a PubSub node", cobra.ExactArgs(1)),
		commandCmd(c, "create-collection NODE", "Create a XEP-0248 collection node", cobra.ExactArgs(1)),
		commandCmd(c, "create-leaf COLLECTION NODE", "Create a leaf node in a collection", cobra.ExactArgs(2)),
	)
	return n
}
