package agent

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/busylamp/busylamp/agent/cluster"
	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/pubsub"
)

// startCluster joins the gossip cluster when it is configured. Membership
// finds buddies without editing every node's config and tells a dead node
// faster than XMPP presence can; device states themselves still travel
// over PubSub only.
func (n *Node) startCluster(ctx context.Context) (<-chan cluster.Event, error) {
	if n.cfg.Cluster == nil {
		return nil, nil
	}
	cc := *n.cfg.Cluster
	cc.JID = n.cfg.XMPP.JID
	cc.EID = n.cfg.XMPP.EID
	cc.Version = n.cfg.Version
	cc.Logger = n.log
	events := make(chan cluster.Event, 256)
	cl, err := cluster.Start(cc, events)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.cluster = cl
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		<-ctx.Done()
		if err := cl.Close(); err != nil {
			n.log.Warn("cluster close", "err", err)
		}
	}()
	return events, nil
}

// memberEvent applies a membership change: a member that joins becomes a
// buddy (roster, presence, owner of the nodes) and is asked for its own
// states; one that dies or leaves has its states dropped at once.
func (n *Node) memberEvent(ctx context.Context, ev cluster.Event) {
	m := ev.Member
	status := map[cluster.EventKind]string{cluster.EventJoin: "joined", cluster.EventLeave: "left",
		cluster.EventDead: "dead", cluster.EventUpdate: "updated"}[ev.Kind]
	n.ami.Emit(manager.ClusterMember(
		manager.Header{Key: "Member", Value: m.Name},
		manager.Header{Key: "Address", Value: m.Addr},
		manager.Header{Key: "Status", Value: status},
		manager.Header{Key: "JID", Value: m.Meta.JID},
		manager.Header{Key: "EID", Value: m.Meta.EID.String()},
	))
	if m.Meta.JID == "" || m.Meta.EID == n.cfg.XMPP.EID {
		return // undecodable meta (logged by the cluster) or ourselves
	}
	switch ev.Kind {
	case cluster.EventJoin, cluster.EventUpdate:
		n.core.BindEID(m.Meta.EID, m.Meta.JID)
		jid := m.Meta.JID
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			actx, cancel := context.WithTimeout(ctx, n.cfg.ResyncTimeout)
			defer cancel()
			if err := n.xmpp.AddBuddy(actx, jid); err != nil {
				n.log.Warn("member as buddy", "jid", jid, "err", err)
			}
			if ev.Kind == cluster.EventJoin {
				n.requestStates(ctx, jid)
			}
		}()
	case cluster.EventLeave, cluster.EventDead:
		if n.cfg.Core.Stale == StaleExpire {
			n.log.Info("member gone: its states expire", "member", m.Name, "jid", m.Meta.JID, "eid", m.Meta.EID.String(), "status", status)
			n.core.RemoveServer(m.Meta.EID)
		}
	}
}

// requestStates asks one buddy for its own states and applies the answer.
//
// A member that has not heard of this node yet (gossip reaches members
// one after another, within a second or two) refuses the request as
// coming from a stranger (forbidden): it is asked again, a few times.
func (n *Node) requestStates(ctx context.Context, jid string) bool {
	qctx, cancel := context.WithTimeout(ctx, n.cfg.ResyncTimeout)
	defer cancel()
	wait := statesRetryDelay
	for attempt := 1; ; attempt++ {
		since := n.core.now()
		ds, ms, err := n.xmpp.RequestOwnStates(qctx, jid)
		if err == nil {
			n.core.ApplyServerStates(jid, since, ds, ms)
			return true
		}
		if pubsub.IsCondition(err, "forbidden") && attempt < statesTries {
			select {
			case <-time.After(wait):
				wait *= 2
				continue
			case <-qctx.Done():
			}
		}
		if ctx.Err() == nil {
			n.log.Debug("states request", "jid", jid, "attempts", attempt, "err", err)
		}
		return false
	}
}

// A states request refused as from a stranger is tried statesTries times,
// waiting statesRetryDelay, then twice as long each time (7.5 s in all).
const (
	statesTries      = 5
	statesRetryDelay = 500 * time.Millisecond
)

func (n *Node) showMembers(b *strings.Builder) {
	if n.cluster == nil {
		b.WriteString("Gossip membership is not configured (no [cluster] bind).\n")
		return
	}
	w := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "NAME\tADDRESS\tSTATE\tJID\tEID\tVERSION\tSINCE\n")
	members := n.cluster.Members()
	for _, m := range members {
		eid := ""
		if !m.Meta.EID.IsZero() {
			eid = m.Meta.EID.String()
		}
		name := m.Name
		if name == n.cluster.Name() {
			name += " (this node)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.Addr, m.State, m.Meta.JID, eid, m.Meta.Version, m.Since.Format(time.RFC3339))
	}
	w.Flush()
	fmt.Fprintf(b, "%d members\n", len(members))
}
