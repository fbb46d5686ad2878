package web

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// counters stands in for the agent's own counters.
type counters struct {
	mu sync.Mutex
	s  Snapshot
}

func (c *counters) snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.s
	s.EventsIn = make(map[string]uint64, len(c.s.EventsIn))
	for k, v := range c.s.EventsIn {
		s.EventsIn[k] = v
	}
	s.Members = make(map[string]int, len(c.s.Members))
	for k, v := range c.s.Members {
		s.Members[k] = v
	}
	return s
}

// serveMetrics serves m on 127.0.0.1:0 with a real http.Server.
func serveMetrics(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String() + "/metrics"
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse the exposition: %v", err)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// the given pairs.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, labels)
	return 0
}

func TestMetricsScrape(t *testing.T) {
	c := &counters{s: Snapshot{
		Publishes: 10, PublishesCoalesced: 2, PublishRetries: 1, PublishFailures: 0,
		EventsIn:   map[string]uint64{"b@example.net": 5},
		Refused:    Refused{Spoof: 1},
		Devices:    100,
		Mailboxes:  3,
		Servers:    2,
		BuddiesUp:  1,
		Members:    map[string]int{"alive": 2},
		LastResync: 1500 * time.Millisecond,
	}}
	m := NewMetrics(c.snapshot)
	url := serveMetrics(t, m)

	first := scrape(t, url)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"busylamp_publishes_total", nil, 10},
		{"busylamp_publishes_coalesced_total", nil, 2},
		{"busylamp_publish_retries_total", nil, 1},
		{"busylamp_publish_failures_total", nil, 0},
		{"busylamp_events_in_total", []string{"buddy", "b@example.net"}, 5},
		{"busylamp_refused_total", []string{"reason", "spoof"}, 1},
		{"busylamp_refused_total", []string{"reason", "malformed"}, 0},
		{"busylamp_reconnects_total", nil, 0},
		{"busylamp_devices", nil, 100},
		{"busylamp_mailboxes", nil, 3},
		{"busylamp_servers", nil, 2},
		{"busylamp_buddies_up", nil, 1},
		{"busylamp_members", []string{"state", "alive"}, 2},
		{"busylamp_members", []string{"state", "dead"}, 0},
		{"busylamp_last_resync_duration_seconds", nil, 1.5},
		{"busylamp_iq_round_trip_seconds", nil, 0},
		{"busylamp_echo_lag_seconds", nil, 0},
	}
	for _, ch := range checks {
		if got := value(t, first, ch.name, ch.labels...); got != ch.want {
			t.Errorf("first scrape: %s%v = %v, want %v", ch.name, ch.labels, got, ch.want)
		}
	}

	c.mu.Lock()
	c.s.Publishes += 5
	c.s.EventsIn["b@example.net"] += 3
	c.s.Refused.Limit += 4
	c.s.Reconnects++
	c.s.Devices = 101
	c.s.Members["alive"], c.s.Members["suspect"] = 1, 1
	c.mu.Unlock()
	m.ObserveIQ(3 * time.Millisecond)
	m.ObserveLag(20 * time.Millisecond)
	m.ObserveLag(40 * time.Millisecond)

	second := scrape(t, url)
	for _, ch := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"busylamp_publishes_total", nil, 15},
		{"busylamp_events_in_total", []string{"buddy", "b@example.net"}, 8},
		{"busylamp_refused_total", []string{"reason", "limit"}, 4},
		{"busylamp_reconnects_total", nil, 1},
		{"busylamp_devices", nil, 101},
		{"busylamp_members", []string{"state", "suspect"}, 1},
		{"busylamp_iq_round_trip_seconds", nil, 1},
		{"busylamp_echo_lag_seconds", nil, 2},
	} {
		if got := value(t, second, ch.name, ch.labels...); got != ch.want {
			t.Errorf("second scrape: %s%v = %v, want %v", ch.name, ch.labels, got, ch.want)
		}
	}
	if sum := second["busylamp_echo_lag_seconds"].Metric[0].Histogram.GetSampleSum(); sum < 0.059 || sum > 0.061 {
		t.Errorf("lag sum %v s, want 0.06 (seconds, not milliseconds)", sum)
	}

	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// Buddy labels stop at MaxBuddyLabels; the rest is summed as "other", and
// a buddy keeps the label it was given.
func TestMetricsBuddyLabelsBounded(t *testing.T) {
	c := &counters{s: Snapshot{EventsIn: map[string]uint64{}}}
	for i := range MaxBuddyLabels + 10 {
		c.s.EventsIn[fmt.Sprintf("b%05d@example.net", i)] = 1
	}
	m := NewMetrics(c.snapshot)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var in *dto.MetricFamily
	for _, f := range fams {
		if f.GetName() == "busylamp_events_in_total" {
			in = f
		}
	}
	if in == nil {
		t.Fatal("no busylamp_events_in_total")
	}
	if n := len(in.Metric); n != MaxBuddyLabels+1 {
		t.Fatalf("%d series, want %d (the cap and other)", n, MaxBuddyLabels+1)
	}
	byName := map[string]*dto.MetricFamily{in.GetName(): in}
	if got := value(t, byName, "busylamp_events_in_total", "buddy", "other"); got != 10 {
		t.Fatalf("other = %v, want 10", got)
	}

	// A new buddy that sorts first still goes to other: the labelled set
	// is kept.
	c.mu.Lock()
	c.s.EventsIn["a@example.net"] = 7
	c.mu.Unlock()
	if got, err := testutil.GatherAndCount(m.Registry(), "busylamp_events_in_total"); err != nil || got != MaxBuddyLabels+1 {
		t.Fatalf("after a new buddy: %d series (%v), want %d", got, err, MaxBuddyLabels+1)
	}
}
