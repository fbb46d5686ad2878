package core

import (
	"strings"
	"time"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/mwi"
)

// RemoteDevice applies a device state that another server published.
// Payloads with this node's own EID are echoes and are ignored.
func (a *Core) RemoteDevice(it DeviceItem) {
	if it.EID == a.cfg.EID || checkName("device", it.Device) != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.bindLocked(it.EID, it.Publisher) || !a.acceptDeviceLocked(it.Device) {
		return
	}
	a.setRemoteDeviceLocked(it)
}

func (a *Core) setRemoteDeviceLocked(it DeviceItem) {
	agg, changed, err := a.devices.SetChecked(it.Device, it.EID, it.State, it.Cachable, a.stampLocked(), a.admitDev)
	if err != nil {
		if it.EID == a.cfg.EID || !a.refusedLocked(a.devices, "devices", it.Device, it.EID, err) {
			a.warn.warn(a.log, a.now(), "device dropped", "device", it.Device, "eid", it.EID.String(), "err", err)
		}
		return
	}
	if changed {
		a.sink.DeviceChanged(it.Device, agg)
	}
}

// RemoteMailbox applies mailbox counts that another server published.
func (a *Core) RemoteMailbox(it MailboxItem) {
	if it.EID == a.cfg.EID || checkName("mailbox", it.Mailbox) != nil {
		return
	}
	if it.Counts.Check() != nil {
		a.warn.warn(a.log, a.now(), "mailbox counts out of range", "mailbox", it.Mailbox, "eid", it.EID.String())
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.bindLocked(it.EID, it.Publisher) || !a.acceptMailboxLocked(it.Mailbox) {
		return
	}
	a.setRemoteMailboxLocked(it)
}

func (a *Core) setRemoteMailboxLocked(it MailboxItem) {
	agg, changed, err := a.mailboxes.SetChecked(it.Mailbox, it.EID, it.Counts, a.stampLocked(), a.admitBox)
	if err != nil {
		if it.EID == a.cfg.EID || !a.refusedLocked(a.mailboxes, "mailboxes", it.Mailbox, it.EID, err) {
			a.warn.warn(a.log, a.now(), "mailbox dropped", "mailbox", it.Mailbox, "eid", it.EID.String(), "err", err)
		}
		return
	}
	if changed {
		a.sink.MailboxChanged(it.Mailbox, agg)
	}
}

// bindLocked ties eid to the bare JID that published it, the first time a
// publisher is known, and refuses a payload whose EID is bound to another
// JID: any whitelisted account could otherwise speak for any server.
func (a *Core) bindLocked(eid devstate.EID, publisher string) bool {
	s := a.servers[eid]
	if s == nil {
		if len(a.servers) >= maxServers {
			a.warn.warn(a.log, a.now(), "too many servers; payload dropped", "eid", eid.String(), "max", maxServers)
			return false
		}
		s = &server{eid: eid}
		a.servers[eid] = s
	}
	if publisher == "" || publisher == s.publisher {
		// No publisher, or the one that was bound last time as it was
		// spelled then: no need to read the JID again (every
		// notification comes here).
		s.seen = a.now()
		return true
	}
	bare := bareJID(publisher)
	if bare == "" {
		a.warn.warn(a.log, a.now(), "payload refused: publisher is not a JID", "eid", eid.String())
		return false
	}
	switch {
	case s.jid == "":
		p := a.peerLocked(bare)
		if p == nil {
			return false
		}
		if len(p.eids) >= maxEIDsPerJID {
			a.warn.warn(a.log, a.now(), "payload refused: account speaks for too many EIDs", "jid", bare, "eid", eid.String(), "max", maxEIDsPerJID)
			return false
		}
		s.jid = p.jid
		p.eids[eid] = struct{}{}
	case s.jid != bare:
		a.spoofed++
		a.warn.warn(a.log, a.now(), "payload refused: EID belongs to another account",
			"eid", eid.String(), "bound_to", s.jid, "claimed_by", bare)
		return false
	}
	s.publisher = strings.Clone(publisher) // kept: not a slice of the stanza
	s.seen = a.now()
	return true
}

// BindEID ties eid to jid authoritatively (membership knows better than
// the first publication). A previous binding to another JID is replaced.
// The server counts as alive until RemoveServer: membership, not presence,
// then says when its states go.
func (a *Core) BindEID(eid devstate.EID, jid string) {
	if eid == a.cfg.EID {
		return
	}
	bare := bareJID(jid)
	if bare == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.servers[eid]
	if s == nil {
		if len(a.servers) >= maxServers {
			return
		}
		s = &server{eid: eid, seen: a.now()}
		a.servers[eid] = s
	}
	s.member = true
	if s.jid == bare {
		return
	}
	if old := a.jids[s.jid]; old != nil {
		delete(old.eids, eid)
	}
	s.publisher = ""
	if p := a.peerLocked(bare); p != nil {
		s.jid = p.jid
		p.eids[eid] = struct{}{}
	}
}

func (a *Core) peerLocked(bare string) *peer {
	p := a.jids[bare]
	if p == nil {
		if len(a.jids) >= maxServers {
			a.warn.warn(a.log, a.now(), "too many peers", "jid", bare, "max", maxServers)
			return nil
		}
		bare = strings.Clone(bare) // kept: not a slice of the stanza it came in
		p = &peer{jid: bare, eids: make(map[devstate.EID]struct{})}
		a.jids[bare] = p
	}
	return p
}

// Presence records whether a buddy's account is online (any of its
// resources available: the XMPP client's roster knows which). When it goes
// offline its servers' states expire after the grace period
// (stale=expire); coming back in time cancels that. It reports whether the
// account changed between online and offline. A JID with a resource names
// its account; this node's own account is ignored.
func (a *Core) Presence(account string, online bool) (changed bool) {
	bare := bareJID(account)
	if bare == "" || bare == a.self.Bare() {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.peerLocked(bare)
	if p == nil {
		return false
	}
	was := p.online
	p.online = online
	if online {
		p.gen++
		if p.expiry != nil {
			p.expiry.Stop()
			p.expiry = nil
		}
	} else if was {
		a.scheduleExpiryLocked(p)
	}
	return was != online
}

func (a *Core) scheduleExpiryLocked(p *peer) {
	if a.cfg.Stale == StaleKeep || len(p.eids) == 0 {
		return
	}
	p.gen++
	gen := p.gen
	if p.expiry != nil {
		p.expiry.Stop()
	}
	p.expiry = a.clock.AfterFunc(a.cfg.StaleGrace, func() { a.expire(p.jid, gen) })
}

func (a *Core) expire(bare string, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.jids[bare]
	if p == nil || p.gen != gen || p.online {
		return
	}
	p.expiry = nil
	for eid := range p.eids {
		if s := a.servers[eid]; s != nil && s.member {
			continue // alive by membership, which says when it dies
		}
		a.log.Info("server states expired", "jid", bare, "eid", eid.String(), "grace", a.cfg.StaleGrace)
		a.removeServerLocked(eid)
	}
}

// RemoveServer drops every state of the server with this EID at once and
// emits the resulting changes, whatever the stale policy.
func (a *Core) RemoveServer(eid devstate.EID) {
	if eid == a.cfg.EID {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeServerLocked(eid)
}

// MemberJoined is membership telling that the server eid, speaking as
// jid, is alive: the binding is authoritative (see BindEID) and presence
// no longer expires it.
func (a *Core) MemberJoined(eid devstate.EID, jid string) { a.BindEID(eid, jid) }

// MemberGone is membership telling that the server eid died or left. With
// stale=expire its states go at once (membership is surer than presence,
// so no grace); with stale=keep they stay, as Asterisk keeps them. It
// reports whether they went.
func (a *Core) MemberGone(eid devstate.EID, why string) bool {
	if eid == a.cfg.EID {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Stale != StaleExpire { // under the lock: SetStale
		return false
	}
	jid := ""
	if s := a.servers[eid]; s != nil {
		jid = s.jid
	}
	a.log.Info("member gone: its states expire", "jid", jid, "eid", eid.String(), "status", why)
	a.removeServerLocked(eid)
	return true
}

func (a *Core) removeServerLocked(eid devstate.EID) {
	if s := a.servers[eid]; s != nil {
		s.member = false
	}
	for _, c := range a.devices.RemoveServer(eid) {
		s := c.State
		if c.Gone {
			s = devstate.Unknown
		}
		a.sink.DeviceChanged(c.Device, s)
	}
	for _, c := range a.mailboxes.RemoveServer(eid) {
		counts := c.Counts
		if c.Gone {
			counts = mwi.Counts{}
		}
		a.sink.MailboxChanged(c.Mailbox, counts)
	}
}

// Disconnected is called when this node lost its XMPP session: from now
// on it hears no presence, so every account is considered away until the
// server tells again who is there after the reconnect. States expire only
// if that does not happen within the grace period.
func (a *Core) Disconnected() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.jids {
		if p.online {
			p.online = false
			a.scheduleExpiryLocked(p)
		}
	}
}

// restoreOwnDeviceLocked takes back an own state this node lost (a
// restart) and notes it as restored, not set by the PBX.
func (a *Core) restoreOwnDeviceLocked(it DeviceItem) {
	a.setRemoteDeviceLocked(it)
	if a.holdsDeviceLocked(it.Device, it.EID) {
		a.restoredDev[strings.Clone(it.Device)] = struct{}{} // not a slice of the stanza
	}
}

func (a *Core) restoreOwnMailboxLocked(it MailboxItem) {
	a.setRemoteMailboxLocked(it)
	if a.holdsMailboxLocked(it.Mailbox, it.EID) {
		a.restoredBox[strings.Clone(it.Mailbox)] = struct{}{}
	}
}

// Resync applies the items fetched from both PubSub nodes after a
// (re)connect. Items carry only the last writer of each device, so they
// are exact for single-writer devices and Asterisk nodes; ApplyServerStates
// completes the picture per busylamp server. An item with this node's own
// EID restores an own state this node does not hold (after a restart).
func (a *Core) Resync(devices []DeviceItem, mailboxes []MailboxItem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	early := a.answeredEarly
	a.answeredEarly, a.itemsRead = nil, true
	for _, it := range devices {
		if checkName("device", it.Device) != nil {
			continue
		}
		if it.EID == a.cfg.EID {
			if !a.holdsDeviceLocked(it.Device, it.EID) {
				a.restoreOwnDeviceLocked(it)
			}
			continue
		}
		if _, exact := early[it.EID]; exact {
			continue
		}
		if a.bindLocked(it.EID, it.Publisher) && a.acceptDeviceLocked(it.Device) {
			a.setRemoteDeviceLocked(it)
		}
	}
	for _, it := range mailboxes {
		if checkName("mailbox", it.Mailbox) != nil || it.Counts.Check() != nil {
			continue
		}
		if it.EID == a.cfg.EID {
			// Zero counts of our own are what a delete left behind; an
			// own mailbox the PBX deleted is not taken back from an item
			// the delete's zero counts did not reach.
			if it.Counts != (mwi.Counts{}) && !a.holdsMailboxLocked(it.Mailbox, it.EID) && !a.deletedOwnLocked(it.Mailbox) {
				a.restoreOwnMailboxLocked(it)
			}
			continue
		}
		if _, exact := early[it.EID]; exact {
			continue
		}
		if a.bindLocked(it.EID, it.Publisher) && a.acceptMailboxLocked(it.Mailbox) {
			a.setRemoteMailboxLocked(it)
		}
	}
	a.expireAbsentLocked()
}

// expireAbsentLocked starts the grace period for every account whose
// states we hold but whose presence we do not see: items and answers can
// bring back the states of a server that is gone (it expired before, or
// died while we were away), and only presence or membership would
// otherwise ever drop them again. Presence that arrives cancels it.
func (a *Core) expireAbsentLocked() {
	for _, p := range a.jids {
		if !p.online && len(p.eids) > 0 && p.expiry == nil {
			a.scheduleExpiryLocked(p)
		}
	}
}

// StatesRequest is a directed states request about to be sent to the
// buddy JID; ApplyServerStates takes its answer.
type StatesRequest struct {
	JID   string
	since time.Time
	early bool // see EarlyStatesRequest
}

// StatesRequest notes that the buddy jid is asked for its own states now.
func (a *Core) StatesRequest(jid string) StatesRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return StatesRequest{JID: jid, since: a.stampLocked()}
}

// EarlyStatesRequest is StatesRequest for a request made before the
// first items are read (a gossip member asked while XMPP still
// connects). If its answer comes before the items, Resync leaves the
// answering server's states as the answer set them: the answer is exact,
// the items may be older. (The resync after the connect asks again, so a
// change the items alone saw is not lost.)
func (a *Core) EarlyStatesRequest(jid string) StatesRequest {
	r := a.StatesRequest(jid)
	r.early = true
	return r
}

// ApplyServerStates replaces everything held for the server(s) of the
// account jid with what it answered to a directed states request: its own
// states, exactly. The answering server is known by the EIDs of the items,
// or, when it holds nothing, by the EIDs bound to jid. Items that carry
// this node's EID are what the buddy holds of ours, and restore own states
// this node lost (a restart).
//
// An entry updated after the request was made (a publication that
// overtook the answer) is newer than the answer and is left as it is.
func (a *Core) ApplyServerStates(req StatesRequest, devices []DeviceItem, mailboxes []MailboxItem) {
	jid, since := req.JID, req.since
	a.mu.Lock()
	defer a.mu.Unlock()
	answerers := make(map[devstate.EID]bool)
	for _, it := range devices {
		if it.EID != a.cfg.EID {
			answerers[it.EID] = true
		}
	}
	for _, it := range mailboxes {
		if it.EID != a.cfg.EID {
			answerers[it.EID] = true
		}
	}
	// An answer with nothing of its own says "I hold nothing": that is
	// news about the one EID bound to the account, when there is one (an
	// account shared by several servers cannot be told apart here).
	if len(answerers) == 0 {
		if p := a.jids[bareJID(jid)]; p != nil && len(p.eids) == 1 {
			for eid := range p.eids {
				answerers[eid] = true
			}
		}
	}
	for eid := range answerers {
		answerers[eid] = a.bindLocked(eid, jid)
		if answerers[eid] && req.early && !a.itemsRead && len(a.answeredEarly) < maxServers {
			if a.answeredEarly == nil {
				a.answeredEarly = make(map[devstate.EID]struct{})
			}
			a.answeredEarly[eid] = struct{}{}
		}
	}
	keepDev := make(map[string]struct{}, len(devices))
	for _, it := range devices {
		if checkName("device", it.Device) != nil {
			continue
		}
		if it.EID == a.cfg.EID {
			// What a buddy holds of ours beats an item: see restoredDev.
			if _, restored := a.restoredDev[it.Device]; restored || !a.holdsDeviceLocked(it.Device, it.EID) {
				a.restoreOwnDeviceLocked(it)
			}
		} else if answerers[it.EID] && a.acceptDeviceLocked(it.Device) {
			keepDev[string(it.EID[:])+it.Device] = struct{}{}
			if !a.deviceNewerLocked(it.Device, it.EID, since) {
				a.setRemoteDeviceLocked(it)
			}
		}
	}
	keepBox := make(map[string]struct{}, len(mailboxes))
	for _, it := range mailboxes {
		if checkName("mailbox", it.Mailbox) != nil || it.Counts.Check() != nil {
			continue
		}
		if it.EID == a.cfg.EID {
			_, restored := a.restoredBox[it.Mailbox]
			switch {
			case restored && it.Counts == (mwi.Counts{}):
				// The buddy heard us delete it after the item was written.
				a.deleteMailboxLocked(it.Mailbox, it.EID)
				delete(a.restoredBox, it.Mailbox)
			case it.Counts != (mwi.Counts{}) && (restored || !a.holdsMailboxLocked(it.Mailbox, it.EID)) && !a.deletedOwnLocked(it.Mailbox):
				// Not one the PBX deleted: the buddy missed that delete.
				a.restoreOwnMailboxLocked(it)
			}
		} else if answerers[it.EID] && a.acceptMailboxLocked(it.Mailbox) {
			keepBox[string(it.EID[:])+it.Mailbox] = struct{}{}
			if !a.mailboxNewerLocked(it.Mailbox, it.EID, since) {
				a.setRemoteMailboxLocked(it)
			}
		}
	}
	// What the server no longer holds goes.
	for eid, ok := range answerers {
		if !ok {
			continue
		}
		held, heldBoxes := a.statesOfLocked(eid)
		for _, d := range held {
			if _, ok := keepDev[string(eid[:])+d.Device]; ok || a.deviceNewerLocked(d.Device, eid, since) {
				continue
			}
			agg, changed, gone := a.devices.Remove(d.Device, eid)
			if changed {
				if gone {
					agg = devstate.Unknown
				}
				a.sink.DeviceChanged(d.Device, agg)
			}
		}
		for _, m := range heldBoxes {
			if _, ok := keepBox[string(eid[:])+m.Mailbox]; !ok && !a.mailboxNewerLocked(m.Mailbox, eid, since) {
				a.deleteMailboxLocked(m.Mailbox, eid)
			}
		}
	}
}

// EIDOf is the EID bound to the account jid, when exactly one is.
func (a *Core) EIDOf(jid string) (devstate.EID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.jids[bareJID(jid)]
	if p == nil || len(p.eids) != 1 {
		return devstate.EID{}, false
	}
	for eid := range p.eids {
		return eid, true
	}
	return devstate.EID{}, false
}

// AnswerFor is what this node answers a buddy's directed states request
// with: its own states, and what it holds of the requester's server (so a
// restarted buddy recovers its own states exactly).
func (a *Core) AnswerFor(requester devstate.EID) ([]DeviceItem, []MailboxItem) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ds, ms := a.ownSharedLocked(a.statesOfLocked(a.cfg.EID))
	if !requester.IsZero() && requester != a.cfg.EID {
		rd, rm := a.statesOfLocked(requester)
		ds = append(ds, rd...)
		ms = append(ms, rm...)
	}
	return ds, ms
}

func (a *Core) deviceNewerLocked(device string, eid devstate.EID, since time.Time) bool {
	for _, e := range a.devices.Entries(device) {
		if e.EID == eid {
			return e.Updated.After(since)
		}
	}
	return false
}

func (a *Core) mailboxNewerLocked(mailbox string, eid devstate.EID, since time.Time) bool {
	for _, e := range a.mailboxes.Entries(mailbox) {
		if e.EID == eid {
			return e.Updated.After(since)
		}
	}
	return false
}

// Stop stops pending expiries (the node is stopping). The core stays
// usable; it expires nothing more until presence is lost again.
func (a *Core) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.jids {
		p.gen++
		if p.expiry != nil {
			p.expiry.Stop()
			p.expiry = nil
		}
	}
}
