package web

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/browsertest"
	"github.com/busylamp/busylamp/mwi"
)

// Generous: a cold browser on a loaded CI machine.
const loadTimeout = 30 * time.Second

// changeDeadline is how soon a pushed change must show on the page.
const changeDeadline = time.Second

func lamp(device, state string) chromedp.CSS {
	return chromedp.CSS(fmt.Sprintf(`.lamp[data-device=%q][data-state=%q]`, device, state))
}

func TestPageShowsLiveChanges(t *testing.T) {
	src := newFakeSource(40)
	h, srv := startHub(t, src, Config{})
	ctx := browsertest.New(t)

	if err := browsertest.Do(ctx, loadTimeout,
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)),
		chromedp.WaitVisible(lamp("PJSIP/00003", "NOT_INUSE")),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="open"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#mailboxes .mwi[data-mailbox="100@default"][data-waiting="1"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#buddies tr[data-key="b@example.net"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#members tr[data-key="node-b"]`)),
	); err != nil {
		t.Fatalf("load the page: %v", err)
	}
	// The state is written out, not only coloured.
	if txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.lamp[data-device="PJSIP/00003"] .state`))); err != nil || txt != "NOT_INUSE" {
		t.Fatalf("lamp text %q, %v; want NOT_INUSE", txt, err)
	}

	src.set("PJSIP/00003", devstate.Busy)
	pushed := time.Now()
	h.DeviceChanged("PJSIP/00003", devstate.Busy)
	if err := browsertest.Do(ctx, changeDeadline, chromedp.WaitVisible(lamp("PJSIP/00003", "BUSY"))); err != nil {
		t.Fatalf("the change to BUSY did not show within %v: %v", changeDeadline, err)
	}
	t.Logf("change shown %v after the push", time.Since(pushed).Round(time.Millisecond))

	style, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`(() => {
		const el = document.querySelector('.lamp[data-device="PJSIP/00003"]');
		const cs = getComputedStyle(el);
		return [cs.backgroundColor, cs.backgroundImage, el.querySelector('.state').textContent];
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if style[0] != "rgb(213, 94, 0)" || !strings.Contains(style[1], "repeating-linear-gradient") || style[2] != "BUSY" {
		t.Fatalf("BUSY lamp: background %q, pattern %q, text %q; want Okabe–Ito vermillion, stripes, BUSY", style[0], style[1], style[2])
	}

	// The per-server breakdown on click.
	if err := browsertest.Do(ctx, 5*time.Second,
		chromedp.Click(chromedp.CSS(`.lamp[data-device="PJSIP/00003"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#servers td[data-state="BUSY"]`)),
	); err != nil {
		t.Fatalf("detail: %v", err)
	}
	detail, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#detail`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PJSIP/00003", "02:00:00:00:00:01", "a@example.net/agent", "BUSY"} {
		if !strings.Contains(detail, want) {
			t.Errorf("detail %q lacks %q", detail, want)
		}
	}

	h.MailboxChanged("100@default", mwi.Counts{New: 0, Old: 9})
	src.mu.Lock()
	src.members[0].State = "dead"
	src.mu.Unlock()
	h.MembersChanged()
	if err := browsertest.Do(ctx, changeDeadline,
		chromedp.WaitVisible(chromedp.CSS(`#mailboxes .mwi[data-mailbox="100@default"][data-waiting="0"]`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('#members tr[data-key="node-b"]').textContent.includes("dead")`),
	); err != nil {
		t.Fatalf("MWI and member changes did not show: %v", err)
	}
	browsertest.Screenshot(t, ctx, "lamp-field")
}

func TestPageTenThousandDevices(t *testing.T) {
	const n = 10_000
	src := newFakeSource(n)
	h, srv := startHub(t, src, Config{})
	ctx := browsertest.New(t)

	start := time.Now()
	if err := browsertest.Do(ctx, loadTimeout,
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)),
		chromedp.WaitVisible(lamp("PJSIP/00000", "NOT_INUSE")),
	); err != nil {
		t.Fatalf("load: %v", err)
	}
	firstRender := time.Since(start)
	t.Logf("%d devices: first render %v after navigation", n, firstRender.Round(time.Millisecond))
	if firstRender > 5*time.Second {
		t.Fatalf("first render took %v, want under 5 s", firstRender)
	}
	counts, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`[+document.getElementById("grid").dataset.total, document.querySelectorAll(".lamp").length]`))
	if err != nil {
		t.Fatal(err)
	}
	if counts[0] != n {
		t.Fatalf("grid holds %d devices, want %d", counts[0], n)
	}
	if counts[1] > 2000 {
		t.Fatalf("%d lamp elements in the DOM for %d devices: the grid is not virtualised", counts[1], n)
	}

	// A burst over every device: the page keeps up.
	pushed := time.Now()
	for i := range n {
		name := fmt.Sprintf("PJSIP/%05d", i)
		src.set(name, devstate.InUse)
		h.DeviceChanged(name, devstate.InUse)
	}
	if err := browsertest.Do(ctx, 5*time.Second,
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`(document.querySelector('#legend li[data-state="INUSE"]')||{}).textContent === "● INUSE %d"`, n)),
		chromedp.WaitVisible(lamp("PJSIP/00000", "INUSE")),
	); err != nil {
		t.Fatalf("a change of all %d devices did not show within 5 s: %v", n, err)
	}
	t.Logf("%d changes shown %v after the first push", n, time.Since(pushed).Round(time.Millisecond))

	// The filter narrows the grid.
	if err := browsertest.Do(ctx, 5*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#filter`), "09999"),
		chromedp.WaitVisible(chromedp.CSS(`#grid[data-shown="1"]`)),
		chromedp.WaitVisible(lamp("PJSIP/09999", "INUSE")),
	); err != nil {
		t.Fatalf("filter: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".lamp:not([hidden])")].map(e => e.dataset.device)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(shown) != 1 || shown[0] != "PJSIP/09999" {
		t.Fatalf("filtered grid shows %v, want only PJSIP/09999", shown)
	}
	browsertest.Screenshot(t, ctx, "filtered")

	// Cleared, the grid scrolls to its last device.
	if err := browsertest.Do(ctx, 5*time.Second,
		chromedp.Evaluate[chromedp.Void](`(f => { f.value = ""; f.dispatchEvent(new Event("input")); })(document.getElementById("filter"))`),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#grid[data-shown="%d"]`, n))),
		chromedp.Evaluate[chromedp.Void](`(g => g.scrollTop = g.scrollHeight)(document.getElementById("grid"))`),
		chromedp.WaitVisible(lamp("PJSIP/09999", "INUSE")),
	); err != nil {
		t.Fatalf("scroll to the end: %v", err)
	}
	browsertest.Screenshot(t, ctx, "ten-thousand-scrolled")
}

// Behind Basic auth the page and its stream work with the credentials the
// browser sends (here set as a header, as a browser does once a user gave
// them).
func TestPageBehindBasicAuth(t *testing.T) {
	src := newFakeSource(5)
	h, srv := startHub(t, src, Config{Auth: func(user, secret string) bool { return user == "admin" && secret == "s3cret" }})
	ctx := browsertest.New(t)
	cred := base64.StdEncoding.EncodeToString([]byte("admin:s3cret"))
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Basic " + cred}}); err != nil {
		t.Fatal(err)
	}
	if err := browsertest.Do(ctx, loadTimeout,
		chromedp.Navigate(srv.URL),
		chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="open"]`)),
		chromedp.WaitVisible(lamp("PJSIP/00001", "NOT_INUSE")),
	); err != nil {
		t.Fatalf("load behind auth: %v", err)
	}
	src.set("PJSIP/00001", devstate.Ringing)
	h.DeviceChanged("PJSIP/00001", devstate.Ringing)
	if err := browsertest.Do(ctx, changeDeadline, chromedp.WaitVisible(lamp("PJSIP/00001", "RINGING"))); err != nil {
		t.Fatalf("change behind auth: %v", err)
	}
}
