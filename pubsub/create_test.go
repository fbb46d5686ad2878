package pubsub

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// Servers that connect at the same moment to a fresh service (a cluster
// starting) all create the nodes and subscribe at once, and each of them
// gets a subscription: on ejabberd all but one of the creations are
// answered internal-server-error "Database failure" (its transaction
// lost) rather than conflict, and a server that met conflict subscribes
// before the creator has made it an owner (not-allowed, closed-node).
// Both ended the session.
func TestNodeCreatedByManyAtOnce(t *testing.T) {
	forKinds(t, func(t *testing.T, srv *xsrv) {
		const servers, nodes = 5, 8
		var jids []string
		for i := range servers {
			j, _ := srv.Admin(fmt.Sprintf("mc%d", i))
			jids = append(jids, j)
		}
		freshNodes(t, srv, false, jids...)
		var peers []*peer
		for i, j := range jids {
			_, pw := srv.Admin(fmt.Sprintf("mc%d", i))
			cfg := peerConfig(srv, j, pw, "astvoip1")
			cfg.AutoRegister = false
			cfg.Buddies = jids
			p := startPeer(t, fmt.Sprintf("mc%d", i), cfg)
			p.connected(connectWait)
			peers = append(peers, p)
		}
		prefix := "many-at-once-"
		t.Cleanup(func() {
			for n := range nodes {
				if err := peers[0].c.DeleteNode(context.Background(), fmt.Sprint(prefix, n)); err != nil && !IsCondition(err, "item-not-found") {
					t.Errorf("delete node %s%d: %v", prefix, n, err)
				}
			}
		})
		ctx := context.Background()
		for n := range nodes {
			node := fmt.Sprint(prefix, n)
			start := make(chan struct{})
			errs := make([]error, servers)
			var wg sync.WaitGroup
			for i, p := range peers {
				s := sessionOf(t, p)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					errs[i] = p.c.subscribe(ctx, s, node)
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("node %s, server %d of %d subscribing at once: %v", node, i+1, servers, err)
				}
			}
		}
	})
}

func TestCreateRefusedForNow(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&StanzaError{Type: "wait", Condition: "internal-server-error", Text: "Database failure"}, true},
		{fmt.Errorf("create: %w", &StanzaError{Type: "cancel", Condition: "internal-server-error"}), true},
		{&StanzaError{Type: "wait", Condition: "resource-constraint"}, true},
		{&StanzaError{Type: "cancel", Condition: "conflict"}, false},
		{&StanzaError{Type: "auth", Condition: "forbidden"}, false},
		{ErrTimeout, false},
		{nil, false},
	} {
		if got := createRefusedForNow(c.err); got != c.want {
			t.Errorf("createRefusedForNow(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
