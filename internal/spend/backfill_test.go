package spend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

func TestBackfill(t *testing.T) {
	srv := storagetest.NewServer(t, "in")
	put := func(name, contentType string, size int, meta map[string]string) {
		srv.Fake.CreateObject(fakestorage.Object{
			ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "in", Name: name, ContentType: contentType, Metadata: meta},
			Content:     []byte(strings.Repeat("x", size)),
		})
	}
	put("watercolor/a.png", "image/png", 1000, nil)
	put("watercolor/b.jpg", "application/octet-stream", 2000, nil) // typed by extension
	put("watercolor/sub/c.webp", "image/webp", 500, nil)
	put("watercolor/notes.txt", "text/plain", 10, nil)
	put("watercolor/x.job.json", "application/json", 10, nil)
	put("watercolor/out.png", "image/png", 10, map[string]string{storage.MetaGeneratedBy: storage.GeneratedBy})
	put("watercolor/big.png", "image/png", 20000, nil) // over MaxImageBytes
	put("watercolor/anim.gif", "image/gif", 10, nil)
	put("other/d.png", "image/png", 10, nil)
	put("sketch/e.jpeg", "image/jpeg", 300, nil)

	rules := []config.Rule{
		{Bucket: "in", Prefix: "watercolor/", Name: "watercolor/", Prompt: "Turn this photo into a watercolor painting"},                                   // 42 chars
		{Bucket: "in", Prefix: "sketch/", Name: "sketch", Prompt: "Pencil sketch", SystemInstruction: "Monochrome only.", CandidateCount: 2, DryRun: true}, // 29 chars
	}
	policy := job.Policy{Backend: job.GeminiAPI, DefaultModel: "gemini-2.5-flash-image", MaxImageBytes: 10000}
	got, err := spend.Backfill(t.Context(), storage.NewObjects(srv.Client, "in", 0, 0), rules, config.DefaultPrices(), policy)
	if err != nil {
		t.Fatalf("Backfill: %v", err)
	}
	// By hand, at $30 per 1M image output tokens and $0.30 per 1M input:
	// watercolor: 1290 × 30e-6 + 258 × 0.3e-6 + ceil(42/4)=11 × 0.3e-6
	//           = 0.0387 + 0.0000774 + 0.0000033 = 0.0387807 per job, 3 jobs;
	// sketch: 2 × 0.0387 + 0.0000774 + ceil(29/4)=8 × 0.3e-6 = 0.0774798, 1 job.
	want := spend.Report{
		Rules: []spend.RuleReport{
			{Rule: "watercolor/", Bucket: "in", Prefix: "watercolor/", Model: "gemini-2.5-flash-image",
				Objects: 3, Bytes: 3500, Skipped: 5, PerJobUSD: 0.0387807, CostUSD: 0.1163421},
			{Rule: "sketch", Bucket: "in", Prefix: "sketch/", Model: "gemini-2.5-flash-image",
				Objects: 1, Bytes: 300, PerJobUSD: 0.0774798, CostUSD: 0.0774798},
		},
		Objects: 4,
		CostUSD: 0.1938219,
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
		t.Errorf("Backfill (-want +got):\n%s", diff)
	}

	_, err = spend.Backfill(t.Context(), storage.NewObjects(srv.Client, "in", 0, 0), []config.Rule{{Bucket: "in", Prefix: "x/", Name: "x", Prompt: "p", Model: "imagen-9"}}, config.DefaultPrices(), policy)
	if !errors.Is(err, job.ErrInvalid) {
		t.Errorf("Backfill with an unknown model = %v, want ErrInvalid", err)
	}
}

func TestEstimateRuleDefault(t *testing.T) {
	// One image edit with an empty prompt is the image price plus one
	// input image: $0.0387 + $0.0000774.
	model, usd, err := spend.EstimateRule(config.Rule{Name: "r"}, config.DefaultPrices(), job.Policy{Backend: job.VertexAI, DefaultModel: "gemini-2.5-flash-image"})
	if err != nil || model != "gemini-2.5-flash-image" || usd < 0.0387773 || usd > 0.0387775 {
		t.Errorf("EstimateRule = %q, %v, %v; want gemini-2.5-flash-image, 0.0387774, nil", model, usd, err)
	}
}
