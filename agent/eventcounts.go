package agent

import (
	"sync"

	"github.com/busylamp/busylamp/internal/jid"
)

// maxEventSources bounds the publishers counted one by one; the rest
// are counted together as otherSource (any account on the server may
// publish, so the names are remote input).
const maxEventSources = 1024

const otherSource = "other"

// eventCounts counts the notifications taken in, per publisher's bare JID.
type eventCounts struct {
	mu sync.Mutex
	n  map[string]uint64
}

func (e *eventCounts) add(publisher string) {
	b := jid.Bare(publisher)
	if b == "" {
		b = "unknown"
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = make(map[string]uint64)
	}
	if _, ok := e.n[b]; !ok && len(e.n) >= maxEventSources {
		b = otherSource
	}
	e.n[b]++
}

// snapshot copies the counts.
func (e *eventCounts) snapshot() map[string]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]uint64, len(e.n))
	for k, v := range e.n {
		out[k] = v
	}
	return out
}
