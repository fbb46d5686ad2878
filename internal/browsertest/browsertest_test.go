package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBrowserLoadsAPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><title>hello</title><p id="x" data-n="1">hi</p>`)
	}))
	defer srv.Close()
	ctx := New(t)
	if err := Do(ctx, 10*time.Second, chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.CSS(`#x[data-n="1"]`))); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || title != "hello" {
		t.Fatalf("title %q, %v", title, err)
	}
	t.Setenv("BUSYLAMP_TEST_OUTPUT", t.TempDir())
	path := Screenshot(t, ctx, "hello page")
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	if filepath.Base(filepath.Dir(path)) != "TestBrowserLoadsAPage" || filepath.Base(path) != "hello_page.png" {
		t.Fatalf("screenshot at %s", path)
	}
}

func TestFindHonoursTheEnvironment(t *testing.T) {
	t.Setenv("BUSYLAMP_CHROMIUM", filepath.Join(t.TempDir(), "no-such-browser"))
	if p, err := Find(); err == nil {
		t.Fatalf("Find found %s, want an error for a missing $BUSYLAMP_CHROMIUM", p)
	}
	t.Setenv("BUSYLAMP_CHROMIUM", "")
	t.Setenv("PATH", t.TempDir())
	if p, err := Find(); err == nil {
		t.Fatalf("Find found %s on an empty PATH", p)
	}
}
