package pubsub

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// The integration tests share one Prosody and one ejabberd per test
// binary (internal/xmpptest), started on first use and stopped when the
// tests are done; after that no goroutine may be left (goleak).
func TestMain(m *testing.M) { goleak.VerifyTestMain(sharedServers{m}) }

// sharedServers runs the tests with xmpptest's servers around them.
type sharedServers struct{ m *testing.M }

func (s sharedServers) Run() int { return xmpptest.Main(s.m) }

type xsrv = xmpptest.Server

func sharedServer(t testing.TB, kind xmpptest.Kind) *xsrv { return xmpptest.Shared(t, kind) }
