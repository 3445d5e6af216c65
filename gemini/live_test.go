package gemini

import (
	"bytes"
	"image/png"
	"os"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// TestLive sends one small job to the real Gemini API and checks that the
// client understands the answer. It is opt-in: it costs about $0.04 and
// needs the network.
func TestLive(t *testing.T) {
	if os.Getenv("GENIMG_LIVE_TEST") != "1" {
		t.Skip("live test skipped: set GENIMG_LIVE_TEST=1 and GEMINI_API_KEY to send one real job (about $0.04) to the Gemini API")
	}
	key := os.Getenv("GEMINI_API_KEY")
	if key == "" {
		key = os.Getenv("GOOGLE_API_KEY")
	}
	if key == "" {
		t.Skip("live test skipped: GENIMG_LIVE_TEST=1 but neither GEMINI_API_KEY nor GOOGLE_API_KEY is set")
	}
	c, err := New(t.Context(), config.Model{
		Backend: job.GeminiAPI, APIKey: config.Secret(key), BaseURL: os.Getenv("GOOGLE_GEMINI_BASE_URL"),
		CallTimeout: 2 * time.Minute, RetryBudget: 3 * time.Minute, MaxAttempts: 3, MaxConcurrent: 1,
	}, config.DefaultPrices())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	res, err := c.Generate(t.Context(), job.Job{
		Model: job.DefaultModel, Prompt: "A small red kite in a clear blue sky, simple illustration",
		AspectRatio: "1:1", ResponseModalities: []string{"IMAGE"}, CandidateCount: 1,
	})
	if err != nil {
		t.Fatalf("Generate: %v (after %d attempts)", err, res.Attempts)
	}
	t.Logf("outcome %s, finish %s, model %s, response %s, usage %+v, cost $%.4f, %v in the model",
		res.Outcome, res.FinishReason, res.ModelVersion, res.ResponseID, res.Usage, res.CostUSD, res.ModelTime)
	if res.ModelVersion == "" || res.ResponseID == "" || res.Usage.TotalTokens == 0 {
		t.Errorf("modelVersion %q, responseId %q, usage %+v: want all set", res.ModelVersion, res.ResponseID, res.Usage)
	}
	if res.Outcome != job.Succeeded {
		t.Skipf("the model answered %s (%s) for a harmless prompt; nothing more to check", res.Outcome, res.FinishReason)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(res.Images[0].Data))
	if err != nil || cfg.Width != 1024 || cfg.Height != 1024 {
		t.Errorf("image: %dx%d, %v; want a 1024×1024 PNG", cfg.Width, cfg.Height, err)
	}
	if got := res.Usage.CandidatesTokensByModality["IMAGE"]; got != 1290 {
		t.Errorf("image output tokens = %d, want 1290", got)
	}
}
