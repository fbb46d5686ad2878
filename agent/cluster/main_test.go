package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// Cluster the tests start is closed, and Close waits for the goroutines of
// this package (deliver, joinLoop, probeLoop) and shuts memberlist down.
//
// One goroutine is not waited for and is ignored: memberlist's probeNode.
// memberlist's Shutdown stops its scheduler but not a probe in flight, which
// ends by itself once its ack timer fires, a probe interval later (up to
// nine when memberlist's health score is bad, as after a member died):
// longer than goleak retries. Nothing in memberlist's public API waits for
// it. A memberlist left running would still be caught, by its listeners
// and its scheduler, which are not ignored; TestCloseLeaksNoGoroutines
// waits for the probes to end and then ignores nothing.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
