package batch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

// objects lists a bucket's object names under prefix.
func objects(t *testing.T, c *gcs.Client, bucket, prefix string) []string {
	t.Helper()
	it := c.Bucket(bucket).Objects(t.Context(), &gcs.Query{Prefix: prefix})
	var out []string
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Name)
	}
}

// TestVertexBatch: five jobs on the Vertex AI backend, one blocked, one
// whose id is no label value: the lane writes the chunk's JSONL to
// gs://OUTPUT/batches/<chunk>/input.jsonl, the stand-in answers it into
// batches/<chunk>/output/, and every job is finished at the batch price.
func TestVertexBatch(t *testing.T) {
	const bucket = "genimg-output"
	g := storagetest.NewServer(t, bucket)
	gs := func(uri string) (string, string) {
		b, o, _ := strings.Cut(strings.TrimPrefix(uri, "gs://"), "/")
		return b, o
	}
	model := geminitest.NewServer(geminitest.Options{
		// The service's own Cloud Storage access, on the same fake.
		ReadGCS: func(uri string) ([]byte, error) {
			b, o := gs(uri)
			r, err := g.Client.Bucket(b).Object(o).NewReader(context.Background())
			if err != nil {
				return nil, err
			}
			defer r.Close()
			return io.ReadAll(r)
		},
		WriteGCS: func(uri string, data []byte) error {
			b, o := gs(uri)
			w := g.Client.Bucket(b).Object(o).NewWriter(context.Background())
			if _, err := w.Write(data); err != nil {
				w.Close()
				return err
			}
			return w.Close()
		},
	})
	t.Cleanup(model.Close)
	c, err := gemini.New(t.Context(), config.Model{
		Backend: job.VertexAI, Project: "genimg-test", Location: "us-central1", BaseURL: model.URL,
		CallTimeout: 10 * time.Second, MaxAttempts: 1, MaxConcurrent: 4,
	}, config.DefaultPrices(), gemini.WithHTTPClient(model.Client()))
	if err != nil {
		t.Fatal(err)
	}
	lane := batch.New(c, storage.NewObjects(g.Client, bucket, 0, 0), config.Batch{Chunk: 16, MaxAge: time.Hour, OnExpired: config.BatchResubmit, MaxResubmits: 1})
	fin := &finisher{}
	model.SetBatchPolls(1)

	var entries []batch.Entry
	p := job.Policy{Backend: job.VertexAI, Models: []string{job.DefaultModel}}
	for i, id := range []string{"v-0", "v-1", "V.Upper", "v-3", "v-4"} {
		prompt := fmt.Sprintf("a small red boat, number %d", i)
		if id == "v-1" {
			prompt = "a forbidden thing [[standin:block]]"
		}
		j := job.Job{ID: id, Prompt: prompt, AspectRatio: "1:1"}
		j.Normalize(p)
		entries = append(entries, batch.Entry{Job: j, Trigger: job.Trigger{Kind: job.PubSub, Source: "msg-1"}})
	}
	rep, err := lane.Submit(t.Context(), entries)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if len(rep.Chunks) != 1 || rep.Jobs != 5 || rep.Rejected != nil {
		t.Fatalf("Submit report = %+v; want one chunk of 5 jobs", rep)
	}
	chunk := rep.Chunks[0]
	input := "gs://" + bucket + "/batches/" + chunk + "/input.jsonl"
	vb := model.VertexBatches()
	if len(vb) != 1 || vb[0].InputFile != input || vb[0].DisplayName != "genimg "+chunk {
		t.Fatalf("stand-in batches %+v; want one reading %s", vb, input)
	}

	p1, err := lane.Poll(t.Context(), fin)
	if err != nil || p1.Open != 1 || len(p1.Finished) != 0 {
		t.Fatalf("first Poll = %+v, %v; want 1 open", p1, err)
	}
	p2, err := lane.Poll(t.Context(), fin)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(p2.Finished)
	if diff := cmp.Diff([]string{"V.Upper", "v-0", "v-1", "v-3", "v-4"}, p2.Finished); diff != "" || len(p2.Failed) != 0 || p2.Errors != nil {
		t.Errorf("second Poll = %+v; finished (-want +got):\n%s", p2, diff)
	}
	prices := config.DefaultPrices()
	outcomes := map[string]job.Outcome{}
	for id, f := range fin.got {
		if f.Err != nil || f.Result == nil {
			t.Errorf("%s: err %v", id, f.Err)
			continue
		}
		outcomes[id] = f.Result.Outcome
		if want := gemini.Cost(prices, f.Result.Usage, true); math.Abs(f.Result.CostUSD-want) > 1e-12 || f.Result.CostUSD >= gemini.Cost(prices, f.Result.Usage, false) {
			t.Errorf("%s: cost %v, want the batch price %v", id, f.Result.CostUSD, want)
		}
		if f.Batch.Name != vb[0].Name || f.Batch.ID != chunk {
			t.Errorf("%s: batch info %+v", id, f.Batch)
		}
	}
	want := map[string]job.Outcome{"v-0": job.Succeeded, "v-1": job.Blocked, "V.Upper": job.Succeeded, "v-3": job.Succeeded, "v-4": job.Succeeded}
	if diff := cmp.Diff(want, outcomes); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	// The chunk's files sit beside its state; the state stays the only
	// chunk listed.
	var names []string
	for _, n := range objects(t, g.Client, bucket, "batches/"+chunk+"/") {
		names = append(names, strings.TrimPrefix(n, "batches/"+chunk+"/"))
	}
	if len(names) != 2 || names[0] != "input.jsonl" || !strings.HasPrefix(names[1], "output/prediction-model-") || !strings.HasSuffix(names[1], "/predictions.jsonl") {
		t.Errorf("chunk objects %q; want input.jsonl and output/prediction-model-*/predictions.jsonl", names)
	}
	states, err := lane.States(t.Context())
	if err != nil || len(states) != 1 || states[0].State != "done" || states[0].InputFile != input {
		t.Errorf("States = %+v, %v; want one done chunk", states, err)
	}
	if p3, err := lane.Poll(t.Context(), fin); err != nil || p3.Checked != 0 || len(fin.seen) != 5 {
		t.Errorf("third Poll = %+v, %v, finisher calls %d; want nothing checked", p3, err, len(fin.seen))
	}
}
