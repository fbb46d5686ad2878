// Package testlog is the tests' log sink: a buffer that the code under
// test may log to from any goroutine while the test reads it. With
// BUSYLAMP_TEST_LOG set, what is written also goes to stderr.
package testlog

import (
	"bytes"
	"os"
	"strings"
	"sync"
)

// Buffer collects log output; the zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if os.Getenv("BUSYLAMP_TEST_LOG") != "" {
		_, _ = os.Stderr.Write(p)
	}
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines are the lines written so far that contain with.
func (b *Buffer) Lines(with string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, with) {
			out = append(out, line)
		}
	}
	return out
}
