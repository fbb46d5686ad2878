package manager

import (
	"testing"

	"go.uber.org/goleak"
)

// No session's goroutines (reader, writer, command) outlive the server
// that served it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
