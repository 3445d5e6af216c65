package batch_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

func TestMain(m *testing.M) {
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(m.Run())
}

// finisher records what the lane hands it, once per job, as a pipeline's
// claim would.
type finisher struct {
	mu   sync.Mutex
	got  map[string]batch.Finished
	seen []string
}

func (f *finisher) Finish(_ context.Context, d batch.Finished) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.got == nil {
		f.got = map[string]batch.Finished{}
	}
	f.seen = append(f.seen, d.Job.ID)
	f.got[d.Job.ID] = d
	return nil
}

type env struct {
	model *geminitest.Server
	gcs   *storagetest.Server
	lane  *batch.Lane
	fin   *finisher
}

func newEnv(t *testing.T, cfg config.Batch) *env {
	t.Helper()
	model := geminitest.NewServer()
	t.Cleanup(model.Close)
	c, err := gemini.New(t.Context(), config.Model{
		Backend: job.GeminiAPI, APIKey: "test-key", BaseURL: model.URL,
		CallTimeout: 10 * time.Second, MaxAttempts: 1, MaxConcurrent: 4,
	}, config.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	g := storagetest.NewServer(t, "genimg-output")
	if cfg.OnExpired == "" {
		cfg.OnExpired = config.BatchResubmit
	}
	return &env{model: model, gcs: g, lane: batch.New(c, storage.NewObjects(g.Client, "genimg-output", 0, 0), cfg), fin: &finisher{}}
}

func jobs(n int, prompt func(i int) string) []batch.Entry {
	var es []batch.Entry
	p := job.Policy{Backend: job.GeminiAPI, Models: []string{job.DefaultModel}}
	for i := range n {
		j := job.Job{ID: fmt.Sprintf("job-%02d", i), Prompt: prompt(i), AspectRatio: "1:1"}
		j.Normalize(p)
		es = append(es, batch.Entry{Job: j, Trigger: job.Trigger{Kind: job.PubSub, Source: "msg-1"}})
	}
	return es
}

// TestBatchOfTwenty: 20 jobs, two blocked, one answered twice by the
// service → 20 finished jobs at batch prices, the duplicate reported, and a
// redelivered submission submits nothing.
func TestBatchOfTwenty(t *testing.T) {
	for _, tt := range []struct {
		name     string
		inline   int
		wantFile bool
	}{
		{name: "inline", inline: 19_000_000},
		{name: "jsonl file", inline: 500, wantFile: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, config.Batch{Chunk: 16, InlineBytes: tt.inline, MaxAge: time.Hour, MaxResubmits: 1})
			e.model.SetBatchPolls(1)
			entries := jobs(20, func(i int) string {
				switch i {
				case 3, 11:
					return "a forbidden thing [[standin:block]]"
				case 7:
					return "a lighthouse at dusk [[standin:twice]]"
				}
				return fmt.Sprintf("a small red boat, number %d", i)
			})
			rep, err := e.lane.Submit(t.Context(), entries)
			if err != nil {
				t.Fatalf("Submit: %v", err)
			}
			if len(rep.Chunks) != 2 || rep.Jobs != 20 {
				t.Fatalf("Submit report = %+v; want 2 chunks (16 + 4) of 20 jobs", rep)
			}
			// A redelivery of the same submission pays for nothing.
			again, err := e.lane.Submit(t.Context(), entries)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(batch.SubmitReport{Existing: rep.Chunks}, again); diff != "" {
				t.Errorf("resubmitted report (-want +got):\n%s", diff)
			}
			bs := e.model.Batches()
			if len(bs) != 2 {
				t.Fatalf("stand-in holds %d batches, want 2", len(bs))
			}
			for _, b := range bs {
				if (b.InputFile != "") != tt.wantFile {
					t.Errorf("batch %s input file %q; want file: %v", b.Name, b.InputFile, tt.wantFile)
				}
			}

			// First poll: still running.
			p1, err := e.lane.Poll(t.Context(), e.fin)
			if err != nil {
				t.Fatal(err)
			}
			if p1.Open != 2 || len(p1.Finished) != 0 {
				t.Fatalf("first Poll = %+v; want 2 open, nothing finished", p1)
			}
			p2, err := e.lane.Poll(t.Context(), e.fin)
			if err != nil {
				t.Fatal(err)
			}
			if len(p2.Finished) != 20 || len(p2.Failed) != 0 {
				t.Errorf("second Poll finished %d, failed %v; want 20, none", len(p2.Finished), p2.Failed)
			}
			if diff := cmp.Diff([]string{"job-07"}, p2.Duplicates); diff != "" {
				t.Errorf("duplicates (-want +got):\n%s", diff)
			}
			if len(e.fin.seen) != 20 {
				t.Errorf("Finisher called %d times, want 20 (the duplicate once)", len(e.fin.seen))
			}
			outcomes := map[job.Outcome]int{}
			prices := config.DefaultPrices()
			for id, f := range e.fin.got {
				if f.Err != nil || f.Result == nil {
					t.Errorf("%s: err %v", id, f.Err)
					continue
				}
				outcomes[f.Result.Outcome]++
				if want := gemini.Cost(prices, f.Result.Usage, true); math.Abs(f.Result.CostUSD-want) > 1e-12 || f.Result.CostUSD >= gemini.Cost(prices, f.Result.Usage, false) {
					t.Errorf("%s: cost %v, want the batch price %v", id, f.Result.CostUSD, want)
				}
				if f.Batch.Name == "" || f.Batch.ID == "" {
					t.Errorf("%s: batch info %+v", id, f.Batch)
				}
				if f.Result.Outcome == job.Succeeded && (len(f.Result.Images) != 1 || job.Sniff(f.Result.Images[0].Data) != "image/png") {
					t.Errorf("%s: %d images", id, len(f.Result.Images))
				}
			}
			if diff := cmp.Diff(map[job.Outcome]int{job.Succeeded: 18, job.Blocked: 2}, outcomes); diff != "" {
				t.Errorf("outcomes (-want +got):\n%s", diff)
			}
			for _, id := range []string{"job-03", "job-11"} {
				if f := e.fin.got[id]; f.Result == nil || f.Result.Outcome != job.Blocked {
					t.Errorf("%s: want blocked", id)
				}
			}
			// A third poll has nothing left to do.
			p3, err := e.lane.Poll(t.Context(), e.fin)
			if err != nil || p3.Checked != 0 || len(e.fin.seen) != 20 {
				t.Errorf("third Poll = %+v, %v, finisher calls %d; want nothing checked", p3, err, len(e.fin.seen))
			}
			states, err := e.lane.States(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var finished []string
			for _, st := range states {
				if st.State != "done" {
					t.Errorf("chunk %s state %q, want done", st.ID, st.State)
				}
				finished = append(finished, st.Finished...)
			}
			sort.Strings(finished)
			if len(finished) != 20 || slices.Compact(finished) == nil {
				t.Errorf("states list %d finished jobs, want 20", len(finished))
			}
		})
	}
}

// TestBatchPartlyFailedAndSubmitChecks: a request the service fails is
// handed over failed (retryable for a 503); duplicate ids in a submission,
// ids without work, and jobs already done are reported, not submitted.
func TestBatchPartlyFailedAndSubmitChecks(t *testing.T) {
	e := newEnv(t, config.Batch{Chunk: 10, MaxAge: time.Hour})
	entries := jobs(3, func(i int) string {
		if i == 1 {
			return "an overloaded model [[standin:status=503]]"
		}
		return fmt.Sprintf("boat %d", i)
	})
	conflict := entries[0]
	conflict.Job.Prompt = "other work"
	entries = append(entries, entries[2], conflict, batch.Entry{Job: job.Job{Prompt: "no id"}})
	// job-done already has a record.
	done := jobs(1, func(int) string { return "x" })[0]
	done.Job.ID = "job-done"
	w := e.gcs.Client.Bucket("genimg-output").Object("jobs/job-done/result.json").NewWriter(t.Context())
	w.Write([]byte(`{"jobId":"job-done"}`))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	entries = append(entries, done)

	rep, err := e.lane.Submit(t.Context(), entries)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Jobs != 3 || !slices.Equal(rep.Duplicates, []string{"job-02"}) || !slices.Equal(rep.Done, []string{"job-done"}) || len(rep.Rejected) != 2 {
		t.Fatalf("Submit report = %+v; want 3 jobs, duplicate job-02, done job-done, 2 rejected", rep)
	}
	p, err := e.lane.Poll(t.Context(), e.fin)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"job-01"}, p.Failed); diff != "" {
		t.Errorf("failed (-want +got):\n%s", diff)
	}
	if f := e.fin.got["job-01"]; f.Err == nil || !job.Retryable(f.Err) {
		t.Errorf("job-01 error = %v, want a retryable failure", f.Err)
	}
	if len(p.Finished) != 2 {
		t.Errorf("finished %v, want 2", p.Finished)
	}
}

// TestBatchExpired: an expired batch is reported and its jobs resubmitted
// once, then failed by policy when the resubmission expires too; a stuck
// batch past MaxAge is treated the same way.
func TestBatchExpired(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := newEnv(t, config.Batch{Chunk: 10, MaxAge: time.Hour, OnExpired: config.BatchResubmit, MaxResubmits: 1})
	e.lane = batch.New(laneModel(t, e), storage.NewObjects(e.gcs.Client, "genimg-output", 0, 0),
		config.Batch{Chunk: 10, MaxAge: time.Hour, OnExpired: config.BatchResubmit, MaxResubmits: 1},
		batch.WithClock(func() time.Time { return now }))
	e.model.SetBatchPolls(100)
	if _, err := e.lane.Submit(t.Context(), jobs(2, func(i int) string { return fmt.Sprint("boat ", i) })); err != nil {
		t.Fatal(err)
	}
	first := e.model.Batches()[0].Name
	e.model.SetBatchState(first, geminitest.BatchExpired)
	p, err := e.lane.Poll(t.Context(), e.fin)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Expired) != 1 || len(p.Resubmitted) != 1 || len(p.Failed) != 0 {
		t.Fatalf("Poll after expiry = %+v; want 1 expired, 1 resubmitted", p)
	}
	// The resubmission stays open past MaxAge: stuck, and out of
	// resubmissions, so both jobs fail retryably.
	now = now.Add(2 * time.Hour)
	p, err = e.lane.Poll(t.Context(), e.fin)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Stuck) != 1 || len(p.Failed) != 2 {
		t.Fatalf("Poll past MaxAge = %+v; want 1 stuck, 2 failed", p)
	}
	for id, f := range e.fin.got {
		if f.Err == nil || !job.Retryable(f.Err) {
			t.Errorf("%s: error %v, want retryable", id, f.Err)
		}
	}
	if n := len(e.model.Batches()); n != 2 {
		t.Errorf("%d batches submitted, want 2 (the original and one resubmission)", n)
	}
}

func laneModel(t *testing.T, e *env) *gemini.Client {
	c, err := gemini.New(t.Context(), config.Model{
		Backend: job.GeminiAPI, APIKey: "test-key", BaseURL: e.model.URL,
		CallTimeout: 10 * time.Second, MaxAttempts: 1, MaxConcurrent: 4,
	}, config.DefaultPrices())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
