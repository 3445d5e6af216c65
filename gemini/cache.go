package gemini

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// A CacheEntry is one shared context's cache as genimg remembers it.
type CacheEntry struct {
	// Context is the shared context's name; Name the cache's resource name
	// (cachedContents/ID).
	Context string `json:"context"`
	Name    string `json:"name"`
	Model   string `json:"model"`
	// Fingerprint identifies the cached content (model, instruction,
	// images): a context renamed to other content gets a new cache.
	Fingerprint string    `json:"fingerprint"`
	ExpireTime  time.Time `json:"expireTime"`
	// Tokens is what the cache holds, as the service counted it.
	Tokens int32 `json:"tokens,omitempty"`
}

// A CacheStore shares cache entries between instances as JSON documents
// keyed by context name; storage.CacheRecords keeps them in Cloud Storage.
// LoadCache answers nil, nil when there is no entry. Last writer wins: two
// instances that both created a cache each keep working with their own,
// and later jobs share the one recorded.
type CacheStore interface {
	LoadCache(ctx context.Context, context string) ([]byte, error)
	SaveCache(ctx context.Context, context string, entry []byte) error
}

// A Resolver turns a job's gs:// images into what the backend takes (bytes
// on the Gemini API); storage.Store is one.
type Resolver interface {
	ResolveImages(ctx context.Context, j *job.Job) error
}

// ContextCaches runs jobs that name a shared context: it creates the context's
// cache with Caches.Create and the context's TTL, reuses it by name (in
// memory, and through a CacheStore across instances), and recreates it,
// once per job, when the service says it has expired. It is safe for
// concurrent use; build one per process beside the Client.
type ContextCaches struct {
	client  *Client
	store   CacheStore
	resolve Resolver
	now     func() time.Time
	// margin: a cache expiring sooner than this is not handed out, so a
	// job never starts on a cache about to vanish.
	margin time.Duration

	mu    sync.Mutex
	mem   map[string]CacheEntry
	locks map[string]*sync.Mutex
}

// NewContextCaches builds Contexts on c. store may be nil (instance-local
// caches only); resolve may be nil when context images are always inline.
func NewContextCaches(c *Client, store CacheStore, resolve Resolver) *ContextCaches {
	return &ContextCaches{client: c, store: store, resolve: resolve, now: time.Now, margin: time.Minute,
		mem: map[string]CacheEntry{}, locks: map[string]*sync.Mutex{}}
}

// SetClock replaces time.Now for expiry decisions (tests).
func (cc *ContextCaches) SetClock(now func() time.Time) { cc.now = now }

// Generate is the model call for any job: a job naming a shared context
// runs on its cache (created or recreated as needed, its cached tokens
// counted in the usage and priced at the cached rate), and a job asking
// for JSON gets its answer checked (CheckAnswer). The Result sums the
// attempts, time and cost of every call made, as Client.Generate's does.
func (cc *ContextCaches) Generate(ctx context.Context, j job.Job) (*Result, error) {
	return cc.GenerateWith(ctx, j, cc.client.Generate)
}

// GenerateWith is Generate with the call itself given, e.g. Client.GenerateTo
// with the job's image sink. call runs on the job with its shared context
// replaced by the cache's name; if the service says the cache is gone, the
// cache is recreated and call runs once more. The Result is never nil.
func (cc *ContextCaches) GenerateWith(ctx context.Context, j job.Job, call func(context.Context, job.Job) (*Result, error)) (*Result, error) {
	run := j
	entry, err := cc.UseCache(ctx, &run, "")
	if err != nil {
		return &Result{}, err
	}
	res, err := call(ctx, run)
	if res == nil {
		res = &Result{}
	}
	if err != nil && entry.Name != "" && CacheExpired(err) {
		// The cache expired (or was deleted) under us: recreate it and try
		// once more; a second miss is the job's error.
		slog.InfoContext(ctx, "context cache expired; recreating", "context", j.Context.Name, "cache", entry.Name)
		run = j
		if _, rerr := cc.UseCache(ctx, &run, entry.Name); rerr != nil {
			return res, rerr
		}
		again, err2 := call(ctx, run)
		if again == nil {
			again = &Result{}
		}
		again.Attempts += res.Attempts
		again.ModelTime += res.ModelTime
		again.CostUSD += res.CostUSD
		res, err = again, err2
	}
	if err == nil {
		CheckAnswer(j, res)
	}
	return res, err
}

// CacheExpired reports whether err is the service saying a request's
// cachedContent no longer exists: the Gemini API answers 403 "CachedContent
// not found (or permission denied)", Vertex AI 404.
func CacheExpired(err error) bool {
	var ae genai.APIError
	if !errors.As(err, &ae) {
		return false
	}
	msg := strings.ToLower(ae.Message)
	return (ae.Code == 403 || ae.Code == 404) && (strings.Contains(msg, "cachedcontent") || strings.Contains(msg, "cached content"))
}

// UseCache replaces j's shared context by the name of its cache
// (j.CachedContent), creating the cache when none is known, the known one
// is for other content, about to expire, or named stale (a cache the
// service said is gone; "" for none). It returns the entry used.
func (cc *ContextCaches) UseCache(ctx context.Context, j *job.Job, stale string) (CacheEntry, error) {
	sc := j.Context
	if sc == nil {
		return CacheEntry{}, nil
	}
	fp := job.Job{Model: j.Model, Context: sc}.Fingerprint()
	lock := cc.lock(sc.Name)
	lock.Lock()
	defer lock.Unlock()

	usable := func(e CacheEntry) bool {
		return e.Name != "" && e.Name != stale && e.Fingerprint == fp && e.Model == j.Model &&
			e.ExpireTime.After(cc.now().Add(cc.margin))
	}
	cc.mu.Lock()
	e, ok := cc.mem[sc.Name]
	cc.mu.Unlock()
	if !ok || !usable(e) {
		ok = false
		if cc.store != nil {
			var se CacheEntry
			data, err := cc.store.LoadCache(ctx, sc.Name)
			if err == nil && data != nil {
				err = json.Unmarshal(data, &se)
			}
			if err != nil {
				slog.WarnContext(ctx, "context cache record unreadable; creating a cache", "context", sc.Name, "error", err)
			} else if data != nil && usable(se) {
				e, ok = se, true
			}
		}
	}
	if !ok {
		created, err := cc.create(ctx, *j, fp)
		if err != nil {
			return CacheEntry{}, err
		}
		e = created
		if cc.store != nil {
			data, _ := json.Marshal(e) // plain fields: cannot fail
			if err := cc.store.SaveCache(ctx, e.Context, data); err != nil {
				// The cache works without the shared record; other
				// instances create their own.
				slog.WarnContext(ctx, "context cache record not saved", "context", sc.Name, "error", err)
			}
		}
	}
	cc.mu.Lock()
	cc.mem[sc.Name] = e
	cc.mu.Unlock()
	j.CachedContent, j.Context = e.Name, nil
	return e, nil
}

func (cc *ContextCaches) lock(name string) *sync.Mutex {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	l, ok := cc.locks[name]
	if !ok {
		l = &sync.Mutex{}
		cc.locks[name] = l
	}
	return l
}

// create makes the cache for j's context.
func (cc *ContextCaches) create(ctx context.Context, j job.Job, fp string) (CacheEntry, error) {
	c, sc := cc.client, j.Context
	images := job.Job{Model: j.Model, Images: sc.Images}
	if len(images.Images) > 0 && cc.resolve != nil {
		if err := cc.resolve.ResolveImages(ctx, &images); err != nil {
			return CacheEntry{}, fmt.Errorf("context %s: %w", sc.Name, err)
		}
	}
	cfg := &genai.CreateCachedContentConfig{TTL: sc.ContextTTL(), DisplayName: "genimg " + sc.Name}
	if sc.SystemInstruction != "" {
		cfg.SystemInstruction = &genai.Content{Parts: []*genai.Part{{Text: sc.SystemInstruction}}}
	}
	if len(images.Images) > 0 {
		// request builds image parts the backend's way; its first part is
		// the (empty) prompt.
		contents, _, err := c.request(images)
		if err != nil {
			return CacheEntry{}, fmt.Errorf("context %s: %w", sc.Name, err)
		}
		cfg.Contents = []*genai.Content{{Role: genai.RoleUser, Parts: contents[0].Parts[1:]}}
	}
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	created, err := c.genai.Caches.Create(callCtx, j.Model, cfg)
	if err != nil {
		return CacheEntry{}, fmt.Errorf("context %s: creating its cache: %w", sc.Name, classify(err, c.key))
	}
	e := CacheEntry{Context: sc.Name, Name: created.Name, Model: j.Model, Fingerprint: fp, ExpireTime: created.ExpireTime}
	if e.ExpireTime.IsZero() {
		e.ExpireTime = cc.now().Add(sc.ContextTTL())
	}
	if created.UsageMetadata != nil {
		e.Tokens = created.UsageMetadata.TotalTokenCount
	}
	slog.InfoContext(ctx, "context cache created", "context", sc.Name, "cache", created.Name, "expires", e.ExpireTime, "tokens", e.Tokens)
	return e, nil
}
