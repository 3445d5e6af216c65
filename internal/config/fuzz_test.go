package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// FuzzLoadConfig feeds operator-written values (buckets, prefix, topics,
// durations, models, prices, rules) to LoadConfig. Invariants: it never
// panics; an error names a variable on every line and never prints the
// secrets; a configuration it accepts keeps genimg's promises about
// uploads and configuration (no rule can see genimg's outputs, the completion topic
// is not the requests topic, leases outlast the function, and so on).
func FuzzLoadConfig(f *testing.F) {
	f.Add("genimg-output", "images/", "genimg-input", "genimg-requests", "genimg-completions", "12h", "10m", "540s", "120s",
		"gemini-2.5-flash-image", "", `{"outputImage": 15}`,
		`[{"bucket": "genimg-input", "prefix": "watercolor/", "prompt": "Turn this photo into a watercolor painting", "aspectRatio": "1:1"}]`)
	f.Add("genimg-output", "", "genimg-output", "t", "t", "24h", "1m", "9m", "9m", "dall-e", "gemini-2.5-flash-image", `{"cached": -1}`,
		`[{"bucket": "genimg-output", "prefix": "images/", "prompt": "p"}, {"bucket": "genimg-output", "prefix": "jobs/", "prompt": "p"}]`)
	f.Add("gs://x", "/jobs", "a,b,,c", "projects/p/topics/t", "", "-1h", "0", "1ns", "", "", "", `[1]`, `{"bucket": "x"}`)
	f.Add("out", "a/../b", "out", "r", "c", "23h59m59s", "601s", "600s", "599s", "gemini-2.5-flash-image-preview",
		"gemini-2.5-flash-image-preview,gemini-2.5-flash-image", `null`, `[{"bucket": "out", "prefix": "/", "prompt": " "}]`)
	f.Fuzz(func(t *testing.T, output, prefix, uploads, requests, completion, maxAge, lease, fnTimeout, modelTimeout,
		model, models, prices, rules string) {
		if rules != "" && !strings.HasPrefix(strings.TrimSpace(rules), "[") && !strings.HasPrefix(strings.TrimSpace(rules), "{") {
			rules = "[" + rules // never read an arbitrary file path
		}
		vars := map[string]string{
			"GOOGLE_CLOUD_PROJECT": "proj", "GEMINI_API_KEY": apiKey, "GENIMG_WEBHOOK_SECRET": webhookSecret,
			"GENIMG_OUTPUT_BUCKET": output, "GENIMG_OUTPUT_PREFIX": prefix, "GENIMG_UPLOAD_BUCKETS": uploads,
			"GENIMG_REQUESTS_TOPIC": requests, "GENIMG_COMPLETION_TOPIC": completion, "GENIMG_MAX_EVENT_AGE": maxAge,
			"GENIMG_LEASE": lease, "GENIMG_FUNCTION_TIMEOUT": fnTimeout, "GENIMG_MODEL_TIMEOUT": modelTimeout,
			"GENIMG_MODEL": model, "GENIMG_MODELS": models, "GENIMG_PRICES": prices, "GENIMG_RULES": rules,
		}
		c, err := config.LoadConfig(func(k string) string { return vars[k] })
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, apiKey) || strings.Contains(msg, webhookSecret) {
				t.Fatalf("LoadConfig error prints a secret: %s", msg)
			}
			// Lines of a joined error start with the variable; a value
			// holding a newline may continue a line, so check the first.
			if !strings.HasPrefix(msg, "GENIMG_") && !strings.HasPrefix(msg, "GOOGLE_") {
				t.Fatalf("LoadConfig error does not start with a variable name: %q", msg)
			}
			return
		}
		switch {
		case c.Topics.Requests == c.Topics.Completion:
			t.Fatalf("accepted equal requests and completion topics %q", c.Topics.Requests)
		case c.Limits.MaxEventAge <= 0 || c.Limits.MaxEventAge >= 24*60*60*1e9:
			t.Fatalf("accepted max event age %v", c.Limits.MaxEventAge)
		case c.Storage.Lease <= c.Limits.FunctionTimeout:
			t.Fatalf("accepted lease %v <= function timeout %v", c.Storage.Lease, c.Limits.FunctionTimeout)
		case c.Model.CallTimeout >= c.Limits.FunctionTimeout:
			t.Fatalf("accepted model timeout %v >= function timeout %v", c.Model.CallTimeout, c.Limits.FunctionTimeout)
		case !slices.Contains(c.Model.Allowed, c.Model.Default):
			t.Fatalf("accepted default model %q outside %q", c.Model.Default, c.Model.Allowed)
		case c.Storage.OutputBucket == "" || strings.Contains(c.Storage.OutputBucket, "/"):
			t.Fatalf("accepted output bucket %q", c.Storage.OutputBucket)
		case !strings.HasSuffix(c.Storage.OutputPrefix, "/") || strings.HasPrefix(c.Storage.OutputPrefix, "jobs/"):
			t.Fatalf("accepted output prefix %q", c.Storage.OutputPrefix)
		case c.Prices.OutputImage < 0 || c.Prices.BatchDiscount < 0 || c.Prices.BatchDiscount > 1:
			t.Fatalf("accepted prices %+v", c.Prices)
		}
		for _, m := range c.Model.Allowed {
			if _, err := job.Lookup(m, c.Model.Backend); err != nil {
				t.Fatalf("accepted model %q: %v", m, err)
			}
		}
		for _, r := range c.Uploads.Rules {
			if !slices.Contains(c.Uploads.Buckets, r.Bucket) || strings.TrimSpace(r.Prompt) == "" || !strings.HasSuffix(r.Prefix, "/") || r.Name == "" {
				t.Fatalf("accepted rule %+v with upload buckets %q", r, c.Uploads.Buckets)
			}
			// Loop guard at start: no rule sees what genimg writes.
			for _, written := range []string{c.Storage.OutputPrefix + "j/x/0.png", "jobs/j/result.json"} {
				if r.Matches(c.Storage.OutputBucket, written) {
					t.Fatalf("accepted rule %+v that matches genimg's own %s", r, written)
				}
			}
			if !r.Matches(r.Bucket, r.Prefix+"photo.png") {
				t.Fatalf("rule %+v does not match an object under its own prefix", r)
			}
			j := r.Job(job.Image{URI: "gs://" + r.Bucket + "/" + r.Prefix + "photo.png"})
			if len(j.Images) != 1 || j.Prompt != r.Prompt || j.ID != "" {
				t.Fatalf("rule %+v made job %+v", r, j)
			}
		}
	})
}
