package core

import (
	"log/slog"
	"time"
)

// warnLimiter logs at most one warning per kind a second, and says how
// many it held back: a flood of bad payloads must not stall the hot path
// (warnings are written under the agent's lock) nor fill the disk.
type warnLimiter struct {
	kinds map[string]*warnKind
}

type warnKind struct {
	last       time.Time
	suppressed int
}

func (w *warnLimiter) warn(log *slog.Logger, now time.Time, msg string, args ...any) {
	if w.kinds == nil {
		w.kinds = make(map[string]*warnKind)
	}
	k := w.kinds[msg] // msg is a constant: the map stays small
	if k == nil {
		k = &warnKind{}
		w.kinds[msg] = k
	}
	if now.Sub(k.last) < time.Second {
		k.suppressed++
		return
	}
	if k.suppressed > 0 {
		args = append(args, "suppressed", k.suppressed)
	}
	k.last, k.suppressed = now, 0
	log.Warn(msg, args...)
}
