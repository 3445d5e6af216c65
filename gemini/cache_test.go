package gemini_test

import (
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

func featureClient(t *testing.T, srv *geminitest.Server) *gemini.Client {
	t.Helper()
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	t.Setenv("METADATA_SERVER_DETECTION", "none")
	c, err := gemini.New(t.Context(), config.Model{
		Backend: job.GeminiAPI, APIKey: "test-key", BaseURL: srv.URL,
		CallTimeout: 10 * time.Second, MaxAttempts: 1, MaxConcurrent: 8,
	}, config.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// clock is a settable time shared by the stand-in and Contexts.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestContextCache: ten jobs naming one context share one cache, created
// once, with its tokens counted as cached and priced at the cached rate; a
// second instance reuses it through Cloud Storage; after the cache expires
// it is recreated, once.
func TestContextCache(t *testing.T) {
	srv := geminitest.NewServer()
	t.Cleanup(srv.Close)
	clk := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	srv.SetClock(clk.now)
	g := storagetest.NewServer(t, "genimg-output")
	c := featureClient(t, srv)
	x := gemini.NewContextCaches(c, storage.NewCacheRecords(storage.NewObjects(g.Client, "genimg-output", 0, 0)), nil)
	x.SetClock(clk.now)

	sc := &job.SharedContext{Name: "style-guide", SystemInstruction: "Paint everything in flat pastel colours with thick outlines, like a 1950s travel poster. " +
		"Keep skies plain, use at most five colours, and leave a margin of one tenth of the width on every side.", TTL: "10m"}
	mk := func(i int) job.Job {
		return job.Job{ID: "j", Model: job.DefaultModel, Prompt: "a harbour, view " + string(rune('A'+i)), ResponseModalities: []string{"IMAGE"}, CandidateCount: 1, Context: sc}
	}
	var wg sync.WaitGroup
	results := make([]*gemini.Result, 10)
	errs := make([]error, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = x.Generate(t.Context(), mk(i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
	}
	if n := srv.CacheCreates(); n != 1 {
		t.Errorf("caches created for 10 jobs = %d, want 1", n)
	}
	prices := config.DefaultPrices()
	for i, r := range results {
		if r.Usage.CachedTokens <= 0 || r.Outcome != job.Succeeded {
			t.Errorf("job %d: cachedTokens %d, outcome %s", i, r.Usage.CachedTokens, r.Outcome)
		}
		if want := gemini.Cost(prices, r.Usage, false); math.Abs(r.CostUSD-want) > 1e-12 {
			t.Errorf("job %d: cost %v, want %v", i, r.CostUSD, want)
		}
		uncached := r.Usage
		uncached.CachedTokens = 0
		if r.CostUSD >= gemini.Cost(prices, uncached, false) {
			t.Errorf("job %d: cached tokens not cheaper", i)
		}
	}
	// The cache's record is in Cloud Storage for other instances.
	other := gemini.NewContextCaches(featureClient(t, srv), storage.NewCacheRecords(storage.NewObjects(g.Client, "genimg-output", 0, 0)), nil)
	other.SetClock(clk.now)
	if _, err := other.Generate(t.Context(), mk(0)); err != nil {
		t.Fatal(err)
	}
	if n := srv.CacheCreates(); n != 1 {
		t.Errorf("a second instance created a cache (creates %d); want it reused from caches/style-guide.json", n)
	}
	r, err := g.Client.Bucket("genimg-output").Object("caches/style-guide.json").NewReader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var entry gemini.CacheEntry
	json.NewDecoder(r).Decode(&entry)
	r.Close()
	if entry.Name != srv.Caches()[0] || entry.Context != "style-guide" {
		t.Errorf("stored entry %+v, live caches %v", entry, srv.Caches())
	}

	// The service expires the cache before genimg expects (its clock runs
	// ahead): the first call is refused, the cache recreated once.
	srv.SetClock(func() time.Time { return clk.now().Add(11 * time.Minute) })
	res, err := x.Generate(t.Context(), mk(1))
	if err != nil {
		t.Fatalf("Generate after expiry: %v", err)
	}
	if n := srv.CacheCreates(); n != 2 {
		t.Errorf("caches created after expiry = %d, want 2", n)
	}
	if res.Attempts != 2 || res.Usage.CachedTokens <= 0 {
		t.Errorf("after expiry: attempts %d, cached tokens %d; want 2 attempts on the new cache", res.Attempts, res.Usage.CachedTokens)
	}
	// And genimg's own clock past the TTL makes a new one without a failed
	// call.
	srv.SetClock(clk.now)
	clk.add(30 * time.Minute)
	res, err = x.Generate(t.Context(), mk(2))
	if err != nil || res.Attempts != 1 || srv.CacheCreates() != 3 {
		t.Errorf("after the TTL: err %v, attempts %d, creates %d; want a new cache and one call", err, res.Attempts, srv.CacheCreates())
	}
	if diff := cmp.Diff(1, len(srv.Caches())); diff != "" {
		t.Errorf("live caches (-want +got):\n%s", diff)
	}
}
