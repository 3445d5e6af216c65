package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// Structured output: the answer's JSON lands in the record when it
// conforms to the job's schema, and a clear jsonError when it does not.
func TestStructuredOutput(t *testing.T) {
	schema := `{"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["title"]}`
	for _, tt := range []struct {
		name, directive string
		conforming      bool
	}{
		{"conforming", "", true},
		{"non-conforming", " [[standin:json=bad]]", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := fmt.Sprintf(`{"prompt": "a poster for a jazz night%s", "responseModalities": ["TEXT", "IMAGE"], "responseMimeType": "application/json", "responseSchema": %s}`, tt.directive, schema)
			resp, b := postJSON(t, body, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			rec := decodeRecord(t, b)
			if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
				t.Fatalf("outcome %s, %d images: the images come whatever the JSON", rec.Outcome, len(rec.Outputs))
			}
			if tt.conforming {
				var v struct{ Title string }
				if err := json.Unmarshal(rec.JSON, &v); err != nil || v.Title == "" || rec.JSONError != "" {
					t.Errorf("json %s, jsonError %q", rec.JSON, rec.JSONError)
				}
				return
			}
			if rec.JSON != nil || rec.JSONError == "" {
				t.Errorf("non-conforming answer: json %s, jsonError %q", rec.JSON, rec.JSONError)
			}
		})
	}
	// Structured output needs TEXT among the modalities.
	resp, b := postJSON(t, `{"prompt": "x", "responseMimeType": "application/json", "responseSchema": {"type": "object"}}`, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "TEXT") {
		t.Errorf("without TEXT: status %d: %s", resp.StatusCode, b)
	}
}

// A shared context is cached once and reused: cached tokens are counted in
// the records of the jobs that use it.
func TestSharedContext(t *testing.T) {
	name := "style-" + fmt.Sprint(time.Now().UnixNano())
	job := func(i int) string {
		return fmt.Sprintf(`{"prompt": "a fox, scene %d", "context": {"name": %q, "systemInstruction": "Draw everything as a linocut print with two colours.", "ttl": "600s"}}`, i, name)
	}
	var cached []int32
	for i := range 3 {
		resp, b := postJSON(t, job(i), nil)
		rec := decodeRecord(t, b)
		if resp.StatusCode != http.StatusOK || rec.Outcome != "succeeded" {
			t.Fatalf("job %d: status %d: %s", i, resp.StatusCode, b)
		}
		cached = append(cached, rec.Usage.CachedTokens)
	}
	for i, c := range cached {
		if c == 0 {
			t.Errorf("job %d: no cached tokens counted (%v)", i, cached)
		}
	}
	// One cache, shared through Cloud Storage.
	if n := countObjects(t, outputBucket, "caches/"+name+".json"); n != 1 {
		t.Errorf("%d cache records for the context, want 1", n)
	}
}

// With a webhook secret, Generate takes only signed requests, each once.
func TestWebhookSignatures(t *testing.T) {
	cfg, err := stack.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Webhook.Secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	in := newInstance(t, cfg, "webhook")
	key, err := webhook.ParseKey(cfg.Webhook.Secret)
	if err != nil {
		t.Fatal(err)
	}
	url := stack.functions + "/" + in.path + "/Generate"
	send := func(method, target string, body []byte, sign bool, id string) int {
		req, _ := http.NewRequestWithContext(t.Context(), method, target, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "respond-async")
		if sign {
			webhook.SignHeaders(req.Header, key, id, time.Now(), body)
		}
		resp, b := do(t, req)
		if strings.Contains(string(b), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
			t.Errorf("the secret leaked into an answer: %s", b)
		}
		return resp.StatusCode
	}
	jobID := uniq(t)
	body := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a signed fox"}`, jobID))
	if got := send(http.MethodPost, url, body, false, ""); got != http.StatusUnauthorized {
		t.Errorf("unsigned POST: %d, want 401", got)
	}
	webhookID := "msg_" + jobID
	if got := send(http.MethodPost, url, body, true, webhookID); got != http.StatusAccepted {
		t.Errorf("signed POST: %d, want 202", got)
	}
	if got := send(http.MethodPost, url, body, true, webhookID); got != http.StatusConflict {
		t.Errorf("replayed POST: %d, want 409", got)
	}
	if got := send(http.MethodGet, url+"?id="+jobID, nil, false, ""); got != http.StatusUnauthorized {
		t.Errorf("unsigned GET: %d, want 401", got)
	}
	stack.events.waitJob(t, jobID)
	if got := send(http.MethodGet, url+"?id="+jobID, nil, true, "get_"+jobID); got != http.StatusOK {
		t.Errorf("signed GET: %d, want 200", got)
	}
}

// A paused pipeline turns new HTTP jobs away at once: 429 with Retry-After,
// nothing queued.
func TestPausedRefusesHTTPJobs(t *testing.T) {
	cfg, err := stack.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Spend.Paused = true
	in := newInstance(t, cfg, "paused")
	id := uniq(t)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/"+in.path+"/Generate",
		strings.NewReader(fmt.Sprintf(`{"id": %q, "prompt": "a fox"}`, id)))
	req.Header.Set("Content-Type", "application/json")
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "paused") {
		t.Fatalf("status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if r, _ := getJob(t, "/Generate?id="+id); r.StatusCode != http.StatusNotFound {
		t.Errorf("the refused job exists: GET answered %d", r.StatusCode)
	}
}
