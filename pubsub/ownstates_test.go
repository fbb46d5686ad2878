package pubsub

import (
	"encoding/xml"
	"fmt"
	"strings"
	"testing"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// An answer's chunks stay under ownChunkBytes of XML whatever the names
// (the longest, full of characters XML escapes), cover every item once, in
// order, and short names fill ownChunk items.
func TestOwnStatesChunksBounded(t *testing.T) {
	eid := devstate.DeriveEID("chunk")
	for _, tc := range []struct {
		name  string
		long  bool
		ndev  int
		nmbox int
	}{{"short names", false, 4100, 150}, {"longest names, escaped", true, 3000, 700}} {
		t.Run(tc.name, func(t *testing.T) {
			name := func(i int) string {
				if !tc.long {
					return fmt.Sprintf("PJSIP/%04d", i)
				}
				s := fmt.Sprintf("%d:", i) + strings.Repeat(`"&<`, devstate.MaxNameLen)
				return s[:devstate.MaxNameLen]
			}
			ans := &answer{}
			for i := range tc.ndev {
				ans.devs = append(ans.devs, DeviceItem{Device: name(i), State: devstate.RingInUse, Cachable: true, EID: eid})
			}
			for i := range tc.nmbox {
				ans.mboxes = append(ans.mboxes, MailboxItem{Mailbox: name(i), Counts: mwi.Counts{New: mwi.MaxCount, Old: mwi.MaxCount}, EID: eid})
			}
			total, off := tc.ndev+tc.nmbox, 0
			for off < total {
				r := chunk(ans, "tok", off)
				b, err := xml.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				n := len(r.Devices) + len(r.Mailboxes)
				if len(b) > ownChunkBytes || n == 0 || n > ownChunk {
					t.Fatalf("chunk at %d: %d items, %d bytes (bounds %d, %d)", off, n, len(b), ownChunk, ownChunkBytes)
				}
				for i, d := range r.Devices {
					if d.Name != name(off+i) {
						t.Fatalf("chunk at %d: device %d is %q", off, i, d.Name)
					}
				}
				off += n
				if want := "tok:" + fmt.Sprint(off); off < total && r.Next != want {
					t.Fatalf("next = %q, want %q", r.Next, want)
				} else if off == total && r.Next != "" {
					t.Fatalf("last chunk has next %q", r.Next)
				}
			}
			if first := len(chunk(ans, "tok", 0).Devices); !tc.long && first != ownChunk {
				t.Errorf("first chunk of short names: %d items, want %d", first, ownChunk)
			}
		})
	}
}
