package agent

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/busylamp/busylamp/agent/core"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/pubsub"
)

// commandHelp lists the commands the AMI Command action (and so the CLI)
// understands.
const commandHelp = `show connected                       the XMPP connection (like Asterisk's 'xmpp show connections')
show buddies                         buddies and their resources (like 'xmpp show buddies')
show members                         gossip members
show stats                           table sizes, remote states refused (per account), publish counters
devstate list                        every device: cluster-wide state and per server
devstate get DEVICE
mwi list                             every mailbox: cluster-wide counts and per server
mwi get MAILBOX
node purge [NODE]                    remove all items of NODE (default: both nodes)
node delete NODE
node create-collection NODE
node create-leaf COLLECTION NODE
reload                               re-read the config; keep state and sessions
debug on|off                         trace stanzas, debug logs (also 'xmpp set debug on|off')
help`

// Command runs one CLI command line and returns its text output.
func (a *Agent) Command(ctx context.Context, line string) (string, error) {
	f := strings.Fields(line)
	var b strings.Builder
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	cmd := strings.ToLower(strings.Join(f[:min(2, len(f))], " "))
	switch {
	case len(f) == 0 || cmd == "help":
		b.WriteString(commandHelp)
	case cmd == "show connected" || cmd == "show connections":
		a.showConnected(&b)
	case cmd == "show buddies":
		a.showBuddies(&b)
	case cmd == "show members":
		a.showMembers(&b)
	case cmd == "show stats":
		a.showStats(&b)
	case cmd == "reload" && len(f) == 1:
		notes, err := a.Reload(ctx)
		if err != nil {
			return "", err
		}
		for _, n := range notes {
			b.WriteString(n + "\n")
		}
	case (cmd == "debug on" || cmd == "debug off") && len(f) == 2,
		strings.EqualFold(strings.Join(f[:min(3, len(f))], " "), "xmpp set debug") && len(f) == 4 &&
			(strings.EqualFold(f[3], "on") || strings.EqualFold(f[3], "off")):
		on := strings.EqualFold(f[len(f)-1], "on")
		a.SetDebug(on)
		if on {
			b.WriteString("XMPP Debugging Enabled.\n")
		} else {
			b.WriteString("XMPP Debugging Disabled.\n")
		}
	case cmd == "devstate list":
		ds := a.core.Devices(true)
		a.devstateTable(&b, ds)
		fmt.Fprintf(&b, "%d devices\n", len(ds))
	case cmd == "devstate get" && len(f) == 3:
		d, ok := a.core.Device(f[2])
		if !ok {
			return "", fmt.Errorf("no such device: %s", f[2])
		}
		a.devstateTable(&b, []core.Device{d})
	case cmd == "mwi list":
		ms := a.core.Mailboxes(true)
		a.mwiTable(&b, ms)
		fmt.Fprintf(&b, "%d mailboxes (merge: %s)\n", len(ms), a.cfg.Core.MWIMerge)
	case cmd == "mwi get" && len(f) == 3:
		m, ok := a.core.Mailbox(f[2])
		if !ok {
			return "", fmt.Errorf("no such mailbox: %s", f[2])
		}
		a.mwiTable(&b, []core.Mailbox{m})
	case cmd == "node purge" && len(f) <= 3:
		nodes := []string{pubsub.NodeDevices, pubsub.NodeMailboxes}
		if arg(2) != "" {
			nodes = []string{arg(2)}
		}
		for _, node := range nodes {
			if err := a.xmpp.Purge(ctx, node); err != nil {
				return b.String(), err
			}
			fmt.Fprintf(&b, "Purged node %s.\n", node)
		}
	case cmd == "node delete" && len(f) == 3:
		if err := a.xmpp.DeleteNode(ctx, f[2]); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "Deleted node %s.\n", f[2])
	case cmd == "node create-collection" && len(f) == 3:
		if err := a.xmpp.CreateCollection(ctx, f[2]); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "Created collection node %s.\n", f[2])
	case cmd == "node create-leaf" && len(f) == 4:
		if err := a.xmpp.CreateLeaf(ctx, f[2], f[3]); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "Created leaf node %s in collection %s.\n", f[3], f[2])
	default:
		return "", fmt.Errorf("unknown command %q; try 'help'", line)
	}
	return b.String(), nil
}

func (a *Agent) showConnected(b *strings.Builder) {
	st := a.xmpp.Status()
	if st.Service == "" {
		st.Service = "(not discovered yet)" // no pubsub_node, and no session found one yet
	}
	state := map[string]string{"connecting": "Connecting", "connected": "Connected", "disconnected": "Disconnected"}[st.State]
	if state == "" {
		state = "Unknown"
	}
	fmt.Fprintf(b, "Jabber Users and their status:\n")
	fmt.Fprintf(b, "       [%s] %s     - %s\n", a.cfg.Name, st.JID, state)
	tls := "no"
	if st.TLS {
		tls = "yes (" + st.TLSName + ")"
	}
	fmt.Fprintf(b, "           Server: %s  PubSub: %s  TLS: %s\n", st.Server, st.Service, tls)
	if st.Targets > 0 {
		fmt.Fprintf(b, "           Target: %s\n", targetLine(st))
	}
	if !st.Since.IsZero() {
		fmt.Fprintf(b, "           Since: %s (%s)\n", st.Since.Format(time.RFC3339), time.Since(st.Since).Round(time.Second))
	}
	if st.LastError != "" {
		fmt.Fprintf(b, "           Last error: %s\n", st.LastError)
	}
	if len(st.Missing) > 0 {
		fmt.Fprintf(b, "           Missing: %s\n", strings.Join(st.Missing, " "))
	}
	fmt.Fprintf(b, "----\n")
	fmt.Fprintf(b, "   Number of clients: 1\n")
}

// targetLine says which of the resolved servers the client uses, and how
// it was found: "2 of 3, via SRV _xmpp-client._tcp.example.org".
func targetLine(st pubsub.ConnStatus) string {
	s := fmt.Sprintf("%d of %d, via %s", st.Target, st.Targets, st.Via)
	if st.DirectTLS {
		s += ", direct TLS"
	}
	return s
}

func (a *Agent) showBuddies(b *strings.Builder) {
	fmt.Fprintf(b, "XMPP buddy lists\n")
	fmt.Fprintf(b, "Client: %s\n", a.cfg.Name)
	for _, bd := range a.xmpp.Buddies() {
		fmt.Fprintf(b, "\tBuddy:\t%s\n", bd.JID)
		sub := bd.Subscription
		if sub == "" {
			sub = "none"
		}
		if bd.Pending {
			sub += " (request pending)"
		}
		fmt.Fprintf(b, "\t\tSubscription: %s\n", sub)
		if eid, ok := a.core.EIDOf(bd.JID); ok {
			fmt.Fprintf(b, "\t\tEID: %s\n", eid)
		}
		if len(bd.Resources) == 0 {
			fmt.Fprintf(b, "\t\tResource: None\n")
		}
		for _, r := range bd.Resources {
			show := r.Show
			if show == "" {
				show = "available"
			}
			fmt.Fprintf(b, "\t\tResource: %s\n", r.Resource)
			fmt.Fprintf(b, "\t\t\tStatus: %s\n", show)
			if r.Status != "" {
				fmt.Fprintf(b, "\t\t\tMessage: %s\n", r.Status)
			}
			fmt.Fprintf(b, "\t\t\tPriority: %d\n", r.Priority)
		}
	}
}

func (a *Agent) showStats(b *strings.Builder) {
	s := a.core.Stats()
	p := a.xmpp.Stats()
	fmt.Fprintf(b, "Devices: %d\nMailboxes: %d\nServers: %d\nSpoofed payloads refused: %d\n", s.Devices, s.Mailboxes, s.Servers, s.Spoofed)
	fmt.Fprintf(b, "Remote states refused (share/full): %d\n", s.Refused)
	for _, r := range s.RefusedBy {
		fmt.Fprintf(b, "  %s: %d\n", r.Source, r.Refused)
	}
	fmt.Fprintf(b, "Publishes: %+v\n", p)
	f := a.core.FilterStats()
	fmt.Fprintf(b, "Filtered out (not published): %d devices, %d mailboxes\nFiltered in (not accepted): %d devices, %d mailboxes\n",
		f.OutDevices, f.OutMailboxes, f.InDevices, f.InMailboxes)
	if d := a.lastResync.Load(); d > 0 {
		fmt.Fprintf(b, "Last resync took: %s\n", time.Duration(d).Round(time.Millisecond))
	}
	if a.cluster != nil {
		g := &a.gossip
		fmt.Fprintf(b, "States answers over gossip: %d\nStates answers over XMPP: %d\nStates requests fallen back to XMPP: %d\n",
			g.answers.Load(), g.xmppAnswers.Load(), g.fallbacks.Load())
		fmt.Fprintf(b, "Gossip states messages refused: %d\nGossip states entries refused: %d\n", g.refusedMsgs.Load()+a.cluster.DirectStats().Refused, g.refusedEntries.Load())
	}
	if a.store != nil {
		st := a.store.Stats()
		fmt.Fprintf(b, "State store: %s: %d devices, %d mailboxes, %d deleted mailboxes, %d records, %d bytes, %d syncs, %d compactions\n",
			st.Path, st.Devices, st.Mailboxes, st.Tombstones, st.Records, st.Bytes, st.Syncs, st.Compactions)
		if st.SetAside != "" {
			fmt.Fprintf(b, "State store damaged at start, set aside: %s (%s)\n", st.SetAside, st.SetAsideReason)
		}
		if st.Err != "" {
			fmt.Fprintf(b, "State store last error: %s\n", st.Err)
		}
	}
}

func (a *Agent) devstateTable(b *strings.Builder, ds []core.Device) {
	w := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "DEVICE\tSTATE\tSERVER EID\tJID\tSERVER STATE\n")
	for _, d := range ds {
		for i, s := range d.Servers {
			name, st := d.Device, d.State.String()
			if i > 0 {
				name, st = "", ""
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", name, st, s.EID, a.jidLabel(s.EID, s.JID), s.State)
		}
	}
	w.Flush()
}

func (a *Agent) mwiTable(b *strings.Builder, ms []core.Mailbox) {
	w := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "MAILBOX\tNEW\tOLD\tSERVER EID\tJID\tSERVER NEW/OLD\n")
	for _, m := range ms {
		for i, s := range m.Servers {
			name, nw, old := m.Mailbox, fmt.Sprint(m.Counts.New), fmt.Sprint(m.Counts.Old)
			if i > 0 {
				name, nw, old = "", "", ""
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d/%d\n", name, nw, old, s.EID, a.jidLabel(s.EID, s.JID), s.Counts.New, s.Counts.Old)
		}
	}
	w.Flush()
}

func (a *Agent) jidLabel(eid devstate.EID, jid string) string {
	if eid == a.core.EID() {
		return jid + " (this node)"
	}
	return jid
}
