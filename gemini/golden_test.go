package gemini

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

var update = flag.Bool("update", false, "rewrite testdata/*.json golden files from what the SDK sends")

// TestRequestGolden pins the request JSON the real SDK sends for
// representative jobs. The files are named by backend (gemini-*, vertex-*);
// geminitest's TestGoldenRequestsAccepted checks that the stand-in accepts
// every one of them, so the stand-in's shapes follow the SDK's.
func TestRequestGolden(t *testing.T) {
	tiny := testPNG(t, 2, 2, false)
	tests := []struct {
		name    string
		backend job.Backend
		job     job.Job
	}{
		{"gemini-text-to-image", job.GeminiAPI, job.Job{
			Prompt: "A lighthouse on a cliff at dawn, photorealistic", AspectRatio: "1:1", ResponseModalities: []string{"IMAGE"}}},
		{"gemini-edit-inline", job.GeminiAPI, job.Job{
			Prompt: "Turn this photo into a watercolor painting", ResponseModalities: []string{"IMAGE", "TEXT"},
			Images: []job.Image{{Data: tiny, MIMEType: "image/png"}}}},
		{"vertex-gcs-labels", job.VertexAI, job.Job{
			Prompt: "Put this cat on a skateboard", AspectRatio: "16:9", CandidateCount: 2, ResponseModalities: []string{"IMAGE"},
			Images:        []job.Image{{URI: "gs://genimg-input/cat.png", MIMEType: "image/png"}},
			BillingLabels: map[string]string{"team": "design", "cost-center": "cc-42"}}},
		{"gemini-safety-system-instruction", job.GeminiAPI, job.Job{
			Prompt: "A poster for a jazz night", SystemInstruction: "You design clean, modern posters.",
			SafetySettings: []job.SafetySetting{
				{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "BLOCK_MEDIUM_AND_ABOVE"},
				{Category: "HARM_CATEGORY_DANGEROUS_CONTENT", Threshold: "BLOCK_ONLY_HIGH"}}}},
		{"gemini-cached-content", job.GeminiAPI, job.Job{
			Prompt: "Same style, a fox this time", CachedContent: "cachedContents/style-guide-1", AspectRatio: "4:5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := geminitest.NewServer()
			t.Cleanup(srv.Close)
			c, _ := newClient(t, srv, tt.backend, nil)
			j := tt.job
			j.Model = job.DefaultModel
			if _, err := c.Generate(t.Context(), j); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			var got bytes.Buffer
			if err := json.Indent(&got, bytes.TrimSpace(reqs[0].Body), "", "  "); err != nil {
				t.Fatalf("request body is not JSON: %v", err)
			}
			got.WriteByte('\n')
			file := filepath.Join("testdata", tt.name+".json")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./gemini -run TestRequestGolden -update)", err)
			}
			if diff := cmp.Diff(string(want), got.String()); diff != "" {
				t.Errorf("request JSON differs from %s (-want +got):\n%s", file, diff)
			}
			if strings.Contains(got.String(), testKey) {
				t.Errorf("request body holds the API key")
			}
		})
	}
}
