package agent

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/manager"
)

// startCluster joins the gossip cluster when it is configured. Membership
// finds buddies without editing every node's config and tells a dead node
// faster than XMPP presence can. Device states travel over PubSub; only
// the own-states exchange of a resync goes over gossip (gossipstates.go).
func (a *Agent) startCluster(ctx context.Context) error {
	if a.cfg.Cluster == nil {
		return nil
	}
	cc := *a.cfg.Cluster
	cc.JID = a.cfg.XMPP.JID
	cc.EID = a.cfg.XMPP.EID
	cc.Version = a.cfg.Version
	cc.Logger = a.log
	events := make(chan cluster.Event, 256)
	direct := make(chan []byte, gossipInbox)
	cc.Direct = direct
	cl, err := cluster.Start(cc, events)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	a.cluster, a.members = cl, events
	a.goRun(func() { a.directLoop(ctx, direct) })
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-ctx.Done()
		if err := cl.Close(); err != nil {
			a.log.Warn("cluster close", "err", err)
		}
	}()
	return nil
}

// memberEvent applies a membership change: a member that joins becomes a
// buddy (roster, presence, owner of the nodes) and is asked for its own
// states; what happens to one that dies or leaves is the core's stale
// policy.
func (a *Agent) memberEvent(ev cluster.Event) {
	m := ev.Member
	status := map[cluster.EventKind]string{cluster.EventJoin: "joined", cluster.EventLeave: "left",
		cluster.EventDead: "dead", cluster.EventUpdate: "updated"}[ev.Kind]
	if a.web.hub != nil {
		a.web.hub.MembersChanged()
	}
	a.ami.Emit(manager.ClusterMember(
		manager.Header{Key: "Member", Value: m.Name},
		manager.Header{Key: "Address", Value: m.Addr},
		manager.Header{Key: "Status", Value: status},
		manager.Header{Key: "JID", Value: m.Meta.JID},
		manager.Header{Key: "EID", Value: m.Meta.EID.String()},
	))
	if m.Meta.JID == "" || m.Meta.EID == a.cfg.XMPP.EID {
		return // undecodable meta (logged by the cluster) or ourselves
	}
	switch ev.Kind {
	case cluster.EventJoin, cluster.EventUpdate:
		a.core.MemberJoined(m.Meta.EID, m.Meta.JID)
		k := askAddBuddy
		if ev.Kind == cluster.EventJoin && a.isSynced() {
			// Before the first items resync the member is asked by that
			// resync, once its items are in (an answer applied before
			// them would be overwritten by their last writers).
			k |= askStates
		}
		if !a.asks.add(m.Meta.JID, k) {
			a.log.Warn("member not asked: too many waiting", "member", m.Name, "jid", m.Meta.JID, "max", maxAsks)
		}
	case cluster.EventLeave, cluster.EventDead:
		a.core.MemberGone(m.Meta.EID, status)
	}
}

func (a *Agent) showMembers(b *strings.Builder) {
	if a.cluster == nil {
		b.WriteString("Gossip membership is not configured (no [cluster] bind).\n")
		return
	}
	w := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "NAME\tADDRESS\tSTATE\tJID\tEID\tVERSION\tSINCE\n")
	members := a.cluster.Members()
	for _, m := range members {
		eid := ""
		if !m.Meta.EID.IsZero() {
			eid = m.Meta.EID.String()
		}
		name := m.Name
		if name == a.cluster.Name() {
			name += " (this node)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Addr, m.State, m.Meta.JID, eid, m.Meta.Version, m.Since.Format(time.RFC3339))
	}
	w.Flush()
	fmt.Fprintf(b, "%d members\n", len(members))
}
