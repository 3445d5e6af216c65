package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// testPNG draws a w×h PNG.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// upload writes an object to a bucket, as a user's `gcloud storage cp` does.
func upload(t *testing.T, bucket, name string, data []byte, contentType string, meta map[string]string) *gcs.ObjectAttrs {
	t.Helper()
	w := stack.gcs.Bucket(bucket).Object(name).NewWriter(t.Context())
	w.ContentType = contentType
	w.Metadata = meta
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.Attrs()
}

// publish puts a message on the requests topic, as another service does.
func publish(t *testing.T, data []byte, attrs map[string]string) string {
	t.Helper()
	id, err := stack.requests.Publish(t.Context(), &pubsub.Message{Data: data, Attributes: attrs}).Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// readOutput reads an output image and returns its decoded size.
func readOutput(t *testing.T, o job.StoredImage) (int, int, map[string]string) {
	t.Helper()
	bucket, name, err := job.ParseGCS(o.URI)
	if err != nil {
		t.Fatal(err)
	}
	obj := stack.gcs.Bucket(bucket).Object(name)
	r, err := obj.NewReader(t.Context())
	if err != nil {
		t.Fatalf("reading %s: %v", o.URI, err)
	}
	defer r.Close()
	cfg, err := png.DecodeConfig(r)
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", o.URI, err)
	}
	attrs, err := obj.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Width, cfg.Height, attrs.Metadata
}

// checkSucceeded checks a succeeded record and its images.
func checkSucceeded(t *testing.T, e event, kind job.TriggerKind, w, h int) {
	t.Helper()
	rec := e.Record
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
		t.Fatalf("record: outcome %s, %d outputs, error %+v", rec.Outcome, len(rec.Outputs), rec.Error)
	}
	gotW, gotH, meta := readOutput(t, rec.Outputs[0])
	if gotW != w || gotH != h || rec.Outputs[0].Width != w || rec.Outputs[0].Height != h {
		t.Errorf("image is %d×%d (record says %d×%d), want %d×%d", gotW, gotH, rec.Outputs[0].Width, rec.Outputs[0].Height, w, h)
	}
	if meta[job.MetaGeneratedBy] != job.Generator || meta[job.MetaJob] != rec.JobID {
		t.Errorf("output metadata %v lacks the generated-by marker or job id", meta)
	}
	if rec.Usage.PromptTokens == 0 || rec.Usage.CandidatesTokens < 1290 || rec.Usage.CandidatesTokensByModality["IMAGE"] != 1290 ||
		rec.Usage.TotalTokens != rec.Usage.PromptTokens+rec.Usage.CandidatesTokens {
		t.Errorf("usage %+v", rec.Usage)
	}
	if rec.CostUSD < 0.0387 || rec.Attempts != 1 || rec.ModelVersion == "" || rec.ResponseID == "" || rec.FinishReason != "STOP" {
		t.Errorf("cost %v attempts %d modelVersion %q responseId %q finish %q", rec.CostUSD, rec.Attempts, rec.ModelVersion, rec.ResponseID, rec.FinishReason)
	}
	if rec.Trigger.Kind != kind {
		t.Errorf("trigger %+v, want kind %s", rec.Trigger, kind)
	}
	checkAttributes(t, e)
}

func checkAttributes(t *testing.T, e event) {
	t.Helper()
	a := e.Attributes
	want := map[string]string{
		"ce-specversion": "1.0", "ce-type": job.EventType, "ce-subject": "jobs/" + e.Record.JobID,
		"content-type": "application/json", "ce-outcome": string(e.Record.Outcome), "ce-trigger": string(e.Record.Trigger.Kind),
		"ce-source": "//genimg.dev/projects/" + project,
	}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, a[k], v)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, a["ce-time"]); err != nil || !ts.Equal(e.Record.Timings.CompletedAt) {
		t.Errorf("ce-time %q, completedAt %v", a["ce-time"], e.Record.Timings.CompletedAt)
	}
	if !strings.HasPrefix(a["ce-id"], e.Record.JobID+".") {
		t.Errorf("ce-id %q", a["ce-id"])
	}
}

// settle gives stray duplicate deliveries time to show up before counting.
func settle() { time.Sleep(300 * time.Millisecond) }

func uniq(t *testing.T) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()) + "-" + fmt.Sprint(time.Now().UnixNano())
}

func TestUploadWithPromptMetadata(t *testing.T) {
	calls := stack.model.Calls()
	name := "photos/" + uniq(t) + ".png"
	attrs := upload(t, inputBucket, name, testPNG(t, 640, 480), "image/png", map[string]string{"prompt": "make it snow"})
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	e := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source })
	// 640×480 is 4:3: the edit keeps the input's shape.
	checkSucceeded(t, e, job.Upload, 1184, 864)
	if n := len(stack.events.waitCount(t, e.Record.JobID, 1)); n != 1 {
		t.Errorf("%d events for the job, want 1", n)
	}
	if got := stack.model.Calls() - calls; got != 1 {
		t.Errorf("%d model calls, want 1", got)
	}
}

func TestUploadUnderRulePrefix(t *testing.T) {
	name := "watercolor/" + uniq(t) + ".png"
	attrs := upload(t, inputBucket, name, testPNG(t, 300, 200), "image/png", nil)
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	e := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source })
	checkSucceeded(t, e, job.Upload, 1024, 1024) // the rule asks for 1:1
}

func TestUploadJobFile(t *testing.T) {
	id := uniq(t)
	ref := "refs/" + id + ".png"
	upload(t, refBucket, ref, testPNG(t, 200, 200), "image/png", nil)
	body := fmt.Sprintf(`{"id": %q, "prompt": "a red fox in this style", "aspectRatio": "16:9", "images": [{"uri": "gs://%s/%s"}]}`, id, refBucket, ref)
	upload(t, inputBucket, "batch/"+id+".job.json", []byte(body), "application/json", nil)
	checkSucceeded(t, stack.events.waitJob(t, id), job.Upload, 1344, 768)
}

func TestPubSubJob(t *testing.T) {
	id := uniq(t)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "a lighthouse at dusk", "aspectRatio": "9:16", "labels": {"team": "web"}}`, id)), nil)
	e := stack.events.waitJob(t, id)
	checkSucceeded(t, e, job.PubSub, 768, 1344)
	if e.Record.Labels["team"] != "web" {
		t.Errorf("labels %v", e.Record.Labels)
	}
}

// A Cloud Storage notification on the requests topic is an upload: the same
// job id as the upload event for that object, so one model call serves
// both, and the second delivery republishes the same event.
func TestStorageNotificationThroughOnMessage(t *testing.T) {
	calls := stack.model.Calls()
	name := "photos/" + uniq(t) + ".png"
	attrs := upload(t, inputBucket, name, testPNG(t, 256, 256), "image/png", map[string]string{"prompt": "as a mosaic"})
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	first := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source })

	publish(t, nil, map[string]string{
		"eventType": "OBJECT_FINALIZE", "bucketId": inputBucket, "objectId": name,
		"objectGeneration": fmt.Sprint(attrs.Generation), "payloadFormat": "NONE",
	})
	evs := stack.events.waitCount(t, first.Record.JobID, 2)
	if len(evs) != 2 || evs[1].Attributes["ce-id"] != evs[0].Attributes["ce-id"] {
		t.Fatalf("want the event republished with the same ce-id, got %d events", len(evs))
	}
	if got := stack.model.Calls() - calls; got != 1 {
		t.Errorf("%d model calls, want 1", got)
	}
}

func postJSON(t *testing.T, body string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func getJob(t *testing.T, location string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, stack.functions+location, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func decodeRecord(t *testing.T, b []byte) job.Record {
	t.Helper()
	var rec job.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("answer is not a record: %v: %s", err, b)
	}
	return rec
}

func TestHTTPJobWaited(t *testing.T) {
	id := uniq(t)
	resp, body := postJSON(t, `{"prompt": "a paper boat", "aspectRatio": "3:2"}`, map[string]string{"Idempotency-Key": id})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := decodeRecord(t, body)
	checkSucceeded(t, stack.events.waitJob(t, id), job.HTTP, 1248, 832)
	if rec.JobID != id || rec.Outcome != job.Succeeded {
		t.Errorf("answer %+v", rec)
	}
	// The same request again is answered from the record, with no new work.
	calls := stack.model.Calls()
	resp, body = postJSON(t, `{"prompt": "a paper boat", "aspectRatio": "3:2"}`, map[string]string{"Idempotency-Key": id})
	if resp.StatusCode != http.StatusOK || decodeRecord(t, body).ResponseID != rec.ResponseID || stack.model.Calls() != calls {
		t.Errorf("repeat: status %d, %d new model calls", resp.StatusCode, stack.model.Calls()-calls)
	}
	// The same id with different work is a conflict.
	resp, body = postJSON(t, `{"prompt": "a paper plane"}`, map[string]string{"Idempotency-Key": id})
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("different job, same id: status %d: %s", resp.StatusCode, body)
	}
}

func TestHTTPJobAsync(t *testing.T) {
	resp, body := postJSON(t, `{"prompt": "a teapot [[standin:latency=300ms]]"}`, map[string]string{"Prefer": "respond-async"})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/Generate?id=") {
		t.Fatalf("Location %q", loc)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body = getJob(t, loc)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("GET %s: status %d: %s", loc, resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rec := decodeRecord(t, body); rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
		t.Errorf("record %+v", rec)
	}
	if resp, _ := getJob(t, "/Generate?id=no-such-job"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: status %d", resp.StatusCode)
	}
}

func TestHTTPMultipart(t *testing.T) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.WriteField("prompt", "make it a pencil sketch")
	f, _ := w.CreateFormFile("image", "in.png")
	f.Write(testPNG(t, 400, 500)) // 4:5
	w.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate", &b)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	rec := decodeRecord(t, body)
	checkSucceeded(t, stack.events.waitJob(t, rec.JobID), job.HTTP, 896, 1152)
}

func TestHTTPRejections(t *testing.T) {
	calls := stack.model.Calls()
	tests := []struct {
		name, body string
		header     map[string]string
		status     int
		text       string
	}{
		{"unknown field", `{"prompt": "x", "aspect_ratio": "1:1"}`, nil, 400, "aspect_ratio"},
		{"bad ratio", `{"prompt": "x", "aspectRatio": "7:5"}`, nil, 400, "16:9"},
		{"no prompt", `{}`, nil, 400, "prompt is required"},
		{"key and id disagree", `{"id": "a", "prompt": "x"}`, map[string]string{"Idempotency-Key": "b"}, 400, "disagree"},
		{"too many images", `{"prompt": "x", "images": [{"uri": "gs://genimg-refs/a"}, {"uri": "gs://genimg-refs/a"}, {"uri": "gs://genimg-refs/a"}, {"uri": "gs://genimg-refs/a"}]}`, nil, 400, "at most 3"},
		{"bucket not allowed", `{"prompt": "x", "images": [{"uri": "gs://someone-elses/a.png"}]}`, nil, 400, "not one genimg may read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postJSON(t, tt.body, tt.header)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.text) {
				t.Errorf("status %d, body %s; want %d mentioning %q", resp.StatusCode, body, tt.status, tt.text)
			}
		})
	}
	if stack.model.Calls() != calls {
		t.Errorf("rejected jobs made %d model calls", stack.model.Calls()-calls)
	}
}

// Every outcome ends in the right record, event and platform answer.
func TestOutcomes(t *testing.T) {
	tests := []struct {
		prompt  string
		outcome job.Outcome
		check   func(t *testing.T, rec job.Record)
	}{
		{"a cat [[standin:block]]", job.Blocked, func(t *testing.T, rec job.Record) {
			if rec.PromptFeedback == nil || rec.PromptFeedback.BlockReason != "SAFETY" || len(rec.Outputs) != 0 {
				t.Errorf("promptFeedback %+v", rec.PromptFeedback)
			}
		}},
		{"a cat [[standin:finish=IMAGE_SAFETY]]", job.Blocked, func(t *testing.T, rec job.Record) {
			if rec.FinishReason != "IMAGE_SAFETY" || len(rec.Outputs) != 0 {
				t.Errorf("finishReason %q", rec.FinishReason)
			}
		}},
		{"a cat [[standin:no-image]]", job.NoImage, func(t *testing.T, rec job.Record) {
			if rec.FinishReason != "NO_IMAGE" {
				t.Errorf("finishReason %q", rec.FinishReason)
			}
		}},
		{"a cat [[standin:text-only]]", job.NoImage, func(t *testing.T, rec job.Record) {
			if rec.Text == "" {
				t.Error("text answer not recorded")
			}
		}},
		{"a cat [[standin:status=403]]", job.Failed, func(t *testing.T, rec job.Record) {
			if rec.Error == nil || rec.Error.Retryable || rec.Error.Code != "permanent" {
				t.Errorf("error %+v", rec.Error)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.outcome)+"/"+tt.prompt, func(t *testing.T) {
			resp, body := postJSON(t, fmt.Sprintf(`{"prompt": %q}`, tt.prompt), nil)
			rec := decodeRecord(t, body)
			want := http.StatusOK
			if tt.outcome == job.Failed {
				want = http.StatusBadGateway
			}
			if resp.StatusCode != want || rec.Outcome != tt.outcome {
				t.Fatalf("status %d outcome %s; want %d %s: %s", resp.StatusCode, rec.Outcome, want, tt.outcome, body)
			}
			tt.check(t, rec)
			e := stack.events.waitJob(t, rec.JobID)
			if e.Record.Outcome != tt.outcome || e.Attributes["ce-outcome"] != string(tt.outcome) {
				t.Errorf("event outcome %s / %s", e.Record.Outcome, e.Attributes["ce-outcome"])
			}
		})
	}
}
