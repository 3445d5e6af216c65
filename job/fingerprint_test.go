package job_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

// fingerprintGolden pins the canonical encoding of goldenJob: records in
// Cloud Storage carry fingerprints, so a change here turns every stored
// job into a conflict with its own redelivery. Change it only on purpose.
const fingerprintGolden = "d36c947b402cd523f90c7f5b59c84309"

func TestFingerprintGolden(t *testing.T) {
	// Fixed bytes, not an encoder's output, which may change between Go
	// releases.
	j := validJob()
	j.Images[1].Data = []byte("\x89PNG\r\n\x1a\nfixed bytes")
	if got := j.Fingerprint(); got != fingerprintGolden {
		t.Errorf("Fingerprint(goldenJob) = %s, want %s", got, fingerprintGolden)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(j.Fingerprint()) {
		t.Errorf("Fingerprint = %q, want 32 lowercase hex digits", j.Fingerprint())
	}
}

func TestFingerprintIgnores(t *testing.T) {
	tests := []struct {
		name   string
		change func(*job.Job)
	}{
		{"id", func(j *job.Job) { j.ID = "another-id" }},
		{"no id", func(j *job.Job) { j.ID = "" }},
		{"labels", func(j *job.Job) { j.Labels = map[string]string{"other": "x"} }},
		{"no labels", func(j *job.Job) { j.Labels = nil }},
		{"declared MIME type of inline data", func(j *job.Job) { j.Images[1].MIMEType = "image/jpeg" }},
		{"declared MIME type of a URI", func(j *job.Job) { j.Images[0].MIMEType = "image/png" }},
		{"a copy of the image bytes", func(j *job.Job) { j.Images[1].Data = bytes.Clone(j.Images[1].Data) }},
	}
	base := validJob().Fingerprint()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := validJob()
			tt.change(&j)
			if got := j.Fingerprint(); got != base {
				t.Errorf("Fingerprint after changing %s = %s, want %s", tt.name, got, base)
			}
		})
	}
	a, b := job.Job{Prompt: "p", BillingLabels: map[string]string{}}, job.Job{Prompt: "p"}
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("an empty billingLabels map changes the fingerprint; it asks for the same work as none")
	}
}

func TestFingerprintSensitive(t *testing.T) {
	tests := []struct {
		name   string
		change func(*job.Job)
	}{
		{"prompt", func(j *job.Job) { j.Prompt += "." }},
		{"aspect ratio", func(j *job.Job) { j.AspectRatio = "1:1" }},
		{"one image byte", func(j *job.Job) {
			j.Images[1].Data = bytes.Clone(j.Images[1].Data)
			j.Images[1].Data[len(j.Images[1].Data)-1] ^= 1
		}},
		{"image URI", func(j *job.Job) { j.Images[0].URI = "gs://in/photo2.png" }},
		{"callback", func(j *job.Job) { j.Callback = &job.Callback{URL: "https://hooks.example/genimg"} }},
		{"image generation", func(j *job.Job) { j.Images[0].Generation = 2 }},
		{"image order", func(j *job.Job) { j.Images[0], j.Images[1] = j.Images[1], j.Images[0] }},
		{"an extra image", func(j *job.Job) { j.Images = append(j.Images, job.Image{URI: "gs://in/c"}) }},
		{"model", func(j *job.Job) { j.Model = "gemini-2.5-flash-image-preview" }},
		{"modalities", func(j *job.Job) { j.ResponseModalities = []string{"IMAGE"} }},
		{"candidate count", func(j *job.Job) { j.CandidateCount = 2 }},
		{"system instruction", func(j *job.Job) { j.SystemInstruction = "be bold" }},
		{"safety threshold", func(j *job.Job) { j.SafetySettings[0].Threshold = "OFF" }},
		{"cached content", func(j *job.Job) { j.CachedContent = "cachedContents/c" }},
		{"output prefix", func(j *job.Job) { j.Output.Prefix = "elsewhere/" }},
		{"billing labels", func(j *job.Job) { j.BillingLabels["env"] = "test" }},
	}
	base := validJob().Fingerprint()
	seen := map[string]string{base: "base"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := validJob()
			tt.change(&j)
			got := j.Fingerprint()
			if other, dup := seen[got]; dup {
				t.Errorf("Fingerprint after changing %s = %s, the same as after %s", tt.name, got, other)
			}
			seen[got] = tt.name
		})
	}
}

// TestFingerprintCanonical: maps built in any order fingerprint alike.
func TestFingerprintCanonical(t *testing.T) {
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("key%02d", i)
	}
	build := func(order []string) job.Job {
		m := map[string]string{}
		for _, k := range order {
			m[k] = strings.ToLower(k)
		}
		return job.Job{Prompt: "p", BillingLabels: m}
	}
	want := build(keys).Fingerprint()
	reversed := make([]string, len(keys))
	for i, k := range keys {
		reversed[len(keys)-1-i] = k
	}
	for i := range 20 {
		order := keys
		if i%2 == 1 {
			order = reversed
		}
		if got := build(order).Fingerprint(); got != want {
			t.Fatalf("Fingerprint of the same billing labels built in another order = %s, want %s", got, want)
		}
	}
}

func TestFingerprintLeavesJobAlone(t *testing.T) {
	j := validJob()
	before := validJob()
	_ = j.Fingerprint()
	if diff := cmp.Diff(before, j); diff != "" {
		t.Errorf("Fingerprint changed the job (-before +after):\n%s", diff)
	}
}

// TestFingerprintSurvivesValidate: Validate sets MIME types, which must not
// change the fingerprint the pipeline took before.
func TestFingerprintSurvivesValidate(t *testing.T) {
	j := validJob()
	p := testPolicy(job.GeminiAPI)
	j.Normalize(p)
	before := j.Fingerprint()
	mustNormalizeValidate(t, &j, p)
	if after := j.Fingerprint(); after != before {
		t.Errorf("Fingerprint after Validate = %s, before %s", after, before)
	}
}

func TestDeriveID(t *testing.T) {
	a := job.DeriveID("up", "in", "photos/a.png", "1700000000000000", "watercolor/")
	if again := job.DeriveID("up", "in", "photos/a.png", "1700000000000000", "watercolor/"); again != a {
		t.Errorf("DeriveID is not stable: %s then %s", a, again)
	}
	if !job.ValidID(a) {
		t.Errorf("DeriveID = %q, not a valid id", a)
	}
	if !regexp.MustCompile(`^up-[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("DeriveID = %q, want up- and 32 hex digits", a)
	}
	others := map[string][]string{
		"another generation": {"up", "in", "photos/a.png", "1700000000000001", "watercolor/"},
		"another rule":       {"up", "in", "photos/a.png", "1700000000000000", "sketch/"},
		"parts split apart":  {"up", "in", "photos/a.png17", "00000000000000", "watercolor/"},
		"another kind":       {"msg", "in", "photos/a.png", "1700000000000000", "watercolor/"},
	}
	for name, parts := range others {
		if got := job.DeriveID(parts[0], parts[1:]...); got == a {
			t.Errorf("DeriveID with %s = %s, the same as the original", name, got)
		}
	}
	if got := job.DeriveID("msg", "123"); !job.ValidID(got) || !strings.HasPrefix(got, "msg-") {
		t.Errorf("DeriveID(msg, 123) = %q", got)
	}
}

func TestPromptHash(t *testing.T) {
	// sha256("hello"), as `printf hello | sha256sum` prints it.
	const want = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if got := job.PromptHash("hello"); got != want {
		t.Errorf("PromptHash(hello) = %s, want %s", got, want)
	}
}

// An inline image and the same image staged by genimg have one
// fingerprint; an object that only looks like a staged input does not.
func TestFingerprintStagedInput(t *testing.T) {
	data := []byte("\x89PNG\r\n\x1a\nstaged bytes")
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	inline := job.Job{Prompt: "p", Images: []job.Image{{Data: data}}}
	staged := func(uri string) job.Job { return job.Job{Prompt: "p", Images: []job.Image{{URI: uri}}} }
	tests := []struct {
		uri  string
		same bool
	}{
		{"gs://out/jobs/j-1/inputs/" + hash + ".png", true},
		{"gs://out/jobs/" + strings.Repeat("i", 128) + "/inputs/" + hash + ".png", true},
		{"gs://out/jobs/" + strings.Repeat("i", 129) + "/inputs/" + hash + ".png", false},
		{"gs://out/jobs/j-1/inputs/" + hash[:63] + ".png", false},
		{"gs://out/jobs/j-1/inputs/" + hash + "0.png", false},
		{"gs://out/other/j-1/inputs/" + hash + ".png", false},
	}
	for _, tt := range tests {
		if got := staged(tt.uri).Fingerprint() == inline.Fingerprint(); got != tt.same {
			t.Errorf("%s: same fingerprint as inline = %v, want %v", tt.uri, got, tt.same)
		}
	}
}
