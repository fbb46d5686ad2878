package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/busylamp/busylamp/config"
)

// newHelpCmd stands in for cobra's default help command, which cannot
// hold subcommands of its own: it gives the same help about any command
// (busylamp help run) and adds the topic `busylamp help config`.
func newHelpCmd(root *cobra.Command, c *cli) *cobra.Command {
	help := &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command; 'help config' lists every config key",
		Long: `help prints the help of any command (busylamp help run).

busylamp help config prints every key of every section of the config file,
with its default, as a commented config file.`,
		RunE: func(_ *cobra.Command, args []string) error {
			target, _, err := root.Find(args)
			if err != nil || target == nil {
				return fmt.Errorf("unknown help topic %q", strings.Join(args, " "))
			}
			target.InitDefaultHelpFlag()
			target.InitDefaultVersionFlag()
			return target.Help()
		},
	}
	help.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "Every key of every config section, with its default, as a commented config file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return writeConfigHelp(c.stdout)
		},
	})
	return help
}

// clientSectionName is the header printed for the client section's keys:
// Asterisk's sample names it so.
const clientSectionName = "asterisk"

// writeConfigHelp writes config.Keys as a config file in which every key
// is commented out: ";key = value" with the default (or, for a key that
// has none, an example: required keys, and those whose default is off or
// derived), under a comment saying what it is. Taking the
// ';' off a key's line gives a valid line.
func writeConfigHelp(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`; busylamp's config file: every key of every section, with its default
; (busylamp help config). The file is an Asterisk xmpp.conf or jabber.conf
; plus busylamp's own sections; a key left out takes its default.
;
; Asterisk's syntax: ';' starts a comment, "key = value" or "key => value",
; #include "file" and #tryinclude "file" (relative to the including file,
; globs allowed), #exec "command" (only with [general] execincludes = yes in
; this file), templates [name](!) and sections built on them
; [name](template,...), [name](+) to add to a section.
`)
	keys := config.Keys()
	for _, sec := range config.Sections() {
		b.WriteString("\n")
		header := sec
		if sec == config.ClientSection {
			header = clientSectionName
			b.WriteString("; A client section: any name but general, agent, manager, metrics, http and\n" +
				"; cluster. busylamp connects with the one that has distribute_events = yes.\n")
		}
		fmt.Fprintf(&b, "[%s]\n", header)
		for _, k := range keys {
			if k.Section != sec {
				continue
			}
			doc := k.Doc
			if k.Repeat {
				doc += " (one line each)"
			}
			val := k.Default
			if val != "" {
				doc += ". Default " + val + "."
			} else {
				doc += ". Example:"
				val = k.Example
			}
			fmt.Fprintf(&b, "; %s: %s\n", k.Key, doc)
			fmt.Fprintf(&b, ";%s = %s\n", k.Key, val)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
