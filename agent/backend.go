package agent

import (
	"context"
	"fmt"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/mwi"
)

// backend is the agent as the AMI socket sees it.
type backend struct{ a *Agent }

func (b backend) DeviceState(_ context.Context, device string) (devstate.State, bool) {
	return b.a.core.DeviceState(device)
}

// SetDeviceState, SetMailbox and DeleteMailbox return only once the
// change is in the store (handed to the OS), so what the AMI acknowledges
// survives a crash.
func (b backend) SetDeviceState(_ context.Context, device string, s devstate.State) error {
	a := b.a
	if a.store == nil {
		return a.core.SetDeviceState(device, s)
	}
	a.ownMu.Lock()
	defer a.ownMu.Unlock()
	if err := a.core.SetDeviceState(device, s); err != nil {
		return err
	}
	return a.saved(device, a.store.PutDevice(device, uint8(s), true))
}

func (b backend) Devices(context.Context) []devstate.DeviceState {
	ds := b.a.core.Devices(false)
	out := make([]devstate.DeviceState, len(ds))
	for i, d := range ds {
		out[i] = devstate.DeviceState{Device: d.Device, State: d.State}
	}
	return out
}

func (b backend) Mailbox(_ context.Context, mailbox string) (mwi.Counts, bool) {
	return b.a.core.MailboxCounts(mailbox)
}

func (b backend) Mailboxes(context.Context) []mwi.MailboxState {
	ms := b.a.core.Mailboxes(false)
	out := make([]mwi.MailboxState, len(ms))
	for i, m := range ms {
		out[i] = mwi.MailboxState{Mailbox: m.Mailbox, Counts: m.Counts}
	}
	return out
}

func (b backend) SetMailbox(_ context.Context, mailbox string, c mwi.Counts) error {
	a := b.a
	if a.store == nil {
		return a.core.SetMailbox(mailbox, c)
	}
	a.ownMu.Lock()
	defer a.ownMu.Unlock()
	if err := a.core.SetMailbox(mailbox, c); err != nil {
		return err
	}
	return a.saved(mailbox, a.store.PutMailbox(mailbox, c.New, c.Old))
}

func (b backend) DeleteMailbox(_ context.Context, mailbox string) error {
	a := b.a
	if a.store == nil {
		return a.core.DeleteMailbox(mailbox)
	}
	a.ownMu.Lock()
	defer a.ownMu.Unlock()
	if err := a.core.DeleteMailbox(mailbox); err != nil {
		return err
	}
	return a.saved(mailbox, a.store.DeleteMailbox(mailbox))
}

// saved reports a change the core took but the store did not: it holds
// and publishes it, but a crash would lose it.
func (a *Agent) saved(name string, err error) error {
	if err == nil {
		return nil
	}
	a.log.Error("own state not saved", "name", name, "err", err)
	return fmt.Errorf("%s changed, but not saved to state_dir: %w", name, err)
}

func (b backend) Command(ctx context.Context, line string) (string, error) {
	return b.a.Command(ctx, line)
}

func (b backend) Booted() <-chan struct{} { return b.a.core.Booted() }

// bareJID and resourceOf read a JID with the one parser.
func bareJID(s string) string    { return jid.Bare(s) }
func resourceOf(s string) string { return jid.Resource(s) }

func (b backend) Reload(ctx context.Context) ([]string, error) { return b.a.Reload(ctx) }
