package web

import (
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is what the agent counts already, read at every scrape so that
// nothing is counted twice. Counters only grow over the agent's life.
type Snapshot struct {
	Publishes          uint64 // items published
	PublishesCoalesced uint64 // changes folded into a later publish of the same device or mailbox
	PublishRetries     uint64 // publishes sent again after an error or a reconnect
	PublishFailures    uint64 // publishes given up on

	EventsIn map[string]uint64 // PubSub events taken in, by buddy (bare JID)
	Refused  Refused           // remote items refused, by reason

	Reconnects uint64 // XMPP sessions re-established

	Devices    int            // devices held (cluster-wide)
	Mailboxes  int            // mailboxes held
	Servers    int            // remote servers (EIDs) known
	BuddiesUp  int            // buddies with an available resource
	Members    map[string]int // gossip members, by state (alive, suspect, dead, left)
	LastResync time.Duration  // how long the last resync took; 0 before the first
}

// Refused counts remote items refused, by reason.
type Refused struct {
	Spoof     uint64 // claimed another account's EID
	Filter    uint64 // refused by device_state_accept / mailbox_state_accept
	Limit     uint64 // no room (max_devices)
	Malformed uint64 // did not parse
}

// MaxBuddyLabels bounds the distinct buddy label values of
// busylamp_events_in_total; buddies past it are summed into buddy="other".
const MaxBuddyLabels = 1024

// otherBuddy is the label value of the buddies past MaxBuddyLabels.
const otherBuddy = "other"

// Metrics is busylamp's Prometheus exposition on a registry of its own:
// the agent's counters read through a snapshot function at scrape time,
// two histograms it observes as things happen, and the Go and process
// collectors.
type Metrics struct {
	reg *prometheus.Registry
	iq  prometheus.Histogram
	lag prometheus.Histogram
}

// NewMetrics makes the registry. snapshot is called once per scrape, from
// the scraping goroutine; it must be safe for concurrent use and quick.
func NewMetrics(snapshot func() Snapshot) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		iq: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "busylamp_iq_round_trip_seconds",
			Help:    "Round-trip time of IQ requests to the XMPP server.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to 16 s
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "busylamp_echo_lag_seconds",
			Help:    "Time from publishing an own state to seeing its own PubSub event come back.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	m.reg.MustRegister(
		m.iq, m.lag,
		newSnapshotCollector(snapshot),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveIQ records one IQ round trip.
func (m *Metrics) ObserveIQ(d time.Duration) { m.iq.Observe(d.Seconds()) }

// ObserveLag records one publish-to-own-echo lag.
func (m *Metrics) ObserveLag(d time.Duration) { m.lag.Observe(d.Seconds()) }

// Registry is the registry, for registering more collectors or for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus' exposition formats (mount it
// at /metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg, // counts its own errors
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// snapshotCollector turns a Snapshot into const metrics.
type snapshotCollector struct {
	snapshot func() Snapshot

	publishes, coalesced, retries, failures *prometheus.Desc
	eventsIn, refused, reconnects           *prometheus.Desc
	devices, mailboxes, servers, buddiesUp  *prometheus.Desc
	members, lastResync                     *prometheus.Desc

	// The buddies given a label of their own, kept once given so that a
	// series does not move between a buddy's label and "other".
	mu      sync.Mutex
	labeled map[string]struct{}
}

func newSnapshotCollector(snapshot func() Snapshot) *snapshotCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &snapshotCollector{
		snapshot:   snapshot,
		publishes:  d("busylamp_publishes_total", "Items published to PubSub."),
		coalesced:  d("busylamp_publishes_coalesced_total", "Changes folded into a later publish of the same device or mailbox."),
		retries:    d("busylamp_publish_retries_total", "Publishes sent again after an error or a reconnect."),
		failures:   d("busylamp_publish_failures_total", "Publishes given up on."),
		eventsIn:   d("busylamp_events_in_total", "PubSub events taken in, by buddy (buddies past the label cap are summed as \"other\").", "buddy"),
		refused:    d("busylamp_refused_total", "Remote items refused, by reason.", "reason"),
		reconnects: d("busylamp_reconnects_total", "XMPP sessions re-established."),
		devices:    d("busylamp_devices", "Devices held (cluster-wide)."),
		mailboxes:  d("busylamp_mailboxes", "Mailboxes held (cluster-wide)."),
		servers:    d("busylamp_servers", "Remote servers (EIDs) known."),
		buddiesUp:  d("busylamp_buddies_up", "Buddies with an available resource."),
		members:    d("busylamp_members", "Gossip members, by state.", "state"),
		lastResync: d("busylamp_last_resync_duration_seconds", "How long the last resync took."),
		labeled:    make(map[string]struct{}),
	}
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.publishes, c.coalesced, c.retries, c.failures,
		c.eventsIn, c.refused, c.reconnects,
		c.devices, c.mailboxes, c.servers, c.buddiesUp,
		c.members, c.lastResync,
	} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(c.publishes, s.Publishes)
	counter(c.coalesced, s.PublishesCoalesced)
	counter(c.retries, s.PublishRetries)
	counter(c.failures, s.PublishFailures)
	for buddy, v := range c.buddyLabels(s.EventsIn) {
		counter(c.eventsIn, v, buddy)
	}
	counter(c.refused, s.Refused.Spoof, "spoof")
	counter(c.refused, s.Refused.Filter, "filter")
	counter(c.refused, s.Refused.Limit, "limit")
	counter(c.refused, s.Refused.Malformed, "malformed")
	counter(c.reconnects, s.Reconnects)
	gauge(c.devices, float64(s.Devices))
	gauge(c.mailboxes, float64(s.Mailboxes))
	gauge(c.servers, float64(s.Servers))
	gauge(c.buddiesUp, float64(s.BuddiesUp))
	for _, st := range []string{"alive", "suspect", "dead", "left"} {
		gauge(c.members, float64(s.Members[st]), st)
	}
	var other int
	for st, n := range s.Members {
		switch st {
		case "alive", "suspect", "dead", "left":
		default:
			other += n // a state this exposition does not know: no label from input
		}
	}
	if other > 0 {
		gauge(c.members, float64(other), "other")
	}
	gauge(c.lastResync, s.LastResync.Seconds())
}

// buddyLabels folds the per-buddy counts into at most MaxBuddyLabels
// labels plus "other". Buddies are labelled first come (in name order
// within one scrape) and keep their label.
func (c *snapshotCollector) buddyLabels(in map[string]uint64) map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, min(len(in), MaxBuddyLabels)+1)
	names := make([]string, 0, len(in))
	for b := range in {
		names = append(names, b)
	}
	sort.Strings(names)
	for _, b := range names {
		v := in[b]
		if b == otherBuddy {
			out[otherBuddy] += v
			continue
		}
		if _, ok := c.labeled[b]; !ok && len(c.labeled) < MaxBuddyLabels {
			c.labeled[b] = struct{}{}
		}
		if _, ok := c.labeled[b]; ok {
			out[b] = v
		} else {
			out[otherBuddy] += v
		}
	}
	return out
}
