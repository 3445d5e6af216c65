package trigger

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

func readSample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFromMessageSamples(t *testing.T) {
	// The conformance samples carry text and binary data that is not a job.
	for _, name := range []string{"pubsub-text-cloudevent.json", "pubsub-binary-cloudevent.json"} {
		d := FromMessage(sampleEvent(t, name), config.Uploads{})
		if !errors.Is(d.Err, job.ErrInvalid) {
			t.Errorf("%s: Err = %v, want ErrInvalid", name, d.Err)
		}
		if d.Trigger.Source != "aaaaaa-1111-bbbb-2222-cccccccccccc" || !strings.HasPrefix(d.ID, "msg-") {
			t.Errorf("%s: trigger %+v id %q", name, d.Trigger, d.ID)
		}
		if want := time.Date(2020, 9, 29, 11, 32, 0, 0, time.UTC); !d.Time.Equal(want) {
			t.Errorf("%s: Time = %v, want %v", name, d.Time, want)
		}
	}
}

func TestDecodeMessageSnakeCaseTwins(t *testing.T) {
	e := sampleEvent(t, "pubsub-text-cloudevent.json")
	if err := e.SetData("application/json", readSample(t, "message-published-data-duplicated-fields.json")); err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	if m.Message.MessageID != "message-id" || string(m.Message.Data) != "\x01\x02\x03\x04" ||
		!m.Message.PublishTime.Equal(time.Date(2021, 2, 5, 4, 6, 14, 109e6, time.UTC)) {
		t.Errorf("decoded %+v", m.Message)
	}
}

func TestFromMessage(t *testing.T) {
	uploads := config.Uploads{Buckets: []string{"in"}}
	objectJSON := `{"bucket":"in","name":"p/cat.png","generation":"42","contentType":"image/png","metadata":{"prompt":"snow"}}`
	tests := []struct {
		name  string
		data  string
		attrs map[string]string
		check func(t *testing.T, d Delivery)
	}{
		{
			name: "a job", data: `{"prompt": "a red fox", "aspectRatio": "16:9"}`,
			check: func(t *testing.T, d Delivery) {
				if d.Err != nil || d.Job.Prompt != "a red fox" || d.Job.ID != d.ID || !strings.HasPrefix(d.ID, "msg-") {
					t.Errorf("got %+v", d)
				}
				if d.Trigger != (job.Trigger{Kind: job.PubSub, Source: "1234"}) {
					t.Errorf("trigger %+v", d.Trigger)
				}
			},
		},
		{
			name: "a job with its own id", data: `{"id": "order-77", "prompt": "a red fox"}`,
			check: func(t *testing.T, d Delivery) {
				if d.ID != "order-77" || d.Job.ID != "order-77" {
					t.Errorf("id %q", d.ID)
				}
			},
		},
		{
			name: "an id that escapes its folder", data: `{"id": "../x", "prompt": "a red fox"}`,
			check: func(t *testing.T, d Delivery) {
				if !errors.Is(d.Err, job.ErrInvalid) || !job.ValidID(d.ID) {
					t.Errorf("err %v id %q", d.Err, d.ID)
				}
			},
		},
		{
			name: "unknown field", data: `{"prompt": "a red fox", "aspect_ratio": "16:9"}`,
			check: func(t *testing.T, d Delivery) {
				if !errors.Is(d.Err, job.ErrInvalid) || !strings.Contains(d.Err.Error(), `"aspect_ratio"`) {
					t.Errorf("err %v", d.Err)
				}
			},
		},
		{
			name: "over 512 KB", data: `{"prompt": "` + strings.Repeat("x", MaxEventBytes) + `"}`,
			check: func(t *testing.T, d Delivery) {
				if !errors.Is(d.Err, job.ErrTooLarge) || !strings.Contains(d.Err.Error(), "gs://") {
					t.Errorf("err %v", d.Err)
				}
			},
		},
		{
			name: "genimg's own completion event", data: `{"jobId": "x"}`, attrs: map[string]string{"ce-type": job.EventType},
			check: func(t *testing.T, d Delivery) {
				if !strings.Contains(d.Ignore, "completion event") {
					t.Errorf("ignore %q", d.Ignore)
				}
			},
		},
		{
			name: "queued by the webhook", data: `{"id": "h1", "prompt": "x"}`,
			attrs: map[string]string{AttrTrigger: "http", AttrSource: "request/r1"},
			check: func(t *testing.T, d Delivery) {
				if d.Trigger != (job.Trigger{Kind: job.HTTP, Source: "request/r1"}) {
					t.Errorf("trigger %+v", d.Trigger)
				}
			},
		},
		{
			name: "storage notification with the object", data: objectJSON,
			attrs: map[string]string{"eventType": "OBJECT_FINALIZE", "bucketId": "in", "objectId": "p/cat.png", "objectGeneration": "42", "payloadFormat": "JSON_API_V1"},
			check: func(t *testing.T, d Delivery) {
				if d.Err != nil || d.Job.Prompt != "snow" || d.Trigger.Kind != job.Upload || d.Trigger.Source != "gs://in/p/cat.png#42" {
					t.Errorf("got %+v", d)
				}
				// Exactly like the upload event for the same object.
				up := FromObject(Object{Bucket: "in", Name: "p/cat.png", Generation: 42, ContentType: "image/png",
					Metadata: map[string]string{"prompt": "snow"}, MetadataKnown: true}, time.Now(), uploads)
				if up.ID != d.ID {
					t.Errorf("notification id %q != upload id %q", d.ID, up.ID)
				}
			},
		},
		{
			name: "storage notification without payload", data: "",
			attrs: map[string]string{"eventType": "OBJECT_FINALIZE", "bucketId": "in", "objectId": "p/cat.png", "objectGeneration": "42", "payloadFormat": "NONE"},
			check: func(t *testing.T, d Delivery) {
				if d.Object == nil || d.Object.MetadataKnown || d.Ignore != "" {
					t.Errorf("want an object to complete, got %+v", d)
				}
			},
		},
		{
			name: "storage notification of a delete", data: objectJSON,
			attrs: map[string]string{"eventType": "OBJECT_DELETE", "bucketId": "in", "objectId": "p/cat.png"},
			check: func(t *testing.T, d Delivery) {
				if !strings.Contains(d.Ignore, "OBJECT_DELETE") {
					t.Errorf("ignore %q", d.Ignore)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, FromMessage(messageEvent(t, []byte(tt.data), tt.attrs), uploads))
		})
	}
}

func TestMessageIDsAreStable(t *testing.T) {
	data := []byte(`{"prompt": "a red fox"}`)
	a := FromMessage(messageEvent(t, data, nil), config.Uploads{})
	b := FromMessage(messageEvent(t, data, nil), config.Uploads{})
	if a.ID != b.ID {
		t.Errorf("the same message gave ids %q and %q", a.ID, b.ID)
	}
	_ = base64.StdEncoding
}
