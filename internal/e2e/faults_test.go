//go:build faults

// The fault suite (make faults): agents on a real Prosody (PubSub in
// memory) and a driver that keeps a model of what each node's PBX set,
// while faults come one after another. After each fault every agent must
// show exactly the model's cluster-wide state (Asterisk's merge, and MWI)
// within faultDeadline; the time each took is printed.
package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busylamp/busylamp/agent/manager"
	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/xmpptest"
)

const (
	faultDeadline = 10 * time.Second // after each fault, every agent shows the model
	faultDevices  = 40
	faultBoxes    = 6
)

func TestFaults(t *testing.T) {
	rl := newRelay(t)
	c := newClusterOn(t, xmpptest.Options{Memory: true}, 3, nodeOpts{xmppAddr: rl.addr()})
	srv := c.srv
	rl.setTarget(srv.Addr)
	c.startAll()
	d := newDriver(t, c)
	report := func(name string, took time.Duration) {
		t.Logf("fault %-40s converged in %v", name, took.Round(time.Millisecond))
	}

	// Warm up: every node sets states, every agent agrees.
	d.run(300)
	report("none (warm-up)", d.converge("warm-up"))

	for i := 1; i <= 3; i++ {
		if err := srv.Kill(); err != nil {
			t.Fatal(err)
		}
		d.run(100) // acknowledged while the server is gone
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		report(fmt.Sprintf("XMPP server SIGKILL + restart #%d", i), d.converge(fmt.Sprintf("server restart %d", i)))
	}

	// node1's XMPP path black-holed (no FIN) past the keepalive (ping
	// every 10 s, 10 s to answer), then restored.
	rl.hole(true)
	holeEnd := time.Now().Add(25 * time.Second)
	for time.Now().Before(holeEnd) {
		d.run(20)
	}
	rl.hole(false)
	report("node1's XMPP path black-holed 25 s", d.converge("black hole"))

	// A burst of 20,000 changes while the server restarts.
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	d.burst(20000)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	report("20,000 changes during a server restart", d.converge("burst"))

	// An agent killed and kept down past stale_grace (2 s): the others
	// expire its states; back, it must bring what its PBX set.
	n3 := c.nodes[2]
	n3.kill()
	d.down(2)
	d.run(100)
	deadline := time.Now().Add(3 * time.Second) // past the grace (2 s), on the others' clocks
	for time.Now().Before(deadline) {
		d.run(10)
	}
	n3.start()
	d.reconnect(2)
	d.up(2)
	report("agent SIGKILL, down past the grace", d.converge("agent restart"))
}

// driver changes states on the nodes through AMI, as their PBXs would,
// and keeps the model of what each acknowledged.
type driver struct {
	t    *testing.T
	c    *cluster
	rnd  *rand.Rand
	amis []*manager.Client
	isUp []bool
	dev  map[string]map[int]string // device → node → state acknowledged
	box  map[string][2]int         // mailbox → counts acknowledged (each owned by one node)
}

func newDriver(t *testing.T, c *cluster) *driver {
	d := &driver{t: t, c: c, rnd: rand.New(rand.NewPCG(1, 2)), dev: map[string]map[int]string{}, box: map[string][2]int{}}
	for i := range c.nodes {
		d.amis = append(d.amis, nil)
		d.isUp = append(d.isUp, true)
		d.reconnect(i)
	}
	return d
}

func (d *driver) reconnect(i int) {
	d.amis[i] = d.c.nodes[i].ami().c
}

func (d *driver) down(i int) { d.isUp[i] = false }
func (d *driver) up(i int)   { d.isUp[i] = true }

var faultStates = []string{"NOT_INUSE", "INUSE", "BUSY", "RINGING", "ONHOLD", "UNAVAILABLE"}

// run makes n changes, each acknowledged before the next, on nodes that
// are up.
func (d *driver) run(n int) {
	d.t.Helper()
	for range n {
		d.change(d.rnd.IntN(5) == 0)
	}
}

// burst makes n device changes as fast as the sockets take them, several
// in flight per node.
func (d *driver) burst(n int) {
	d.t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(d.amis))
	per := n / len(d.amis)
	for i, a := range d.amis {
		if !d.isUp[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			for range per {
				dev := fmt.Sprintf("Custom:f%d", rnd.IntN(faultDevices))
				st := faultStates[rnd.IntN(len(faultStates))]
				if err := setvar(a, dev, st); err != nil {
					errs <- fmt.Errorf("node%d: %w", i+1, err)
					return
				}
				mu.Lock()
				d.record(i, dev, st)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		d.t.Fatal(err)
	}
}

func (d *driver) change(mailbox bool) {
	d.t.Helper()
	var up []int
	for i, ok := range d.isUp {
		if ok {
			up = append(up, i)
		}
	}
	i := up[d.rnd.IntN(len(up))]
	if mailbox {
		b := d.rnd.IntN(faultBoxes)
		owner := b % len(d.amis)
		if !d.isUp[owner] {
			return
		}
		mb := fmt.Sprintf("%d@faults", 1000+b)
		counts := [2]int{d.rnd.IntN(10), d.rnd.IntN(10)}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		m, err := d.amis[owner].Action(ctx, "MWIUpdate", manager.Header{Key: "Mailbox", Value: mb},
			manager.Header{Key: "NewMessages", Value: fmt.Sprint(counts[0])}, manager.Header{Key: "OldMessages", Value: fmt.Sprint(counts[1])})
		if err != nil || m.Get("Response") != "Success" {
			d.t.Fatalf("node%d MWIUpdate %s: %v %v", owner+1, mb, m, err)
		}
		d.box[mb] = counts
		return
	}
	dev := fmt.Sprintf("Custom:f%d", d.rnd.IntN(faultDevices))
	st := faultStates[d.rnd.IntN(len(faultStates))]
	if err := setvar(d.amis[i], dev, st); err != nil {
		d.t.Fatalf("node%d: %v", i+1, err)
	}
	d.record(i, dev, st)
}

func setvar(a *manager.Client, dev, st string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := a.Action(ctx, "Setvar", manager.Header{Key: "Variable", Value: "DEVICE_STATE(" + dev + ")"}, manager.Header{Key: "Value", Value: st})
	if err != nil {
		return fmt.Errorf("Setvar %s %s: %w", dev, st, err)
	}
	if m.Get("Response") != "Success" {
		return fmt.Errorf("Setvar %s %s: %s", dev, st, m.Get("Message"))
	}
	return nil
}

func (d *driver) record(node int, dev, st string) {
	if d.dev[dev] == nil {
		d.dev[dev] = map[int]string{}
	}
	d.dev[dev][node] = st
}

// want is the model's cluster-wide state of every device.
func (d *driver) want() map[string]string {
	out := make(map[string]string, len(d.dev))
	for dev, per := range d.dev {
		var states []devstate.State
		for _, s := range per {
			st, _ := devstate.Parse(s)
			states = append(states, st)
		}
		out[dev] = devstate.Merge(states...).String()
	}
	return out
}

// converge waits until every agent shows the model and says how long it
// took; past faultDeadline the test fails with what differs.
func (d *driver) converge(what string) time.Duration {
	d.t.Helper()
	start := time.Now()
	want := d.want()
	var diff string
	for {
		diff = d.diff(want)
		if diff == "" {
			return time.Since(start)
		}
		if time.Since(start) > faultDeadline {
			d.t.Fatalf("%s: agents differ from the model %v after the fault:\n%s", what, faultDeadline, diff)
		}
		time.Sleep(50 * time.Millisecond) // a poll of the agents' sockets, not a wait for a cause
	}
}

// diff lists, per agent, what differs from the model ("" when nothing).
func (d *driver) diff(want map[string]string) string {
	var b strings.Builder
	for i, a := range d.amis {
		got, err := deviceList(a)
		if err != nil {
			fmt.Fprintf(&b, "node%d: %v\n", i+1, err)
			continue
		}
		var bad []string
		for dev, w := range want {
			if got[dev] != w {
				bad = append(bad, fmt.Sprintf("%s=%s want %s", dev, got[dev], w))
			}
		}
		for dev, g := range got {
			if _, ok := want[dev]; !ok {
				bad = append(bad, fmt.Sprintf("%s=%s not in the model", dev, g))
			}
		}
		for mb, w := range d.box {
			nw, old, err := mailboxOf(a, mb)
			if err != nil || nw != fmt.Sprint(w[0]) || old != fmt.Sprint(w[1]) {
				bad = append(bad, fmt.Sprintf("%s=%s/%s want %d/%d", mb, nw, old, w[0], w[1]))
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			if len(bad) > 8 {
				bad = append(bad[:8], fmt.Sprintf("… %d more", len(bad)-8))
			}
			fmt.Fprintf(&b, "node%d: %s\n", i+1, strings.Join(bad, ", "))
		}
	}
	return b.String()
}

func deviceList(a *manager.Client) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, evs, err := a.List(ctx, "DeviceStateList")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(evs))
	for _, e := range evs {
		if e.Get("Event") == "DeviceStateChange" {
			out[e.Get("Device")] = e.Get("State")
		}
	}
	return out, nil
}

func mailboxOf(a *manager.Client, mb string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, evs, err := a.List(ctx, "MWIGet", manager.Header{Key: "Mailbox", Value: mb})
	if err != nil {
		return "", "", err
	}
	for _, e := range evs {
		if e.Get("Event") == "MWIGet" && e.Get("Mailbox") == mb {
			return e.Get("NewMessages"), e.Get("OldMessages"), nil
		}
	}
	return "", "", nil
}
