package job_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

const (
	geminiCategories = "HARM_CATEGORY_HARASSMENT, HARM_CATEGORY_HATE_SPEECH, HARM_CATEGORY_SEXUALLY_EXPLICIT, HARM_CATEGORY_DANGEROUS_CONTENT, HARM_CATEGORY_CIVIC_INTEGRITY"
	vertexCategories = geminiCategories + ", HARM_CATEGORY_IMAGE_HATE, HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT, HARM_CATEGORY_IMAGE_HARASSMENT, HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT, HARM_CATEGORY_JAILBREAK"
	allRatios        = "9:16, 2:3, 3:4, 4:5, 1:1, 5:4, 4:3, 3:2, 16:9, 21:9"
	prefixMessage    = "must be a relative path of A-Z, a-z, 0-9, '.', '_', '-' and '/' without empty, '.' or '..' segments"
	billingKeyRule   = "must start with a lowercase letter and be at most 63 lowercase letters, digits, '_' or '-'"
)

func manyLabels(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = "v"
	}
	return m
}

// TestValidateMessages checks every validation message: each case changes
// one thing in a valid job and wants exactly one problem, worded to say what
// was wrong and what is accepted.
func TestValidateMessages(t *testing.T) {
	tests := []struct {
		name    string
		backend job.Backend // GeminiAPI when empty
		policy  func(*job.Policy)
		change  func(*job.Job)
		want    string // the message after "invalid job: "
		tooBig  bool
	}{
		{name: "id with a slash", change: func(j *job.Job) { j.ID = "a/b" },
			want: `id "a/b": must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-' (and not '.' or '..')`},
		{name: "id dot dot", change: func(j *job.Job) { j.ID = ".." },
			want: `id "..": must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-' (and not '.' or '..')`},
		{name: "model not allowed", change: func(j *job.Job) { j.Model = "imagen-4" },
			want: `model "imagen-4" is not allowed here; allowed: gemini-2.5-flash-image, gemini-2.5-flash-image-preview`},
		{name: "model allowed but unknown", policy: func(p *job.Policy) { p.Models = append(p.Models, "my-model") },
			change: func(j *job.Job) { j.Model = "my-model" },
			want:   `model "my-model" is not one genimg knows; known: [gemini-2.5-flash-image gemini-2.5-flash-image-preview gemini-3-pro-image gemini-3-pro-image-preview gemini-3.1-flash-image gemini-3.1-flash-image-preview]`},
		{name: "imageSize on a one-size model", change: func(j *job.Job) { j.ImageSize = "2K" },
			want: `imageSize "2K": gemini-2.5-flash-image has one output size and takes no imageSize; models that take one: gemini-3-pro-image, gemini-3-pro-image-preview, gemini-3.1-flash-image, gemini-3.1-flash-image-preview`},
		{name: "imageSize the model lacks", policy: func(p *job.Policy) { p.Models = append(p.Models, "gemini-3-pro-image") },
			change: func(j *job.Job) { j.Model, j.ImageSize = "gemini-3-pro-image", "512" },
			want:   `imageSize "512" is not supported by gemini-3-pro-image; accepted: 1K, 2K, 4K`},
		{name: "grounding on a model without it", change: func(j *job.Job) { j.Tools = []job.Tool{{GoogleSearch: &job.GoogleSearch{}}} },
			want: `tools[0]: gemini-2.5-flash-image does not take googleSearch grounding; models that do: gemini-3-pro-image, gemini-3-pro-image-preview, gemini-3.1-flash-image, gemini-3.1-flash-image-preview`},
		{name: "an empty tool", policy: func(p *job.Policy) { p.Models = append(p.Models, "gemini-3-pro-image") },
			change: func(j *job.Job) { j.Model, j.Tools = "gemini-3-pro-image", []job.Tool{{}} },
			want:   `tools[0]: name a tool; accepted: {"googleSearch": {}}`},
		{name: "1:4 on a model without it", policy: func(p *job.Policy) { p.Models = append(p.Models, "gemini-3-pro-image") },
			change: func(j *job.Job) { j.Model, j.AspectRatio = "gemini-3-pro-image", "1:4" },
			want:   `aspectRatio "1:4" is not supported by gemini-3-pro-image; accepted: 9:16, 2:3, 3:4, 4:5, 1:1, 5:4, 4:3, 3:2, 16:9, 21:9`},
		{name: "no prompt", change: func(j *job.Job) { j.Prompt = "" },
			want: "prompt is required: describe the image to generate or the edit to make"},
		{name: "blank prompt", change: func(j *job.Job) { j.Prompt = " \n\t" },
			want: "prompt is required: describe the image to generate or the edit to make"},
		{name: "prompt not UTF-8", change: func(j *job.Job) { j.Prompt = "caf\xe9" },
			want: "prompt is not valid UTF-8"},
		{name: "prompt too long", change: func(j *job.Job) { j.Prompt = strings.Repeat("a", 1001) },
			want: "prompt is 1001 bytes; at most 1000 are accepted"},
		{name: "systemInstruction too long", change: func(j *job.Job) { j.SystemInstruction = strings.Repeat("a", 1001) },
			want: "systemInstruction is 1001 bytes; at most 1000 are accepted"},
		{name: "systemInstruction not UTF-8", change: func(j *job.Job) { j.SystemInstruction = "\xff" },
			want: "systemInstruction is not valid UTF-8"},
		{name: "four images", change: func(j *job.Job) {
			j.Images = append(j.Images, job.Image{URI: "gs://in/b"}, job.Image{URI: "gs://in/c"})
		},
			want: "4 images: gemini-2.5-flash-image accepts at most 3 input images"},
		{name: "uri and data", change: func(j *job.Job) { j.Images[0].Data = pngBytes },
			want: "images[0]: give either uri or data, not both"},
		{name: "neither uri nor data", change: func(j *job.Job) { j.Images[0] = job.Image{MIMEType: "image/png"} },
			want: "images[0]: give uri (gs://bucket/object) or data (base64) with the image"},
		{name: "https uri", change: func(j *job.Job) { j.Images[0].URI = "https://example.com/a.png" },
			want: `images[0]: uri "https://example.com/a.png": expected gs://bucket/object`},
		{name: "uri without object", change: func(j *job.Job) { j.Images[0].URI = "gs://in/" },
			want: `images[0]: uri "gs://in/": expected gs://bucket/object`},
		{name: "uri without bucket", change: func(j *job.Job) { j.Images[0].URI = "gs:///a.png" },
			want: `images[0]: uri "gs:///a.png": expected gs://bucket/object`},
		{name: "uri object not UTF-8", change: func(j *job.Job) { j.Images[0].URI = "gs://in/\xff.png" },
			want: `images[0]: uri "gs://in/\xff.png": expected gs://bucket/object`},
		{name: "bucket not allowed", change: func(j *job.Job) { j.Images[0].URI = "gs://someone-else/a.png" },
			want: `images[0]: bucket "someone-else" is not one genimg may read inputs from; allowed: in, genimg-output`},
		{name: "no input buckets configured", policy: func(p *job.Policy) { p.InputBuckets = nil },
			want: `images[0]: bucket "in" is not one genimg may read inputs from; allowed: none configured (GENIMG_INPUT_BUCKETS)`},
		{name: "inline image too large", change: func(j *job.Job) { j.Images[1].Data = append(bytes.Clone(pngBytes), make([]byte, 64<<10)...) },
			want:   fmt.Sprintf("too large: images[1]: %d bytes; at most 65536 bytes per image are accepted", len(pngBytes)+64<<10),
			tooBig: true},
		{name: "gif", change: func(j *job.Job) { j.Images[1].Data = gifBytes },
			want: "images[1]: content is image/gif; gemini-2.5-flash-image accepts image/png, image/jpeg, image/webp"},
		{name: "gif declared png", change: func(j *job.Job) { j.Images[1] = job.Image{Data: gifBytes, MIMEType: "image/png"} },
			want: "images[1]: content is image/gif; gemini-2.5-flash-image accepts image/png, image/jpeg, image/webp"},
		{name: "heic", change: func(j *job.Job) { j.Images[1].Data = heicBytes },
			want: "images[1]: content is image/heic; gemini-2.5-flash-image accepts image/png, image/jpeg, image/webp"},
		{name: "random bytes", change: func(j *job.Job) { j.Images[1].Data = garbage },
			want: "images[1]: content is not a recognised image; gemini-2.5-flash-image accepts image/png, image/jpeg, image/webp"},
		{name: "aspect ratio", change: func(j *job.Job) { j.AspectRatio = "7:5" },
			want: `aspectRatio "7:5" is not supported by gemini-2.5-flash-image; accepted: ` + allRatios},
		{name: "aspect ratio spelled with x", change: func(j *job.Job) { j.AspectRatio = "16x9" },
			want: `aspectRatio "16x9" is not supported by gemini-2.5-flash-image; accepted: ` + allRatios},
		{name: "modality", change: func(j *job.Job) { j.ResponseModalities = []string{"IMAGE", "AUDIO"} },
			want: `responseModalities: "AUDIO" is not accepted by gemini-2.5-flash-image; accepted: IMAGE, TEXT`},
		{name: "IMAGE missing", change: func(j *job.Job) { j.ResponseModalities = []string{"TEXT"} },
			want: `responseModalities must include "IMAGE": genimg jobs produce images`},
		{name: "candidateCount 9", change: func(j *job.Job) { j.CandidateCount = 9 },
			want: "candidateCount 9: accepted 1 to 8"},
		{name: "candidateCount negative", change: func(j *job.Job) { j.CandidateCount = -1 },
			want: "candidateCount -1: accepted 1 to 8"},
		{name: "image safety category on gemini-api", backend: job.GeminiAPI,
			change: func(j *job.Job) { j.SafetySettings[0].Category = "HARM_CATEGORY_IMAGE_HATE" },
			want:   `safetySettings: category "HARM_CATEGORY_IMAGE_HATE" is not accepted on gemini-api; accepted: ` + geminiCategories},
		{name: "unknown safety category on vertex", backend: job.VertexAI,
			change: func(j *job.Job) { j.SafetySettings[0].Category = "HARM_CATEGORY_MEDICAL" },
			want:   `safetySettings: category "HARM_CATEGORY_MEDICAL" is not accepted on vertex; accepted: ` + vertexCategories},
		{name: "threshold", change: func(j *job.Job) { j.SafetySettings[0].Threshold = "BLOCK_SOME" },
			want: `safetySettings: threshold "BLOCK_SOME" is not accepted; accepted: BLOCK_LOW_AND_ABOVE, BLOCK_MEDIUM_AND_ABOVE, BLOCK_ONLY_HIGH, BLOCK_NONE, OFF`},
		{name: "category twice", change: func(j *job.Job) {
			j.SafetySettings = append(j.SafetySettings, job.SafetySetting{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "OFF"})
		}, want: `safetySettings: category "HARM_CATEGORY_HATE_SPEECH" is set twice`},
		{name: "cachedContent without collection", change: func(j *job.Job) { j.CachedContent = "my-cache" },
			want: `cachedContent "my-cache": expected cachedContents/NAME (or projects/P/locations/L/cachedContents/NAME)`},
		{name: "cachedContent with a slash in the name", change: func(j *job.Job) { j.CachedContent = "cachedContents/a/b" },
			want: `cachedContent "cachedContents/a/b": expected cachedContents/NAME (or projects/P/locations/L/cachedContents/NAME)`},
		{name: "cachedContent with systemInstruction", change: func(j *job.Job) {
			j.CachedContent = "cachedContents/abc"
			j.SystemInstruction = "be brief"
		}, want: "cachedContent and systemInstruction cannot be combined (the API rejects the pair): put the instruction in the cache"},
		{name: "prefix ../x", change: func(j *job.Job) { j.Output.Prefix = "../x" }, want: `output.prefix "../x": ` + prefixMessage},
		{name: "prefix a/../../x", change: func(j *job.Job) { j.Output.Prefix = "a/../../x" }, want: `output.prefix "a/../../x": ` + prefixMessage},
		{name: "prefix /abs", change: func(j *job.Job) { j.Output.Prefix = "/abs" }, want: `output.prefix "/abs": ` + prefixMessage},
		{name: "prefix a//b", change: func(j *job.Job) { j.Output.Prefix = "a//b" }, want: `output.prefix "a//b": ` + prefixMessage},
		{name: "prefix a/./b", change: func(j *job.Job) { j.Output.Prefix = "a/./b" }, want: `output.prefix "a/./b": ` + prefixMessage},
		{name: "prefix with a space", change: func(j *job.Job) { j.Output.Prefix = "my images/" }, want: `output.prefix "my images/": ` + prefixMessage},
		{name: "prefix jobs/x", change: func(j *job.Job) { j.Output.Prefix = "jobs/x" },
			want: `output.prefix "jobs/x": jobs/ holds genimg's job state; choose another prefix`},
		{name: "prefix jobs", change: func(j *job.Job) { j.Output.Prefix = "jobs" },
			want: `output.prefix "jobs": jobs/ holds genimg's job state; choose another prefix`},
		{name: "65 labels", change: func(j *job.Job) { j.Labels = manyLabels(65) }, want: "labels: 65 entries; at most 64"},
		{name: "label key 64 bytes", change: func(j *job.Job) { j.Labels = map[string]string{strings.Repeat("k", 64): "v"} },
			want: fmt.Sprintf("labels: %q: keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8", strings.Repeat("k", 64))},
		{name: "empty label key", change: func(j *job.Job) { j.Labels = map[string]string{"": "v"} },
			want: `labels: "": keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8`},
		{name: "label with a character split between key and value", change: func(j *job.Job) { j.Labels = map[string]string{"caf\xc3": "\xa9"} },
			want: `labels: "caf\xc3": keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8`},
		{name: "label value 257 bytes", change: func(j *job.Job) { j.Labels = map[string]string{"k": strings.Repeat("v", 257)} },
			want: `labels: "k": keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8`},
		{name: "billing key uppercase", change: func(j *job.Job) { j.BillingLabels = map[string]string{"Team": "a"} },
			want: `billingLabels: key "Team": ` + billingKeyRule},
		{name: "billing key starts with a digit", change: func(j *job.Job) { j.BillingLabels = map[string]string{"1team": "a"} },
			want: `billingLabels: key "1team": ` + billingKeyRule},
		{name: "billing key 64 characters", change: func(j *job.Job) { j.BillingLabels = map[string]string{strings.Repeat("k", 64): "a"} },
			want: fmt.Sprintf("billingLabels: key %q: %s", strings.Repeat("k", 64), billingKeyRule)},
		{name: "billing value uppercase", change: func(j *job.Job) { j.BillingLabels = map[string]string{"env": "Prod"} },
			want: `billingLabels: value "Prod" of "env": must be at most 63 lowercase letters, digits, '_' or '-'`},
		{name: "billing value 64 characters", change: func(j *job.Job) { j.BillingLabels = map[string]string{"env": strings.Repeat("v", 64)} },
			want: fmt.Sprintf("billingLabels: value %q of \"env\": must be at most 63 lowercase letters, digits, '_' or '-'", strings.Repeat("v", 64))},
		{name: "prefix of 513 characters", change: func(j *job.Job) { j.Output.Prefix = strings.Repeat("p", 513) },
			want: fmt.Sprintf("output.prefix %q: must be a relative path of A-Z, a-z, 0-9, '.', '_', '-' and '/' without empty, '.' or '..' segments", strings.Repeat("p", 80)+"…")},
		{name: "cachedContent name of 257 characters", change: func(j *job.Job) { j.CachedContent = "cachedContents/" + strings.Repeat("c", 257) },
			want: fmt.Sprintf("cachedContent %q: expected cachedContents/NAME (or projects/P/locations/L/cachedContents/NAME)", "cachedContents/"+strings.Repeat("c", 65)+"…")},
		{name: "65 billing labels", change: func(j *job.Job) { j.BillingLabels = manyLabels(65) },
			want: "billingLabels: 65 entries; Vertex AI accepts at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend := tt.backend
			if backend == "" {
				backend = job.GeminiAPI
			}
			p := testPolicy(backend)
			if tt.policy != nil {
				tt.policy(&p)
			}
			j := validJob()
			if tt.change != nil {
				tt.change(&j)
			}
			err := j.Validate(p)
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("Validate error = %v, want one wrapping ErrInvalid", err)
			}
			if got, want := errors.Is(err, job.ErrTooLarge), tt.tooBig; got != want {
				t.Errorf("errors.Is(err, ErrTooLarge) = %v, want %v", got, want)
			}
			if diff := cmp.Diff("invalid job: "+tt.want, err.Error()); diff != "" {
				t.Errorf("Validate message (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name    string
		backend job.Backend
		change  func(*job.Job)
	}{
		{"the base job on gemini-api", job.GeminiAPI, nil},
		{"the base job on vertex", job.VertexAI, nil},
		{"prompt only", job.GeminiAPI, func(j *job.Job) { *j = job.Job{Prompt: "a cat"} }},
		{"image safety category on vertex", job.VertexAI, func(j *job.Job) {
			j.SafetySettings = []job.SafetySetting{{Category: "HARM_CATEGORY_IMAGE_HATE", Threshold: "BLOCK_ONLY_HIGH"}, {Category: "HARM_CATEGORY_JAILBREAK", Threshold: "OFF"}}
		}},
		{"three images of every accepted type", job.GeminiAPI, func(j *job.Job) {
			j.Images = []job.Image{{Data: jpegBytes}, {Data: webpBytes}, {URI: "gs://genimg-output/staged/x", Generation: 3}}
		}},
		{"image at the size limit", job.GeminiAPI, func(j *job.Job) {
			j.Images[1].Data = append(bytes.Clone(pngBytes), make([]byte, 64<<10-len(pngBytes))...)
		}},
		{"IMAGE only", job.GeminiAPI, func(j *job.Job) { j.ResponseModalities = []string{"IMAGE"} }},
		{"candidateCount 8", job.GeminiAPI, func(j *job.Job) { j.CandidateCount = 8 }},
		{"cachedContent short", job.GeminiAPI, func(j *job.Job) { j.CachedContent = "cachedContents/abc-1_2.3" }},
		{"cachedContent full", job.VertexAI, func(j *job.Job) { j.CachedContent = "projects/p/locations/us-central1/cachedContents/123" }},
		{"id of 128 characters", job.GeminiAPI, func(j *job.Job) { j.ID = strings.Repeat("a", 128) }},
		{"prefix of 512 characters", job.GeminiAPI, func(j *job.Job) { j.Output.Prefix = strings.Repeat("p", 512) }},
		{"cachedContent name of 256 characters", job.GeminiAPI, func(j *job.Job) { j.CachedContent = "cachedContents/" + strings.Repeat("c", 256) }},
		{"prefix with trailing slash", job.GeminiAPI, func(j *job.Job) { j.Output.Prefix = "a/b/" }},
		{"prefix with dots in names", job.GeminiAPI, func(j *job.Job) { j.Output.Prefix = "v1.2/..hidden" }},
		{"prefix jobsite", job.GeminiAPI, func(j *job.Job) { j.Output.Prefix = "jobsite/" }},
		{"64 labels and 64 billing labels", job.VertexAI, func(j *job.Job) { j.Labels = manyLabels(64); j.BillingLabels = manyLabels(64) }},
		{"billing label limits", job.VertexAI, func(j *job.Job) {
			j.BillingLabels = map[string]string{"a" + strings.Repeat("b", 62): strings.Repeat("9", 63), "x": ""}
		}},
		{"label with unicode", job.GeminiAPI, func(j *job.Job) { j.Labels = map[string]string{"kunde": "Müller & Söhne"} }},
		{"prompt at the limit", job.GeminiAPI, func(j *job.Job) { j.Prompt = strings.Repeat("é", 500) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := validJob()
			if tt.change != nil {
				tt.change(&j)
			}
			p := testPolicy(tt.backend)
			j.Normalize(p)
			if err := j.Validate(p); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	for _, r := range []string{"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"} {
		j := validJob()
		j.AspectRatio = r
		if err := j.Validate(testPolicy(job.GeminiAPI)); err != nil {
			t.Errorf("Validate with aspectRatio %s: %v", r, err)
		}
	}
}

// TestValidateSetsMIMEType: the sniffed type replaces whatever the caller
// declared, so the model is never told a GIF is a PNG.
func TestValidateSetsMIMEType(t *testing.T) {
	j := job.Job{Prompt: "p", Images: []job.Image{
		{Data: pngBytes, MIMEType: "image/jpeg"},
		{Data: jpegBytes},
		{Data: webpBytes, MIMEType: "application/octet-stream"},
	}}
	mustNormalizeValidate(t, &j, testPolicy(job.GeminiAPI))
	var got []string
	for _, img := range j.Images {
		got = append(got, img.MIMEType)
	}
	if diff := cmp.Diff([]string{"image/png", "image/jpeg", "image/webp"}, got); diff != "" {
		t.Errorf("MIME types after Validate (-want +got):\n%s", diff)
	}
}

// TestValidateReportsEveryProblem: one answer lists all that is wrong, in a
// stable order, so a caller fixes a job in one round trip and every record
// written for the same job says the same.
func TestValidateReportsEveryProblem(t *testing.T) {
	j := job.Job{
		ID:                 "../x",
		Prompt:             "",
		Images:             []job.Image{{URI: "gs://elsewhere/a.png"}, {Data: gifBytes}, {Data: make([]byte, 70<<10)}},
		AspectRatio:        "1:2",
		ResponseModalities: []string{"TEXT"},
		CandidateCount:     0, // Normalize makes it 1: not an error
		SafetySettings:     []job.SafetySetting{{Category: "harm_category_image_hate", Threshold: "block_none"}},
		CachedContent:      "cachedContents/c",
		SystemInstruction:  "s",
		Output:             &job.OutputOptions{Prefix: "jobs/"},
		Labels:             map[string]string{"": "a", strings.Repeat("z", 70): "b"},
		BillingLabels:      map[string]string{"Z": "ok", "B": "ok", "a": "BAD"},
	}
	p := testPolicy(job.GeminiAPI)
	j.Normalize(p)
	err := j.Validate(p)
	want := strings.Join([]string{
		`invalid job: id "../x": must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-' (and not '.' or '..')`,
		"prompt is required: describe the image to generate or the edit to make",
		`images[0]: bucket "elsewhere" is not one genimg may read inputs from; allowed: in, genimg-output`,
		"images[1]: content is image/gif; gemini-2.5-flash-image accepts image/png, image/jpeg, image/webp",
		fmt.Sprintf("too large: images[2]: %d bytes; at most 65536 bytes per image are accepted", 70<<10),
		`aspectRatio "1:2" is not supported by gemini-2.5-flash-image; accepted: ` + allRatios,
		`responseModalities must include "IMAGE": genimg jobs produce images`,
		`safetySettings: category "HARM_CATEGORY_IMAGE_HATE" is not accepted on gemini-api; accepted: ` + geminiCategories,
		"cachedContent and systemInstruction cannot be combined (the API rejects the pair): put the instruction in the cache",
		`output.prefix "jobs/": jobs/ holds genimg's job state; choose another prefix`,
		`labels: "": keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8`,
		fmt.Sprintf("labels: %q: keys must be 1 to 63 bytes and values at most 256 bytes of UTF-8", strings.Repeat("z", 70)),
		`billingLabels: key "B": ` + billingKeyRule,
		`billingLabels: key "Z": ` + billingKeyRule,
		`billingLabels: value "BAD" of "a": must be at most 63 lowercase letters, digits, '_' or '-'`,
	}, "\n")
	if err == nil {
		t.Fatal("Validate = nil, want every problem")
	}
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("Validate message (-want +got):\n%s", diff)
	}
	if !errors.Is(err, job.ErrInvalid) || !errors.Is(err, job.ErrTooLarge) {
		t.Errorf("Validate error is ErrInvalid %v, ErrTooLarge %v; want both", errors.Is(err, job.ErrInvalid), errors.Is(err, job.ErrTooLarge))
	}
	if got := job.Code(err); got != "too_large" {
		t.Errorf("Code = %q, want too_large (HTTP 413 wins over 400)", got)
	}
	// Asked again, the same job gets the same message.
	for range 20 {
		if again := j.Validate(p); again == nil || again.Error() != err.Error() {
			t.Fatalf("Validate again = %v, want the same message", again)
		}
	}
}

func TestValidateTruncatesLongValues(t *testing.T) {
	j := validJob()
	j.AspectRatio = strings.Repeat("é", 100) // 200 bytes; a cut at byte 80 must not split a character
	err := j.Validate(testPolicy(job.GeminiAPI))
	want := fmt.Sprintf(`invalid job: aspectRatio %q is not supported by gemini-2.5-flash-image; accepted: %s`, strings.Repeat("é", 40)+"…", allRatios)
	if err == nil || err.Error() != want {
		t.Errorf("Validate = %v\nwant %s", err, want)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name   string
		policy job.Policy
		in     job.Job
		want   job.Job
	}{
		{
			name:   "defaults from the policy",
			policy: job.Policy{DefaultModel: "gemini-2.5-flash-image-preview"},
			in:     job.Job{Prompt: "p"},
			want:   job.Job{Prompt: "p", Model: "gemini-2.5-flash-image-preview", CandidateCount: 1},
		},
		{
			name: "package default without a policy default",
			in:   job.Job{Prompt: "p", Output: &job.OutputOptions{}},
			want: job.Job{Prompt: "p", Model: "gemini-2.5-flash-image", CandidateCount: 1},
		},
		{
			name:   "case and space canonicalised, explicit values kept",
			policy: job.Policy{DefaultModel: "gemini-2.5-flash-image-preview"},
			in: job.Job{Prompt: " p ", Model: "gemini-2.5-flash-image", CandidateCount: 3,
				ResponseModalities: []string{" image", "Text "},
				SafetySettings:     []job.SafetySetting{{Category: " harm_category_hate_speech ", Threshold: "block_none"}},
				Output:             &job.OutputOptions{Prefix: "x/"}},
			want: job.Job{Prompt: " p ", Model: "gemini-2.5-flash-image", CandidateCount: 3,
				ResponseModalities: []string{"IMAGE", "TEXT"},
				SafetySettings:     []job.SafetySetting{{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "BLOCK_NONE"}},
				Output:             &job.OutputOptions{Prefix: "x/"}},
		},
		{
			name: "negative candidateCount is left for Validate",
			in:   job.Job{Prompt: "p", CandidateCount: -2},
			want: job.Job{Prompt: "p", Model: "gemini-2.5-flash-image", CandidateCount: -2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in
			got.Normalize(tt.policy)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Normalize (-want +got):\n%s", diff)
			}
			again := got
			again.Normalize(tt.policy)
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("Normalize is not idempotent (-once +twice):\n%s", diff)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"job-1_2.3", true},
		{"A.b", true},
		{"...", true},
		{strings.Repeat("x", 128), true},
		{"", false},
		{".", false},
		{"..", false},
		{strings.Repeat("x", 129), false},
		{"a/b", false},
		{"../a", false},
		{"a b", false},
		{"a\n", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := job.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestParseGCS(t *testing.T) {
	tests := []struct {
		uri            string
		bucket, object string
		ok             bool
	}{
		{"gs://b/o", "b", "o", true},
		{"gs://b/a/b/c.png", "b", "a/b/c.png", true},
		{"gs://b/o#1", "b", "o#1", true}, // object names may hold '#'
		{"gs://b", "", "", false},
		{"gs://b/", "", "", false},
		{"gs:///o", "", "", false},
		{"gs://b#x/o", "", "", false},
		{"gs://b?x/o", "", "", false},
		{"s3://b/o", "", "", false},
		{"/b/o", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		b, o, err := job.ParseGCS(tt.uri)
		if (err == nil) != tt.ok || b != tt.bucket || o != tt.object {
			t.Errorf("ParseGCS(%q) = %q, %q, %v; want %q, %q, ok=%v", tt.uri, b, o, err, tt.bucket, tt.object, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "expected gs://bucket/object") {
			t.Errorf("ParseGCS(%q) error %q does not say what is expected", tt.uri, err)
		}
	}
}
