package core

import (
	"testing"

	"go.uber.org/goleak"
)

// The core starts no goroutine of its own; the expiry timers it arms
// are stopped by Stop.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
