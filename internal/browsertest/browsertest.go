// Package browsertest owns the start and stop of a headless Chromium for
// tests: finding the binary (Debian's chromium), the flags a container
// needs (headless, no sandbox as root, no GPU, a throw-away profile), a
// bounded start, and where a test's screenshots go. Tests drive the
// browser with github.com/chromedp/chromedp on the context New returns.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// StartTimeout bounds the browser's start (a cold chromium in a loaded CI
// container can take several seconds).
const StartTimeout = 60 * time.Second

// stopTimeout bounds the graceful close at cleanup.
const stopTimeout = 15 * time.Second

// Install is how to get the browser, for the failure message.
const Install = "apt-get update && apt-get install -y chromium"

// candidates are the binaries tried, in order, after $BUSYLAMP_CHROMIUM.
var candidates = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

// Find is the path of a Chromium binary: $BUSYLAMP_CHROMIUM when set, else
// the first of chromium, chromium-browser, google-chrome, … on $PATH.
func Find() (string, error) {
	if p := os.Getenv("BUSYLAMP_CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, c := range candidates {
		if p, err := exec.LookPath(c); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on $PATH (tried " + fmt.Sprint(candidates) + ")")
}

// Options are the allocator options New uses for the binary at path: the
// chromedp defaults (headless among them) plus no GPU, no sandbox when
// running as root (a container's usual case; Chromium refuses to start
// otherwise), a profile in dir and a fixed window size so screenshots
// compare.
func Options(path, dir string) []chromedp.ExecAllocatorOption {
	opts := append([]chromedp.ExecAllocatorOption(nil), chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-crash-reporter", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	return opts
}

// New starts a headless browser for t and returns the context of its first
// tab; the browser is closed and waited for at t's cleanup. Without a
// browser it skips the test, except under CI=true, where it fails saying
// how to install one: a CI that lacks the browser must not look green.
func New(t testing.TB) context.Context {
	t.Helper()
	path, err := Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser test needs chromium under CI: %v; install it with: %s", err, Install)
		}
		t.Skipf("no browser: %v (install it with: %s)", err, Install)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), Options(path, t.TempDir())...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		// Graceful first (Cancel waits for the browser to close), then
		// the allocator, which waits for the process to end.
		stop, cancelStop := context.WithTimeout(ctx, stopTimeout)
		_ = chromedp.Cancel(stop)
		cancelStop()
		cancel()
		cancelAlloc()
	})

	// The first run starts the browser and binds its life to ctx, so it
	// must not carry a timeout; a timer that cancels ctx bounds it.
	timer := time.AfterFunc(StartTimeout, cancel)
	err = chromedp.Do(ctx)
	stopped := timer.Stop()
	if err != nil {
		if !stopped {
			t.Fatalf("start %s: not up within %v: %v", path, StartTimeout, err)
		}
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// Do runs steps on the tab of ctx, bounded by timeout; the tab outlives
// the timeout.
func Do(ctx context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) error {
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return chromedp.Do(tctx, steps...)
}

// OutputDir is where t's artifacts (screenshots) go: a folder named after
// the test under $BUSYLAMP_TEST_OUTPUT when that is set (kept after the
// run), else t.ArtifactDir() (kept with go test -artifacts).
func OutputDir(t testing.TB) string {
	t.Helper()
	if base := os.Getenv("BUSYLAMP_TEST_OUTPUT"); base != "" {
		dir := filepath.Join(base, safeName(t.Name()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("test output: %v", err)
		}
		return dir
	}
	return t.ArtifactDir()
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// Screenshot saves a full-page PNG of the tab of ctx as name (".png" is
// added) in OutputDir, logs its path and returns it.
func Screenshot(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(OutputDir(t), safeName(name)+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s", path)
	return path
}
