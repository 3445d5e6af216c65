package job_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		body string
		want job.Job
	}{
		{
			name: "every field",
			body: `{"id": "a-1", "prompt": "p", "images": [{"uri": "gs://in/a.png", "generation": 7}, {"data": "iVBORw==", "mimeType": "image/png"}],
				"aspectRatio": "16:9", "responseModalities": ["IMAGE", "TEXT"], "candidateCount": 2, "systemInstruction": "s",
				"safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
				"cachedContent": "cachedContents/c", "model": "gemini-2.5-flash-image", "output": {"prefix": "out/"},
				"labels": {"k": "v"}, "billingLabels": {"team": "a"}}`,
			want: job.Job{
				ID: "a-1", Prompt: "p",
				Images:             []job.Image{{URI: "gs://in/a.png", Generation: 7}, {Data: []byte("\x89PNG"), MIMEType: "image/png"}},
				AspectRatio:        "16:9",
				ResponseModalities: []string{"IMAGE", "TEXT"},
				CandidateCount:     2,
				SystemInstruction:  "s",
				SafetySettings:     []job.SafetySetting{{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "BLOCK_NONE"}},
				CachedContent:      "cachedContents/c",
				Model:              "gemini-2.5-flash-image",
				Output:             &job.OutputOptions{Prefix: "out/"},
				Labels:             map[string]string{"k": "v"},
				BillingLabels:      map[string]string{"team": "a"},
			},
		},
		{name: "prompt only", body: `{"prompt": "a cat"}`, want: job.Job{Prompt: "a cat"}},
		{name: "trailing whitespace", body: "{\"prompt\": \"a cat\"}\n\t ", want: job.Job{Prompt: "a cat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := job.Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	jobFields := "accepted fields: id, prompt, images, aspectRatio, responseModalities, candidateCount, systemInstruction, safetySettings, cachedContent, model, output, labels, billingLabels, responseMimeType, responseSchema, context, callback, renditions, imageSize, tools, parent"
	tests := []struct {
		name string
		body string
		// want are substrings the message must contain.
		want []string
	}{
		{"unknown field", `{"prompt": "p", "aspect_ratio": "1:1"}`, []string{`unknown field "aspect_ratio"`, jobFields}},
		{"unknown image field", `{"prompt": "p", "images": [{"uri": "gs://a/b"}, {"url": "gs://a/b"}]}`,
			[]string{`images[1]: unknown field "url"`, "accepted fields: uri, generation, data, mimeType"}},
		{"unknown safety field", `{"prompt": "p", "safetySettings": [{"category": "X", "level": "Y"}]}`,
			[]string{`safetySettings[0]: unknown field "level"`, "accepted fields: category, threshold"}},
		{"unknown output field", `{"prompt": "p", "output": {"bucket": "b"}}`,
			[]string{`output: unknown field "bucket"`, "accepted fields: prefix"}},
		{"trailing data", `{"prompt": "p"} {"prompt": "q"}`, []string{"unexpected data after the JSON object"}},
		{"trailing garbage", `{"prompt": "p"}x`, []string{"unexpected data after the JSON object"}},
		{"empty body", ``, []string{"empty body: expected a JSON object"}},
		{"blank body", " \n", []string{"empty body: expected a JSON object"}},
		{"array", `[]`, []string{"expected a JSON object, got JSON array"}},
		{"string", `"prompt"`, []string{"expected a JSON object, got JSON string"}},
		{"prompt a number", `{"prompt": 1}`, []string{`field "prompt": expected string, got JSON number`}},
		{"candidateCount a string", `{"prompt": "p", "candidateCount": "2"}`, []string{`field "candidateCount": expected int32, got JSON string`}},
		{"candidateCount a fraction", `{"prompt": "p", "candidateCount": 1.5}`, []string{`field "candidateCount": expected int32`}},
		{"images an object", `{"prompt": "p", "images": {"uri": "gs://a/b"}}`, []string{`field "images": expected []job.Image, got JSON object`}},
		{"label a number", `{"prompt": "p", "labels": {"a": 1}}`, []string{`field "labels`, "expected string, got JSON number"}},
		{"bad base64", `{"prompt": "p", "images": [{"data": "!!!"}]}`, []string{"images[].data: not standard base64"}},
		{"syntax error", `{"prompt": "p",}`, []string{"invalid character"}},
		{"truncated", `{"prompt": "p"`, []string{"unexpected EOF"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := job.Decode([]byte(tt.body))
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Decode(%s) error = %v, want one wrapping ErrInvalid", tt.body, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Decode(%s) error = %q, want it to contain %q", tt.body, err, w)
				}
			}
			if diff := cmp.Diff(job.Job{}, got); diff != "" {
				t.Errorf("Decode returned a partial job on error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeStrict(t *testing.T) {
	type rule struct {
		Bucket string `json:"bucket"`
	}
	tests := []struct {
		name    string
		body    string
		want    []rule
		wantErr string
	}{
		{"array", `[{"bucket": "in"}]`, []rule{{Bucket: "in"}}, ""},
		{"unknown field", `[{"bucket": "in", "prefx": "a/"}]`, nil, `unknown field "prefx"`},
		{"trailing", `[] []`, nil, "unexpected data after the JSON object"},
		{"empty", ``, nil, "empty body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []rule
			err := job.DecodeStrict([]byte(tt.body), &got)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("DecodeStrict: %v", err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("DecodeStrict (-want +got):\n%s", diff)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("DecodeStrict(%s) error = %v, want one containing %q", tt.body, err, tt.wantErr)
			}
		})
	}
}
