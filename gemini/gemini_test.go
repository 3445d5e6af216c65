package gemini

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genai"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

func TestMain(m *testing.M) {
	// Nothing may leave this machine: the SDK's credential lookup must
	// never reach a real metadata server.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(m.Run())
}

const testKey = "test-key-0123456789"

// recorder is an injected sleep: it records the waits and does not wait.
type recorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delays = append(r.delays, d)
	return ctx.Err()
}

func (r *recorder) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.delays
}

func modelConfig(srv *geminitest.Server, backend job.Backend) config.Model {
	return modelConfigURL(srv.URL, backend)
}

func modelConfigURL(baseURL string, backend job.Backend) config.Model {
	m := config.Model{
		Backend: backend, BaseURL: baseURL,
		CallTimeout: 5 * time.Second, RetryBudget: 30 * time.Second, MaxAttempts: 4, MaxConcurrent: 8,
	}
	if backend == job.VertexAI {
		m.Project, m.Location = "genimg-test", "us-central1"
	} else {
		m.APIKey = testKey
	}
	return m
}

// newClient builds a client on srv whose retries wait exactly the backoff
// ceiling (10 ms, 20 ms, 40 ms, …) and record it instead of waiting.
func newClient(t testing.TB, srv *geminitest.Server, backend job.Backend, edit func(*config.Model), opts ...Option) (*Client, *recorder) {
	t.Helper()
	m := modelConfig(srv, backend)
	if edit != nil {
		edit(&m)
	}
	rec := &recorder{}
	opts = append([]Option{
		WithHTTPClient(srv.Client()), WithSleep(rec.sleep), WithBackoff(10*time.Millisecond, time.Second),
		WithJitter(func(d time.Duration) time.Duration { return d }),
	}, opts...)
	c, err := New(t.Context(), m, config.DefaultPrices(), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, rec
}

// testPNG is a small real PNG of the given size.
func testPNG(t testing.TB, w, h int, noise bool) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	for y := range h {
		for x := range w {
			c := color.NRGBA{uint8(x), uint8(y), 128, 255}
			if noise {
				c = color.NRGBA{uint8(r.Uint32()), uint8(r.Uint32()), uint8(r.Uint32()), 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func imageSizeOf(t *testing.T, b []byte) [2]int {
	t.Helper()
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("output is not a PNG: %v", err)
	}
	return [2]int{cfg.Width, cfg.Height}
}

func TestGenerateOutcomes(t *testing.T) {
	editPNG := testPNG(t, 80, 60, false) // 4:3
	tests := []struct {
		name          string
		job           job.Job
		wantOutcome   job.Outcome
		wantFinish    string
		wantSizes     [][2]int
		wantText      string
		wantBlock     string
		wantRatings   bool
		wantFinishMsg bool // on Vertex only: the SDK drops it on the Gemini API
	}{
		{name: "text to image, default 1:1", job: job.Job{Prompt: "a lighthouse at dawn"},
			wantOutcome: job.Succeeded, wantFinish: "STOP", wantSizes: [][2]int{{1024, 1024}}, wantText: "Here is the image: a lighthouse at dawn"},
		{name: "aspect ratio 16:9, image only", job: job.Job{Prompt: "a wide valley", AspectRatio: "16:9", ResponseModalities: []string{"IMAGE"}},
			wantOutcome: job.Succeeded, wantFinish: "STOP", wantSizes: [][2]int{{1344, 768}}},
		{name: "edit keeps the input's shape", job: job.Job{Prompt: "make it a watercolor", Images: []job.Image{{Data: editPNG, MIMEType: "image/png"}}, ResponseModalities: []string{"IMAGE"}},
			wantOutcome: job.Succeeded, wantFinish: "STOP", wantSizes: [][2]int{{1184, 864}}},
		{name: "two candidates", job: job.Job{Prompt: "two cats", CandidateCount: 2, AspectRatio: "9:16", ResponseModalities: []string{"IMAGE"}},
			wantOutcome: job.Succeeded, wantFinish: "STOP", wantSizes: [][2]int{{768, 1344}, {768, 1344}}},
		{name: "prompt blocked", job: job.Job{Prompt: "[[standin:block]] x"},
			wantOutcome: job.Blocked, wantBlock: "SAFETY"},
		{name: "prompt blocked, prohibited content", job: job.Job{Prompt: "[[standin:block=PROHIBITED_CONTENT]] x"},
			wantOutcome: job.Blocked, wantBlock: "PROHIBITED_CONTENT"},
		{name: "image safety", job: job.Job{Prompt: "[[standin:finish=IMAGE_SAFETY]] x"},
			wantOutcome: job.Blocked, wantFinish: "IMAGE_SAFETY", wantRatings: true, wantFinishMsg: true},
		{name: "image prohibited", job: job.Job{Prompt: "[[standin:finish=IMAGE_PROHIBITED_CONTENT]] x"},
			wantOutcome: job.Blocked, wantFinish: "IMAGE_PROHIBITED_CONTENT", wantFinishMsg: true},
		{name: "no image", job: job.Job{Prompt: "[[standin:no-image]] x"},
			wantOutcome: job.NoImage, wantFinish: "NO_IMAGE", wantText: "I can describe the scene, but I could not draw it.", wantFinishMsg: true},
		{name: "image other", job: job.Job{Prompt: "[[standin:finish=IMAGE_OTHER]] x"},
			wantOutcome: job.NoImage, wantFinish: "IMAGE_OTHER", wantFinishMsg: true},
		{name: "text only", job: job.Job{Prompt: "[[standin:text-only]] a fox"},
			wantOutcome: job.NoImage, wantFinish: "STOP", wantText: "Here is a description instead of an image: a fox"},
		{name: "unknown finish reason kept as text", job: job.Job{Prompt: "[[standin:finish=SOMETHING_NEW]] x"},
			wantOutcome: job.NoImage, wantFinish: "SOMETHING_NEW", wantFinishMsg: true},
	}
	for _, backend := range []job.Backend{job.GeminiAPI, job.VertexAI} {
		srv := geminitest.NewServer()
		t.Cleanup(srv.Close)
		c, _ := newClient(t, srv, backend, nil)
		for _, tt := range tests {
			t.Run(string(backend)+"/"+tt.name, func(t *testing.T) {
				j := tt.job
				j.Model = job.DefaultModel
				res, err := c.Generate(t.Context(), j)
				if err != nil {
					t.Fatalf("Generate: %v", err)
				}
				var sizes [][2]int
				for _, img := range res.Images {
					if img.MIMEType != "image/png" {
						t.Errorf("MIMEType = %q, want image/png", img.MIMEType)
					}
					sizes = append(sizes, imageSizeOf(t, img.Data))
				}
				var block string
				if res.PromptFeedback != nil {
					block = res.PromptFeedback.BlockReason
				}
				got := []any{res.Outcome, res.FinishReason, sizes, res.Text, block, len(res.SafetyRatings) > 0, res.Attempts}
				want := []any{tt.wantOutcome, tt.wantFinish, tt.wantSizes, tt.wantText, tt.wantBlock, tt.wantRatings, 1}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("outcome, finish, sizes, text, block, ratings, attempts (-want +got):\n%s", diff)
				}
				// Both backends keep finishMessage: the SDK drops it on the
				// Gemini API, the first pass over the answer (decode.go) keeps it.
				if wantMsg := tt.wantFinishMsg; (res.FinishMessage != "") != wantMsg {
					t.Errorf("FinishMessage = %q, want present: %v", res.FinishMessage, wantMsg)
				}
				if res.ModelVersion != job.DefaultModel || res.ResponseID == "" {
					t.Errorf("ModelVersion, ResponseID = %q, %q", res.ModelVersion, res.ResponseID)
				}
				if res.Usage.PromptTokens == 0 || res.Usage.TotalTokens != res.Usage.PromptTokens+res.Usage.CandidatesTokens {
					t.Errorf("Usage = %+v, want prompt tokens and a consistent total", res.Usage)
				}
				if want := int32(1290 * len(tt.wantSizes)); res.Usage.CandidatesTokensByModality["IMAGE"] != want {
					t.Errorf("image output tokens = %d, want %d", res.Usage.CandidatesTokensByModality["IMAGE"], want)
				}
				if res.CostUSD != Cost(config.DefaultPrices(), res.Usage, false) || res.CostUSD <= 0 {
					t.Errorf("CostUSD = %v, want the usage priced", res.CostUSD)
				}
				if res.ModelTime <= 0 {
					t.Errorf("ModelTime = %v, want > 0", res.ModelTime)
				}
			})
		}
	}
}

func TestGenerateIsDeterministicAndDerived(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.GeminiAPI, nil)
	gen := func(prompt string, img []byte) []byte {
		j := job.Job{Model: job.DefaultModel, Prompt: prompt, ResponseModalities: []string{"IMAGE"}}
		if img != nil {
			j.Images = []job.Image{{Data: img, MIMEType: "image/png"}}
		}
		res, err := c.Generate(t.Context(), j)
		if err != nil || len(res.Images) != 1 {
			t.Fatalf("Generate(%q): %v, %d images", prompt, err, len(res.Images))
		}
		return res.Images[0].Data
	}
	a1, a2, b := gen("a red barn", nil), gen("a red barn", nil), gen("a blue barn", nil)
	inA, inB := testPNG(t, 64, 64, false), testPNG(t, 64, 64, true)
	e1, e2 := gen("a red barn", inA), gen("a red barn", inB)
	got := []bool{bytes.Equal(a1, a2), bytes.Equal(a1, b), bytes.Equal(a1, e1), bytes.Equal(e1, e2)}
	if diff := cmp.Diff([]bool{true, false, false, false}, got); diff != "" {
		t.Errorf("same request same image; other prompt, added input, other input differ (-want +got):\n%s", diff)
	}
}

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		finish, block string
		images        int
		want          job.Outcome
	}{
		{"STOP", "", 1, job.Succeeded},
		{"IMAGE_SAFETY", "", 1, job.Succeeded}, // an image was written: the job succeeded
		{"", "SAFETY", 0, job.Blocked},
		{"", "JAILBREAK", 0, job.Blocked},
		{"", "A_NEW_BLOCK_REASON", 0, job.Blocked},
		{"STOP", "", 0, job.NoImage},
		{"SAFETY", "", 0, job.Blocked},
		{"RECITATION", "", 0, job.Blocked},
		{"IMAGE_RECITATION", "", 0, job.Blocked},
		{"SPII", "", 0, job.Blocked},
		{"BLOCKLIST", "", 0, job.Blocked},
		{"NO_IMAGE", "", 0, job.NoImage},
		{"IMAGE_OTHER", "", 0, job.NoImage},
		{"MAX_TOKENS", "", 0, job.NoImage},
		{"A_NEW_FINISH_REASON", "", 0, job.NoImage},
		{"", "", 0, job.NoImage},
	}
	for _, tt := range tests {
		if got := OutcomeOf(tt.finish, tt.block, tt.images); got != tt.want {
			t.Errorf("OutcomeOf(%q, %q, %d) = %q, want %q", tt.finish, tt.block, tt.images, got, tt.want)
		}
	}
	// Every SDK constant maps, and none of them yields succeeded without
	// an image.
	for r, want := range finishOutcomes {
		if got := OutcomeOf(string(r), "", 0); got != want || got == job.Succeeded {
			t.Errorf("OutcomeOf(%q, \"\", 0) = %q, want %q", r, got, want)
		}
	}
	for r := range blockOutcomes {
		if got := OutcomeOf("", string(r), 0); got != job.Blocked {
			t.Errorf("OutcomeOf(\"\", %q, 0) = %q, want blocked", r, got)
		}
	}
}

func TestCost(t *testing.T) {
	p := config.DefaultPrices()
	tests := []struct {
		name  string
		usage job.Usage
		batch bool
		want  float64
	}{
		{"one 1:1 image, 10-token prompt", job.Usage{PromptTokens: 10, CandidatesTokens: 1290,
			PromptTokensByModality: map[string]int32{"TEXT": 10}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290}},
			false, 0.000003 + 0.0387},
		{"same in the batch lane", job.Usage{PromptTokens: 10, CandidatesTokens: 1290,
			PromptTokensByModality: map[string]int32{"TEXT": 10}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290}},
			true, (0.000003 + 0.0387) / 2},
		{"edit: 10 text + 258 image tokens in, image and 20 text tokens out", job.Usage{PromptTokens: 268, CandidatesTokens: 1310,
			PromptTokensByModality: map[string]int32{"TEXT": 10, "IMAGE": 258}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290, "TEXT": 20}},
			false, 268*0.30e-6 + 0.0387 + 20*2.50e-6},
		{"cached: 1024 of 1034 text tokens at the cached price", job.Usage{PromptTokens: 1034, CachedTokens: 1024, CandidatesTokens: 1290,
			PromptTokensByModality: map[string]int32{"TEXT": 1034}, CandidatesTokensByModality: map[string]int32{"IMAGE": 1290}},
			false, 10*0.30e-6 + 1024*0.03e-6 + 0.0387},
		{"no modality breakdown: output priced as image (errs high)", job.Usage{PromptTokens: 10, CandidatesTokens: 1290},
			false, 0.000003 + 0.0387},
		{"thoughts are text output", job.Usage{PromptTokens: 10, ThoughtsTokens: 100, PromptTokensByModality: map[string]int32{"TEXT": 10}},
			false, 0.000003 + 100*2.50e-6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Cost(p, tt.usage, tt.batch)
			if diff := got - tt.want; diff > 1e-12 || diff < -1e-12 {
				t.Errorf("Cost = %.9f, want %.9f", got, tt.want)
			}
		})
	}
}

func TestConcurrencyLimit(t *testing.T) {
	srv := geminitest.NewServer(geminitest.Options{Latency: 50 * time.Millisecond})
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.GeminiAPI, func(m *config.Model) { m.MaxConcurrent = 2 })
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			_, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "[[standin:text-only]] x"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Generate: %v", err)
		}
	}
	if got := []int{srv.Calls(), srv.MaxInFlight()}; !cmp.Equal(got, []int{6, 2}) {
		t.Errorf("calls, most in flight = %v, want [6 2]", got)
	}
}

func TestBackendsPathsAndHeaders(t *testing.T) {
	img := testPNG(t, 8, 8, false)
	tests := []struct {
		backend    job.Backend
		job        job.Job
		wantPath   string
		wantKey    string
		wantLabels map[string]string
		wantFile   string
	}{
		{backend: job.GeminiAPI,
			job:      job.Job{Prompt: "p", Images: []job.Image{{Data: img, MIMEType: "image/png"}}, BillingLabels: map[string]string{"team": "a"}},
			wantPath: "/v1beta/models/gemini-2.5-flash-image:generateContent", wantKey: testKey},
		{backend: job.VertexAI,
			job:        job.Job{Prompt: "p", Images: []job.Image{{URI: "gs://in/cat.png", MIMEType: "image/png"}}, BillingLabels: map[string]string{"team": "a"}},
			wantPath:   "/v1beta1/projects/genimg-test/locations/us-central1/publishers/google/models/gemini-2.5-flash-image:generateContent",
			wantLabels: map[string]string{"team": "a"}, wantFile: "gs://in/cat.png"},
	}
	for _, tt := range tests {
		t.Run(string(tt.backend), func(t *testing.T) {
			srv := geminitest.NewServer()
			t.Cleanup(srv.Close)
			c, _ := newClient(t, srv, tt.backend, nil)
			j := tt.job
			j.Model = job.DefaultModel
			if _, err := c.Generate(t.Context(), j); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 || reqs[0].Decoded == nil {
				t.Fatalf("got %d requests, want 1 decoded", len(reqs))
			}
			r := reqs[0]
			var file string
			for _, p := range r.Decoded.Contents[0].Parts {
				if p.FileData != nil {
					file = p.FileData.FileURI
				}
			}
			got := []any{r.Method, r.Path, r.Header.Get("x-goog-api-key"), r.Query.Get("key"), r.Backend, r.Decoded.Labels, file,
				strings.Contains(r.Header.Get("x-goog-api-client"), "google-genai-sdk/"), r.Header.Get("Content-Type")}
			want := []any{"POST", tt.wantPath, tt.wantKey, "", tt.backend, tt.wantLabels, tt.wantFile, true, "application/json"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("method, path, key header, key query, backend, labels, fileUri, SDK header, content type (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGenerateRejectsUnresolvedImageOnGeminiAPI(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.GeminiAPI, nil)
	res, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "p", Images: []job.Image{{URI: "gs://in/a.png"}}})
	if !errors.Is(err, job.ErrInvalid) || res == nil || res.Attempts != 0 || srv.Calls() != 0 {
		t.Errorf("Generate = %v (attempts %v), calls %d; want ErrInvalid before any call", err, res, srv.Calls())
	}
}

func TestNewNeedsAKey(t *testing.T) {
	_, err := New(t.Context(), config.Model{Backend: job.GeminiAPI}, config.DefaultPrices())
	if !errors.Is(err, job.ErrPermanent) {
		t.Errorf("New without a key: %v, want ErrPermanent", err)
	}
}

// An APIError must still be reachable by value through the classification.
func TestAPIErrorByValue(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.GeminiAPI, nil)
	srv.Enqueue(geminitest.Behavior{Status: 403})
	_, err := c.Generate(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "p"})
	var ae genai.APIError
	if !errors.As(err, &ae) || ae.Code != 403 || ae.Status != "PERMISSION_DENIED" {
		t.Errorf("errors.As(%v, genai.APIError) = %+v", err, ae)
	}
}
