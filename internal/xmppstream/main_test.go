package xmppstream

import (
	"testing"

	"go.uber.org/goleak"
)

// No goroutine may outlive the tests: each stream's read loop and
// keepalive end with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
