package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/genimg/genimg/internal/localstack"
	"github.com/genimg/genimg/storage"
)

// screenshots, when set, is the folder the browser test writes its
// screenshots to (the README's are made with
// go test ./internal/console -run TestConsoleInBrowser -args -screenshots=$PWD/internal/console/testdata).
var screenshots = flag.String("screenshots", "", "write the console's screenshots (PNG) to this folder")

// chromium finds Debian's chromium; the test is skipped only without it
// (.ci/run installs it when it can).
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Skip("chromium is not installed (apt-get install -y chromium); the browser test needs it")
	return ""
}

// browser starts headless Chromium and returns a tab.
func browser(t *testing.T, path string) context.Context {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-default-browser-check", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if _, err := chromedp.Run(ctx, chromedp.Title()); err != nil {
		t.Skipf("chromium does not start here: %v", err)
	}
	return ctx
}

func startStack(t *testing.T) (*localstack.Stack, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	o := localstack.Options{
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		// The scheduled resume, as cmd/local runs it (every 10 s there):
		// a held job runs once its cause clears.
		Tick: time.Second,
	}
	s, err := localstack.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c, err := s.Console(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

var loads atomic.Int64

// page is a URL of the console that the browser loads afresh (not a
// same-document hash change).
func page(base, hash string) string {
	return fmt.Sprintf("%s/?load=%d#/%s", base, loads.Add(1), hash)
}

func run(t *testing.T, ctx context.Context, what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		fail(t, ctx, what, err)
	}
}

// get runs one action that answers a value.
func get[T any](t *testing.T, ctx context.Context, what string, timeout time.Duration, a chromedp.Action[T]) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(tctx, a)
	if err != nil {
		fail(t, ctx, what, err)
	}
	return v
}

// void drops an action's value.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

func fail(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	html, _ := chromedp.Run(hctx, chromedp.OuterHTML(chromedp.CSS("main")))
	t.Fatalf("%s: %v\npage: %.3000s", what, err, html)
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := get(t, ctx, "screenshot "+name, 20*time.Second, chromedp.CaptureScreenshot())
	dir := *screenshots
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s: %d bytes", filepath.Join(dir, name), len(png))
}

// submit fills the form and returns the submitted job's id.
func submit(t *testing.T, ctx context.Context, base, prompt, via string) string {
	t.Helper()
	run(t, ctx, "submit via "+via, 30*time.Second,
		chromedp.Navigate(page(base, "submit")),
		chromedp.WaitVisible(chromedp.CSS("#s-go")),
		chromedp.SendKeys(chromedp.CSS("#s-prompt"), prompt),
		chromedp.SetValue(chromedp.CSS("#s-via"), via),
		chromedp.SetValue(chromedp.CSS("#s-ratio"), "16:9"),
		chromedp.Click(chromedp.CSS("#s-go")),
		chromedp.WaitVisible(chromedp.CSS("#submitted")),
	)
	id := get(t, ctx, "submitted id", 5*time.Second, chromedp.Text(chromedp.CSS("#submitted")))
	if !strings.HasPrefix(id, "console-") {
		t.Fatalf("submitted job id %q, want console-…", id)
	}
	return id
}

// waitRow waits until the jobs list shows id in state.
func waitRow(t *testing.T, ctx context.Context, base, id, state string, timeout time.Duration) {
	t.Helper()
	run(t, ctx, fmt.Sprintf("job %s %s in the list", id, state), timeout,
		chromedp.Navigate(page(base, "jobs")),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q][data-state=%q]`, id, state))),
	)
}

func killSwitch(t *testing.T, ctx context.Context, base, want string) {
	t.Helper()
	run(t, ctx, "kill switch → "+want, 20*time.Second,
		chromedp.Navigate(page(base, "spend")),
		chromedp.WaitVisible(chromedp.CSS("#killswitch")),
		// Let the page settle (banner, spend) before pressing the button.
		void(chromedp.Evaluate[string](`fetch("api/spend").then(r => r.text())`, chromedp.EvalAwaitPromise)),
		// By keyboard: the button is reachable and works without a mouse.
		chromedp.SendKeys(chromedp.CSS("#killswitch"), kb.Enter),
		void(chromedp.Poll[bool](fmt.Sprintf(`document.querySelector("#ks-state") && document.querySelector("#ks-state").textContent.startsWith(%q)`, want))),
	)
}

// TestConsoleInBrowser drives the console in headless Chromium against a
// whole local stack: a job submitted from the form appears and finishes,
// its page shows its image at its natural size, a job submitted while the
// kill switch is on is held, and runs once it is released.
func TestConsoleInBrowser(t *testing.T) {
	path := chromium(t)
	s, base := startStack(t)
	ctx := browser(t, path)

	id := submit(t, ctx, base, "a red fox in the snow", "http")
	waitRow(t, ctx, base, id, "done", 60*time.Second)
	outcome := get(t, ctx, "outcome", 10*time.Second, chromedp.Text(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q] td:nth-child(3)`, id))))
	if outcome != "succeeded" {
		t.Fatalf("outcome in the list %q, want succeeded", outcome)
	}
	shot(t, ctx, "console-jobs.png")

	// The job's page: the image is loaded, at the size the record says.
	run(t, ctx, "the job's page", 30*time.Second,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-id=%q] a`, id))),
		chromedp.WaitVisible(chromedp.CSS("img.output")),
	)
	natural := get(t, ctx, "the image's natural size", 30*time.Second,
		chromedp.Poll[[2]int](`(() => { const i = document.querySelector("img.output"); return i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null })()`))
	resp, err := http.Get(base + "/api/jobs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Record struct {
			Outputs []struct{ Width, Height int } `json:"outputs"`
		} `json:"record"`
		Trace []struct{ Name string } `json:"trace"`
	}
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	// Its trace, across the queue hop: the front door's span and the run's.
	steps := map[string]bool{}
	for _, sp := range got.Trace {
		steps[sp.Name] = true
	}
	for _, want := range []string{"Generate", "claim", "model", "record", "publish"} {
		if !steps[want] {
			t.Errorf("the job's trace has no %q span: %v", want, got.Trace)
		}
	}
	if len(got.Record.Outputs) != 1 {
		t.Fatalf("record outputs %+v, want 1", got.Record.Outputs)
	}
	if want := [2]int{got.Record.Outputs[0].Width, got.Record.Outputs[0].Height}; natural != want {
		t.Errorf("image natural size %v, record says %v", natural, want)
	}
	shot(t, ctx, "console-job.png")

	// The kill switch holds a new job: taken by the front door, parked by
	// the pipeline (contract 9.1), run once the switch is released.
	killSwitch(t, ctx, base, "On")
	// The spend guard reads the kill switch at most every 2 s
	// (spend.DefaultRefreshInterval).
	time.Sleep(3 * time.Second)
	held := submit(t, ctx, base, "a lighthouse at dusk", "http")
	waitRow(t, ctx, base, held, "held", 60*time.Second)
	killSwitch(t, ctx, base, "Off")
	waitRow(t, ctx, base, held, "done", 60*time.Second)

	firstPaint(t, ctx, s, base, id)
}

// firstPaint fills the bucket to 1,000 jobs and logs how long the jobs
// list takes to show its first page (a measure, not an assertion).
func firstPaint(t *testing.T, ctx context.Context, s *localstack.Stack, base, like string) {
	rec, _, err := storage.NewObjects(s.Storage, s.OutputBucket, 0, 0).Get(t.Context(), storage.RecordObject(like), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out := storage.NewObjects(s.Storage, s.OutputBucket, 0, 0)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var errs []error
	for i := range 998 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("bulk-%04d", i)
			data := strings.Replace(string(rec), like, id, 1)
			if _, err := out.Put(t.Context(), storage.RecordObject(id), []byte(data), storage.Put{If: storage.Overwrite, ContentType: "application/json"}); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	start := time.Now()
	run(t, ctx, "first paint with 1,000 jobs", 60*time.Second,
		chromedp.Navigate(page(base, "jobs")),
		chromedp.WaitVisible(chromedp.CSS("#jobs-body tr[data-id]")),
	)
	firstRows := get(t, ctx, "first rows", 30*time.Second, chromedp.Poll[float64](`window.firstRowsAt || null`))
	fcp := get(t, ctx, "first contentful paint", 5*time.Second,
		chromedp.Evaluate[float64](`(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: 0}).startTime`))
	total := get(t, ctx, "rows", 5*time.Second, chromedp.Evaluate[int](`document.querySelectorAll("#jobs-body tr[data-id]").length`))
	if total != 50 {
		t.Errorf("first page shows %v jobs, want 50", total)
	}
	// The list catches up with the bucket (the index is listed every second).
	status := get(t, ctx, "all 1,000 jobs listed", 20*time.Second, chromedp.Poll[string](`(() => { const s = document.querySelector("#jobs-status").textContent; return s.startsWith("1000 job(s)") ? s : null })()`))
	t.Logf("first paint with 1,000 jobs in the bucket: first contentful paint %.0f ms, first page of rows at %.0f ms after navigation (%s); whole check %s",
		fcp, firstRows, status, time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(status, "1000 job(s)") {
		t.Errorf("status %q, want 1000 jobs", status)
	}
}
