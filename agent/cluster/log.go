package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newStdLogger returns a *log.Logger, as memberlist wants, whose lines go
// to l at the level memberlist's "[LEVEL]" prefix names.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logWriter{l}, "", 0)
}

// logWriter receives one memberlist line per Write (log.Logger serializes
// and writes whole lines).
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	level, msg := parseLogLine(p)
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, msg, "src", "memberlist")
	}
	return len(p), nil
}

// parseLogLine maps memberlist's prefixes to slog levels. memberlist's
// [INFO] lines tell of probes and suspicions that this package reports
// itself, one line per member event, so they go to debug; warnings and
// errors (a peer with the wrong key, a refuted suspicion, a name conflict)
// stay visible.
func parseLogLine(p []byte) (slog.Level, string) {
	p = bytes.TrimRight(p, "\r\n")
	level := slog.LevelInfo
	if len(p) > 0 && p[0] == '[' {
		if end := bytes.IndexByte(p, ']'); end > 0 {
			switch string(p[1:end]) {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelDebug
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			p = bytes.TrimLeft(p[end+1:], " ")
		}
	}
	p = bytes.TrimPrefix(p, []byte("memberlist: "))
	return level, string(p)
}
