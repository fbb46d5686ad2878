package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/agent/manager"
)

// newReloadCmd is 'busylamp reload': the AMI Reload action. The agent
// re-reads its config; a config with errors is refused (exit 1, the
// errors on stderr) and the running one kept.
func newReloadCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Re-read the config; keep state and sessions",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return c.withAgent(func(ctx context.Context, mc *manager.Client) error {
				resp, err := mc.Action(ctx, "Reload")
				var ae *manager.ActionError
				if errors.As(err, &ae) {
					fmt.Fprintln(c.stderr, ae.Message)
					for _, l := range resp.Values("Output") {
						fmt.Fprintln(c.stderr, l)
					}
					return &exitError{code: exitUsage}
				}
				if err != nil {
					return err
				}
				for _, l := range resp.Values("Output") {
					fmt.Fprintln(c.stdout, l)
				}
				return nil
			})
		},
	}
}

// newDebugCmd is 'busylamp debug on|off', Asterisk's 'xmpp set debug on'.
func newDebugCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:       "debug on|off",
		Short:     "Trace stanzas in and out, with debug logs (like 'xmpp set debug on')",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"on", "off"},
		RunE: func(_ *cobra.Command, a []string) error {
			return c.command("debug " + a[0])
		},
	}
}
