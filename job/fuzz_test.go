package job_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

// Invariants of both fuzz targets: nothing panics; every error wraps
// ErrInvalid; Validate is idempotent; a valid job re-encodes and re-decodes
// to a valid job with the same fingerprint.

var decodeSeeds = []string{
	`{"prompt": "a cat"}`,
	`{"id": "a-1", "prompt": "p", "images": [{"uri": "gs://in/a.png", "generation": 7}, {"data": "iVBORw0KGgo=", "mimeType": "image/png"}], "aspectRatio": "16:9", "responseModalities": ["image", "TEXT"], "candidateCount": 2, "safetySettings": [{"category": "harm_category_hate_speech", "threshold": "BLOCK_NONE"}], "model": "gemini-2.5-flash-image", "output": {"prefix": "out/"}, "labels": {"k": "v"}, "billingLabels": {"team": "a"}}`,
	`{"prompt": "p", "cachedContent": "cachedContents/c", "systemInstruction": "s"}`,
	`{"prompt": "p", "images": [{"url": "gs://in/a.png"}]}`,
	`{"prompt": "p", "output": {"prefix": "../x"}}`,
	`{"prompt": "p", "images": [{"data": "R0lGODlhAQABAAAAACw="}]}`,
	`{"prompt": "p"} trailing`,
	`[]`, `null`, ``, `{"prompt": 1}`, `{"Prompt": "case-insensitive field"}`,
	`{"prompt": "\ud800", "labels": {"\u00e9": "\udfff"}}`,
}

func fuzzPolicy(vertex bool) job.Policy {
	p := testPolicy(job.GeminiAPI)
	if vertex {
		p.Backend = job.VertexAI
	}
	return p
}

// checkValid asserts the invariants for a normalised job.
func checkValid(t *testing.T, j job.Job, p job.Policy) {
	t.Helper()
	err := j.Validate(p)
	again := j
	errAgain := again.Validate(p)
	if (err == nil) != (errAgain == nil) || err != nil && err.Error() != errAgain.Error() {
		t.Fatalf("Validate is not idempotent: %v, then %v", err, errAgain)
	}
	if err != nil {
		if !errors.Is(err, job.ErrInvalid) {
			t.Fatalf("Validate error %q does not wrap ErrInvalid", err)
		}
		return
	}
	if diff := cmp.Diff(j, again); diff != "" {
		t.Fatalf("a second Validate changed a valid job (-first +second):\n%s", diff)
	}
	fp := j.Fingerprint()
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatalf("json.Marshal(valid job): %v", err)
	}
	j2, err := job.Decode(b)
	if err != nil {
		t.Fatalf("Decode(Marshal(valid job)) = %v\njson: %s", err, b)
	}
	j2.Normalize(p)
	if err := j2.Validate(p); err != nil {
		t.Fatalf("re-decoded valid job is invalid: %v\njson: %s", err, b)
	}
	if got := j2.Fingerprint(); got != fp {
		t.Fatalf("fingerprint changed through JSON: %s, then %s\njson: %s", fp, got, b)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, vertex bool) {
		j, err := job.Decode(data)
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Decode error %q does not wrap ErrInvalid", err)
			}
			if diff := cmp.Diff(job.Job{}, j); diff != "" {
				t.Fatalf("Decode returned a job with its error (-want +got):\n%s", diff)
			}
			return
		}
		p := fuzzPolicy(vertex)
		j.Normalize(p)
		checkValid(t, j, p)
	})
}

func FuzzValidate(f *testing.F) {
	f.Add("job-1", "a cat", "gs://in/a.png", pngBytes, "16:9", "IMAGE", int32(1), "HARM_CATEGORY_HATE_SPEECH", "OFF", "", "", "out/", "k", "v", "team", "a", false)
	f.Add("..", "", "gs://other/a.png", gifBytes, "7:5", "AUDIO", int32(9), "HARM_CATEGORY_IMAGE_HATE", "SOME", "bad", "s", "../x", "", "v", "Team", "A", false)
	f.Add("x", "p", "", webpBytes, "", "text", int32(0), "harm_category_image_hate", " block_none ", "cachedContents/c", "", "jobs/", "a\xc3", "\xa9", "1a", "", true)
	f.Add("y", "p\xff", "gs://in/\xff", []byte{}, "1:1", "", int32(-1), "", "", "projects/p/locations/l/cachedContents/c", "\xff", "a//b", "k", "", "k", "v", true)
	f.Fuzz(func(t *testing.T, id, prompt, uri string, data []byte, ratio, modality string, count int32,
		category, threshold, cached, system, prefix, labelKey, labelValue, billingKey, billingValue string, vertex bool) {
		j := job.Job{
			ID: id, Prompt: prompt, AspectRatio: ratio, CandidateCount: count,
			CachedContent: cached, SystemInstruction: system,
			Labels:        map[string]string{labelKey: labelValue},
			BillingLabels: map[string]string{billingKey: billingValue},
		}
		if uri != "" || len(data) > 0 {
			j.Images = []job.Image{{URI: uri, Data: data}}
		}
		if modality != "" {
			j.ResponseModalities = []string{modality, "IMAGE"}
		}
		if category != "" || threshold != "" {
			j.SafetySettings = []job.SafetySetting{{Category: category, Threshold: threshold}}
		}
		if prefix != "" {
			j.Output = &job.OutputOptions{Prefix: prefix}
		}
		p := fuzzPolicy(vertex)
		j.Normalize(p)
		checkValid(t, j, p)
	})
}
