package agent

import (
	"context"

	"github.com/busylamp/busylamp/devstate"
	"github.com/busylamp/busylamp/internal/jid"
	"github.com/busylamp/busylamp/mwi"
)

// backend is the agent as the AMI socket sees it.
type backend struct{ a *Agent }

func (b backend) DeviceState(_ context.Context, device string) (devstate.State, bool) {
	return b.a.core.DeviceState(device)
}

func (b backend) SetDeviceState(_ context.Context, device string, s devstate.State) error {
	return b.a.core.SetDeviceState(device, s)
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
	return b.a.core.SetMailbox(mailbox, c)
}

func (b backend) DeleteMailbox(_ context.Context, mailbox string) error {
	return b.a.core.DeleteMailbox(mailbox)
}

func (b backend) Command(ctx context.Context, line string) (string, error) {
	return b.a.Command(ctx, line)
}

func (b backend) Booted() <-chan struct{} { return b.a.core.Booted() }

// bareJID and resourceOf read a JID with the one parser.
func bareJID(s string) string    { return jid.Bare(s) }
func resourceOf(s string) string { return jid.Resource(s) }
