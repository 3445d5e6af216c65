package config_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

// env is a getenv over the minimum required variables plus kv (name,
// value pairs); an empty value unsets a variable.
func env(kv ...string) func(string) string {
	m := map[string]string{
		"GENIMG_OUTPUT_BUCKET": "genimg-output",
		"GOOGLE_CLOUD_PROJECT": "proj",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(m, kv[i])
			continue
		}
		m[kv[i]] = kv[i+1]
	}
	return func(name string) string { return m[name] }
}

func defaults() config.Config {
	return config.Config{
		Role: config.RoleAll,
		Model: config.Model{
			Backend:       job.GeminiAPI,
			Project:       "proj",
			Default:       "gemini-2.5-flash-image",
			Allowed:       []string{"gemini-2.5-flash-image"},
			CallTimeout:   120 * time.Second,
			RetryBudget:   180 * time.Second,
			MaxAttempts:   4,
			MaxConcurrent: 64,
		},
		Storage: config.Storage{
			OutputBucket: "genimg-output",
			OutputPrefix: "images/",
			Lease:        10 * time.Minute,
			ChunkSize:    256 << 10,
			SpoolBytes:   16 << 20,
		},
		Topics: config.Topics{
			Project:     "proj",
			Requests:    "genimg-requests",
			Completion:  "genimg-completions",
			EventSource: "//genimg.dev/projects/proj",
		},
		Limits: config.Limits{
			MaxEventAge:     12 * time.Hour,
			FunctionTimeout: 540 * time.Second,
			MaxImageBytes:   7 << 20,
			MaxImagePixels:  40_000_000,
			MaxRequestBytes: 32 << 20,
			MaxPromptBytes:  100_000,
			MaxTurns:        10,
			HTTPWait:        60 * time.Second,
			QuotaRetry:      30 * time.Minute,
		},
		Prices:   config.DefaultPrices(),
		Webhook:  config.Webhook{Tolerance: 5 * time.Minute},
		Callback: config.Callback{MaxAge: 24 * time.Hour, Timeout: 30 * time.Second},
		Trace:    config.Trace{Sample: 0.1, Exporter: "cloudtrace"},
		Log:      config.Log{Level: slog.LevelInfo},
		Batch:    config.Batch{Chunk: 16, InlineBytes: 19_000_000, MaxAge: 30 * time.Hour, OnExpired: "resubmit", MaxResubmits: 1},
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	got, err := config.LoadConfig(env())
	if err != nil {
		t.Fatalf("LoadConfig with the required variables: %v", err)
	}
	if diff := cmp.Diff(defaults(), got); diff != "" {
		t.Errorf("LoadConfig defaults (-want +got):\n%s", diff)
	}
	want := config.Prices{InputText: 0.30, InputImage: 0.30, OutputImage: 30, OutputText: 2.50, Cached: 0.03, BatchDiscount: 0.5}
	if diff := cmp.Diff(want, config.DefaultPrices().For("gemini-2.5-flash-image")); diff != "" {
		t.Errorf("DefaultPrices, the public price page (-want +got):\n%s", diff)
	}
	// $30 per 1M image tokens, 1290 tokens per image: $0.0387 an image.
	if got := config.DefaultPrices().OutputImage * 1290 / 1e6; got < 0.03869 || got > 0.03871 {
		t.Errorf("default price of one image = $%v, want $0.0387", got)
	}
}

func TestLoadConfigSettings(t *testing.T) {
	tests := []struct {
		name   string
		env    []string
		change func(*config.Config)
	}{
		{
			name: "gemini api with key and base URL",
			env: []string{"GEMINI_API_KEY", "key-1", "GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9999",
				"GOOGLE_VERTEX_BASE_URL", "http://ignored", "GOOGLE_CLOUD_LOCATION", "europe-west4"},
			change: func(c *config.Config) {
				c.Model.APIKey = "key-1"
				c.Model.BaseURL = "http://127.0.0.1:9999"
				c.Model.Location = "europe-west4"
			},
		},
		{
			name:   "GOOGLE_API_KEY when GEMINI_API_KEY is unset",
			env:    []string{"GOOGLE_API_KEY", "key-2"},
			change: func(c *config.Config) { c.Model.APIKey = "key-2" },
		},
		{
			name:   "GEMINI_API_KEY wins over GOOGLE_API_KEY",
			env:    []string{"GEMINI_API_KEY", "key-1", "GOOGLE_API_KEY", "key-2"},
			change: func(c *config.Config) { c.Model.APIKey = "key-1" },
		},
		{
			name: "vertex with the default location",
			env:  []string{"GOOGLE_GENAI_USE_VERTEXAI", "true", "GOOGLE_VERTEX_BASE_URL", "https://vertex.example", "GOOGLE_GEMINI_BASE_URL", "http://ignored"},
			change: func(c *config.Config) {
				c.Model.Backend = job.VertexAI
				c.Model.Location = "global"
				c.Model.BaseURL = "https://vertex.example"
			},
		},
		{
			name: "vertex spelled 1 with a location",
			env:  []string{"GOOGLE_GENAI_USE_VERTEXAI", "1", "GOOGLE_CLOUD_LOCATION", "us-central1"},
			change: func(c *config.Config) {
				c.Model.Backend = job.VertexAI
				c.Model.Location = "us-central1"
			},
		},
		{
			name:   "vertex off",
			env:    []string{"GOOGLE_GENAI_USE_VERTEXAI", "false"},
			change: func(c *config.Config) {},
		},
		{
			name: "every other setting",
			env: []string{
				"GENIMG_MODEL", "gemini-2.5-flash-image-preview", "GENIMG_MODELS", "gemini-2.5-flash-image, gemini-2.5-flash-image-preview,gemini-2.5-flash-image",
				"GENIMG_MODEL_TIMEOUT", "30s", "GENIMG_RETRY_BUDGET", "50s", "GENIMG_MODEL_MAX_ATTEMPTS", "20", "GENIMG_MAX_CONCURRENT_CALLS", "8",
				"STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443", "GENIMG_OUTPUT_PREFIX", "/renders", "GENIMG_INPUT_BUCKETS", "a-in, b.in",
				"GENIMG_LEASE", "2m", "GENIMG_WRITE_CHUNK_SIZE", "1048576", "PUBSUB_EMULATOR_HOST", "127.0.0.1:8085",
				"GENIMG_REQUESTS_TOPIC", "req", "GENIMG_COMPLETION_TOPIC", "done", "GENIMG_EVENT_SOURCE", "//example/genimg",
				"GENIMG_MAX_EVENT_AGE", "23h59m", "GENIMG_FUNCTION_TIMEOUT", "60s", "GENIMG_MAX_IMAGE_BYTES", "1000",
				"GENIMG_MAX_IMAGE_PIXELS", "1000000", "GENIMG_MAX_REQUEST_BYTES", "2000", "GENIMG_LARGE_BODIES", "3", "GENIMG_MAX_PROMPT_BYTES", "300", "GENIMG_HTTP_WAIT", "60s",
				"GENIMG_PRICES", `{"outputImage": 15, "batchDiscount": 1}`, "GENIMG_WEBHOOK_SECRET", "whsec_abc", "GENIMG_WEBHOOK_TOLERANCE", "30s",
				"GENIMG_LOG_PROMPTS", "true", "GENIMG_LOG_LEVEL", "debug",
				"GENIMG_MAX_TURNS", "4", "GENIMG_CACHE_CONTROL", "public, max-age=60",
			},
			change: func(c *config.Config) {
				c.Model.Default = "gemini-2.5-flash-image-preview"
				c.Model.Allowed = []string{"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview"}
				c.Model.CallTimeout, c.Model.RetryBudget, c.Model.MaxAttempts, c.Model.MaxConcurrent = 30*time.Second, 50*time.Second, 20, 8
				c.Storage = config.Storage{EmulatorHost: "http://127.0.0.1:4443", OutputBucket: "genimg-output", OutputPrefix: "renders/",
					InputBuckets: []string{"a-in", "b.in"}, Lease: 2 * time.Minute, ChunkSize: 1 << 20, CacheControl: "public, max-age=60", SpoolBytes: 16 << 20}
				c.Topics = config.Topics{Project: "proj", EmulatorHost: "127.0.0.1:8085", Requests: "req", Completion: "done", EventSource: "//example/genimg"}
				c.Limits = config.Limits{MaxEventAge: 23*time.Hour + 59*time.Minute, FunctionTimeout: 60 * time.Second, MaxImageBytes: 1000,
					MaxImagePixels: 1_000_000, MaxRequestBytes: 2000, LargeBodies: 3, MaxPromptBytes: 300, MaxTurns: 4, HTTPWait: 60 * time.Second, QuotaRetry: 30 * time.Minute}
				c.Prices.OutputImage, c.Prices.BatchDiscount = 15, 1
				c.Webhook = config.Webhook{Secret: "whsec_abc", Tolerance: 30 * time.Second}
				c.Log = config.Log{Prompts: true, Level: slog.LevelDebug}
				c.Trace.Exporter = "memory" // with the emulators, spans stay on the machine
			},
		},
		{
			name: "rules inline",
			env: []string{"GENIMG_UPLOAD_BUCKETS", "genimg-input", "GENIMG_RULES",
				` [{"bucket": "genimg-input", "prefix": "watercolor/", "prompt": "Turn this photo into a watercolor painting", "aspectRatio": "1:1"}]`},
			change: func(c *config.Config) {
				c.Uploads = config.Uploads{Buckets: []string{"genimg-input"}, Rules: []config.Rule{{
					Bucket: "genimg-input", Prefix: "watercolor/", Name: "watercolor/",
					Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1",
				}}}
			},
		},
		{
			name: "rules from a file",
			env:  []string{"GENIMG_UPLOAD_BUCKETS", "genimg-input", "GENIMG_RULES", "testdata/rules.json"},
			change: func(c *config.Config) {
				c.Uploads = config.Uploads{Buckets: []string{"genimg-input"}, Rules: []config.Rule{
					{Bucket: "genimg-input", Prefix: "watercolor/", Name: "watercolor/", Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1"},
					{Bucket: "genimg-input", Prefix: "sketch/", Name: "sketch", DryRun: true, Prompt: "Make it a pencil sketch",
						ResponseModalities: []string{"IMAGE"}, Labels: map[string]string{"source": "rules-file"}},
				}}
			},
		},
		{
			name: "a rule on the output bucket outside genimg's folders",
			env: []string{"GENIMG_UPLOAD_BUCKETS", "genimg-output", "GENIMG_RULES",
				`[{"bucket": "genimg-output", "prefix": "incoming/", "prompt": "p"}]`},
			change: func(c *config.Config) {
				c.Uploads = config.Uploads{Buckets: []string{"genimg-output"}, Rules: []config.Rule{
					{Bucket: "genimg-output", Prefix: "incoming/", Name: "incoming/", Prompt: "p"}}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			want := defaults()
			tt.change(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("LoadConfig (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigRejects: every bad value stops the start with a message
// that names the variable and the value. want is the whole message; one
// ending in "…" is a prefix (the rest comes from encoding/json or os).
func TestLoadConfigRejects(t *testing.T) {
	const notRange = ": expected a whole number from "
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"bad bool", []string{"GOOGLE_GENAI_USE_VERTEXAI", "yes please"}, `GOOGLE_GENAI_USE_VERTEXAI="yes please": expected true or false`},
		{"bad bool log prompts", []string{"GENIMG_LOG_PROMPTS", "maybe"}, `GENIMG_LOG_PROMPTS="maybe": expected true or false`},
		{"bad int", []string{"GENIMG_MODEL_MAX_ATTEMPTS", "four"}, `GENIMG_MODEL_MAX_ATTEMPTS="four"` + notRange + "1 to 20"},
		{"int with unit", []string{"GENIMG_MAX_IMAGE_BYTES", "7MB"}, `GENIMG_MAX_IMAGE_BYTES="7MB"` + notRange + "1 to 104857600"},
		{"int below range", []string{"GENIMG_MAX_CONCURRENT_CALLS", "0"}, `GENIMG_MAX_CONCURRENT_CALLS="0"` + notRange + "1 to 10000"},
		{"int above range", []string{"GENIMG_MODEL_MAX_ATTEMPTS", "21"}, `GENIMG_MODEL_MAX_ATTEMPTS="21"` + notRange + "1 to 20"},
		{"request bytes over Cloud Run's 32 MiB", []string{"GENIMG_MAX_REQUEST_BYTES", "33554433"}, `GENIMG_MAX_REQUEST_BYTES="33554433"` + notRange + "1 to 33554432"},
		{"chunk size not a multiple", []string{"GENIMG_WRITE_CHUNK_SIZE", "300000"}, `GENIMG_WRITE_CHUNK_SIZE="300000": must be a multiple of 262144 (256 KiB)`},
		{"bad duration", []string{"GENIMG_MODEL_TIMEOUT", "soon"}, `GENIMG_MODEL_TIMEOUT="soon": expected a positive duration such as 90s, 10m or 12h`},
		{"duration without unit", []string{"GENIMG_HTTP_WAIT", "30"}, `GENIMG_HTTP_WAIT="30": expected a positive duration such as 90s, 10m or 12h`},
		{"negative duration", []string{"GENIMG_WEBHOOK_TOLERANCE", "-5m"}, `GENIMG_WEBHOOK_TOLERANCE="-5m": expected a positive duration such as 90s, 10m or 12h`},
		{"zero duration", []string{"GENIMG_LEASE", "0s"}, `GENIMG_LEASE="0s": expected a positive duration such as 90s, 10m or 12h`},
		{"no output bucket", []string{"GENIMG_OUTPUT_BUCKET", ""}, `GENIMG_OUTPUT_BUCKET is required: a Cloud Storage bucket name`},
		{"bucket with gs://", []string{"GENIMG_OUTPUT_BUCKET", "gs://genimg-output"}, `GENIMG_OUTPUT_BUCKET="gs://genimg-output": expected a bucket name (lowercase letters, digits, '-', '_', '.'), without gs://`},
		{"bucket uppercase", []string{"GENIMG_OUTPUT_BUCKET", "Genimg"}, `GENIMG_OUTPUT_BUCKET="Genimg": expected a bucket name (lowercase letters, digits, '-', '_', '.'), without gs://`},
		{"input bucket with gs://", []string{"GENIMG_INPUT_BUCKETS", "inb,gs://x"}, `GENIMG_INPUT_BUCKETS="gs://x": expected comma-separated bucket names, without gs://`},
		{"upload bucket with a path", []string{"GENIMG_UPLOAD_BUCKETS", "in/photos"}, `GENIMG_UPLOAD_BUCKETS="in/photos": expected comma-separated bucket names, without gs://`},
		{"no project", []string{"GOOGLE_CLOUD_PROJECT", ""}, `GOOGLE_CLOUD_PROJECT is required: the project of the requests and completion topics`},
		{"vertex without project", []string{"GOOGLE_GENAI_USE_VERTEXAI", "true", "GOOGLE_CLOUD_PROJECT", ""},
			"GOOGLE_CLOUD_PROJECT is required with GOOGLE_GENAI_USE_VERTEXAI=true\nGOOGLE_CLOUD_PROJECT is required: the project of the requests and completion topics"},
		{"gemini base URL without scheme", []string{"GOOGLE_GEMINI_BASE_URL", "localhost:8080"}, `GOOGLE_GEMINI_BASE_URL="localhost:8080": expected an http:// or https:// URL`},
		{"vertex base URL without scheme", []string{"GOOGLE_GENAI_USE_VERTEXAI", "true", "GOOGLE_VERTEX_BASE_URL", "vertex.local"}, `GOOGLE_VERTEX_BASE_URL="vertex.local": expected an http:// or https:// URL`},
		{"topic with a slash", []string{"GENIMG_REQUESTS_TOPIC", "projects/p/topics/t"}, `GENIMG_REQUESTS_TOPIC="projects/p/topics/t": expected a topic id such as genimg-requests, not a full resource name`},
		{"completion topic is the requests topic", []string{"GENIMG_COMPLETION_TOPIC", "genimg-requests"}, `GENIMG_COMPLETION_TOPIC="genimg-requests": must differ from GENIMG_REQUESTS_TOPIC, or completion events would be taken for jobs`},
		{"equal topics set both", []string{"GENIMG_REQUESTS_TOPIC", "t", "GENIMG_COMPLETION_TOPIC", "t"}, `GENIMG_COMPLETION_TOPIC="t": must differ from GENIMG_REQUESTS_TOPIC, or completion events would be taken for jobs`},
		{"max event age 24h", []string{"GENIMG_MAX_EVENT_AGE", "24h"}, `GENIMG_MAX_EVENT_AGE="24h": must be under 24h: the platform drops deliveries after 24 h of retries, and genimg records them failed before that`},
		{"max event age 1440m", []string{"GENIMG_MAX_EVENT_AGE", "1440m"}, `GENIMG_MAX_EVENT_AGE="1440m": must be under 24h: the platform drops deliveries after 24 h of retries, and genimg records them failed before that`},
		{"lease equal to function timeout", []string{"GENIMG_LEASE", "540s"}, `GENIMG_LEASE="540s": must outlast GENIMG_FUNCTION_TIMEOUT 9m0s (default), or a live holder could be overtaken`},
		{"lease under function timeout", []string{"GENIMG_LEASE", "5m", "GENIMG_FUNCTION_TIMEOUT", "6m"}, `GENIMG_LEASE="5m": must outlast GENIMG_FUNCTION_TIMEOUT 6m, or a live holder could be overtaken`},
		{"model timeout equal to function timeout", []string{"GENIMG_MODEL_TIMEOUT", "9m"}, `GENIMG_MODEL_TIMEOUT="9m": must be shorter than GENIMG_FUNCTION_TIMEOUT 9m0s (default)`},
		{"retry budget over function timeout", []string{"GENIMG_RETRY_BUDGET", "10m"}, `GENIMG_RETRY_BUDGET="10m": must be shorter than GENIMG_FUNCTION_TIMEOUT 9m0s (default)`},
		{"http wait over function timeout", []string{"GENIMG_HTTP_WAIT", "10m"}, `GENIMG_HTTP_WAIT="10m": must not exceed GENIMG_FUNCTION_TIMEOUT 9m0s (default)`},
		{"unknown model in GENIMG_MODELS", []string{"GENIMG_MODELS", "gemini-2.5-flash-image,dall-e-3"},
			`GENIMG_MODELS="dall-e-3": model "dall-e-3" is not one genimg knows; known: [gemini-2.5-flash-image gemini-2.5-flash-image-preview gemini-3-pro-image gemini-3-pro-image-preview gemini-3.1-flash-image gemini-3.1-flash-image-preview]`},
		{"unknown default model", []string{"GENIMG_MODEL", "dall-e-3"},
			`GENIMG_MODEL="dall-e-3": model "dall-e-3" is not one genimg knows; known: [gemini-2.5-flash-image gemini-2.5-flash-image-preview gemini-3-pro-image gemini-3-pro-image-preview gemini-3.1-flash-image gemini-3.1-flash-image-preview]`},
		{"default model not in the allow-list", []string{"GENIMG_MODEL", "gemini-2.5-flash-image-preview", "GENIMG_MODELS", "gemini-2.5-flash-image"},
			`GENIMG_MODEL="gemini-2.5-flash-image-preview": must be one of GENIMG_MODELS gemini-2.5-flash-image`},
		{"prices not JSON", []string{"GENIMG_PRICES", "outputImage=15"}, `GENIMG_PRICES="outputImage=15": expected a JSON object of per-million-token prices: …`},
		{"unknown price field", []string{"GENIMG_PRICES", `{"outputVideo": 1}`}, `GENIMG_PRICES="{\"outputVideo\": 1}": expected a JSON object of per-million-token prices: json: unknown field "outputVideo"`},
		{"price a string", []string{"GENIMG_PRICES", `{"outputImage": "30"}`}, `GENIMG_PRICES="{\"outputImage\": \"30\"}": expected a JSON object of per-million-token prices: …`},
		{"negative price", []string{"GENIMG_PRICES", `{"inputText": 0.1, "cached": -0.01, "outputText": -1}`},
			`GENIMG_PRICES="{\"inputText\": 0.1, \"cached\": -0.01, \"outputText\": -1}": price outputText is negative`},
		{"batch discount over 1", []string{"GENIMG_PRICES", `{"batchDiscount": 2}`}, `GENIMG_PRICES="{\"batchDiscount\": 2}": batchDiscount 2: expected a factor from 0 to 1`},
		{"rules invalid JSON", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb",`}, `GENIMG_RULES="[{\"bucket\": \"inb\",": invalid rules: unexpected EOF`},
		{"rules an object", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `{"bucket": "inb", "prefix": "a/", "prompt": "p"}`},
			`GENIMG_RULES="{\"bucket\": \"inb\", \"prefix\": \"a/\", \"prompt\": \"p\"}": invalid rules: json: cannot unmarshal object into Go value of type []config.Rule`},
		{"rules unknown field", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prefix": "a/", "prompt": "p", "promt": "q"}]`},
			`GENIMG_RULES="[{\"bucket\": \"inb\", \"prefix\": \"a/\", \"prompt\": \"p\", \"promt\": \"q\"}]": invalid rules: json: unknown field "promt"`},
		{"rule with a bad ratio", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prefix": "a/", "prompt": "p", "aspectRatio": "7:5"}]`},
			`GENIMG_RULES="a/": the rule's job is invalid: aspectRatio "7:5" is not supported by gemini-2.5-flash-image; accepted: 9:16, 2:3, 3:4, 4:5, 1:1, 5:4, 4:3, 3:2, 16:9, 21:9`},
		{"rule without prompt", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prefix": "a/"}]`}, `GENIMG_RULES="a/": every rule needs a prompt`},
		{"rule with a blank prompt", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prefix": "a/", "prompt": "  "}]`}, `GENIMG_RULES="a/": every rule needs a prompt`},
		{"rule prefix without trailing slash", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prefix": "watercolor", "prompt": "p"}]`},
			`GENIMG_RULES="watercolor": every rule needs a prefix ending in '/', such as watercolor/`},
		{"rule without prefix", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "inb", "prompt": "p"}]`},
			`GENIMG_RULES every rule needs a prefix ending in '/', such as watercolor/`},
		{"rule bucket not an upload bucket", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", `[{"bucket": "other", "prefix": "a/", "prompt": "p"}]`},
			`GENIMG_RULES="other": a rule names a bucket that is not in GENIMG_UPLOAD_BUCKETS`},
		{"rule on genimg's images", []string{"GENIMG_UPLOAD_BUCKETS", "genimg-output", "GENIMG_RULES", `[{"bucket": "genimg-output", "prefix": "images/", "prompt": "p"}]`},
			`GENIMG_RULES="genimg-output/images/": the rule would match genimg's own outputs under images/, jobs/, batches/ or caches/ and loop`},
		{"rule inside genimg's images", []string{"GENIMG_UPLOAD_BUCKETS", "genimg-output", "GENIMG_RULES", `[{"bucket": "genimg-output", "prefix": "images/2026/", "prompt": "p"}]`},
			`GENIMG_RULES="genimg-output/images/2026/": the rule would match genimg's own outputs under images/, jobs/, batches/ or caches/ and loop`},
		{"rule on genimg's job state", []string{"GENIMG_UPLOAD_BUCKETS", "genimg-output", "GENIMG_RULES", `[{"bucket": "genimg-output", "prefix": "jobs/", "prompt": "p"}]`},
			`GENIMG_RULES="genimg-output/jobs/": the rule would match genimg's own outputs under images/, jobs/, batches/ or caches/ and loop`},
		{"rule on a custom output prefix", []string{"GENIMG_OUTPUT_PREFIX", "renders/", "GENIMG_UPLOAD_BUCKETS", "genimg-output", "GENIMG_RULES", `[{"bucket": "genimg-output", "prefix": "renders/", "prompt": "p"}]`},
			`GENIMG_RULES="genimg-output/renders/": the rule would match genimg's own outputs under renders/, jobs/, batches/ or caches/ and loop`},
		{"rules file missing", []string{"GENIMG_UPLOAD_BUCKETS", "inb", "GENIMG_RULES", "testdata/no-such-rules.json"},
			`GENIMG_RULES="testdata/no-such-rules.json": expected a JSON array of rules or the path of a file holding one: open testdata/no-such-rules.json: no such file or directory`},
		{"output prefix under jobs/", []string{"GENIMG_OUTPUT_PREFIX", "jobs/images"}, `GENIMG_OUTPUT_PREFIX="jobs/images/": expected a folder such as images/, not under jobs/ and without '..'`},
		{"output prefix escaping", []string{"GENIMG_OUTPUT_PREFIX", "../x/"}, `GENIMG_OUTPUT_PREFIX="../x/": expected a folder such as images/, not under jobs/ and without '..'`},
		{"log level", []string{"GENIMG_LOG_LEVEL", "LOUD"}, `GENIMG_LOG_LEVEL="LOUD": expected DEBUG, INFO, WARN or ERROR`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.LoadConfig(env(tt.env...))
			if err == nil {
				t.Fatalf("LoadConfig(%q) = nil error, want %s", tt.env, tt.want)
			}
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tt.want, "…"); ok {
				if !strings.HasPrefix(got, prefix) || strings.Contains(got, "\n") {
					t.Errorf("LoadConfig error = %q\nwant one line starting %q", got, prefix)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("LoadConfig error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigReportsEveryProblem: an operator fixes a deployment in one
// round, not one variable per failed start.
func TestLoadConfigReportsEveryProblem(t *testing.T) {
	_, err := config.LoadConfig(env(
		"GENIMG_OUTPUT_BUCKET", "gs://out",
		"GENIMG_FUNCTION_TIMEOUT", "60s",
		"GENIMG_MAX_EVENT_AGE", "48h",
		"GENIMG_LOG_PROMPTS", "sure",
		"GENIMG_COMPLETION_TOPIC", "genimg-requests",
	))
	if err == nil {
		t.Fatal("LoadConfig = nil error, want five problems")
	}
	lines := strings.Split(err.Error(), "\n")
	wantLines := []string{
		`GENIMG_OUTPUT_BUCKET="gs://out": expected a bucket name (lowercase letters, digits, '-', '_', '.'), without gs://`,
		`GENIMG_COMPLETION_TOPIC="genimg-requests": must differ from GENIMG_REQUESTS_TOPIC, or completion events would be taken for jobs`,
		`GENIMG_MAX_EVENT_AGE="48h": must be under 24h: the platform drops deliveries after 24 h of retries, and genimg records them failed before that`,
		`GENIMG_MODEL_TIMEOUT="2m0s (default)": must be shorter than GENIMG_FUNCTION_TIMEOUT 60s`,
		`GENIMG_RETRY_BUDGET="3m0s (default)": must be shorter than GENIMG_FUNCTION_TIMEOUT 60s`,
		`GENIMG_LOG_PROMPTS="sure": expected true or false`,
	}
	if diff := cmp.Diff(wantLines, lines); diff != "" {
		t.Errorf("LoadConfig errors (-want +got):\n%s", diff)
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != len(wantLines) {
		t.Errorf("LoadConfig error is not a join of %d errors: %T", len(wantLines), err)
	}
}

func TestPolicy(t *testing.T) {
	c, err := config.LoadConfig(env(
		"GOOGLE_GENAI_USE_VERTEXAI", "true",
		"GENIMG_MODELS", "gemini-2.5-flash-image-preview,gemini-2.5-flash-image",
		"GENIMG_INPUT_BUCKETS", "shared-in,genimg-input",
		"GENIMG_UPLOAD_BUCKETS", "genimg-input,drop-box",
		"GENIMG_MAX_IMAGE_BYTES", "5000000",
		"GENIMG_MAX_PROMPT_BYTES", "2000",
	))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := job.Policy{
		Backend:        job.VertexAI,
		Models:         []string{"gemini-2.5-flash-image-preview", "gemini-2.5-flash-image"},
		DefaultModel:   "gemini-2.5-flash-image",
		InputBuckets:   []string{"shared-in", "genimg-input", "drop-box", "genimg-output"},
		MaxImageBytes:  5_000_000,
		MaxPromptBytes: 2000,
	}
	if diff := cmp.Diff(want, c.Policy()); diff != "" {
		t.Errorf("Policy (-want +got):\n%s", diff)
	}
	// ReadableBuckets must not write through to the configuration.
	before := append([]string(nil), c.Storage.InputBuckets...)
	rb := c.ReadableBuckets()
	rb[0] = "changed"
	if diff := cmp.Diff(before, c.Storage.InputBuckets); diff != "" {
		t.Errorf("ReadableBuckets aliases Storage.InputBuckets (-want +got):\n%s", diff)
	}

	// A job validated against the policy may read exactly those buckets.
	for _, tt := range []struct {
		bucket string
		ok     bool
	}{{"shared-in", true}, {"drop-box", true}, {"genimg-output", true}, {"elsewhere", false}} {
		j := job.Job{Prompt: "p", Images: []job.Image{{URI: "gs://" + tt.bucket + "/a.png"}}}
		p := c.Policy()
		j.Normalize(p)
		if err := j.Validate(p); (err == nil) != tt.ok {
			t.Errorf("job reading gs://%s/: Validate = %v, want ok=%v", tt.bucket, err, tt.ok)
		}
	}
}

func TestReadableBucketsMinimal(t *testing.T) {
	c, err := config.LoadConfig(env())
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if diff := cmp.Diff([]string{"genimg-output"}, c.ReadableBuckets()); diff != "" {
		t.Errorf("ReadableBuckets with no input or upload buckets (-want +got):\n%s", diff)
	}
}

// TestLoadConfigCallback: the callback settings, and every bad value
// named with its variable (never the secret).
func TestLoadConfigCallback(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    config.Callback
		wantErr string
	}{
		{name: "unset: no callbacks", want: config.Callback{MaxAge: 24 * time.Hour, Timeout: 30 * time.Second}},
		{
			name: "all set",
			env: []string{"GENIMG_CALLBACK_SECRET", "whsec_c2VjcmV0", "GENIMG_CALLBACK_ALLOW", "hooks.corp, 10.1.2.3",
				"GENIMG_CALLBACK_ALLOW_LOOPBACK", "true", "GENIMG_CALLBACK_MAX_AGE", "6h", "GENIMG_CALLBACK_TIMEOUT", "10s"},
			want: config.Callback{Secret: "whsec_c2VjcmV0", Allow: []string{"hooks.corp", "10.1.2.3"}, AllowLoopback: true, MaxAge: 6 * time.Hour, Timeout: 10 * time.Second},
		},
		{name: "allow-list entry with a scheme", env: []string{"GENIMG_CALLBACK_ALLOW", "https://hooks.corp"},
			wantErr: `GENIMG_CALLBACK_ALLOW="https://hooks.corp": expected comma-separated host names or addresses, without scheme, port or path`},
		{name: "max age not a duration", env: []string{"GENIMG_CALLBACK_MAX_AGE", "1 day"},
			wantErr: `GENIMG_CALLBACK_MAX_AGE="1 day": expected a positive duration such as 90s, 10m or 12h`},
		{name: "a rule's callback without a secret", env: []string{"GENIMG_UPLOAD_BUCKETS", "genimg-input", "GENIMG_RULES",
			`[{"bucket": "genimg-input", "prefix": "w/", "prompt": "p", "callback": {"url": "https://hooks.example/genimg"}}]`},
			wantErr: `GENIMG_RULES="w/": the rule names a callback, but GENIMG_CALLBACK_SECRET is not set: callbacks are signed with it`},
		{name: "a rule's callback that is not a URL", env: []string{"GENIMG_CALLBACK_SECRET", "s", "GENIMG_UPLOAD_BUCKETS", "genimg-input", "GENIMG_RULES",
			`[{"bucket": "genimg-input", "prefix": "w/", "prompt": "p", "callback": {"url": "hooks.example"}}]`},
			wantErr: `GENIMG_RULES="w/": the rule's job is invalid: callback.url "hooks.example": scheme ""; expected https://host/path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadConfig = nil error, want %q", tt.wantErr)
				}
				if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
					t.Errorf("LoadConfig error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Callback); diff != "" {
				t.Errorf("Callback (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigTrace: sampling and the exporter, bad values named.
func TestLoadConfigTrace(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    config.Trace
		wantErr string
	}{
		{name: "production default", want: config.Trace{Sample: 0.1, Exporter: "cloudtrace"}},
		{name: "emulators keep spans in memory", env: []string{"PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"}, want: config.Trace{Sample: 0.1, Exporter: "memory"}},
		{name: "all set", env: []string{"GENIMG_TRACE_SAMPLE", "1", "GENIMG_TRACE_EXPORTER", "none"}, want: config.Trace{Sample: 1, Exporter: "none"}},
		{name: "sample over 1", env: []string{"GENIMG_TRACE_SAMPLE", "10"},
			wantErr: `GENIMG_TRACE_SAMPLE="10": expected a fraction from 0 to 1, such as 0.1 (one trace in ten) or 1 (all)`},
		{name: "unknown exporter", env: []string{"GENIMG_TRACE_EXPORTER", "jaeger"},
			wantErr: `GENIMG_TRACE_EXPORTER="jaeger": expected cloudtrace, memory or none`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadConfig = nil error, want %q", tt.wantErr)
				}
				if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
					t.Errorf("LoadConfig error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Trace); diff != "" {
				t.Errorf("Trace (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigRole: the deployment's role, and whether it runs jobs.
func TestLoadConfigRole(t *testing.T) {
	tests := []struct {
		name     string
		env      []string
		want     string
		runsJobs bool
		wantErr  string
	}{
		{name: "default runs jobs", want: config.RoleAll, runsJobs: true},
		{name: "all", env: []string{"GENIMG_ROLE", "all"}, want: config.RoleAll, runsJobs: true},
		{name: "front door", env: []string{"GENIMG_ROLE", "front"}, want: config.RoleFront},
		{name: "callbacks", env: []string{"GENIMG_ROLE", "callback"}, want: config.RoleCallback},
		{name: "unknown", env: []string{"GENIMG_ROLE", "worker"},
			wantErr: `GENIMG_ROLE="worker": expected all (runs jobs: needs the model's credentials), front (Generate: never calls the model) or callback (OnCompletion: never calls the model)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadConfig = nil error, want %q", tt.wantErr)
				}
				if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
					t.Errorf("LoadConfig error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Role != tt.want || got.RunsJobs() != tt.runsJobs {
				t.Errorf("Role %q, RunsJobs %v; want %q, %v", got.Role, got.RunsJobs(), tt.want, tt.runsJobs)
			}
		})
	}
}

// TestLoadConfigSpend: the spend guard's settings, and every bad value
// named with its variable.
func TestLoadConfigSpend(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    config.Spend
		wantErr string
	}{
		{name: "unset is unlimited", want: config.Spend{}},
		{
			name: "all set",
			env: []string{"GENIMG_BUDGET_HOURLY_USD", "2.50", "GENIMG_BUDGET_DAILY_USD", "40",
				"GENIMG_CALLS_PER_MINUTE", "120", "GENIMG_PAUSED", "true"},
			want: config.Spend{HourlyUSD: 2.5, DailyUSD: 40, CallsPerMinute: 120, Paused: true},
		},
		{name: "zero is unlimited", env: []string{"GENIMG_BUDGET_DAILY_USD", "0", "GENIMG_CALLS_PER_MINUTE", "0"}, want: config.Spend{}},
		{name: "hourly alone", env: []string{"GENIMG_BUDGET_HOURLY_USD", "1000"}, want: config.Spend{HourlyUSD: 1000}},
		{name: "negative budget", env: []string{"GENIMG_BUDGET_HOURLY_USD", "-1"},
			wantErr: `GENIMG_BUDGET_HOURLY_USD="-1": expected an amount of US dollars such as 25 or 2.50, 0 for unlimited`},
		{name: "budget with a currency sign", env: []string{"GENIMG_BUDGET_DAILY_USD", "$40"},
			wantErr: `GENIMG_BUDGET_DAILY_USD="$40": expected an amount of US dollars such as 25 or 2.50, 0 for unlimited`},
		{name: "infinite budget", env: []string{"GENIMG_BUDGET_DAILY_USD", "Inf"},
			wantErr: `GENIMG_BUDGET_DAILY_USD="Inf": expected an amount of US dollars such as 25 or 2.50, 0 for unlimited`},
		{name: "hourly over daily", env: []string{"GENIMG_BUDGET_HOURLY_USD", "50", "GENIMG_BUDGET_DAILY_USD", "40"},
			wantErr: `GENIMG_BUDGET_HOURLY_USD="50": must not exceed GENIMG_BUDGET_DAILY_USD 40`},
		{name: "calls per minute negative", env: []string{"GENIMG_CALLS_PER_MINUTE", "-5"},
			wantErr: `GENIMG_CALLS_PER_MINUTE="-5": expected a whole number from 0 to 1000000`},
		{name: "calls per minute fraction", env: []string{"GENIMG_CALLS_PER_MINUTE", "1.5"},
			wantErr: `GENIMG_CALLS_PER_MINUTE="1.5": expected a whole number from 0 to 1000000`},
		{name: "paused not a bool", env: []string{"GENIMG_PAUSED", "please"},
			wantErr: `GENIMG_PAUSED="please": expected true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadConfig = nil error, want %q", tt.wantErr)
				}
				if diff := cmp.Diff(tt.wantErr, err.Error()); diff != "" {
					t.Errorf("LoadConfig error (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Spend); diff != "" {
				t.Errorf("Spend (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadConfigBatch: the batch lane's settings, and every bad value named
// with its variable.
func TestLoadConfigBatch(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		want    config.Batch
		wantErr string
	}{
		{name: "defaults", want: config.Batch{Chunk: 16, InlineBytes: 19_000_000, MaxAge: 30 * time.Hour, OnExpired: "resubmit", MaxResubmits: 1}},
		{name: "set", env: []string{"GENIMG_BATCH_CHUNK", "50", "GENIMG_BATCH_INLINE_BYTES", "1000", "GENIMG_BATCH_MAX_AGE", "2h",
			"GENIMG_BATCH_ON_EXPIRED", "fail", "GENIMG_BATCH_MAX_RESUBMITS", "0"},
			want: config.Batch{Chunk: 50, InlineBytes: 1000, MaxAge: 2 * time.Hour, OnExpired: "fail", MaxResubmits: 0}},
		{name: "chunk zero", env: []string{"GENIMG_BATCH_CHUNK", "0"}, wantErr: `GENIMG_BATCH_CHUNK="0": expected a whole number from 1 to 1000`},
		{name: "inline over 20 MB", env: []string{"GENIMG_BATCH_INLINE_BYTES", "30000000"}, wantErr: `GENIMG_BATCH_INLINE_BYTES="30000000": expected a whole number from 1 to 20000000`},
		{name: "age garbage", env: []string{"GENIMG_BATCH_MAX_AGE", "soon"}, wantErr: `GENIMG_BATCH_MAX_AGE="soon": expected a positive duration such as 90s, 10m or 12h`},
		{name: "age too short", env: []string{"GENIMG_BATCH_MAX_AGE", "5s"}, wantErr: `GENIMG_BATCH_MAX_AGE="5s": must be at least 1m`},
		{name: "policy unknown", env: []string{"GENIMG_BATCH_ON_EXPIRED", "retry"}, wantErr: `GENIMG_BATCH_ON_EXPIRED="retry": expected resubmit or fail`},
		{name: "resubmits too many", env: []string{"GENIMG_BATCH_MAX_RESUBMITS", "11"}, wantErr: `GENIMG_BATCH_MAX_RESUBMITS="11": expected a whole number from 0 to 10`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.LoadConfig(env(tt.env...))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadConfig error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if diff := cmp.Diff(tt.want, got.Batch); diff != "" {
				t.Errorf("Batch (-want +got):\n%s", diff)
			}
		})
	}
}
