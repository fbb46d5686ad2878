package pubsub

import (
	"os"
	"testing"

	"github.com/busylamp/busylamp/internal/xmpptest"
)

// The integration tests share one Prosody and one ejabberd per test
// binary (internal/xmpptest), started on first use.
func TestMain(m *testing.M) { os.Exit(xmpptest.Main(m)) }

type xsrv = xmpptest.Server

func sharedServer(t testing.TB, kind xmpptest.Kind) *xsrv { return xmpptest.Shared(t, kind) }
