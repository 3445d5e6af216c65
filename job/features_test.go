package job_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

// structuredJob is a valid job asking for JSON.
func structuredJob() job.Job {
	j := validJob()
	j.ResponseModalities = []string{"TEXT", "IMAGE"}
	j.ResponseMIMEType = "application/json"
	j.ResponseSchema = json.RawMessage(`{"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "STRING"}}}, "required": ["title"]}`)
	return j
}

// contextJob is a valid job naming a shared context.
func contextJob() job.Job {
	j := validJob()
	j.Context = &job.SharedContext{Name: "style-guide", SystemInstruction: "Flat pastel colours.", Images: []job.Image{{URI: "gs://in/ref.png"}}, TTL: "3600s"}
	return j
}

func TestValidateFeatures(t *testing.T) {
	tests := []struct {
		name   string
		job    func() job.Job
		change func(*job.Job)
		want   string // "" for valid; else the one message after "invalid job: "
	}{
		{name: "structured valid", job: structuredJob, change: func(*job.Job) {}},
		{name: "text mime without schema", job: structuredJob, change: func(j *job.Job) { j.ResponseMIMEType, j.ResponseSchema = "text/plain", nil }},
		{name: "mime in upper case is normalised", job: structuredJob, change: func(j *job.Job) { j.ResponseMIMEType = " Application/JSON " }},
		{name: "context valid", job: contextJob, change: func(*job.Job) {}},
		{name: "context instruction only", job: contextJob, change: func(j *job.Job) { j.Context.Images, j.Context.TTL = nil, "" }},
		{name: "callback valid", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{URL: "https://hooks.example/genimg?k=1"} }},
		{name: "callback without url", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{} },
			want: `callback.url is required: the https:// URL that receives the completion event, such as {"url": "https://receiver.example/hooks/genimg"}`},
		{name: "callback without scheme", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{URL: "hooks.example/x"} },
			want: `callback.url "hooks.example/x": scheme ""; expected https://host/path`},
		{name: "callback ftp", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{URL: "ftp://hooks.example/x"} },
			want: `callback.url "ftp://hooks.example/x": scheme "ftp"; expected https://host/path`},
		{name: "callback with a password", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{URL: "https://u:pw@hooks.example/"} },
			want: `callback.url "https://u:xxxxx@hooks.example/": user information in the URL is not accepted; receivers authenticate genimg by the webhook-signature header`},
		{name: "callback with a fragment", job: structuredJob, change: func(j *job.Job) { j.Callback = &job.Callback{URL: "https://hooks.example/#x"} },
			want: `callback.url "https://hooks.example/#x": a fragment (#…) is never sent; remove it`},
		{name: "json without TEXT", job: structuredJob, change: func(j *job.Job) { j.ResponseModalities = []string{"IMAGE"} },
			want: `responseMimeType needs "TEXT" among responseModalities: structured output is the answer's text`},
		{name: "json with no modalities", job: structuredJob, change: func(j *job.Job) { j.ResponseModalities = nil },
			want: `responseMimeType needs "TEXT" among responseModalities: structured output is the answer's text`},
		{name: "unknown mime", job: structuredJob, change: func(j *job.Job) { j.ResponseMIMEType, j.ResponseSchema = "text/csv", nil },
			want: `responseMimeType "text/csv": accepted: application/json, text/plain`},
		{name: "schema without json mime", job: structuredJob, change: func(j *job.Job) { j.ResponseMIMEType = "text/plain" },
			want: `responseSchema needs responseMimeType "application/json"`},
		{name: "schema not an object", job: structuredJob, change: func(j *job.Job) { j.ResponseSchema = json.RawMessage(`["a"]`) },
			want: "responseSchema: expected a JSON object (a schema), got an array"},
		{name: "schema unknown type", job: structuredJob, change: func(j *job.Job) { j.ResponseSchema = json.RawMessage(`{"type": "map"}`) },
			want: "responseSchema: type map: accepted: STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT, NULL"},
		{name: "schema property not a schema", job: structuredJob, change: func(j *job.Job) {
			j.ResponseSchema = json.RawMessage(`{"type": "object", "properties": {"a": 3}}`)
		}, want: "responseSchema: properties.a: expected a JSON object (a schema), got a number"},
		{name: "schema required not a property", job: structuredJob, change: func(j *job.Job) {
			j.ResponseSchema = json.RawMessage(`{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}`)
		}, want: "responseSchema: required: b is not one of the properties"},
		{name: "schema nested items bad", job: structuredJob, change: func(j *job.Job) {
			j.ResponseSchema = json.RawMessage(`{"type": "array", "items": {"type": 1}}`)
		}, want: "responseSchema: items: type 1: accepted: STRING, NUMBER, INTEGER, BOOLEAN, ARRAY, OBJECT, NULL"},
		{name: "context with cachedContent", job: contextJob, change: func(j *job.Job) { j.CachedContent = "cachedContents/abc" },
			want: "context and cachedContent cannot be combined: both name the cache the request uses"},
		{name: "context with systemInstruction", job: contextJob, change: func(j *job.Job) { j.SystemInstruction = "be nice" },
			want: "context and systemInstruction cannot be combined (the API rejects an instruction beside a cache): put the instruction in context.systemInstruction"},
		{name: "context bad name", job: contextJob, change: func(j *job.Job) { j.Context.Name = "a/b" },
			want: `context.name "a/b": must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'`},
		{name: "context empty", job: contextJob, change: func(j *job.Job) { j.Context.SystemInstruction, j.Context.Images = " ", nil },
			want: `context "style-guide" is empty: give a systemInstruction, images or both`},
		{name: "context ttl too short", job: contextJob, change: func(j *job.Job) { j.Context.TTL = "10s" },
			want: `context.ttl "10s": expected a duration from 1m0s to 48h0m0s, such as 3600s`},
		{name: "context ttl garbage", job: contextJob, change: func(j *job.Job) { j.Context.TTL = "soon" },
			want: `context.ttl "soon": expected a duration from 1m0s to 48h0m0s, such as 3600s`},
		{name: "context image bucket", job: contextJob, change: func(j *job.Job) { j.Context.Images[0].URI = "gs://other/x.png" },
			want: `context.images[0]: bucket "other" is not one genimg may read inputs from; allowed: in, genimg-output`},
		{name: "context too many images", job: contextJob, change: func(j *job.Job) {
			j.Context.Images = append(j.Context.Images, j.Context.Images[0], j.Context.Images[0], j.Context.Images[0])
		}, want: "context.images: 4 images; at most 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy(job.GeminiAPI)
			j := tt.job()
			tt.change(&j)
			j.Normalize(p)
			err := j.Validate(p)
			got := ""
			if err != nil {
				got = strings.TrimPrefix(err.Error(), "invalid job: ")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFeaturesDecodeAndFingerprint(t *testing.T) {
	body := `{"id": "j1", "prompt": "p", "responseModalities": ["TEXT", "IMAGE"], "responseMimeType": "application/json",
		"responseSchema": {"type": "object",
		   "properties": {"title": {"type": "string"}}},
		"context": {"name": "guide", "systemInstruction": "s", "ttl": "2h"}}`
	j, err := job.Decode([]byte(body))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	p := testPolicy(job.GeminiAPI)
	j.Normalize(p)
	if err := j.Validate(p); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if diff := cmp.Diff(`{"type":"object","properties":{"title":{"type":"string"}}}`, string(j.ResponseSchema)); diff != "" {
		t.Errorf("normalised schema (-want +got):\n%s", diff)
	}
	if got := j.Context.ContextTTL(); got != 2*time.Hour {
		t.Errorf("ContextTTL = %v, want 2h", got)
	}
	if !j.WantsJSON() {
		t.Error("WantsJSON = false, want true")
	}
	// The same schema with other whitespace is the same work; another
	// context is other work.
	k, _ := job.Decode([]byte(strings.ReplaceAll(body, "\n\t\t   ", " ")))
	k.Normalize(p)
	if j.Fingerprint() != k.Fingerprint() {
		t.Error("fingerprint changed with the schema's layout")
	}
	k.Context.SystemInstruction = "other"
	if j.Fingerprint() == k.Fingerprint() {
		t.Error("fingerprint did not change with the context")
	}

	_, err = job.Decode([]byte(`{"prompt": "p", "context": {"name": "g", "ttl": "1h", "instruction": "x"}}`))
	if err == nil || !strings.Contains(err.Error(), `context: unknown field "instruction"; accepted fields: name, systemInstruction, images, ttl`) {
		t.Errorf("Decode(unknown context field) = %v, want the context's fields listed", err)
	}
	if got := (*job.SharedContext)(nil).ContextTTL(); got != job.DefaultContextTTL {
		t.Errorf("nil ContextTTL = %v", got)
	}
}

func TestRecordFeatureFieldsOmitted(t *testing.T) {
	b, err := json.Marshal(job.Record{JobID: "a", Outcome: job.Succeeded})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"json"`, `"jsonError"`, `"batch"`} {
		if strings.Contains(string(b), f) {
			t.Errorf("record without the features marshals %s: %s", f, b)
		}
	}
	b, _ = json.Marshal(job.Record{JSON: json.RawMessage(`{"a":1}`), Batch: &job.BatchInfo{Name: "batches/x", ID: "c1"}})
	for _, f := range []string{`"json":{"a":1}`, `"batch":{"name":"batches/x","id":"c1"}`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("record marshals without %s: %s", f, b)
		}
	}
}
