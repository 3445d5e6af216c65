package trigger

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

var fuzzUploads = config.Uploads{
	Buckets: []string{"in"},
	Rules:   []config.Rule{{Bucket: "in", Prefix: "w/", Name: "w/", Prompt: "p"}},
}

// checkDelivery holds for every delivery, whatever came in: it is a job
// under a valid id, a recorded failure under a valid id, or ignored.
func checkDelivery(t *testing.T, d Delivery) {
	t.Helper()
	switch {
	case d.Ignore != "":
		if d.Err != nil {
			t.Fatalf("ignored and failed at once: %v", d.Err)
		}
	case d.Object != nil && !d.Object.MetadataKnown:
		// To be completed from the object's attributes.
	case d.Err != nil:
		if !job.ValidID(d.ID) {
			t.Fatalf("failure under invalid id %q", d.ID)
		}
		if !errors.Is(d.Err, job.ErrInvalid) && !errors.Is(d.Err, job.ErrTooLarge) {
			t.Fatalf("failure of no category: %v", d.Err)
		}
	case d.Object != nil && d.Object.JobFile:
		if !job.ValidID(d.ID) {
			t.Fatalf("job file under invalid id %q", d.ID)
		}
	default:
		if !job.ValidID(d.ID) || d.Job.ID != d.ID {
			t.Fatalf("job under id %q / %q", d.ID, d.Job.ID)
		}
	}
}

func FuzzFromMessage(f *testing.F) {
	f.Add([]byte(`{"prompt": "a fox"}`), "", "")
	f.Add([]byte(`{"id": "x-1", "prompt": "a fox", "images": [{"uri": "gs://in/a.png"}]}`), "", "")
	f.Add([]byte(`{"bucket": "in", "name": "w/a.png", "generation": "3"}`), "OBJECT_FINALIZE", "JSON_API_V1")
	f.Add([]byte(``), "OBJECT_FINALIZE", "NONE")
	f.Add([]byte(`{"id": "../x"}`), "", "")
	f.Fuzz(func(t *testing.T, data []byte, eventType, format string) {
		attrs := map[string]string{}
		if eventType != "" {
			attrs = map[string]string{"eventType": eventType, "bucketId": "in", "objectId": "w/a.png", "objectGeneration": "3", "payloadFormat": format}
		}
		e := cloudevents.NewEvent()
		e.SetID("id-1")
		e.SetSource("//pubsub.googleapis.com/projects/p/topics/t")
		e.SetType(MessagePublishedType)
		e.SetData(cloudevents.ApplicationJSON, map[string]any{"message": map[string]any{
			"data": base64.StdEncoding.EncodeToString(data), "attributes": attrs, "messageId": "m1",
		}})
		checkDelivery(t, FromMessage(e, fuzzUploads))
	})
}

func FuzzFromUpload(f *testing.F) {
	f.Add([]byte(`{"bucket": "in", "name": "w/a.png", "generation": "3", "contentType": "image/png"}`))
	f.Add([]byte(`{"bucket": "in", "name": "a.job.json", "generation": 3}`))
	f.Add([]byte(`{"bucket": "in", "name": "p.png", "metadata": {"prompt": "x"}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e := cloudevents.NewEvent()
		e.SetID("id-1")
		e.SetSource("//storage.googleapis.com/projects/_/buckets/in")
		e.SetType(FinalizedType)
		e.SetSubject("objects/w/a.png")
		e.SetTime(time.Now())
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			return
		}
		d := FromUpload(e, fuzzUploads)
		checkDelivery(t, d)
		if d.Object != nil && d.Object.JobFile {
			checkDelivery(t, JobFile(d, data))
		}
	})
}

func FuzzFromHTTP(f *testing.F) {
	mp := "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na fox\r\n--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\x89PNG\r\n--b--\r\n"
	f.Add([]byte(mp), "multipart/form-data; boundary=b", "")
	f.Add([]byte(`{"prompt": "x"}`), "application/json", "key-1")
	f.Add([]byte(`{"id": "a", "prompt": "x"}`), "", "b")
	f.Fuzz(func(t *testing.T, body []byte, ctype, key string) {
		r := httptest.NewRequest(http.MethodPost, "/Generate", bytes.NewReader(body))
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		if key != "" && !strings.ContainsAny(key, "\r\n") {
			r.Header.Set(IdempotencyKeyHeader, key)
		}
		j, err := FromHTTP(r, 1<<16)
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) && !errors.Is(err, job.ErrTooLarge) {
				t.Fatalf("error of no category: %v", err)
			}
			return
		}
		if j.ID != "" && !job.ValidID(j.ID) {
			t.Fatalf("accepted invalid id %q", j.ID)
		}
	})
}

func FuzzRuleMatch(f *testing.F) {
	f.Add("in", "w/a.png", "image/png", "w/")
	f.Add("in", "w", "", "w/")
	f.Add("in", "../w/a.png", "image/png", "w/")
	f.Fuzz(func(t *testing.T, bucket, name, ctype, prefix string) {
		u := config.Uploads{Buckets: []string{"in"}, Rules: []config.Rule{{Bucket: "in", Prefix: prefix, Name: prefix, Prompt: "p"}}}
		o := Object{Bucket: bucket, Name: name, ContentType: ctype, Generation: 1, MetadataKnown: true}
		d := FromObject(o, time.Now(), u)
		checkDelivery(t, d)
		if d.Ignore == "" && !d.Object.JobFile && (bucket != "in" || !strings.HasPrefix(name, prefix)) {
			t.Fatalf("%s/%s became a job without matching rule prefix %q", bucket, name, prefix)
		}
	})
}
