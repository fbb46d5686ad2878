package core

import (
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// Matcher says whether a device or mailbox name passes a filter (the
// config's POSIX ERE patterns).
type Matcher interface {
	Match(name string) bool
}

// Filters are what the operator lets this node share and take in, as
// res_pjsip_publish_asterisk's device_state_filter and
// mailbox_state_filter: Publish* on this node's own states (what it
// publishes and answers buddies with), Accept* on every other server's (in
// notifications, items and answers). A nil Matcher lets everything pass.
//
// A filtered own state is still this node's state (the local AMI socket
// reads it); only the cluster does not hear of it.
type Filters struct {
	PublishDevice, PublishMailbox Matcher
	AcceptDevice, AcceptMailbox   Matcher
}

func passes(m Matcher, name string) bool { return m == nil || m.Match(name) }

// FilterStats count what the filters held back.
type FilterStats struct {
	// Out: own changes not published (and own states left out of
	// republishes and answers are not counted: they are the same states).
	OutDevices, OutMailboxes uint64
	// In: remote states dropped on arrival.
	InDevices, InMailboxes uint64
}

// SetFilters replaces the filters (a reload). Remote states held that the
// new accept filters refuse are dropped now, as if their server had
// retracted them; own states the new publish filters let through and the
// old ones did not are published now. Own states the new filters hold
// back stay on the PubSub nodes as last published: retracting them would
// blink the lamps of every Asterisk peer.
func (a *Core) SetFilters(f Filters) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.filters
	a.filters = f
	for _, d := range a.devices.List() {
		if passes(f.AcceptDevice, d.Device) {
			continue
		}
		for _, e := range a.devices.Entries(d.Device) {
			if e.EID == a.cfg.EID {
				continue
			}
			agg, changed, gone := a.devices.Remove(d.Device, e.EID)
			if changed {
				if gone {
					agg = devstate.Unknown
				}
				a.sink.DeviceChanged(d.Device, agg)
			}
		}
	}
	for _, m := range a.mailboxes.List() {
		if passes(f.AcceptMailbox, m.Mailbox) {
			continue
		}
		for _, e := range a.mailboxes.Entries(m.Mailbox) {
			if e.EID != a.cfg.EID {
				a.deleteMailboxLocked(m.Mailbox, e.EID)
			}
		}
	}
	ds, ms := a.statesOfLocked(a.cfg.EID)
	for _, d := range ds {
		if !passes(old.PublishDevice, d.Device) && passes(f.PublishDevice, d.Device) {
			a.pub.PublishDevice(d.Device, d.State, d.Cachable)
		}
	}
	for _, m := range ms {
		if !passes(old.PublishMailbox, m.Mailbox) && passes(f.PublishMailbox, m.Mailbox) {
			a.pub.PublishMailbox(m.Mailbox, m.Counts)
		}
	}
}

// SetStale changes the stale policy (a reload). A grace period already
// running keeps the length it started with.
func (a *Core) SetStale(s Stale, grace time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfg.Stale, a.cfg.StaleGrace = s, max(grace, 0)
}

// FilterStats reports what the filters held back.
func (a *Core) FilterStats() FilterStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.filtered
}

func (a *Core) publishDeviceLocked(device string, s devstate.State, cachable bool) {
	if !passes(a.filters.PublishDevice, device) {
		a.filtered.OutDevices++
		return
	}
	a.pub.PublishDevice(device, s, cachable)
}

func (a *Core) publishMailboxLocked(mailbox string, c mwi.Counts) {
	if !passes(a.filters.PublishMailbox, mailbox) {
		a.filtered.OutMailboxes++
		return
	}
	a.pub.PublishMailbox(mailbox, c)
}

// acceptDeviceLocked says whether a remote device state may come in, and
// counts it when not.
func (a *Core) acceptDeviceLocked(device string) bool {
	if passes(a.filters.AcceptDevice, device) {
		return true
	}
	a.filtered.InDevices++
	return false
}

func (a *Core) acceptMailboxLocked(mailbox string) bool {
	if passes(a.filters.AcceptMailbox, mailbox) {
		return true
	}
	a.filtered.InMailboxes++
	return false
}

// ownShared drops from own states what the publish filters hold back.
func (a *Core) ownSharedLocked(ds []DeviceItem, ms []MailboxItem) ([]DeviceItem, []MailboxItem) {
	if a.filters.PublishDevice != nil {
		ds = filterItems(ds, func(d DeviceItem) bool { return d.EID != a.cfg.EID || a.filters.PublishDevice.Match(d.Device) })
	}
	if a.filters.PublishMailbox != nil {
		ms = filterItems(ms, func(m MailboxItem) bool { return m.EID != a.cfg.EID || a.filters.PublishMailbox.Match(m.Mailbox) })
	}
	return ds, ms
}

func filterItems[T any](l []T, keep func(T) bool) []T {
	out := l[:0]
	for _, v := range l {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
