package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/config"
)

func newCheckCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Validate the config file; exit 1 with FILE:LINE errors",
		Long: `check reads the config file and reports every problem in it, one per
line as FILE:LINE: message, on stderr. Warnings (keys Asterisk uses that
busylamp ignores, repeated keys, ...) do not fail the check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := c.configPath()
			cfg, warnings, err := config.Load(path)
			printWarnings(c, warnings)
			if err != nil {
				var list config.Errors
				if !errors.As(err, &list) {
					return &exitError{code: exitUsage, err: err}
				}
				for _, is := range list {
					fmt.Fprintln(c.stderr, is.Error())
				}
				return &exitError{code: exitUsage}
			}
			at := cfg.Client.Addr()
			if cfg.Client.SRV() {
				at += " (DNS SRV records, looked up at connect; else port 5222)"
			}
			fmt.Fprintf(c.stdout, "%s: OK: client [%s] %s at %s, buddies: %d\n",
				path, cfg.Client.Name, cfg.Client.FullJID(), at, len(cfg.Client.Buddies))
			return nil
		},
	}
}

// printWarnings writes config warnings to stderr as FILE:LINE: warning: ...
func printWarnings(c *cli, warnings []config.Issue) {
	for _, w := range warnings {
		fmt.Fprintf(c.stderr, "%s: warning: %s\n", w.Location(), w.Message())
	}
}
