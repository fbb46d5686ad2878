package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/busylamp/busylamp/internal/browsertest"
)

// The live lamp field of a real agent in a real headless chromium: a state
// changed over AMI on another agent shows on the page, in its colour,
// within a second.
func TestLampFieldInBrowser(t *testing.T) {
	c := newCluster(t, 2, nodeOpts{web: true})
	c.startAll()
	a, b := c.nodes[0].waitBooted(), c.nodes[1].waitBooted()
	b.setDevice("PJSIP/web1", "NOT_INUSE")
	eventually(t, settle, "node1 has PJSIP/web1", func() (bool, string) {
		s := a.device("PJSIP/web1")
		return s == "NOT_INUSE", s
	})

	ctx := browsertest.New(t)
	lamp := func(state string) chromedp.CSS {
		return chromedp.CSS(fmt.Sprintf(`.lamp[data-device="PJSIP/web1"][data-state=%q]`, state))
	}
	if err := browsertest.Do(ctx, bootWait,
		chromedp.Navigate("http://"+c.nodes[0].httpAddr+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="open"]`)),
		chromedp.WaitVisible(lamp("NOT_INUSE")),
	); err != nil {
		t.Fatalf("load node1's lamp field: %v\n%s", err, c.nodes[0].log())
	}
	b.setDevice("PJSIP/web1", "RINGING")
	set := time.Now()
	if err := browsertest.Do(ctx, time.Second, chromedp.WaitVisible(lamp("RINGING"))); err != nil {
		t.Fatalf("the change on node2 did not show on node1's page within 1 s: %v", err)
	}
	t.Logf("node2's Setvar shown on node1's page %v later", time.Since(set).Round(time.Millisecond))
	bg, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`getComputedStyle(document.querySelector('.lamp[data-device="PJSIP/web1"]')).backgroundColor`))
	if err != nil {
		t.Fatal(err)
	}
	if bg == "" || bg == "rgba(0, 0, 0, 0)" {
		t.Fatalf("RINGING lamp has no colour (%q)", bg)
	}
	if err := browsertest.Do(ctx, 10*time.Second,
		chromedp.WaitVisible(chromedp.CSS(`#buddies tr[data-key="`+strings.Split(c.nodes[1].jid, "/")[0]+`"]`)),
	); err != nil {
		t.Fatalf("node2 is not among node1's buddies on the page: %v", err)
	}
	browsertest.Screenshot(t, ctx, "lamp-field-e2e")
}

// scrapeText reads the node's /metrics as served.
func scrapeText(t *testing.T, n *node) []byte {
	t.Helper()
	resp, err := http.Get("http://" + n.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s %v\n%s", resp.Status, err, b)
	}
	return b
}

// scrape reads the node's /metrics, parsed.
func scrape(t *testing.T, n *node) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(scrapeText(t, n)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value is the sum of a family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	sum := 0.0
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			ok = ok && labels[want[i]] == want[i+1]
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// A real agent's metrics move with what it does: its publishes, the
// round trips and echoes they took, a buddy's events, the devices held,
// the buddies up.
func TestMetricsScrape(t *testing.T) {
	c := newCluster(t, 2, nodeOpts{web: true})
	c.startAll()
	a, b := c.nodes[0].waitBooted(), c.nodes[1].waitBooted()
	before := scrape(t, c.nodes[0])
	buddy := strings.Split(c.nodes[1].jid, "/")[0]
	a.setDevice("PJSIP/m1", "INUSE")
	b.setDevice("PJSIP/m2", "BUSY")
	eventually(t, settle, "node1 has node2's PJSIP/m2", func() (bool, string) {
		s := a.device("PJSIP/m2")
		return s == "BUSY", s
	})
	a.publishesAnswered()
	var after map[string]*dto.MetricFamily
	eventually(t, settle, "node1's metrics move", func() (bool, string) {
		after = scrape(t, c.nodes[0])
		grew := func(name string, labels ...string) bool {
			return value(after, name, labels...) > value(before, name, labels...)
		}
		ok := grew("busylamp_publishes_total") && grew("busylamp_iq_round_trip_seconds") &&
			grew("busylamp_echo_lag_seconds") && grew("busylamp_events_in_total", "buddy", buddy) &&
			value(after, "busylamp_devices") >= 2 && value(after, "busylamp_buddies_up") == 1
		return ok, fmt.Sprintf("publishes %v→%v, iq %v→%v, echo %v→%v, events from %s %v→%v, devices %v, buddies up %v",
			value(before, "busylamp_publishes_total"), value(after, "busylamp_publishes_total"),
			value(before, "busylamp_iq_round_trip_seconds"), value(after, "busylamp_iq_round_trip_seconds"),
			value(before, "busylamp_echo_lag_seconds"), value(after, "busylamp_echo_lag_seconds"),
			buddy, value(before, "busylamp_events_in_total", "buddy", buddy), value(after, "busylamp_events_in_total", "buddy", buddy),
			value(after, "busylamp_devices"), value(after, "busylamp_buddies_up"))
	})
	if value(after, "busylamp_reconnects_total") != 0 {
		t.Fatalf("reconnects %v on a session that never dropped", value(after, "busylamp_reconnects_total"))
	}

	// The scrape as served, kept in the test's output, and clean for
	// Prometheus's own linter (Debian's prometheus ships promtool; CI
	// installs it: internal/e2e/install.sh).
	text := scrapeText(t, c.nodes[0])
	out := filepath.Join(browsertest.OutputDir(t), "metrics.txt")
	if err := os.WriteFile(out, text, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("scrape: %s", out)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: sh internal/e2e/install.sh (as root) installs it")
		}
		t.Log("promtool not installed here: the scrape was not linted (sh internal/e2e/install.sh)")
		return
	}
	lint := exec.Command(promtool, "check", "metrics")
	lint.Stdin = bytes.NewReader(text)
	if msg, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, msg)
	}
}
