package xmppstream

import (
	"bufio"
	"encoding/xml"
	"net"
	"testing"
	"time"

	"gosrc.io/xmpp/stanza"
)

// repeatConn is a net.Conn whose reads return a stream header, then the
// same notification again and again.
type repeatConn struct {
	net.Conn
	head, msg string
	off       int
	started   bool
}

func (r *repeatConn) Read(p []byte) (int, error) {
	if !r.started {
		r.started = true
		return copy(p, r.head), nil
	}
	n := copy(p, r.msg[r.off:])
	r.off = (r.off + n) % len(r.msg)
	return n, nil
}

func (r *repeatConn) SetReadDeadline(time.Time) error { return nil }

// The reading half of the hot path: read one notification off the stream
// as the read loop does (xmlReader), against the encoding/xml reading it
// replaced (the same-run baseline). pubsub's parsing of the tree into a
// DeviceEvent is the same on both and left out.
func BenchmarkReadNotification(b *testing.B) {
	msg := eventMsg(`<items node="device_state">` + stateItem("PJSIP/1000", otherEID, ` cachable="1"`, "INUSE") + `</items>`)
	head := `<stream:stream xmlns="jabber:client" xmlns:stream="http://etherx.jabber.org/streams">`
	check := func(b *testing.B, e *Element) {
		st := e.Child("http://jabber.org/protocol/pubsub#event", "event").Child("", "items").Child("", "item").Child("http://asterisk.org", "state")
		if st.Text() != "INUSE" || st.Attr("eid") != otherEID {
			b.Fatalf("read %+v from %s", e, msg)
		}
	}
	b.Run("xmlReader", func(b *testing.B) {
		rc := &repeatConn{head: head, msg: msg + " "}
		c := &conn{raw: rc, nc: rc}
		c.resetDecoder()
		if err := c.xr.header(); err != nil { // as openStream reads it
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			e, err := c.next()
			if err != nil {
				b.Fatal(err)
			}
			check(b, e)
		}
	})
	b.Run("encoding-xml", func(b *testing.B) {
		rc := &repeatConn{head: head, msg: msg + " "}
		d := xml.NewDecoder(bufio.NewReaderSize(rc, 16<<10))
		if _, err := stanza.InitStream(d); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			t, err := stanza.NextXmppToken(d)
			if err != nil {
				b.Fatal(err)
			}
			e, err := readElem(d, t.(xml.StartElement))
			if err != nil {
				b.Fatal(err)
			}
			check(b, e)
		}
	})
}
