package manager

import (
	"strconv"
	"strings"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// Event is one event for the logged-in sessions. Privilege is Asterisk's
// class list ("call,all"); a session receives the event when its event mask
// holds the event's classes.
type Event struct {
	Name      string
	Privilege string
	Headers   []Header
}

// The privileges Asterisk writes for its event classes (authority_to_str
// adds "all" to every class).
const (
	privilegeSystem = "system,all"
	privilegeCall   = "call,all"
)

// DeviceStateChange is Asterisk's event for a device whose cluster-wide
// state changed.
func DeviceStateChange(device string, s devstate.State) Event {
	return Event{Name: "DeviceStateChange", Privilege: privilegeCall, Headers: []Header{
		{"Device", device},
		{"State", s.String()},
	}}
}

// MessageWaiting is Asterisk's event for a mailbox whose cluster-wide counts
// changed (main/manager_mwi.c).
func MessageWaiting(mailbox string, c mwi.Counts) Event {
	waiting := "0"
	if c.Waiting() {
		waiting = "1"
	}
	return Event{Name: "MessageWaiting", Privilege: privilegeCall, Headers: []Header{
		{"Mailbox", mailbox},
		{"Waiting", waiting},
		{"New", strconv.Itoa(c.New)},
		{"Old", strconv.Itoa(c.Old)},
	}}
}

// BuddyStatus is busylamp's event for an XMPP buddy that came or went
// (headers such as JID, Status, Resource).
func BuddyStatus(headers ...Header) Event {
	return Event{Name: "BuddyStatus", Privilege: privilegeSystem, Headers: headers}
}

// ClusterMember is busylamp's event for a gossip member that joined, left or
// failed (headers such as Member, Address, Status).
func ClusterMember(headers ...Header) Event {
	return Event{Name: "ClusterMember", Privilege: privilegeSystem, Headers: headers}
}

// render writes the event once, exactly sized, for every session to share.
func (ev Event) render() []byte {
	n := len("Event: \r\n") + len(ev.Name) + len("Privilege: \r\n") + len(ev.Privilege) + 2
	for _, h := range ev.Headers {
		n += len(h.Key) + len(h.Value) + 4
	}
	b := make([]byte, 0, n)
	b = appendHeader(b, "Event", ev.Name)
	b = appendHeader(b, "Privilege", ev.Privilege)
	for _, h := range ev.Headers {
		b = appendHeader(b, h.Key, h.Value)
	}
	return append(b, "\r\n"...)
}

// Event classes, Asterisk's EVENT_FLAG_* bits, so that numeric event masks
// mean what they mean to Asterisk.
const (
	classSystem = 1 << 0
	classCall   = 1 << 1
	classAll    = ^uint32(0)
)

var classNames = []struct {
	name string
	bit  uint32
}{
	{"system", 1 << 0}, {"call", 1 << 1}, {"log", 1 << 2}, {"verbose", 1 << 3},
	{"command", 1 << 4}, {"agent", 1 << 5}, {"user", 1 << 6}, {"config", 1 << 7},
	{"dtmf", 1 << 8}, {"reporting", 1 << 9}, {"cdr", 1 << 10}, {"dialplan", 1 << 11},
	{"originate", 1 << 12}, {"agi", 1 << 13}, {"hookresponse", 1 << 14}, {"cc", 1 << 15},
	{"aoc", 1 << 16}, {"test", 1 << 17}, {"security", 1 << 18}, {"message", 1 << 30},
}

func classBit(name string) (uint32, bool) {
	for _, c := range classNames {
		if strings.EqualFold(c.name, name) {
			return c.bit, true
		}
	}
	return 0, false
}

// eventClass reads an event's Privilege into its class bits; "all" is
// decoration there, as in Asterisk.
func eventClass(privilege string) uint32 {
	var class uint32
	for rest := privilege; rest != ""; {
		var word string
		word, rest, _ = strings.Cut(rest, ",")
		if bit, ok := classBit(strings.TrimSpace(word)); ok {
			class |= bit
		}
	}
	return class
}

// wants reports whether a session with the given mask receives an event of
// the given class: all of the event's classes must be in the mask.
func wants(mask, class uint32) bool {
	if mask == 0 {
		return false
	}
	return mask&class == class
}

// parseEventMask reads the EventMask of the Events action and the Events
// header of Login: on/off and Asterisk's other spellings, a number, or a
// comma list of classes. ok is false for anything else, naming the word.
func parseEventMask(s string) (mask uint32, bad string, ok bool) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "":
		return 0, "", false
	case "on", "yes", "true", "y", "t", "1", "all":
		return classAll, "", true
	case "off", "no", "false", "n", "f", "0", "none":
		return 0, "", true
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), "", true
	}
	for rest := s; rest != ""; {
		var word string
		word, rest, _ = strings.Cut(rest, ",")
		word = strings.TrimSpace(word)
		if strings.EqualFold(word, "all") {
			mask = classAll
			continue
		}
		bit, known := classBit(word)
		if !known {
			return 0, word, false
		}
		mask |= bit
	}
	return mask, "", true
}
