// Command busylamp runs the busylamp agent and talks to a running one.
//
// main.go holds the root command and the exit codes; each command lives in
// its own file and is added to the root in newRootCmd.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/config"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

// Exit codes (DESIGN.md).
const (
	exitOK          = 0
	exitUsage       = 1 // usage or config error
	exitUnreachable = 2 // the agent is not reachable or refused the login
	exitRuntime     = 3 // run stopped by a runtime failure (login refused for good, socket not opened)
)

// exitError ends the program with code after its message (if any) has
// been printed by the command itself.
type exitError struct {
	code int
	err  error // nil when the command already printed everything
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// cli is what every command shares: the output streams and the -c flag.
type cli struct {
	stdout, stderr io.Writer
	configFlag     string
}

// configPath is the file the command should read (config.Locate).
func (c *cli) configPath() string { return config.Locate(c.configFlag) }

func newRootCmd(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "busylamp",
		Short: "Share busy-lamp (device) states and MWI counts between PBX nodes over XMPP PubSub",
		Long: `busylamp shares busy-lamp (device) states and message-waiting counts
between PBX nodes over XMPP PubSub, wire-compatible with Asterisk's res_xmpp.

The config file is -c FILE, else $` + config.EnvConfig + `, else ./` + config.LocalConfig + `,
else ` + config.SystemConfig + `.`,
		SilenceErrors: true, // main prints errors and picks the exit code
		SilenceUsage:  true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.PersistentFlags().StringVarP(&c.configFlag, "config", "c", "", "config `FILE`")
	root.SetHelpCommand(newHelpCmd(root, c))
	root.AddCommand(
		newRunCmd(c),
		newCheckCmd(c),
		newShowCmd(c),
		newDevstateCmd(c),
		newMWICmd(c),
		newNodeCmd(c),
		newReloadCmd(c),
		newDebugCmd(c),
		newVersionCmd(c),
	)
	return root
}

// execute runs the command line args and returns the exit code.
func execute(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	root := newRootCmd(c)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "busylamp: %v\n", ee.err)
		}
		return ee.code
	}
	// Anything else comes from cobra: a bad flag, command or argument.
	fmt.Fprintf(stderr, "busylamp: %v\nRun 'busylamp --help' for usage.\n", err)
	return exitUsage
}

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
