//go:build !linux

package sdnotify

// monotonicUsec is Linux only: systemd runs nowhere else.
func monotonicUsec() (uint64, bool) { return 0, false }
