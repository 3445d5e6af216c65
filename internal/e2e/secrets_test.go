package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/delivery"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// captureStderr collects what is written to os.Stderr (the functions
// framework prints function errors there) until the test ends.
func captureStderr(t *testing.T) *syncBuffer {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	buf := &syncBuffer{}
	done := make(chan struct{})
	go func() {
		io.Copy(io.MultiWriter(buf, old), r)
		close(done)
	}()
	t.Cleanup(func() {
		os.Stderr = old
		w.Close()
		<-done
	})
	return buf
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Secrets never reach logs, objects, events or answers, and prompts reach
// logs only as hashes: jobs run through every trigger with a distinctive
// API key and webhook secret, and everything written is scanned.
func TestSecretsNeverWritten(t *testing.T) {
	// Capture the logs with the handler production uses, at the most
	// verbose level.
	logs := &syncBuffer{}
	old := slog.Default()
	slog.SetDefault(slog.New(pipeline.NewLogHandler(logs, project, slog.LevelDebug)))
	t.Cleanup(func() { slog.SetDefault(old) })
	stderr := captureStderr(t)

	apiKey := "AIzaSyGenimgTest" + randomHex(t, 12)
	rawSecret := make([]byte, 24)
	rand.Read(rawSecret)
	secretB64 := base64.StdEncoding.EncodeToString(rawSecret)
	whsec := "whsec_" + secretB64
	key, err := webhook.ParseKey(config.Secret(whsec))
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"API key": apiKey, "webhook secret": whsec, "webhook secret (base64)": secretB64}
	marker := "pz" + randomHex(t, 6) // in every prompt, and nowhere else
	prompt := func(n int, extra string) string { return fmt.Sprintf("%s-%d a quiet harbour %s", marker, n, extra) }

	// An instance of its own: its requests topic delivered to it, its
	// upload bucket (deliveries by hand, as Eventarc would), the key and
	// the secret.
	ctx := t.Context()
	uploads := "genimg-secrets-in"
	if err := stack.gcs.Bucket(uploads).Create(ctx, project, nil); err != nil {
		t.Fatal(err)
	}
	requests := "genimg-secrets-requests"
	if _, err := stack.pubsub.TopicAdminClient.CreateTopic(ctx, &pb.Topic{Name: topicName(requests)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stack.pubsub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
		Name: subName(requests + "-push"), Topic: topicName(requests), AckDeadlineSeconds: 600,
	}); err != nil {
		t.Fatal(err)
	}
	m := newModel(t)
	cfg := baseConfig(t, m)
	cfg.Model.APIKey = config.Secret(apiKey)
	cfg.Webhook.Secret = config.Secret(whsec)
	cfg.Topics.Requests = requests
	cfg.Uploads.Buckets = []string{uploads}
	cfg.Storage.InputBuckets = append(cfg.Storage.InputBuckets, uploads)
	cfg.Limits.HTTPWait = 15 * time.Second
	in := newInstance(t, cfg, "secrets")
	pusher := &delivery.Pusher{
		Subscriber: stack.pubsub.Subscriber(subName(requests + "-push")), Endpoint: stack.functions + "/" + in.path + "/OnMessage",
		Kind: delivery.MessagePublished, Topic: topicName(requests), Subscription: subName(requests + "-push"),
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 5,
	}
	pushCtx, stopPush := context.WithCancel(ctx)
	pushed := make(chan struct{})
	go func() { pusher.Run(pushCtx); close(pushed) }()
	t.Cleanup(func() { stopPush(); <-pushed })

	var answers syncBuffer // every HTTP answer, scanned too
	send := func(req *http.Request) int {
		t.Helper()
		resp, body := do(t, req)
		fmt.Fprintf(&answers, "%d %v %s\n", resp.StatusCode, resp.Header, body)
		return resp.StatusCode
	}
	signed := func(method, target, contentType string, body []byte, k webhook.Key) *http.Request {
		req, err := http.NewRequestWithContext(ctx, method, stack.functions+"/"+in.path+target, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if k != nil {
			webhook.SignHeaders(req.Header, k, "wh-"+randomHex(t, 8), time.Now(), body)
		}
		return req
	}
	sendEvent := func(fn string, id, typ, source, subject string, data []byte) {
		t.Helper()
		status := postEvent(t, in.path+"/"+fn, id, typ, source, subject, time.Now(), data)
		fmt.Fprintf(&answers, "%s %d\n", fn, status)
	}
	var ids []string // job ids whose records and events must appear

	// HTTP: JSON and a form with an inline image, signed; then unsigned
	// and wrongly signed requests, and a signed status read.
	id := "secrets-http-" + randomHex(t, 4)
	body := fmt.Appendf(nil, `{"id": %q, "prompt": %q, "aspectRatio": "1:1"}`, id, prompt(1, ""))
	if status := send(signed(http.MethodPost, "/Generate", "application/json", body, key)); status != http.StatusOK {
		t.Fatalf("signed JSON job: status %d; answers:\n%s", status, answers.String())
	}
	ids = append(ids, id)
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	formID := "secrets-form-" + randomHex(t, 4)
	mw.WriteField("id", formID)
	mw.WriteField("prompt", prompt(2, ""))
	fw, _ := mw.CreateFormFile("image", "in.png")
	fw.Write(testPNG(t, 64, 48))
	mw.Close()
	if status := send(signed(http.MethodPost, "/Generate", mw.FormDataContentType(), form.Bytes(), key)); status != http.StatusOK {
		t.Fatalf("signed form job: status %d", status)
	}
	ids = append(ids, formID)
	if status := send(signed(http.MethodPost, "/Generate", "application/json", fmt.Appendf(nil, `{"prompt": %q}`, prompt(3, "")), nil)); status != http.StatusUnauthorized {
		t.Errorf("unsigned job: status %d, want 401", status)
	}
	if status := send(signed(http.MethodPost, "/Generate", "application/json", fmt.Appendf(nil, `{"prompt": %q}`, prompt(4, "")), webhook.Key("not the secret"))); status != http.StatusUnauthorized {
		t.Errorf("wrongly signed job: status %d, want 401", status)
	}
	if status := send(signed(http.MethodGet, "/Generate?id="+id, "", nil, key)); status != http.StatusOK {
		t.Errorf("signed GET: status %d", status)
	}
	if status := send(signed(http.MethodGet, "/Generate?id="+id, "", nil, nil)); status != http.StatusUnauthorized {
		t.Errorf("unsigned GET: status %d, want 401", status)
	}

	// Pub/Sub: a job that succeeds after an in-process retry, one the
	// model refuses, one the model finds invalid, one genimg finds invalid.
	for n, extra := range map[int]string{5: "[[standin:fail=1]]", 6: "[[standin:status=403]]", 7: "[[standin:status=400]]", 8: ""} {
		msgID := fmt.Sprintf("secrets-msg-%d-%s", n, randomHex(t, 4))
		data := fmt.Sprintf(`{"prompt": %q, "aspectRatio": "1:1"}`, prompt(n, extra))
		if n == 8 {
			data = fmt.Sprintf(`{"prompt": %q, "aspectRatio": "7:5"}`, prompt(n, extra))
		}
		sendEvent("OnMessage", msgID, "google.cloud.pubsub.topic.v1.messagePublished", "//pubsub.googleapis.com/"+topicName("genimg-requests"), "",
			messageData(t, msgID, []byte(data), nil, time.Now()))
		ids = append(ids, derivedMessageID(msgID))
	}

	// Uploads: an image with a prompt, a job file, and the image's
	// notification through OnMessage.
	storageSource := "//storage.googleapis.com/projects/_/buckets/" + uploads
	photo := "photos/" + randomHex(t, 4) + ".png"
	meta := map[string]string{"prompt": prompt(9, "")}
	a := upload(t, uploads, photo, testPNG(t, 80, 60), "image/png", meta)
	sendEvent("OnUpload", "up-"+randomHex(t, 4), "google.cloud.storage.object.v1.finalized", storageSource, "objects/"+photo,
		storageEvent(t, uploads, photo, a.Generation, "image/png", meta))
	photoSource := fmt.Sprintf("gs://%s/%s#%d", uploads, photo, a.Generation)
	jobFile := "batch/" + randomHex(t, 4) + ".job.json"
	fileID := "secrets-file-" + randomHex(t, 4)
	b := upload(t, uploads, jobFile, fmt.Appendf(nil, `{"id": %q, "prompt": %q, "images": [{"uri": "gs://%s/%s"}]}`, fileID, prompt(10, ""), uploads, photo), "application/json", nil)
	sendEvent("OnUpload", "up-"+randomHex(t, 4), "google.cloud.storage.object.v1.finalized", storageSource, "objects/"+jobFile,
		storageEvent(t, uploads, jobFile, b.Generation, "application/json", nil))
	ids = append(ids, fileID)
	msgID := "secrets-note-" + randomHex(t, 4)
	sendEvent("OnMessage", msgID, "google.cloud.pubsub.topic.v1.messagePublished", "//pubsub.googleapis.com/"+topicName("genimg-upload-notifications"), "",
		messageData(t, msgID, nil, map[string]string{
			"eventType": "OBJECT_FINALIZE", "bucketId": uploads, "objectId": photo,
			"objectGeneration": fmt.Sprint(a.Generation), "payloadFormat": "NONE",
		}, time.Now()))

	for _, id := range ids {
		stack.events.waitJob(t, id)
	}
	photoEvents := 0
	for _, e := range stack.events.all() {
		if e.Record.Trigger.Source == photoSource {
			photoEvents++
		}
	}
	if photoEvents == 0 {
		stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == photoSource })
	}
	settle()

	// The secrets were in play: the model was called with the key.
	if reqs := m.Requests(); len(reqs) == 0 || reqs[0].Header.Get("x-goog-api-key") != apiKey {
		t.Fatalf("the stand-in never saw the test's API key (%d requests)", len(reqs))
	}

	// Everything written: logs, framework output, HTTP answers, every
	// object (content, name, metadata) in every bucket, every event.
	scanned := map[string]string{
		"logs":             logs.String(),
		"functions stderr": stderr.String(),
		"HTTP answers":     answers.String(),
	}
	var objects strings.Builder
	buckets := stack.gcs.Buckets(ctx, project)
	for {
		battrs, err := buckets.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		it := stack.gcs.Bucket(battrs.Name).Objects(ctx, &gcs.Query{})
		for {
			o, err := it.Next()
			if err == iterator.Done {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&objects, "gs://%s/%s %v\n", o.Bucket, o.Name, o.Metadata)
			r, err := stack.gcs.Bucket(o.Bucket).Object(o.Name).NewReader(ctx)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(&objects, r)
			r.Close()
		}
	}
	scanned["objects"] = objects.String()
	evs, err := json.Marshal(stack.events.all())
	if err != nil {
		t.Fatal(err)
	}
	scanned["events"] = string(evs)

	for where, text := range scanned {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				i := strings.Index(text, secret)
				t.Errorf("the %s appears in the %s: …%s…", what, where, text[max(i-200, 0):min(i+len(secret)+50, len(text))])
			}
		}
	}
	// Prompts reach logs only as hashes (records and images legitimately
	// hold the model's text, which echoes the prompt).
	for _, where := range []string{"logs", "functions stderr"} {
		if i := strings.Index(scanned[where], marker); i >= 0 {
			text := scanned[where]
			t.Errorf("a prompt appears in the %s: …%s…", where, text[max(i-300, 0):min(i+100, len(text))])
		}
	}
	// The capture worked: the jobs were logged.
	if n := strings.Count(scanned["logs"], `"job completed"`); n < len(ids) {
		t.Errorf("%d job completed lines logged for %d jobs: the log capture missed some", n, len(ids))
	}
	if !strings.Contains(scanned["logs"], `"severity":"WARNING"`) || !strings.Contains(scanned["logs"], "genimg ready") {
		t.Error("the logs lack the start line or any warning: the capture is not seeing everything")
	}
	if len(scanned["objects"]) < 1<<20 {
		t.Errorf("only %d bytes of objects read", len(scanned["objects"]))
	}
	// A prompt is known by its hash where one is recorded.
	if want := job.PromptHash(prompt(9, "")); !strings.Contains(scanned["objects"], want) {
		t.Errorf("no object carries the prompt's SHA-256 %s", want)
	}
}
