package core

import (
	"regexp"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

type reMatcher struct{ *regexp.Regexp }

func (m reMatcher) Match(s string) bool { return m.MatchString(s) }

func re(s string) Matcher { return reMatcher{regexp.MustCompile("(?i)" + s)} }

func (r *recorder) takePubs() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pubs
	r.pubs = nil
	return p
}

func TestPublishFilterKeepsStateLocal(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.SetFilters(Filters{PublishDevice: re("^pjsip/"), PublishMailbox: re("@shared$")})
	if err := a.SetDeviceState("PJSIP/100", devstate.InUse); err != nil {
		t.Fatal(err)
	}
	if err := a.SetDeviceState("Local/200", devstate.Busy); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMailbox("1@shared", mwi.Counts{New: 1}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetMailbox("2@private", mwi.Counts{New: 2}); err != nil {
		t.Fatal(err)
	}
	pubs := r.takePubs()
	if len(pubs) != 2 || pubs[0].device != "PJSIP/100" || pubs[1].mailbox != "1@shared" {
		t.Fatalf("published %+v, want PJSIP/100 and 1@shared only", pubs)
	}
	// The filtered state is still this node's: the AMI side sees it.
	if s, _ := a.DeviceState("Local/200"); s != devstate.Busy {
		t.Fatalf("Local/200 = %v, want BUSY held locally", s)
	}
	equal(t, r.take(), "PJSIP/100=INUSE", "Local/200=BUSY", "1@shared=1/0", "2@private=2/0")
	fs := a.FilterStats()
	if fs.OutDevices != 1 || fs.OutMailboxes != 1 {
		t.Fatalf("filter stats %+v, want one device and one mailbox out", fs)
	}
	// Neither a republish nor an answer to a buddy carries them.
	a.Republish()
	for _, p := range r.takePubs() {
		if p.device == "Local/200" || p.mailbox == "2@private" {
			t.Fatalf("republished filtered %+v", p)
		}
	}
	ds, ms := a.AnswerFor(eidB)
	if len(ds) != 1 || ds[0].Device != "PJSIP/100" || len(ms) != 1 || ms[0].Mailbox != "1@shared" {
		t.Fatalf("answer %v %v, want the shared states only", ds, ms)
	}
	// A reload that lets Local/ through publishes what it held back.
	a.SetFilters(Filters{})
	got := map[string]bool{}
	for _, p := range r.takePubs() {
		got[p.device+p.mailbox] = true
	}
	if !got["Local/200"] || !got["2@private"] || got["PJSIP/100"] || got["1@shared"] {
		t.Fatalf("after the filter was lifted published %v, want Local/200 and 2@private only", got)
	}
}

func TestAcceptFilterDropsRemote(t *testing.T) {
	a, r, _ := newTestCore(t, Config{})
	a.SetFilters(Filters{AcceptDevice: re("sip/1"), AcceptMailbox: re("^1")})
	a.RemoteDevice(DeviceItem{Device: "SIP/100", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	a.RemoteDevice(DeviceItem{Device: "IAX/200", State: devstate.InUse, EID: eidB, Publisher: "b@x.test/r"})
	a.RemoteMailbox(MailboxItem{Mailbox: "100@x", Counts: mwi.Counts{New: 1}, EID: eidB, Publisher: "b@x.test/r"})
	a.RemoteMailbox(MailboxItem{Mailbox: "200@x", Counts: mwi.Counts{New: 1}, EID: eidB, Publisher: "b@x.test/r"})
	equal(t, r.take(), "SIP/100=INUSE", "100@x=1/0")
	// Items and answers are filtered as notifications are.
	a.Resync([]DeviceItem{{Device: "IAX/201", State: devstate.Busy, EID: eidC, Publisher: "c@x.test/r"}}, nil)
	req := a.StatesRequest("b@x.test/r")
	a.ApplyServerStates(req, []DeviceItem{
		{Device: "SIP/100", State: devstate.InUse, EID: eidB},
		{Device: "IAX/202", State: devstate.Busy, EID: eidB},
	}, []MailboxItem{{Mailbox: "100@x", Counts: mwi.Counts{New: 1}, EID: eidB}})
	equal(t, r.take())
	if fs := a.FilterStats(); fs.InDevices != 3 || fs.InMailboxes != 1 {
		t.Fatalf("filter stats %+v, want 3 devices and 1 mailbox in", fs)
	}
	// Own states are never subject to the accept filter.
	if err := a.SetDeviceState("IAX/300", devstate.Ringing); err != nil {
		t.Fatal(err)
	}
	equal(t, r.take(), "IAX/300=RINGING")
	// A narrower filter drops what it no longer accepts, own states stay.
	a.SetFilters(Filters{AcceptDevice: re("^nothing$"), AcceptMailbox: re("^nothing$")})
	equal(t, r.take(), "SIP/100=UNKNOWN", "100@x=0/0")
	if s, _ := a.DeviceState("IAX/300"); s != devstate.Ringing {
		t.Fatalf("own IAX/300 = %v after the accept filter changed, want RINGING", s)
	}
}
