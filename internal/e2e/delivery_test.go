package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// postEvent POSTs a binary-mode CloudEvent to a function, as Eventarc does,
// and returns the status.
func postEvent(t *testing.T, fn, id, typ, source, subject string, when time.Time, data []byte) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/"+fn, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-type", typ)
	req.Header.Set("ce-source", source)
	req.Header.Set("ce-time", when.UTC().Format(time.RFC3339Nano))
	if subject != "" {
		req.Header.Set("ce-subject", subject)
	}
	resp, _ := do(t, req)
	return resp.StatusCode
}

// storageEvent builds the finalized event for an object from the public
// sample payload, with the object's real attributes.
func storageEvent(t *testing.T, bucket, name string, generation int64, contentType string, meta map[string]string) []byte {
	t.Helper()
	var sample struct {
		Data map[string]any `json:"data"`
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "events", "storage-cloudevent.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sample); err != nil {
		t.Fatal(err)
	}
	d := sample.Data
	d["bucket"], d["name"], d["generation"], d["contentType"] = bucket, name, fmt.Sprint(generation), contentType
	d["metadata"] = meta
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// messageEvent builds a messagePublished event's data, as the public
// sample carries it (camelCase and snake_case twins).
func messageData(t *testing.T, id string, data []byte, attrs map[string]string, when time.Time) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"subscription": subName("genimg-requests-push"),
		"message": map[string]any{
			"data": base64.StdEncoding.EncodeToString(data), "attributes": attrs,
			"messageId": id, "message_id": id,
			"publishTime": when.UTC().Format(time.RFC3339Nano),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSameUploadDeliveredTwice(t *testing.T) {
	calls := stack.model.Calls()
	name := "photos/" + uniq(t) + ".png"
	meta := map[string]string{"prompt": "in pastel"}
	attrs := upload(t, inputBucket, name, testPNG(t, 200, 300), "image/png", meta)
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	first := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source })

	// Eventarc delivers the same event again, twice.
	data := storageEvent(t, inputBucket, name, attrs.Generation, "image/png", meta)
	for range 2 {
		if status := postEvent(t, "OnUpload", "evt-"+name, "google.cloud.storage.object.v1.finalized",
			"//storage.googleapis.com/projects/_/buckets/"+inputBucket, "objects/"+name, time.Now(), data); status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
	}
	evs := stack.events.waitCount(t, first.Record.JobID, 3)
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3 (one per delivery)", len(evs))
	}
	for _, e := range evs {
		if e.Attributes["ce-id"] != first.Attributes["ce-id"] {
			t.Errorf("ce-id %q differs from %q", e.Attributes["ce-id"], first.Attributes["ce-id"])
		}
	}
	if got := stack.model.Calls() - calls; got != 1 {
		t.Errorf("%d model calls for three deliveries, want 1", got)
	}
	// One set of images: the job's folder holds one image.
	if n := countObjects(t, outputBucket, "images/"+first.Record.JobID+"/"); n != 1 {
		t.Errorf("%d images in the job's folder, want 1", n)
	}
}

func countObjects(t *testing.T, bucket, prefix string) int {
	t.Helper()
	it := stack.gcs.Bucket(bucket).Objects(t.Context(), &gcs.Query{Prefix: prefix})
	n := 0
	for {
		_, err := it.Next()
		if err != nil {
			break
		}
		n++
	}
	return n
}

func TestSameIDDifferentJob(t *testing.T) {
	id := uniq(t)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "a"}`, id)), nil)
	first := stack.events.waitJob(t, id)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "b"}`, id)), nil)
	// The newcomer is rejected on its own subject, never under the job's.
	second := stack.events.wait(t, func(e event) bool {
		return e.Attributes["ce-type"] == pipeline.RejectedEventType && e.Record.JobID == id
	})
	if second.Record.Error == nil || second.Record.Error.Code != "conflict" || !strings.HasPrefix(second.Attributes["ce-subject"], "deliveries/") {
		t.Errorf("rejection: subject %q, error %+v", second.Attributes["ce-subject"], second.Record.Error)
	}
	for _, e := range stack.events.forJob(id) {
		if e.Attributes["ce-subject"] == "jobs/"+id && e.Attributes["ce-id"] != first.Attributes["ce-id"] {
			t.Errorf("an event under jobs/%s other than the owner's: %v", id, e.Attributes)
		}
	}
	// The first job's record stands.
	resp, body := getJob(t, "/Generate?id="+id)
	if rec := decodeRecord(t, body); resp.StatusCode != http.StatusOK || rec.ResponseID != first.Record.ResponseID {
		t.Errorf("GET: status %d, record %+v", resp.StatusCode, rec)
	}
}

// Bad input ends in a failed record (or, for what is not a job, nothing),
// an acknowledgement and no model call.
func TestBadDeliveries(t *testing.T) {
	gif := []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
	tests := []struct {
		name string
		run  func(t *testing.T) (jobID string) // "" when no record is expected
		code string
		text string
	}{
		{name: "not JSON", code: "invalid_argument", text: "job:", run: func(t *testing.T) string {
			id := "m-" + uniq(t)
			postMessage(t, id, []byte("hello"), nil, time.Now(), http.StatusOK)
			return derivedMessageID(id)
		}},
		{name: "unknown field", code: "invalid_argument", text: `"colour"`, run: func(t *testing.T) string {
			id := uniq(t)
			publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "x", "colour": "red"}`, id)), nil)
			return id
		}},
		{name: "over 512 KB", code: "too_large", text: "512 KB", run: func(t *testing.T) string {
			id := "m-" + uniq(t)
			postMessage(t, id, []byte(`{"prompt": "`+strings.Repeat("x", 600<<10)+`"}`), nil, time.Now(), http.StatusOK)
			return derivedMessageID(id)
		}},
		{name: "GIF named .png", code: "invalid_argument", text: "image/gif", run: func(t *testing.T) string {
			name := "photos/" + uniq(t) + ".png"
			a := upload(t, inputBucket, name, gif, "image/png", map[string]string{"prompt": "x"})
			return job.DeriveID("up", fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, a.Generation), "metadata")
		}},
		{name: "input from a bucket not allowed", code: "invalid_argument", text: "not one genimg may read", run: func(t *testing.T) string {
			id := uniq(t)
			publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "x", "images": [{"uri": "gs://private/a.png"}]}`, id)), nil)
			return id
		}},
		{name: "stale delivery", code: "unavailable", text: "maximum event age", run: func(t *testing.T) string {
			id := "m-" + uniq(t)
			postMessage(t, id, []byte(`{"prompt": "x"}`), nil, time.Now().Add(-2*time.Hour), http.StatusOK)
			return derivedMessageID(id)
		}},
		{name: "object genimg wrote", run: func(t *testing.T) string {
			upload(t, inputBucket, "watercolor/"+uniq(t)+".png", testPNG(t, 8, 8), "image/png",
				map[string]string{job.MetaGeneratedBy: job.Generator, "prompt": "x"})
			return ""
		}},
		{name: "genimg's own event on the requests topic", run: func(t *testing.T) string {
			publish(t, []byte(`{"jobId": "x", "outcome": "succeeded"}`), map[string]string{"ce-type": job.EventType})
			return ""
		}},
		{name: "image under a dry-run rule", run: func(t *testing.T) string {
			upload(t, inputBucket, "backfill/"+uniq(t)+".png", testPNG(t, 8, 8), "image/png", nil)
			return ""
		}},
		{name: "text file with a prompt", run: func(t *testing.T) string {
			upload(t, inputBucket, "notes/"+uniq(t)+".txt", []byte("hi"), "text/plain", map[string]string{"prompt": "x"})
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, events := stack.model.Calls(), len(stack.events.all())
			id := tt.run(t)
			if id == "" {
				settle()
				settle()
				if n := len(stack.events.all()) - events; n != 0 {
					t.Errorf("%d events for what is not a job", n)
				}
			} else {
				rec := stack.events.waitJob(t, id).Record
				if rec.Outcome != job.Failed || rec.Error == nil || rec.Error.Code != tt.code || !strings.Contains(rec.Error.Message, tt.text) {
					t.Errorf("record: outcome %s error %+v; want %s mentioning %q", rec.Outcome, rec.Error, tt.code, tt.text)
				}
				if tt.code == "unavailable" && (rec.Error == nil || !rec.Error.Retryable) {
					t.Error("a stale delivery's failure must be retryable")
				}
			}
			if got := stack.model.Calls() - calls; got != 0 {
				t.Errorf("%d model calls", got)
			}
		})
	}
}

// postMessage delivers a messagePublished event straight to OnMessage.
func postMessage(t *testing.T, id string, data []byte, attrs map[string]string, when time.Time, want int) {
	t.Helper()
	status := postEvent(t, "OnMessage", id, "google.cloud.pubsub.topic.v1.messagePublished",
		"//pubsub.googleapis.com/"+topicName("genimg-requests"), "", when, messageData(t, id, data, attrs, when))
	if status != want {
		t.Fatalf("OnMessage answered %d, want %d", status, want)
	}
}

func derivedMessageID(messageID string) string {
	return job.DeriveID("msg", "//pubsub.googleapis.com/"+topicName("genimg-requests"), messageID)
}

// A per-day quota is not retried in-process and does not spend the
// platform's retries: the job is held (acknowledged), waits out the quota,
// and once it is older than the maximum event age it ends in a failed,
// retryable record — with the one refused call, unpaid, and no other.
// (Before jobs could be held, the delivery was redelivered until the
// subscription dead-lettered it.)
func TestQuotaHoldsThenTooOld(t *testing.T) {
	m := newModel(t)
	cfg := baseConfig(t, m)
	in := newInstance(t, cfg, "quota-hold")
	ctx := t.Context()
	msgID := "m-" + uniq(t)
	id := derivedMessageID(msgID)
	data := []byte(`{"prompt": "a fox [[standin:quota=day]]"}`)
	deliver(t, in.path+"/OnMessage", msgID, data, in.now().Add(-50*time.Minute), http.StatusOK)
	if got := m.Calls(); got != 1 {
		t.Errorf("%d model calls for a per-day quota, want 1 (no in-process retry)", got)
	}
	st, err := in.Store().Status(ctx, id)
	if err != nil || st.State != job.Held || st.Reason != job.HoldQuota {
		t.Fatalf("state after the quota = %+v, %v; want held (quota)", st, err)
	}
	// Within GENIMG_QUOTA_RETRY it stays held; past the maximum event age
	// (1 h here, counted from the delivery) it ends.
	if rep, err := in.Resume(ctx); err != nil || rep.Held != 1 || rep.Requeued+rep.Expired != 0 {
		t.Errorf("Resume within the quota wait = %+v, %v; want it still held", rep, err)
	}
	in.advance(15 * time.Minute)
	if rep, err := in.Resume(ctx); err != nil || rep.Expired != 1 {
		t.Fatalf("Resume past the maximum age = %+v, %v; want it expired", rep, err)
	}
	rec := storedRecord(t, id)
	if rec.Outcome != job.Failed || rec.Error == nil || !rec.Error.Retryable || rec.Attempts != 1 || rec.CostUSD != 0 {
		t.Errorf("record %+v; want failed, retryable, the one call made and nothing paid", rec)
	}
	if got := m.Calls(); got != 1 {
		t.Errorf("model calls = %d, want 1", got)
	}
	if rep, err := in.Resume(ctx); err != nil || rep.Held+rep.Requeued+rep.Expired != 0 {
		t.Errorf("Resume after the record = %+v, %v; want nothing left", rep, err)
	}
}

// The completion record and event attributes, as golden files.
func TestGoldenRecord(t *testing.T) {
	id := "golden-record-1"
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "a red fox in the snow", "aspectRatio": "4:3", "labels": {"team": "docs"}}`, id)), nil)
	e := stack.events.waitJob(t, id)
	rec := e.Record
	rec.Trigger.Source = "<message id>"
	rec.Timings = job.Timings{}
	rec.ResponseID = "<response id>"
	attrs := e.Attributes
	attrs["ce-id"], attrs["ce-time"] = "<record hash>", "<completedAt>"
	if tp := attrs["ce-traceparent"]; len(tp) != 55 || !strings.HasPrefix(tp, "00-") {
		t.Errorf("ce-traceparent %q is not a W3C traceparent", tp)
	}
	attrs["ce-traceparent"] = "<the job's trace>"
	got, err := json.MarshalIndent(map[string]any{"record": rec, "attributes": attrs}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "testdata", "golden", "completion.json")
	if *update {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenRecord -update)", err)
	}
	if diff := cmp.Diff(string(want), string(got)+"\n"); diff != "" {
		t.Errorf("completion record and attributes (-want +got):\n%s", diff)
	}
}

// A raw Pub/Sub push body (what the push subscription Terraform owns sends)
// is converted by the functions framework into the same event.
func TestRawPushBody(t *testing.T) {
	id := uniq(t)
	body, _ := json.Marshal(map[string]any{
		"subscription": subName("genimg-requests-push"),
		"message": map[string]any{
			"data":        base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{"id": %q, "prompt": "a kite"}`, id))),
			"messageId":   "raw-" + id,
			"publishTime": time.Now().UTC().Format(time.RFC3339Nano),
		},
	})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/OnMessage", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, b := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if rec := stack.events.waitJob(t, id).Record; rec.Outcome != job.Succeeded || rec.Trigger.Source != "raw-"+id {
		t.Errorf("record: outcome %s trigger %+v", rec.Outcome, rec.Trigger)
	}
}
