package spend

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// An Upload is one object a backfill hands to the pipeline as if it had
// just been uploaded under its rule.
type Upload struct {
	Rule   config.Rule
	Object storage.Attrs
	// Bucket is the object's bucket; JobID the id the upload path derives
	// for it (the same object generation and rule always give the same id).
	Bucket string
	JobID  string
}

// RunOptions bound a backfill run.
type RunOptions struct {
	// Concurrency is how many uploads are checked and submitted at once
	// (default 4).
	Concurrency int
	// SpendCapUSD stops submitting once the estimates of the submitted
	// jobs would pass it; 0 is no cap.
	SpendCapUSD float64
	// Progress, when set, is called after each object (from the worker
	// goroutines, one call at a time).
	Progress func(RunSummary)
}

// A RunSummary is what a backfill run did. Submitted jobs are priced at
// their estimate; a job's real cost is in its record.
type RunSummary struct {
	Submitted int `json:"submitted"`
	// Done are objects whose job already has a record (an earlier run, or
	// the upload trigger); Running those whose job is claimed now. Neither
	// is submitted again.
	Done    int `json:"done"`
	Running int `json:"running"`
	// Capped are objects left out by the spend cap; Failed those whose
	// check or submission failed.
	Capped  int     `json:"capped"`
	Failed  int     `json:"failed"`
	CostUSD float64 `json:"costUsd"`
	// Errors are the failures' messages, at most ten.
	Errors []string `json:"errors,omitempty"`
}

// UploadJobID is the job id the upload path gives rule's job for an object
// generation (trigger.FromUpload): a backfill that submits the object again
// lands on the same id, so no object is paid for twice.
func UploadJobID(rule config.Rule, bucket, name string, generation int64) string {
	return job.DeriveID("up", "gs://"+bucket+"/"+name+"#"+strconv.FormatInt(generation, 10), "rule", rule.Name)
}

// RunBackfill submits a job per object under each rule's prefix that the
// upload path would take (as Backfill counts them), skipping objects whose
// job already has a record or a live claim in output (the output bucket), so
// that a rerun after an interruption or a crash submits only what is left.
// Ids come from each object's generation (UploadJobID): even an object
// submitted twice is one job and one model call. It stops at the spend cap,
// and when ctx ends (returning the summary so far with ctx's error).
func RunBackfill(ctx context.Context, objects, output *storage.Objects, rules []config.Rule, prices config.Prices, policy job.Policy,
	submit func(context.Context, Upload) error, o RunOptions) (RunSummary, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	var (
		mu      sync.Mutex
		sum     RunSummary
		work    = make(chan Upload)
		wg      sync.WaitGroup
		fail    = func(err error) { sum.Failed++; sum.Errors = appendCapped(sum.Errors, err.Error()) }
		perJob  = map[string]float64{}
		workErr error
	)
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range work {
				state, err := jobState(ctx, output, u.JobID)
				mu.Lock()
				switch {
				case err != nil:
					fail(err)
				case state == "done":
					sum.Done++
				case state == "running":
					sum.Running++
				case o.SpendCapUSD > 0 && sum.CostUSD+perJob[u.Rule.Name] > o.SpendCapUSD:
					sum.Capped++
				default:
					// Counted before the call, so concurrent workers never
					// pass the cap together.
					sum.Submitted++
					sum.CostUSD += perJob[u.Rule.Name]
					mu.Unlock()
					err = submit(ctx, u)
					mu.Lock()
					if err != nil {
						sum.Submitted--
						sum.CostUSD -= perJob[u.Rule.Name]
						fail(fmt.Errorf("%s: %w", u.Object.Name, err))
					}
				}
				if o.Progress != nil {
					o.Progress(sum)
				}
				mu.Unlock()
			}
		}()
	}
	func() {
		defer close(work)
		for _, rule := range rules {
			model, per, err := EstimateRule(rule, prices, policy)
			if err != nil {
				workErr = err
				return
			}
			mu.Lock()
			perJob[rule.Name] = per
			mu.Unlock()
			c, _ := job.Lookup(model, policy.Backend) // checked by EstimateRule
			err = objects.In(rule.Bucket).List(ctx, rule.Prefix, "", func(a storage.Attrs) error {
				if !takes(a, c, policy) {
					return nil
				}
				u := Upload{Rule: rule, Object: a, Bucket: rule.Bucket, JobID: UploadJobID(rule, rule.Bucket, a.Name, a.Generation)}
				select {
				case work <- u:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if err != nil {
				workErr = err
				return
			}
		}
	}()
	wg.Wait()
	if workErr == nil {
		workErr = ctx.Err()
	}
	return sum, workErr
}

// jobState says whether a job has a record ("done"), a claim ("running";
// possibly a crashed holder, whose lease the pipeline takes over on the
// job's own redelivery), or neither ("").
func jobState(ctx context.Context, output *storage.Objects, id string) (string, error) {
	if _, err := output.Stat(ctx, storage.RecordObject(id)); err == nil {
		return "done", nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if _, err := output.Stat(ctx, storage.ClaimObject(id)); err == nil {
		return "running", nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	return "", nil
}

func appendCapped(s []string, msg string) []string {
	if len(s) >= 10 {
		return s
	}
	return append(s, msg)
}
