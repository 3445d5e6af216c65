package job_test

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"

	"github.com/genimg/genimg/job"
)

// Real encoded images, so that the sniffer sees what a caller would send.
var (
	pngBytes  = encodeImage(func(b *bytes.Buffer, m image.Image) error { return png.Encode(b, m) })
	jpegBytes = encodeImage(func(b *bytes.Buffer, m image.Image) error { return jpeg.Encode(b, m, nil) })
	gifBytes  = encodeImage(func(b *bytes.Buffer, m image.Image) error { return gif.Encode(b, m, nil) })
	// The standard library writes no WebP or HEIC; these are their real
	// container headers (RIFF/WEBP, ISO BMFF ftyp box).
	webpBytes = []byte("RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00\x30\x01\x00\x9d\x01\x2a\x01\x00\x01\x00")
	heicBytes = []byte("\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
	garbage   = []byte("this is not an image at all, just some text bytes")
)

func encodeImage(enc func(*bytes.Buffer, image.Image) error) []byte {
	m := image.NewRGBA(image.Rect(0, 0, 4, 3))
	for x := range 4 {
		m.Set(x, x%3, color.RGBA{R: uint8(60 * x), G: 200, B: 30, A: 255})
	}
	var b bytes.Buffer
	if err := enc(&b, m); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// testPolicy is a deployment's policy on backend b.
func testPolicy(b job.Backend) job.Policy {
	return job.Policy{
		Backend:        b,
		Models:         []string{"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview"},
		DefaultModel:   "gemini-2.5-flash-image",
		InputBuckets:   []string{"in", "genimg-output"},
		MaxImageBytes:  64 << 10,
		MaxPromptBytes: 1000,
	}
}

// validJob is a job that passes validation on both backends once
// normalised; test cases change one thing in it.
func validJob() job.Job {
	return job.Job{
		ID:                 "job-1",
		Prompt:             "Turn this photo into a watercolor painting",
		Images:             []job.Image{{URI: "gs://in/photo.png"}, {Data: bytes.Clone(pngBytes)}},
		AspectRatio:        "16:9",
		ResponseModalities: []string{"IMAGE", "TEXT"},
		CandidateCount:     1,
		SafetySettings:     []job.SafetySetting{{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "BLOCK_MEDIUM_AND_ABOVE"}},
		Model:              "gemini-2.5-flash-image",
		Output:             &job.OutputOptions{Prefix: "watercolors/2026/"},
		Labels:             map[string]string{"customer": "Acme Ltd.", "ticket": "T-1"},
		BillingLabels:      map[string]string{"team": "imaging", "env": "prod-1"},
	}
}

func mustNormalizeValidate(t *testing.T, j *job.Job, p job.Policy) {
	t.Helper()
	j.Normalize(p)
	if err := j.Validate(p); err != nil {
		t.Fatalf("Validate(valid job): %v", err)
	}
}
