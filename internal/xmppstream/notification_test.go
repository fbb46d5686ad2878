package xmppstream

// PubSub notifications as Prosody and ejabberd send them (PROTOCOL.md
// "Subscribing and receiving"): the stanzas the read loop reads most, as
// seeds of the differential test and the benchmark's input.

const otherEID = "00:11:22:33:44:55"

func eventMsg(inner string) string {
	return `<message xmlns="jabber:client" from="pubsub.example.org" to="server1@example.org" type="headline">` +
		`<event xmlns="http://jabber.org/protocol/pubsub#event">` + inner + `</event></message>`
}

func stateItem(id, eid, attrs, state string) string {
	return `<item id="` + id + `" publisher="server2@example.org"><state xmlns="http://asterisk.org" eid="` + eid + `"` + attrs + `>` + state + `</state></item>`
}

func mboxItem(id, eid, nw, old string) string {
	return `<item id="` + id + `"><mailbox xmlns="http://asterisk.org" eid="` + eid + `"><NEWMSGS>` + nw + `</NEWMSGS><OLDMSGS>` + old + `</OLDMSGS></mailbox></item>`
}
