package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/job"
)

// pollOn calls an extra instance's PollBatches as Cloud Scheduler does.
// Other tests' chunks share the bucket: the report's errors are theirs to
// have, and not checked here.
func pollOn(t *testing.T, in *testInstance) batch.PollReport {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/"+in.path+"/PollBatches", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PollBatches: status %d: %s", resp.StatusCode, body)
	}
	var rep batch.PollReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("PollBatches answer: %v: %s", err, body)
	}
	return rep
}

// TestBatchPollSubmissionsGuarded: a batch whose first submission failed
// is sent by PollBatches. While the kill switch is on (an instance with
// GENIMG_PAUSED) the poll holds it — no batch, the jobs still batched, not
// failed — and an unpaused poll sends it and finishes its jobs. A second
// batch the model then refuses for good (400) ends in exactly one failed
// record and one event per job.
func TestBatchPollSubmissionsGuarded(t *testing.T) {
	model := newModel(t)
	cfg := baseConfig(t, model)
	in := newInstance(t, cfg, "batch-guarded")
	cfg.Spend.Paused = true
	paused := newInstance(t, cfg, "batch-paused")

	submit := func(name string, n int) []string {
		t.Helper()
		var ids, items []string
		for i := range n {
			id := fmt.Sprintf("%s-%d-%s", name, i, uniq(t))
			ids = append(ids, id)
			items = append(items, fmt.Sprintf(`{"id": %q, "prompt": "a %s kite, number %d"}`, id, name, i))
		}
		before := len(model.Batches())
		model.FailBatchCreates(503, 1) // the submission fails; PollBatches sends it
		deliver(t, in.path+"/OnMessage", "m-"+uniq(t)+name, []byte(`{"batch": [`+strings.Join(items, ",")+`]}`), time.Now(), http.StatusOK)
		if n := len(model.Batches()) - before; n != 0 {
			t.Fatalf("%d batches after a failed submission", n)
		}
		return ids
	}
	chunkOf := func(rep batch.PollReport, field []string) bool { return len(field) == 1 }

	// Held by the kill switch, twice; not failed.
	held := submit("held", 3)
	for i := range 2 {
		rep := pollOn(t, paused)
		if !chunkOf(rep, rep.Held) || len(model.Batches()) != 0 {
			t.Fatalf("paused poll %d: %+v, %d batches; want the chunk held, no batch", i, rep, len(model.Batches()))
		}
	}
	for _, id := range held {
		if st, err := in.Store().Status(t.Context(), id); err != nil || st.State != job.Batched {
			t.Errorf("%s while paused: %+v, %v; want batched", id, st, err)
		}
	}
	// Resumed: sent, then finished.
	if rep := pollOn(t, in); !chunkOf(rep, rep.Submitted) || len(model.Batches()) != 1 {
		t.Fatalf("unpaused poll: %+v, %d batches; want the chunk submitted", rep, len(model.Batches()))
	}
	deadline := time.Now().Add(20 * time.Second)
	for slices.ContainsFunc(held, func(id string) bool { return len(stack.events.forJob(id)) == 0 }) {
		if time.Now().After(deadline) {
			t.Fatal("held batch jobs never finished after resume")
		}
		pollOn(t, in)
		time.Sleep(50 * time.Millisecond)
	}

	// Refused for good: one failed record and event per job.
	refused := submit("refused", 2)
	model.FailBatchCreates(400, 100)
	if rep := pollOn(t, in); !chunkOf(rep, rep.Refused) {
		t.Errorf("poll of a refused chunk: %+v; want it refused", rep)
	}
	pollOn(t, in) // nothing more
	settle()
	for _, id := range append(held, refused...) {
		evs := stack.events.forJob(id)
		if len(evs) != 1 {
			t.Errorf("%s: %d events, want 1", id, len(evs))
			continue
		}
		rec := evs[0].Record
		want := job.Succeeded
		if strings.HasPrefix(id, "refused") {
			want = job.Failed
		}
		if rec.Outcome != want || (want == job.Failed && (rec.Error == nil || rec.Error.Retryable)) {
			t.Errorf("%s: outcome %s error %+v; want %s", id, rec.Outcome, rec.Error, want)
		}
		if got := storedRecord(t, id); got.Outcome != want {
			t.Errorf("%s: stored outcome %s, want %s", id, got.Outcome, want)
		}
	}
	if n := len(model.Batches()); n != 1 {
		t.Errorf("%d batches created, want 1", n)
	}
}
