package gemini

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// BenchmarkGenerate measures the client path — building the request, the
// SDK's encoding and decoding, reading the answer into a Result — through
// the real SDK, for a text→image job and an edit with a 1 MiB input, each
// answered with one 1024×1024 PNG (about 1.7 MB) drawn by the stand-in.
//
// The server runs in this process, so its allocations would count as the
// client's: the stand-in answers the first call, and its exact answer bytes
// are replayed for the rest while request bodies are discarded. B/op is then
// the client's plus a small constant for net/http's server side.
// BENCHMARKS.md records the figures.
func BenchmarkGenerate(b *testing.B) {
	input := testPNG(b, 592, 592, true) // noise: 1,051,xxx bytes as PNG, about 1 MiB
	for _, bc := range []struct {
		name string
		job  job.Job
	}{
		{"text-to-image", job.Job{Prompt: "a lighthouse at dawn", AspectRatio: "1:1", ResponseModalities: []string{"IMAGE"}}},
		{"edit-1MiB-input", job.Job{Prompt: "make it a watercolor", AspectRatio: "1:1", ResponseModalities: []string{"IMAGE"},
			Images: []job.Image{{Data: input, MIMEType: "image/png"}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(replay(geminitest.NewHandler(geminitest.Options{})))
			b.Cleanup(srv.Close)
			c, err := New(b.Context(), modelConfigURL(srv.URL, job.GeminiAPI), config.DefaultPrices(), WithHTTPClient(srv.Client()))
			if err != nil {
				b.Fatal(err)
			}
			j := bc.job
			j.Model = job.DefaultModel
			var outBytes int
			b.ReportAllocs()
			for b.Loop() {
				res, err := c.Generate(b.Context(), j)
				if err != nil || len(res.Images) != 1 {
					b.Fatalf("Generate: %v, %d images", err, len(res.Images))
				}
				outBytes = len(res.Images[0].Data)
			}
			inBytes := 0
			for _, img := range j.Images {
				inBytes += len(img.Data)
			}
			b.ReportMetric(float64(inBytes), "in-bytes")
			b.ReportMetric(float64(outBytes), "out-bytes")
		})
	}
}

// replay answers the first request with h and every later one with the
// same status and body, discarding the request body.
func replay(h http.Handler) http.Handler {
	var once sync.Once
	var rec *httptest.ResponseRecorder
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, r)
		})
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
		w.WriteHeader(rec.Code)
		io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
	})
}
