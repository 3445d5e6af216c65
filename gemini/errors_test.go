package gemini

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genai"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

func TestGenerateErrorsAndRetries(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name     string
		prompt   string
		script   []geminitest.Behavior
		edit     func(*config.Model)
		model    string
		wantKind error // nil: success
		// wantAttempts counts HTTP calls; wantDelays are the waits
		// between them (backoff ceilings 10, 20, 40 ms with the jitter
		// pinned, or the service's retryDelay when longer).
		wantAttempts int
		wantDelays   []time.Duration
		wantPerDay   bool
		wantNoImage  bool // a text-only answer: fast even under -race, for deadline cases
	}{
		{name: "400 invalid argument is not retried", script: []geminitest.Behavior{{Status: 400}},
			wantKind: job.ErrInvalid, wantAttempts: 1},
		{name: "invalid API key is permanent", edit: func(m *config.Model) { m.APIKey = "invalid" },
			wantKind: job.ErrPermanent, wantAttempts: 1},
		{name: "403 permission is permanent", script: []geminitest.Behavior{{Status: 403}},
			wantKind: job.ErrPermanent, wantAttempts: 1},
		{name: "401 is permanent", script: []geminitest.Behavior{{Status: 401}},
			wantKind: job.ErrPermanent, wantAttempts: 1},
		{name: "404 unknown model is permanent", model: "gemini-9-imaginary",
			wantKind: job.ErrPermanent, wantAttempts: 1},
		{name: "413 is too large", script: []geminitest.Behavior{{Status: 413}},
			wantKind: job.ErrTooLarge, wantAttempts: 1},
		{name: "429 per-minute honours retryDelay, then succeeds", script: []geminitest.Behavior{{Status: 429, RetryDelay: 50 * ms}},
			wantAttempts: 2, wantDelays: []time.Duration{50 * ms}},
		{name: "429 with a retryDelay shorter than the backoff waits the backoff", script: []geminitest.Behavior{{Status: 429, RetryDelay: ms}, {Status: 429, RetryDelay: ms}},
			wantAttempts: 3, wantDelays: []time.Duration{10 * ms, 20 * ms}},
		{name: "429 per-day quota is not retried in process", script: []geminitest.Behavior{{QuotaDay: true, RetryDelay: ms}},
			wantKind: job.ErrTransient, wantAttempts: 1, wantPerDay: true},
		{name: "503 twice then success (directive)", prompt: "[[standin:fail=2]] a fox",
			wantAttempts: 3, wantDelays: []time.Duration{10 * ms, 20 * ms}},
		{name: "500, 502, 504 are retried", script: []geminitest.Behavior{{Status: 500}, {Status: 502}, {Status: 504}},
			wantAttempts: 4, wantDelays: []time.Duration{10 * ms, 20 * ms, 40 * ms}},
		{name: "attempts run out: transient", prompt: "[[standin:status=503]] x", edit: func(m *config.Model) { m.MaxAttempts = 3 },
			wantKind: job.ErrTransient, wantAttempts: 3, wantDelays: []time.Duration{10 * ms, 20 * ms}},
		{name: "a retryDelay past the budget: transient at once", script: []geminitest.Behavior{{Status: 429, RetryDelay: time.Hour}},
			wantKind: job.ErrTransient, wantAttempts: 1},
		{name: "hang past the call deadline, then success", script: []geminitest.Behavior{{Hang: true}}, prompt: "[[standin:text-only]] a kite",
			edit:         func(m *config.Model) { m.CallTimeout = 200 * ms },
			wantAttempts: 2, wantDelays: []time.Duration{10 * ms}, wantNoImage: true},
		{name: "hang every time: transient", prompt: "[[standin:hang]] x",
			edit:     func(m *config.Model) { m.CallTimeout = 100 * ms; m.MaxAttempts = 2 },
			wantKind: job.ErrTransient, wantAttempts: 2, wantDelays: []time.Duration{10 * ms}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := geminitest.NewServer()
			t.Cleanup(srv.Close)
			c, rec := newClient(t, srv, job.GeminiAPI, tt.edit)
			srv.Enqueue(tt.script...)
			j := job.Job{Model: tt.model, Prompt: tt.prompt, ResponseModalities: []string{"IMAGE"}}
			if j.Model == "" {
				j.Model = job.DefaultModel
			}
			if j.Prompt == "" {
				j.Prompt = "a small red kite"
			}
			res, err := c.Generate(t.Context(), j)
			if res == nil {
				t.Fatal("Generate returned a nil Result")
			}
			switch {
			case tt.wantKind == nil && err != nil:
				t.Fatalf("Generate: %v, want success", err)
			case tt.wantKind != nil && !errors.Is(err, tt.wantKind):
				t.Fatalf("Generate: %v, want %v", err, tt.wantKind)
			}
			wantOutcome, wantImages := job.Succeeded, 1
			if tt.wantNoImage {
				wantOutcome, wantImages = job.NoImage, 0
			}
			if err == nil && (res.Outcome != wantOutcome || len(res.Images) != wantImages) {
				t.Errorf("Outcome, images = %q, %d; want %q, %d", res.Outcome, len(res.Images), wantOutcome, wantImages)
			}
			got := []any{res.Attempts, srv.Calls(), rec.got(), PerDayQuota(err), job.Retryable(err)}
			want := []any{tt.wantAttempts, tt.wantAttempts, tt.wantDelays, tt.wantPerDay, tt.wantKind == job.ErrTransient}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("attempts, server calls, delays, per-day, retryable (-want +got):\n%s", diff)
			}
			if res.Attempts > 0 && res.ModelTime <= 0 {
				t.Errorf("ModelTime = %v after %d attempts", res.ModelTime, res.Attempts)
			}
			if err != nil && strings.Contains(err.Error(), testKey) {
				t.Errorf("error %q holds the API key", err)
			}
		})
	}
}

// The budget is real time: with real (short) waits, the second wait would
// pass it, so the job gives up after two calls.
func TestRetryBudgetSpent(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	m := modelConfig(srv, job.GeminiAPI)
	m.RetryBudget, m.MaxAttempts = 25*time.Millisecond, 10
	c, err := New(t.Context(), m, config.DefaultPrices(), WithHTTPClient(srv.Client()),
		WithBackoff(10*time.Millisecond, time.Second), WithJitter(func(d time.Duration) time.Duration { return d }))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "[[standin:status=503]] x"})
	if !errors.Is(err, job.ErrTransient) || !strings.Contains(err.Error(), "retry budget") {
		t.Errorf("Generate: %v, want ErrTransient for the spent budget", err)
	}
	if res.Attempts != 2 {
		t.Errorf("Attempts = %d, want 2", res.Attempts)
	}
}

func TestCallerCancelStopsRetries(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.GeminiAPI, func(m *config.Model) { m.MaxAttempts = 10 },
		WithSleep(func(ctx context.Context, d time.Duration) error { return context.Canceled }))
	res, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "[[standin:status=503]] x"})
	if !errors.Is(err, job.ErrTransient) || res.Attempts != 1 {
		t.Errorf("Generate = %v after %d attempts, want ErrTransient after 1", err, res.Attempts)
	}
}

func TestConnectionResetIsTransient(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // drop the connection without an answer
		}
	}))
	t.Cleanup(srv.Close)
	rec := &recorder{}
	c, err := New(t.Context(), config.Model{Backend: job.GeminiAPI, APIKey: testKey, BaseURL: srv.URL, CallTimeout: time.Second, MaxAttempts: 2, MaxConcurrent: 1},
		config.DefaultPrices(), WithHTTPClient(srv.Client()), WithSleep(rec.sleep), WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "p"})
	if !errors.Is(err, job.ErrTransient) || res.Attempts != 2 {
		t.Errorf("Generate = %v after %d attempts, want ErrTransient after 2", err, res.Attempts)
	}
}

func TestClassifyRedactsKey(t *testing.T) {
	const key = "AIzaSECRET"
	for _, err := range []error{
		fmt.Errorf("doRequest: error sending request: Post \"http://x/?key=%s\": EOF", key),
		genai.APIError{Code: 400, Status: "INVALID_ARGUMENT", Message: "bad key " + key},
		errors.New("ClientConfig: genai.ClientConfig{APIKey:\"" + key + "\"}"),
	} {
		if got := classify(err, key).Error(); strings.Contains(got, key) {
			t.Errorf("classify(%q) = %q, holds the key", err, got)
		}
	}
}

// TestFinishReasonsComplete reads the SDK's source and checks that every
// FinishReason and BlockedReason constant it defines is mapped, so a new
// SDK constant cannot slip through unmapped.
func TestFinishReasonsComplete(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "google.golang.org/genai").Output()
	if err != nil {
		t.Fatalf("locating the genai module: %v", err)
	}
	file := filepath.Join(strings.TrimSpace(string(out)), "types.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatalf("parsing %s: %v", file, err)
	}
	sdk := map[string][]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); ok && (id.Name == "FinishReason" || id.Name == "BlockedReason") {
				for _, v := range vs.Values {
					lit := v.(*ast.BasicLit).Value
					sdk[id.Name] = append(sdk[id.Name], strings.Trim(lit, `"`))
				}
			}
		}
	}
	var finish, block []string
	for r := range finishOutcomes {
		finish = append(finish, string(r))
	}
	for r := range blockOutcomes {
		block = append(block, string(r))
	}
	for _, s := range [][]string{finish, block, sdk["FinishReason"], sdk["BlockedReason"]} {
		slices.Sort(s)
	}
	if len(sdk["FinishReason"]) < 10 || len(sdk["BlockedReason"]) < 5 {
		t.Fatalf("found %d FinishReason and %d BlockedReason constants in %s: the parse is broken", len(sdk["FinishReason"]), len(sdk["BlockedReason"]), file)
	}
	if diff := cmp.Diff(sdk["FinishReason"], finish); diff != "" {
		t.Errorf("finishOutcomes vs the SDK's FinishReason constants (-sdk +mapped):\n%s", diff)
	}
	if diff := cmp.Diff(sdk["BlockedReason"], block); diff != "" {
		t.Errorf("blockOutcomes vs the SDK's BlockedReason constants (-sdk +mapped):\n%s", diff)
	}
}
