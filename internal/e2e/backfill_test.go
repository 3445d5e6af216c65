package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/storage"
)

// A backfill of 50 objects already in a bucket, interrupted half way and
// run again, makes exactly 50 model calls: ids come from each object's
// generation, and the rerun skips what is done. A third run submits
// nothing.
func TestBackfillRunInterruptedAndRerun(t *testing.T) {
	model := newModel(t)
	cfg := baseConfig(t, model)
	prefix := "old-" + uniq(t) + "/"
	rule := config.Rule{Bucket: refBucket, Prefix: prefix, Name: prefix, Prompt: "Restore this old photo", AspectRatio: "1:1"}
	cfg.Uploads.Buckets = append(cfg.Uploads.Buckets, refBucket)
	cfg.Uploads.Rules = append(cfg.Uploads.Rules, rule)
	in := newInstance(t, cfg, "backfill")

	// The bucket's objects, there before the rule ran (refBucket sends no
	// upload events): their finalized events, as the rule's trigger would
	// have received them.
	const n = 50
	events := map[string][]byte{}
	png := testPNG(t, 64, 64)
	for i := range n {
		name := fmt.Sprintf("%sphoto-%02d.png", prefix, i)
		a := upload(t, refBucket, name, png, "image/png", nil)
		events[name] = storageEvent(t, refBucket, name, a.Generation, "image/png", nil)
	}
	upload(t, refBucket, prefix+"README.txt", []byte("not an image"), "text/plain", nil)

	objects := storage.NewObjects(stack.gcs, refBucket, 0, 0)
	output := objects.In(outputBucket)
	run := func(ctx context.Context, stopAfter int64, cancel context.CancelFunc) spend.RunSummary {
		var sent atomic.Int64
		submit := func(_ context.Context, u spend.Upload) error {
			if stopAfter > 0 && sent.Add(1) > stopAfter {
				cancel() // the process dies: nothing more is sent
				return context.Canceled
			}
			// Sent whole even when the run is interrupted meanwhile, as
			// an event already handed to Eventarc is.
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, stack.functions+"/"+in.path+"/OnUpload", bytes.NewReader(events[u.Object.Name]))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("ce-specversion", "1.0")
			req.Header.Set("ce-id", "backfill-"+u.JobID)
			req.Header.Set("ce-type", "google.cloud.storage.object.v1.finalized")
			req.Header.Set("ce-source", "//storage.googleapis.com/projects/_/buckets/"+refBucket)
			req.Header.Set("ce-subject", "objects/"+u.Object.Name)
			req.Header.Set("ce-time", time.Now().UTC().Format(time.RFC3339Nano))
			resp, err := deliveryClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("OnUpload answered %d", resp.StatusCode)
			}
			return nil
		}
		sum, _ := spend.RunBackfill(ctx, objects, output, []config.Rule{rule}, cfg.Prices, cfg.Policy(), submit, spend.RunOptions{Concurrency: 4})
		sum.Errors, sum.CostUSD = nil, 0
		return sum
	}

	ctx, cancel := context.WithCancel(t.Context())
	first := run(ctx, n/2, cancel)
	cancel()
	if first.Submitted != n/2 || model.Calls() != n/2 {
		t.Fatalf("interrupted run: %+v, %d model calls; want %d submitted and called", first, model.Calls(), n/2)
	}
	second := run(t.Context(), 0, nil)
	if diff := cmp.Diff(spend.RunSummary{Submitted: n / 2, Done: n / 2}, second); diff != "" {
		t.Errorf("rerun (-want +got):\n%s", diff)
	}
	third := run(t.Context(), 0, nil)
	if diff := cmp.Diff(spend.RunSummary{Done: n}, third); diff != "" {
		t.Errorf("third run (-want +got):\n%s", diff)
	}
	if got := model.Calls(); got != n {
		t.Errorf("%d model calls over three runs, want exactly %d", got, n)
	}
	// Each job is the one the upload path would have made.
	for i := range n {
		name := fmt.Sprintf("%sphoto-%02d.png", prefix, i)
		a, err := objects.Stat(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if rec := storedRecord(t, spend.UploadJobID(rule, refBucket, name, a.Generation)); rec.Outcome != "succeeded" {
			t.Errorf("%s: outcome %s", name, rec.Outcome)
		}
	}
}

// The spend cap stops submission once the estimates would pass it.
func TestBackfillRunSpendCap(t *testing.T) {
	prefix := "capped-" + uniq(t) + "/"
	rule := config.Rule{Bucket: refBucket, Prefix: prefix, Name: prefix, Prompt: "Restore this old photo"}
	for i := range 5 {
		upload(t, refBucket, fmt.Sprintf("%sp%d.png", prefix, i), testPNG(t, 32, 32), "image/png", nil)
	}
	cfg, err := stack.Config()
	if err != nil {
		t.Fatal(err)
	}
	_, per, err := spend.EstimateRule(rule, cfg.Prices, cfg.Policy())
	if err != nil {
		t.Fatal(err)
	}
	objects := storage.NewObjects(stack.gcs, refBucket, 0, 0)
	var submitted atomic.Int64
	sum, err := spend.RunBackfill(t.Context(), objects, objects.In(outputBucket), []config.Rule{rule}, cfg.Prices, cfg.Policy(),
		func(context.Context, spend.Upload) error { submitted.Add(1); return nil }, spend.RunOptions{SpendCapUSD: 2.5 * per})
	if err != nil || sum.Submitted != 2 || sum.Capped != 3 || submitted.Load() != 2 {
		t.Errorf("summary %+v, %d submitted, error %v; want 2 submitted and 3 capped", sum, submitted.Load(), err)
	}
}
