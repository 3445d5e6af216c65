package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// With a webhook secret, Generate takes only signed requests. A request
// repeated with the same webhook-id and body gets the answer the first
// would get now; the same webhook-id with another body is a 409 (9.1).
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
	if got := send(http.MethodPost, url, body, true, webhookID); got != http.StatusAccepted && got != http.StatusOK {
		t.Errorf("the same request again: %d, want the job's current answer (202 or 200)", got)
	}
	other := []byte(fmt.Sprintf(`{"id": %q, "prompt": "another fox"}`, jobID+"-other"))
	if got := send(http.MethodPost, url, other, true, webhookID); got != http.StatusConflict {
		t.Errorf("the same webhook-id with another body: %d, want 409", got)
	}
	if got := send(http.MethodGet, url+"?id="+jobID, nil, false, ""); got != http.StatusUnauthorized {
		t.Errorf("unsigned GET: %d, want 401", got)
	}
	stack.events.waitJob(t, jobID)
	if got := send(http.MethodGet, url+"?id="+jobID, nil, true, "get_"+jobID); got != http.StatusOK {
		t.Errorf("signed GET: %d, want 200", got)
	}
	if n := len(stack.events.forJob(jobID)); n != 1 {
		t.Errorf("%d completion events for the job, want 1", n)
	}
}

// A signed request whose job could not be made durable (the requests topic
// refused it) answers 503, and its retry with the same webhook-id is taken,
// not refused: the webhook-id is recorded only with the job. A request
// without a job id is keyed by its webhook-id, so the retry is the same
// job: one model call. (The webhook-id used to be recorded first, and every
// retry was refused 409 for ever.)
func TestWebhookRetryAfterFailure(t *testing.T) {
	m := newModel(t)
	cfg := baseConfig(t, m)
	cfg.Webhook.Secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	in := newInstance(t, cfg, "webhook-retry")
	key, _ := webhook.ParseKey(cfg.Webhook.Secret)
	url := stack.functions + "/" + in.path + "/Generate"
	// The job runs on the stack's instance, which the requests topic feeds.
	body := []byte(fmt.Sprintf(`{"prompt": %q}`, "a signed heron "+uniq(t)))
	webhookID := "msg_" + uniq(t)
	send := func() (int, []byte) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "respond-async")
		webhook.SignHeaders(req.Header, key, webhookID, time.Now(), body)
		resp, b := do(t, req)
		return resp.StatusCode, b
	}
	fail := func(context.Context) error { return status.Error(codes.PermissionDenied, "injected: publish refused") }
	in.publishHook.Store(&fail)
	if got, b := send(); got != http.StatusServiceUnavailable {
		t.Fatalf("POST while the topic refuses: %d %s, want 503", got, b)
	}
	in.publishHook.Store(nil)
	got, b := send()
	if got != http.StatusAccepted {
		t.Fatalf("the retry: %d %s, want 202", got, b)
	}
	var p struct{ JobID string }
	if err := json.Unmarshal(b, &p); err != nil || p.JobID == "" {
		t.Fatalf("answer %s: %v", b, err)
	}
	stack.events.waitJob(t, p.JobID)
	if got, _ := send(); got != http.StatusOK {
		t.Errorf("the request once more, after the job is done: %d, want 200 (its record)", got)
	}
	if rec := storedRecord(t, p.JobID); rec.Attempts != 1 || rec.Outcome != job.Succeeded {
		t.Errorf("record: outcome %s, %d paid calls; want succeeded, 1", rec.Outcome, rec.Attempts)
	}
	if n := len(stack.events.forJob(p.JobID)); n != 1 {
		t.Errorf("%d completion events, want 1", n)
	}
}

// A paused pipeline holds its jobs: the delivery is acknowledged (the
// platform's retries are not spent), nothing is paid, GET answers 202 with
// the state held (paused); once the cause clears, the scheduled resume
// runs the job. (Event-borne jobs used to be redelivered until they were
// dead-lettered, and HTTP jobs refused 429.)
func TestPausedHoldsJobs(t *testing.T) {
	m := newModel(t)
	cfg := baseConfig(t, m)
	cfg.Spend.Paused = true
	paused := newInstance(t, cfg, "paused")
	msgID := "paused-" + uniq(t)
	id := derivedMessageID(msgID)
	deliver(t, paused.path+"/OnMessage", msgID, []byte(`{"prompt": "a fox in a paused world"}`), time.Now(), http.StatusOK)
	st, err := paused.Store().Status(t.Context(), id)
	if err != nil || st.State != job.Held || st.Reason != job.HoldPaused {
		t.Fatalf("state = %+v, %v; want held (paused)", st, err)
	}
	r, b := getJob(t, "/Generate?id="+id)
	var p struct {
		State  job.State
		Reason string
	}
	json.Unmarshal(b, &p)
	if r.StatusCode != http.StatusAccepted || p.State != job.Held || p.Reason != job.HoldPaused {
		t.Errorf("GET while held: %d %s; want 202 held (paused)", r.StatusCode, b)
	}
	if rep, err := paused.Resume(t.Context()); err != nil || rep.Held < 1 {
		t.Errorf("Resume while still paused = %+v, %v; want it held", rep, err)
	}
	if m.Calls() != 0 {
		t.Errorf("%d model calls while paused", m.Calls())
	}
	// An instance that is not paused (the stack's own) resumes it: the job
	// goes back on the requests topic and runs there.
	pollBatches(t)
	rec := stack.events.waitJob(t, id).Record
	if rec.Outcome != job.Succeeded || rec.Trigger.Kind != job.PubSub || rec.Trigger.Source != msgID {
		t.Errorf("record after resume: outcome %s, trigger %+v; want succeeded, the original trigger", rec.Outcome, rec.Trigger)
	}
}
