// Package config reads genimg's configuration from the environment, once,
// into a typed struct with a section per concern. Every error names the
// variable and the bad value; secrets are never printed.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/genimg/genimg/job"
)

// Config is the whole of genimg's configuration.
type Config struct {
	// Role is what this deployment of genimg does (GENIMG_ROLE): RoleAll,
	// RoleFront or RoleCallback. Only RoleAll runs jobs and so needs the
	// model's credentials.
	Role     string
	Model    Model
	Storage  Storage
	Topics   Topics
	Limits   Limits
	Prices   Prices
	Uploads  Uploads
	Webhook  Webhook
	Callback Callback
	Trace    Trace
	Log      Log
	Spend    Spend
	Batch    Batch
}

// Model is how genimg reaches the model.
type Model struct {
	Backend job.Backend
	// APIKey is the Gemini API key (GEMINI_API_KEY or GOOGLE_API_KEY).
	APIKey Secret
	// Project and Location select Vertex AI (GOOGLE_CLOUD_PROJECT,
	// GOOGLE_CLOUD_LOCATION).
	Project  string
	Location string
	// BaseURL overrides the endpoint (GOOGLE_GEMINI_BASE_URL or
	// GOOGLE_VERTEX_BASE_URL, whichever matches the backend).
	BaseURL string
	// Default is the model for jobs that name none (GENIMG_MODEL); Allowed
	// is the allow-list (GENIMG_MODELS).
	Default string
	Allowed []string
	// CallTimeout bounds one model call (GENIMG_MODEL_TIMEOUT); RetryBudget
	// bounds all in-process attempts of one job (GENIMG_RETRY_BUDGET).
	CallTimeout time.Duration
	RetryBudget time.Duration
	// MaxAttempts bounds in-process model calls per delivery
	// (GENIMG_MODEL_MAX_ATTEMPTS).
	MaxAttempts int
	// MaxConcurrent bounds model calls in flight per instance
	// (GENIMG_MAX_CONCURRENT_CALLS).
	MaxConcurrent int
}

// Storage is where genimg reads and writes.
type Storage struct {
	// EmulatorHost is STORAGE_EMULATOR_HOST, read by the client library.
	EmulatorHost string
	OutputBucket string
	// OutputPrefix is the folder for images (GENIMG_OUTPUT_PREFIX), with a
	// trailing slash, or empty.
	OutputPrefix string
	// InputBuckets is the allow-list for gs:// inputs (GENIMG_INPUT_BUCKETS).
	// The output bucket's staged inputs are always readable.
	InputBuckets []string
	// Lease is how long a claim on a job holds (GENIMG_LEASE). It must
	// outlast FunctionTimeout so that a live holder is never overtaken.
	Lease time.Duration
	// ChunkSize is the upload buffer per writer (GENIMG_WRITE_CHUNK_SIZE).
	ChunkSize int
	// SpoolBytes (GENIMG_SPOOL_BYTES) bounds the output images an instance
	// holds in memory until Cloud Storage has them: an image within the
	// budget goes up in one request and, should that fail, is written later
	// instead of paid for again; one beyond it streams unprotected. 0 turns
	// it off (every image streams).
	SpoolBytes int64
	// CacheControl is the Cache-Control of every output object, images and
	// renditions (GENIMG_CACHE_CONTROL); an upload rule's cacheControl
	// takes its place for the rule's jobs. Empty: none.
	CacheControl string
}

// Topics are the Pub/Sub side.
type Topics struct {
	// Project is the project of the topics (GOOGLE_CLOUD_PROJECT).
	Project      string
	EmulatorHost string
	Requests     string
	Completion   string
	// EventSource is the completion events' ce-source (GENIMG_EVENT_SOURCE).
	EventSource string
}

// Limits bound what one job, request and delivery may be.
type Limits struct {
	// MaxEventAge (GENIMG_MAX_EVENT_AGE): an older delivery is recorded
	// failed and acknowledged. Under 24 h, the platform's retry window.
	MaxEventAge time.Duration
	// FunctionTimeout is the deployed functions' timeout
	// (GENIMG_FUNCTION_TIMEOUT); deadlines inside are shorter.
	FunctionTimeout time.Duration
	// MaxImageBytes bounds each input image (GENIMG_MAX_IMAGE_BYTES).
	MaxImageBytes int64
	// MaxImagePixels bounds each input image's width × height
	// (GENIMG_MAX_IMAGE_PIXELS), checked before any decode.
	MaxImagePixels int64
	// MaxRequestBytes bounds an HTTP body (GENIMG_MAX_REQUEST_BYTES).
	MaxRequestBytes int64
	// LargeBodies (GENIMG_LARGE_BODIES) is how many HTTP bodies over
	// 256 KiB an instance reads and stages at once; 0: as many as it has
	// CPUs, and at least 2.
	LargeBodies int
	// MaxPromptBytes bounds the prompt and instruction
	// (GENIMG_MAX_PROMPT_BYTES).
	MaxPromptBytes int
	// MaxTurns bounds an edit session: the most user turns one
	// conversation may have (GENIMG_MAX_TURNS).
	MaxTurns int
	// HTTPWait is how long Generate waits for a record by default
	// (GENIMG_HTTP_WAIT) before answering 202.
	HTTPWait time.Duration
	// QuotaRetry is how long a job held for the model's per-day quota waits
	// before it is tried again (GENIMG_QUOTA_RETRY): such a quota resets
	// once a day, and a refused call costs nothing.
	QuotaRetry time.Duration
}

// Uploads say which uploaded objects become jobs.
type Uploads struct {
	Buckets []string
	Rules   []Rule
}

// Webhook is the Standard Webhooks signing of HTTP requests.
type Webhook struct {
	// Secret is GENIMG_WEBHOOK_SECRET; empty means callers are
	// authenticated by IAM alone.
	Secret Secret
	// Tolerance bounds the age of a signed request's timestamp
	// (GENIMG_WEBHOOK_TOLERANCE).
	Tolerance time.Duration
}

// Callback is the delivery of completion events to jobs' callback URLs
// (package callback).
type Callback struct {
	// Secret signs callbacks (GENIMG_CALLBACK_SECRET, whsec_…); empty means
	// this deployment sends none, and jobs naming a callback are rejected.
	Secret Secret
	// Allow lists hosts exempt from the address rules
	// (GENIMG_CALLBACK_ALLOW).
	Allow []string
	// AllowLoopback accepts loopback addresses and plain http
	// (GENIMG_CALLBACK_ALLOW_LOOPBACK; the local stack sets it).
	AllowLoopback bool
	// MaxAge is how long a callback is retried (GENIMG_CALLBACK_MAX_AGE).
	MaxAge time.Duration
	// Timeout bounds one delivery (GENIMG_CALLBACK_TIMEOUT).
	Timeout time.Duration
}

// Trace is where genimg's spans go (package tracing).
type Trace struct {
	// Sample is the fraction of new traces kept (GENIMG_TRACE_SAMPLE, 0 to
	// 1); a caller's sampled trace is always kept.
	Sample float64
	// Exporter is TraceCloudTrace, TraceMemory or TraceNone
	// (GENIMG_TRACE_EXPORTER); by default Cloud Trace, or memory when the
	// emulators are configured.
	Exporter string
}

// The roles of a deployment (GENIMG_ROLE). One binary serves every
// function; a role says which of them this deployment runs, so that the
// functions that never call the model hold no model credentials.
const (
	// RoleAll runs jobs (OnMessage, OnUpload, PollBatches, and everything
	// else): it needs the model's credentials and refuses to start without
	// them. The default.
	RoleAll = "all"
	// RoleFront is Generate, the internet-facing front door: it takes jobs
	// and batches, makes them durable and queues them on the requests
	// topic, and reports their state; it never calls the model, so it
	// starts without a key.
	RoleFront = "front"
	// RoleCallback is OnCompletion: it delivers completion events to
	// callback URLs and never calls the model.
	RoleCallback = "callback"
)

// RunsJobs reports whether this deployment calls the model (RoleAll).
func (c Config) RunsJobs() bool { return c.Role == RoleAll }

// The trace exporters.
const (
	TraceCloudTrace = "cloudtrace"
	TraceMemory     = "memory"
	TraceNone       = "none"
)

// Spend bounds what genimg may spend on model calls (package spend).
// Zero values mean unlimited.
type Spend struct {
	// HourlyUSD and DailyUSD are spend budgets per UTC hour and UTC day,
	// shared by all instances (GENIMG_BUDGET_HOURLY_USD,
	// GENIMG_BUDGET_DAILY_USD); 0 is unlimited.
	HourlyUSD float64
	DailyUSD  float64
	// CallsPerMinute bounds model calls started per minute by one instance
	// (GENIMG_CALLS_PER_MINUTE); 0 is unlimited. The per-instance cap on
	// concurrent calls is Model.MaxConcurrent.
	CallsPerMinute int
	// Paused is the kill switch (GENIMG_PAUSED): no model calls; jobs fail
	// retryably and are redelivered.
	Paused bool
}

// Log is what genimg logs.
type Log struct {
	// Prompts logs prompts in clear (GENIMG_LOG_PROMPTS); by default only
	// their SHA-256 is logged.
	Prompts bool
	Level   slog.Level
}

// Policy is the job policy this configuration implies.
func (c Config) Policy() job.Policy {
	return job.Policy{
		Backend:        c.Model.Backend,
		Models:         c.Model.Allowed,
		DefaultModel:   c.Model.Default,
		InputBuckets:   c.ReadableBuckets(),
		MaxImageBytes:  c.Limits.MaxImageBytes,
		MaxPromptBytes: c.Limits.MaxPromptBytes,
	}
}

// ReadableBuckets are the buckets inputs may come from: the input
// allow-list, the upload buckets (an upload is its own job's input) and the
// output bucket (where HTTP inputs are staged).
func (c Config) ReadableBuckets() []string {
	bs := slices.Clone(c.Storage.InputBuckets)
	for _, b := range append(slices.Clone(c.Uploads.Buckets), c.Storage.OutputBucket) {
		if !slices.Contains(bs, b) {
			bs = append(bs, b)
		}
	}
	return bs
}

// FromEnv loads the configuration from the process environment.
func FromEnv() (Config, error) { return LoadConfig(os.Getenv) }

// LoadConfig reads and validates the configuration. getenv is os.Getenv in
// production and a map lookup in tests.
func LoadConfig(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	var c Config

	c.Role = r.str("GENIMG_ROLE", RoleAll)
	if !slices.Contains([]string{RoleAll, RoleFront, RoleCallback}, c.Role) {
		r.fail("GENIMG_ROLE", c.Role, "expected all (runs jobs: needs the model's credentials), front (Generate: never calls the model) or callback (OnCompletion: never calls the model)")
	}

	for _, load := range []func(*Config){
		r.loadModel, r.loadStorage, r.loadTopics, r.loadLimits, r.loadPrices,
		r.loadUploads, r.loadEdges, r.loadSpend, r.loadBatch,
	} {
		load(&c) // in this order: later settings are checked against earlier ones
	}
	return c, errors.Join(r.errs...)
}

// loadModel reads the model: backend, credentials, allow-list, timeouts.
func (r *reader) loadModel(c *Config) {
	c.Model.APIKey = Secret(r.str("GEMINI_API_KEY", ""))
	if c.Model.APIKey == "" {
		c.Model.APIKey = Secret(r.str("GOOGLE_API_KEY", ""))
	}
	c.Model.Backend = job.GeminiAPI
	if r.boolean("GOOGLE_GENAI_USE_VERTEXAI", false) {
		c.Model.Backend = job.VertexAI
	}
	c.Model.Project = r.str("GOOGLE_CLOUD_PROJECT", "")
	c.Model.Location = r.str("GOOGLE_CLOUD_LOCATION", "")
	if c.Model.Backend == job.VertexAI {
		c.Model.BaseURL = r.url("GOOGLE_VERTEX_BASE_URL")
		if c.Model.Project == "" {
			r.fail("GOOGLE_CLOUD_PROJECT", "", "is required with GOOGLE_GENAI_USE_VERTEXAI=true")
		}
		if c.Model.Location == "" {
			c.Model.Location = "global"
		}
	} else {
		c.Model.BaseURL = r.url("GOOGLE_GEMINI_BASE_URL")
	}
	c.Model.Default = r.str("GENIMG_MODEL", job.DefaultModel)
	c.Model.Allowed = r.list("GENIMG_MODELS", []string{c.Model.Default})
	// Without GENIMG_MODELS the allow-list is GENIMG_MODEL alone: blame the
	// variable that was actually set.
	modelsVar := "GENIMG_MODELS"
	if r.str(modelsVar, "") == "" {
		modelsVar = "GENIMG_MODEL"
	}
	for _, m := range c.Model.Allowed {
		if _, err := job.Lookup(m, c.Model.Backend); err != nil {
			r.fail(modelsVar, m, err.Error())
		}
	}
	if !slices.Contains(c.Model.Allowed, c.Model.Default) {
		r.fail("GENIMG_MODEL", c.Model.Default, "must be one of GENIMG_MODELS "+strings.Join(c.Model.Allowed, ","))
	}
	c.Model.CallTimeout = r.duration("GENIMG_MODEL_TIMEOUT", 120*time.Second)
	c.Model.RetryBudget = r.duration("GENIMG_RETRY_BUDGET", 180*time.Second)
	c.Model.MaxAttempts = r.integer("GENIMG_MODEL_MAX_ATTEMPTS", 4, 1, 20)
	c.Model.MaxConcurrent = r.integer("GENIMG_MAX_CONCURRENT_CALLS", 64, 1, 10000)
}

// loadStorage reads the output bucket and how genimg writes to it.
func (r *reader) loadStorage(c *Config) {
	c.Storage.EmulatorHost = r.str("STORAGE_EMULATOR_HOST", "")
	c.Storage.OutputBucket = r.bucket("GENIMG_OUTPUT_BUCKET", true)
	c.Storage.OutputPrefix = r.prefix("GENIMG_OUTPUT_PREFIX", "images/")
	c.Storage.InputBuckets = r.buckets("GENIMG_INPUT_BUCKETS")
	c.Storage.Lease = r.duration("GENIMG_LEASE", 10*time.Minute)
	c.Storage.ChunkSize = r.integer("GENIMG_WRITE_CHUNK_SIZE", 256<<10, 256<<10, 16<<20)
	c.Storage.SpoolBytes = int64(r.integer("GENIMG_SPOOL_BYTES", 16<<20, 0, 1<<30))
	if c.Storage.ChunkSize%(256<<10) != 0 {
		r.fail("GENIMG_WRITE_CHUNK_SIZE", strconv.Itoa(c.Storage.ChunkSize), "must be a multiple of 262144 (256 KiB)")
	}
	c.Storage.CacheControl = r.str("GENIMG_CACHE_CONTROL", "")
	if err := checkCacheControl(c.Storage.CacheControl); err != nil {
		r.fail("GENIMG_CACHE_CONTROL", c.Storage.CacheControl, err.Error())
	}
}

// loadTopics reads the requests and completion topics.
func (r *reader) loadTopics(c *Config) {
	c.Topics.Project = c.Model.Project
	c.Topics.EmulatorHost = r.str("PUBSUB_EMULATOR_HOST", "")
	c.Topics.Requests = r.topic("GENIMG_REQUESTS_TOPIC", "genimg-requests")
	c.Topics.Completion = r.topic("GENIMG_COMPLETION_TOPIC", "genimg-completions")
	if c.Topics.Project == "" {
		r.fail("GOOGLE_CLOUD_PROJECT", "", "is required: the project of the requests and completion topics")
	}
	c.Topics.EventSource = r.str("GENIMG_EVENT_SOURCE", "//genimg.dev/projects/"+c.Topics.Project)
	if c.Topics.Requests != "" && c.Topics.Requests == c.Topics.Completion {
		r.fail("GENIMG_COMPLETION_TOPIC", c.Topics.Completion, "must differ from GENIMG_REQUESTS_TOPIC, or completion events would be taken for jobs")
	}
}

// loadLimits reads sizes, ages, waits.
func (r *reader) loadLimits(c *Config) {
	c.Limits.MaxEventAge = r.duration("GENIMG_MAX_EVENT_AGE", 12*time.Hour)
	if c.Limits.MaxEventAge >= 24*time.Hour {
		r.fail("GENIMG_MAX_EVENT_AGE", r.shown("GENIMG_MAX_EVENT_AGE", c.Limits.MaxEventAge), "must be under 24h: the platform drops deliveries after 24 h of retries, and genimg records them failed before that")
	}
	c.Limits.FunctionTimeout = r.duration("GENIMG_FUNCTION_TIMEOUT", 540*time.Second)
	c.Limits.MaxImageBytes = int64(r.integer("GENIMG_MAX_IMAGE_BYTES", 7<<20, 1, 100<<20))
	c.Limits.MaxImagePixels = int64(r.integer("GENIMG_MAX_IMAGE_PIXELS", 40_000_000, 1, 1<<40))
	c.Limits.MaxRequestBytes = int64(r.integer("GENIMG_MAX_REQUEST_BYTES", 32<<20, 1, 32<<20))
	c.Limits.LargeBodies = r.integer("GENIMG_LARGE_BODIES", 0, 0, 1000)
	c.Limits.MaxPromptBytes = r.integer("GENIMG_MAX_PROMPT_BYTES", 100_000, 1, 1<<20)
	c.Limits.MaxTurns = r.integer("GENIMG_MAX_TURNS", job.DefaultMaxTurns, 1, 100)
	c.Limits.HTTPWait = r.duration("GENIMG_HTTP_WAIT", 60*time.Second)
	c.Limits.QuotaRetry = r.duration("GENIMG_QUOTA_RETRY", 30*time.Minute)
	if c.Limits.HTTPWait > c.Limits.FunctionTimeout {
		r.fail("GENIMG_HTTP_WAIT", r.shown("GENIMG_HTTP_WAIT", c.Limits.HTTPWait), "must not exceed GENIMG_FUNCTION_TIMEOUT "+r.shown("GENIMG_FUNCTION_TIMEOUT", c.Limits.FunctionTimeout))
	}
	if c.Model.CallTimeout >= c.Limits.FunctionTimeout {
		r.fail("GENIMG_MODEL_TIMEOUT", r.shown("GENIMG_MODEL_TIMEOUT", c.Model.CallTimeout), "must be shorter than GENIMG_FUNCTION_TIMEOUT "+r.shown("GENIMG_FUNCTION_TIMEOUT", c.Limits.FunctionTimeout))
	}
	if c.Model.RetryBudget >= c.Limits.FunctionTimeout {
		r.fail("GENIMG_RETRY_BUDGET", r.shown("GENIMG_RETRY_BUDGET", c.Model.RetryBudget), "must be shorter than GENIMG_FUNCTION_TIMEOUT "+r.shown("GENIMG_FUNCTION_TIMEOUT", c.Limits.FunctionTimeout))
	}
	if c.Storage.Lease <= c.Limits.FunctionTimeout {
		r.fail("GENIMG_LEASE", r.shown("GENIMG_LEASE", c.Storage.Lease), "must outlast GENIMG_FUNCTION_TIMEOUT "+r.shown("GENIMG_FUNCTION_TIMEOUT", c.Limits.FunctionTimeout)+", or a live holder could be overtaken")
	}
}

// loadPrices reads the price table.
func (r *reader) loadPrices(c *Config) {
	c.Prices = DefaultPrices()
	if v := r.str("GENIMG_PRICES", ""); v != "" {
		if err := job.DecodeStrict([]byte(v), &c.Prices); err != nil {
			r.fail("GENIMG_PRICES", v, "expected a JSON object of per-million-token prices: "+err.Error())
		} else if err := c.Prices.validate(); err != nil {
			r.fail("GENIMG_PRICES", v, err.Error())
		}
	}
}

// loadUploads reads the upload buckets and rules.
func (r *reader) loadUploads(c *Config) {
	c.Uploads.Buckets = r.buckets("GENIMG_UPLOAD_BUCKETS")
	c.Uploads.Rules = r.rules("GENIMG_RULES")
	for _, rule := range c.Uploads.Rules {
		if !slices.Contains(c.Uploads.Buckets, rule.Bucket) {
			r.fail("GENIMG_RULES", rule.Bucket, "a rule names a bucket that is not in GENIMG_UPLOAD_BUCKETS")
		}
		if rule.Bucket == c.Storage.OutputBucket && overlaps(rule.Prefix, c.Storage.OutputPrefix, "jobs/", "batches/", "caches/") {
			r.fail("GENIMG_RULES", rule.Bucket+"/"+rule.Prefix, "the rule would match genimg's own outputs under "+c.Storage.OutputPrefix+", jobs/, batches/ or caches/ and loop")
		}
	}
	// A rule's settings are checked now, not on every upload it matches.
	if len(r.errs) == 0 {
		for _, rule := range c.Uploads.Rules {
			j := rule.Job(job.Image{URI: "gs://" + rule.Bucket + "/" + rule.Prefix + "probe.png"})
			j.Normalize(c.Policy())
			if err := j.Validate(c.Policy()); err != nil {
				r.fail("GENIMG_RULES", rule.Name, "the rule's job is invalid: "+strings.TrimPrefix(err.Error(), "invalid job: "))
			}
		}
	}
}

// loadEdges reads webhook signatures, callbacks, tracing and logging.
func (r *reader) loadEdges(c *Config) {
	c.Webhook.Secret = Secret(r.str("GENIMG_WEBHOOK_SECRET", ""))
	c.Webhook.Tolerance = r.duration("GENIMG_WEBHOOK_TOLERANCE", 5*time.Minute)
	c.Callback.Secret = Secret(r.str("GENIMG_CALLBACK_SECRET", ""))
	c.Callback.Allow = r.list("GENIMG_CALLBACK_ALLOW", nil)
	for _, h := range c.Callback.Allow {
		if strings.ContainsAny(h, "/:@ ") && !strings.HasPrefix(h, "[") {
			r.fail("GENIMG_CALLBACK_ALLOW", h, "expected comma-separated host names or addresses, without scheme, port or path")
		}
	}
	c.Callback.AllowLoopback = r.boolean("GENIMG_CALLBACK_ALLOW_LOOPBACK", false)
	c.Callback.MaxAge = r.duration("GENIMG_CALLBACK_MAX_AGE", 24*time.Hour)
	c.Callback.Timeout = r.duration("GENIMG_CALLBACK_TIMEOUT", 30*time.Second)
	for _, rule := range c.Uploads.Rules {
		if rule.Callback != nil && c.Callback.Secret == "" {
			r.fail("GENIMG_RULES", rule.Name, "the rule names a callback, but GENIMG_CALLBACK_SECRET is not set: callbacks are signed with it")
		}
	}
	c.Trace.Sample = r.fraction("GENIMG_TRACE_SAMPLE", 0.1)
	defExporter := TraceCloudTrace
	if c.Topics.EmulatorHost != "" || c.Storage.EmulatorHost != "" {
		defExporter = TraceMemory // nothing leaves the machine
	}
	c.Trace.Exporter = r.str("GENIMG_TRACE_EXPORTER", defExporter)
	if !slices.Contains([]string{TraceCloudTrace, TraceMemory, TraceNone}, c.Trace.Exporter) {
		r.fail("GENIMG_TRACE_EXPORTER", c.Trace.Exporter, "expected cloudtrace, memory or none")
	}
	c.Log.Prompts = r.boolean("GENIMG_LOG_PROMPTS", false)
	c.Log.Level = r.level("GENIMG_LOG_LEVEL")
}

// loadSpend reads the spend guard.
func (r *reader) loadSpend(c *Config) {
	c.Spend.HourlyUSD = r.usd("GENIMG_BUDGET_HOURLY_USD")
	c.Spend.DailyUSD = r.usd("GENIMG_BUDGET_DAILY_USD")
	if c.Spend.HourlyUSD > 0 && c.Spend.DailyUSD > 0 && c.Spend.HourlyUSD > c.Spend.DailyUSD {
		r.fail("GENIMG_BUDGET_HOURLY_USD", r.str("GENIMG_BUDGET_HOURLY_USD", ""), "must not exceed GENIMG_BUDGET_DAILY_USD "+r.str("GENIMG_BUDGET_DAILY_USD", ""))
	}
	c.Spend.CallsPerMinute = r.integer("GENIMG_CALLS_PER_MINUTE", 0, 0, 1_000_000)
	c.Spend.Paused = r.boolean("GENIMG_PAUSED", false)
}

// loadBatch reads the batch lane.
func (r *reader) loadBatch(c *Config) {
	c.Batch = r.readBatch()
}

// overlaps reports whether a rule prefix could match an object under any of
// the given folders (one is a prefix of the other).
func overlaps(rulePrefix string, folders ...string) bool {
	for _, f := range folders {
		if strings.HasPrefix(rulePrefix, f) || strings.HasPrefix(f, rulePrefix) {
			return true
		}
	}
	return false
}

// LogValue prints the configuration with its secrets redacted.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("role", c.Role),
		slog.String("backend", string(c.Model.Backend)),
		slog.Any("apiKey", c.Model.APIKey),
		slog.String("project", c.Model.Project),
		slog.String("location", c.Model.Location),
		slog.String("baseURL", c.Model.BaseURL),
		slog.String("model", c.Model.Default),
		slog.Any("models", c.Model.Allowed),
		slog.String("outputBucket", c.Storage.OutputBucket),
		slog.String("outputPrefix", c.Storage.OutputPrefix),
		slog.Any("inputBuckets", c.Storage.InputBuckets),
		slog.Any("uploadBuckets", c.Uploads.Buckets),
		slog.Int("rules", len(c.Uploads.Rules)),
		slog.String("requestsTopic", c.Topics.Requests),
		slog.String("completionTopic", c.Topics.Completion),
		slog.Duration("maxEventAge", c.Limits.MaxEventAge),
		slog.Any("webhookSecret", c.Webhook.Secret),
		slog.Any("callbackSecret", c.Callback.Secret),
		slog.Any("callbackAllow", c.Callback.Allow),
		slog.Bool("callbackAllowLoopback", c.Callback.AllowLoopback),
		slog.Duration("callbackMaxAge", c.Callback.MaxAge),
		slog.Float64("traceSample", c.Trace.Sample),
		slog.String("traceExporter", c.Trace.Exporter),
		slog.Float64("budgetHourlyUsd", c.Spend.HourlyUSD),
		slog.Float64("budgetDailyUsd", c.Spend.DailyUSD),
		slog.Int("callsPerMinute", c.Spend.CallsPerMinute),
		slog.Bool("paused", c.Spend.Paused),
	)
}

// Secret is a string that never prints.
type Secret string

// String redacts the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString redacts the secret under %#v.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Format redacts the secret under every fmt verb: without it, verbs that
// do not consult String (%d, %x of the struct holding it) print the value.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	io.WriteString(f, s.String())
}

// MarshalJSON redacts the secret in JSON.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Reveal returns the secret's value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// ---- reading ----

type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(name, value, why string) {
	if value == "" {
		r.errs = append(r.errs, fmt.Errorf("%s %s", name, why))
		return
	}
	r.errs = append(r.errs, fmt.Errorf("%s=%q: %s", name, value, why))
}

func (r *reader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// shown is a duration variable's value as the operator wrote it, or the
// default that applied, for messages about values checked against others.
func (r *reader) shown(name string, d time.Duration) string {
	if v := r.str(name, ""); v != "" {
		return v
	}
	return d.String() + " (default)"
}

func (r *reader) boolean(name string, def bool) bool {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, "expected true or false")
	}
	return b
}

func (r *reader) integer(name string, def, lo, hi int) int {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail(name, v, fmt.Sprintf("expected a whole number from %d to %d", lo, hi))
		return def
	}
	return n
}

// fraction reads a number from 0 to 1.
func (r *reader) fraction(name string, def float64) float64 {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1 || math.IsNaN(f) {
		r.fail(name, v, "expected a fraction from 0 to 1, such as 0.1 (one trace in ten) or 1 (all)")
		return def
	}
	return f
}

// usd reads an amount of US dollars: a finite number, 0 or more; unset is 0.
func (r *reader) usd(name string) float64 {
	v := r.str(name, "")
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		r.fail(name, v, "expected an amount of US dollars such as 25 or 2.50, 0 for unlimited")
		return 0
	}
	return f
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.fail(name, v, "expected a positive duration such as 90s, 10m or 12h")
		return def
	}
	return d
}

func (r *reader) list(name string, def []string) []string {
	v := r.str(name, "")
	if v == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func (r *reader) url(name string) string {
	v := r.str(name, "")
	if v != "" && !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://") {
		r.fail(name, v, "expected an http:// or https:// URL")
	}
	return v
}

// validBucket follows Cloud Storage's naming rules closely enough to catch
// a misplaced gs:// or path.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 222 {
		return false
	}
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (r *reader) bucket(name string, required bool) string {
	v := r.str(name, "")
	switch {
	case v == "" && required:
		r.fail(name, "", "is required: a Cloud Storage bucket name")
	case v != "" && !validBucket(v):
		r.fail(name, v, "expected a bucket name (lowercase letters, digits, '-', '_', '.'), without gs://")
	}
	return v
}

func (r *reader) buckets(name string) []string {
	bs := r.list(name, nil)
	for _, b := range bs {
		if !validBucket(b) {
			r.fail(name, b, "expected comma-separated bucket names, without gs://")
		}
	}
	return bs
}

func (r *reader) prefix(name, def string) string {
	v := r.str(name, def)
	if v == "" {
		return ""
	}
	v = strings.TrimPrefix(v, "/")
	if !strings.HasSuffix(v, "/") {
		v += "/"
	}
	if strings.Contains(v, "..") || strings.HasPrefix(v, "jobs/") {
		r.fail(name, v, "expected a folder such as images/, not under jobs/ and without '..'")
	}
	return v
}

func (r *reader) topic(name, def string) string {
	v := r.str(name, def)
	if strings.Contains(v, "/") {
		r.fail(name, v, "expected a topic id such as genimg-requests, not a full resource name")
	}
	return v
}

func (r *reader) level(name string) slog.Level {
	var l slog.Level
	v := r.str(name, "INFO")
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, v, "expected DEBUG, INFO, WARN or ERROR")
	}
	return l
}

// checkCacheControl accepts a Cache-Control value as Cloud Storage stores
// it: printable ASCII, at most 256 bytes ("public, max-age=86400").
func checkCacheControl(v string) error {
	if len(v) > 256 {
		return fmt.Errorf("%d bytes; at most 256", len(v))
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return errors.New("must be printable ASCII, such as \"public, max-age=86400\"")
		}
	}
	return nil
}
