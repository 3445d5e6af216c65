package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
)

// pollBatches calls PollBatches as Cloud Scheduler does.
func pollBatches(t *testing.T) batch.PollReport {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/PollBatches", nil)
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

// pollUntilDone polls until every job has a completion event, and returns
// the reports.
func pollUntilDone(t *testing.T, ids []string) []batch.PollReport {
	t.Helper()
	var reps []batch.PollReport
	deadline := time.Now().Add(20 * time.Second)
	for {
		reps = append(reps, pollBatches(t))
		missing := 0
		for _, id := range ids {
			if len(stack.events.forJob(id)) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return reps
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d batch jobs have no event after %d polls; last report %+v", missing, len(ids), len(reps), reps[len(reps)-1])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkBatchRecord checks a batch job's record and event: the online
// lane's record, priced at the batch rate, naming its batch.
func checkBatchRecord(t *testing.T, e event, outcome job.Outcome, trig job.Trigger, w, h int) {
	t.Helper()
	rec := e.Record
	if rec.Outcome != outcome || rec.Trigger != trig || rec.Batch == nil || !strings.HasPrefix(rec.Batch.Name, "batches/") || rec.Batch.ID == "" {
		t.Fatalf("%s: outcome %s (want %s), trigger %+v (want %+v), batch %+v, error %+v", rec.JobID, rec.Outcome, outcome, rec.Trigger, trig, rec.Batch, rec.Error)
	}
	prices := config.DefaultPrices()
	online := gemini.Cost(prices, rec.Usage, false)
	if want := gemini.Cost(prices, rec.Usage, true); math.Abs(rec.CostUSD-want) > 1e-12 || math.Abs(rec.CostUSD-online/2) > 1e-12 {
		t.Errorf("%s: cost %v; want the batch price %v, half the online %v", rec.JobID, rec.CostUSD, want, online)
	}
	if rec.Attempts != 1 || rec.ModelVersion == "" || rec.Fingerprint == "" || rec.Timings.CompletedAt.IsZero() {
		t.Errorf("%s: attempts %d modelVersion %q fingerprint %q completedAt %v", rec.JobID, rec.Attempts, rec.ModelVersion, rec.Fingerprint, rec.Timings.CompletedAt)
	}
	checkAttributes(t, e)
	if outcome != job.Succeeded {
		if len(rec.Outputs) != 0 {
			t.Errorf("%s: %d outputs for a %s job", rec.JobID, len(rec.Outputs), outcome)
		}
		return
	}
	if len(rec.Outputs) != 1 || rec.FinishReason != "STOP" || rec.Usage.CandidatesTokensByModality["IMAGE"] != 1290 {
		t.Fatalf("%s: %d outputs, finish %q, usage %+v", rec.JobID, len(rec.Outputs), rec.FinishReason, rec.Usage)
	}
	gotW, gotH, meta := readOutput(t, rec.Outputs[0])
	if gotW != w || gotH != h || rec.Outputs[0].Width != w || rec.Outputs[0].Height != h {
		t.Errorf("%s: image %d×%d (record %d×%d), want %d×%d", rec.JobID, gotW, gotH, rec.Outputs[0].Width, rec.Outputs[0].Height, w, h)
	}
	if meta[job.MetaGeneratedBy] != job.Generator || meta[job.MetaJob] != rec.JobID {
		t.Errorf("%s: output metadata %v", rec.JobID, meta)
	}
}

// postBatch POSTs a batch and decodes the 202 answer.
func postBatch(t *testing.T, body string, header map[string]string) pipeline.BatchAnswer {
	t.Helper()
	resp, b := postJSON(t, body, header)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var ans pipeline.BatchAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatalf("answer: %v: %s", err, b)
	}
	return ans
}

// waitBatches waits until the stand-in holds want batches (OnMessage
// submits what the front door queued), and returns them.
func waitBatches(t *testing.T, want int) []geminitest.BatchInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := stack.model.Batches()
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBatchOverHTTP: 20 jobs (two blocked, one answered twice by the
// batch) and one invalid job POSTed as a batch → the invalid one recorded
// failed at once, the 20 queued (the front door never calls the model) and
// submitted by OnMessage in two model batches; a retried POST submits
// nothing; PollBatches turns the answers into 20 records and 20 events at
// batch prices, the key answered twice written once.
func TestBatchOverHTTP(t *testing.T) {
	key := uniq(t)
	var jobs []string
	for i := range 20 {
		prompt := fmt.Sprintf("a small red boat, number %d", i)
		switch i {
		case 3, 11:
			prompt = "a forbidden thing [[standin:block]]"
		case 7:
			prompt = "a lighthouse at dusk [[standin:twice]]"
		}
		jobs = append(jobs, fmt.Sprintf(`{"prompt": %q, "aspectRatio": "3:2", "labels": {"n": "%d"}}`, prompt, i))
	}
	jobs = append(jobs, `{"prompt": "a boat", "aspectRatio": "7:5"}`) // invalid: not one the model takes
	body := `{"batch": [` + strings.Join(jobs, ",") + `]}`

	batches := len(stack.model.Batches())
	ans := postBatch(t, body, map[string]string{"Idempotency-Key": key})
	if len(ans.Jobs) != 21 || ans.Batch != key || ans.Submitted.Jobs != 0 {
		t.Fatalf("answer: batch %q, %d jobs, report %+v; want 21 jobs, none submitted by the front door", ans.Batch, len(ans.Jobs), ans.Submitted)
	}
	var ids []string
	for i, bj := range ans.Jobs {
		want := pipeline.BatchJob{Index: i, JobID: job.DeriveID("batch", key, fmt.Sprint(i)), Status: pipeline.BatchQueued}
		want.Location = "/Generate?id=" + want.JobID
		if i == 20 {
			want.Status, want.Error = pipeline.BatchFailed, bj.Error
			if bj.Error == nil || bj.Error.Code != "invalid_argument" || !strings.Contains(bj.Error.Message, "16:9") {
				t.Errorf("invalid job's error %+v", bj.Error)
			}
		} else {
			ids = append(ids, want.JobID)
		}
		if diff := cmp.Diff(want, bj); diff != "" {
			t.Errorf("job %d (-want +got):\n%s", i, diff)
		}
	}
	if got := waitBatches(t, batches+2)[batches:]; len(got) != 2 {
		t.Fatalf("stand-in batches %+v; want 2 (16 jobs and 4)", got)
	}
	// The invalid job is recorded failed at once; it sank nothing.
	if rec := stack.events.waitJob(t, ans.Jobs[20].JobID).Record; rec.Outcome != job.Failed || rec.Error == nil || rec.Error.Code != "invalid_argument" || rec.Batch != nil {
		t.Errorf("invalid job's record %+v", rec)
	}
	// Before the poll, each job is in its model batch.
	resp, b := getJob(t, ans.Jobs[0].Location)
	var st struct{ State job.State }
	if err := json.Unmarshal(b, &st); err != nil || resp.StatusCode != http.StatusAccepted || st.State != job.Batched {
		t.Errorf("GET before the poll: status %d: %s; want 202, batched", resp.StatusCode, b)
	}

	// The same POST again (a client retry) is the same batch: the same
	// jobs, queued again, and nothing new submitted.
	again := postBatch(t, body, map[string]string{"Idempotency-Key": key})
	if diff := cmp.Diff(ans.Jobs, again.Jobs); diff != "" {
		t.Errorf("retried POST's jobs (-first +again):\n%s", diff)
	}
	settle()
	if n := len(stack.model.Batches()) - batches; n != 2 {
		t.Errorf("retried POST: %d stand-in batches in all; want the same 2", n)
	}

	t0 := time.Now()
	reps := pollUntilDone(t, ids)
	t.Logf("poll took %v over %d polls", time.Since(t0), len(reps))
	var finished, duplicates []string
	for _, rep := range reps {
		finished = append(finished, rep.Finished...)
		duplicates = append(duplicates, rep.Duplicates...)
		if len(rep.Failed) != 0 || len(rep.Errors) != 0 {
			t.Errorf("poll report %+v", rep)
		}
	}
	slices.Sort(finished)
	wantFinished := slices.Clone(ids)
	slices.Sort(wantFinished)
	if diff := cmp.Diff(wantFinished, finished); diff != "" {
		t.Errorf("finished jobs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{ids[7]}, duplicates); diff != "" {
		t.Errorf("keys answered twice (-want +got):\n%s", diff)
	}

	settle()
	for i, id := range ids {
		evs := stack.events.forJob(id)
		if len(evs) != 1 {
			t.Errorf("job %d: %d events, want 1", i, len(evs))
			continue
		}
		outcome := job.Succeeded
		if i == 3 || i == 11 {
			outcome = job.Blocked
		}
		checkBatchRecord(t, evs[0], outcome, job.Trigger{Kind: job.HTTP, Source: "request/" + key}, 1248, 832)
		if evs[0].Record.Labels["n"] != fmt.Sprint(i) {
			t.Errorf("job %d: labels %v", i, evs[0].Record.Labels)
		}
		resp, b := getJob(t, ans.Jobs[i].Location)
		if rec := decodeRecord(t, b); resp.StatusCode != http.StatusOK || rec.ResponseID != evs[0].Record.ResponseID {
			t.Errorf("GET job %d: status %d, response %q, want %q", i, resp.StatusCode, rec.ResponseID, evs[0].Record.ResponseID)
		}
	}
	// The key answered twice is written once.
	if n := countObjects(t, outputBucket, "images/"+ids[7]+"/"); n != 1 {
		t.Errorf("%d images for the key answered twice, want 1", n)
	}
	// A poll after the end has nothing left to do.
	if rep := pollBatches(t); len(rep.Finished) != 0 {
		t.Errorf("late poll finished %v again", rep.Finished)
	}
}

// TestBatchOverPubSubRedelivered: a message {"batch": [...]} delivered
// twice is submitted once (ids derive from the message); its invalid job is
// recorded failed; the others finish as pubsub jobs.
func TestBatchOverPubSubRedelivered(t *testing.T) {
	msgID := "m-" + uniq(t)
	own := "own-" + uniq(t)
	data := []byte(fmt.Sprintf(`{"batch": [{"prompt": "a kite over a field"}, {"id": %q, "prompt": "a kite at sea", "aspectRatio": "16:9"}, {"prompt": "a kite", "colour": "red"}]}`, own))
	batches := len(stack.model.Batches())
	postMessage(t, msgID, data, nil, time.Now(), http.StatusOK)
	postMessage(t, msgID, data, nil, time.Now(), http.StatusOK) // the redelivery
	if n := len(stack.model.Batches()) - batches; n != 1 {
		t.Fatalf("%d stand-in batches for one message delivered twice, want 1", n)
	}
	delivery := derivedMessageID(msgID)
	first, bad := job.DeriveID("batch", delivery, "0"), job.DeriveID("batch", delivery, "2")
	if rec := stack.events.waitJob(t, bad).Record; rec.Outcome != job.Failed || rec.Error == nil || !strings.Contains(rec.Error.Message, `"colour"`) {
		t.Errorf("invalid job's record: %+v", rec)
	}
	pollUntilDone(t, []string{first, own})
	settle()
	trig := job.Trigger{Kind: job.PubSub, Source: msgID}
	for id, size := range map[string][2]int{first: {1024, 1024}, own: {1344, 768}} {
		evs := stack.events.forJob(id)
		if len(evs) != 1 {
			t.Fatalf("%s: %d events, want 1", id, len(evs))
		}
		checkBatchRecord(t, evs[0], job.Succeeded, trig, size[0], size[1])
	}
}

// TestBatchUpload: a *.jobs.jsonl upload is a batch, one job per line, ids
// derived from the object's generation and the line.
func TestBatchUpload(t *testing.T) {
	name := "nightly/" + uniq(t) + ".jobs.jsonl"
	own := "own-" + uniq(t)
	content := `{"prompt": "a paper crane"}` + "\n\n" + fmt.Sprintf(`{"id": %q, "prompt": "a paper frog", "aspectRatio": "9:16"}`, own) + "\n" + `{"prompt": ""}` + "\n"
	attrs := upload(t, inputBucket, name, []byte(content), "application/jsonl", nil)
	src := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	line1, line4 := job.DeriveID("batch", src, "line", "1"), job.DeriveID("batch", src, "line", "4")
	// Line 4 has no prompt: recorded failed once the upload is delivered.
	if rec := stack.events.waitJob(t, line4).Record; rec.Outcome != job.Failed || rec.Error == nil || rec.Error.Code != "invalid_argument" || rec.Trigger.Source != src {
		t.Errorf("line 4's record: %+v", rec)
	}
	pollUntilDone(t, []string{line1, own})
	trig := job.Trigger{Kind: job.Upload, Source: src}
	checkBatchRecord(t, stack.events.waitJob(t, line1), job.Succeeded, trig, 1024, 1024)
	e := stack.events.waitJob(t, own)
	checkBatchRecord(t, e, job.Succeeded, trig, 768, 1344)
	if _, _, meta := readOutput(t, e.Record.Outputs[0]); meta[job.MetaSource] != src {
		t.Errorf("output metadata %v does not name the uploaded batch %s", meta, src)
	}
}

// TestBatchRejections: what is not a batch is refused whole, before any
// work.
func TestBatchRejections(t *testing.T) {
	batches := len(stack.model.Batches())
	for _, tt := range []struct {
		name, body string
		status     int
		text       string
	}{
		{"empty", `{"batch": []}`, 400, "no jobs"},
		{"not a list", `{"batch": {"prompt": "x"}}`, 400, "batch"},
		{"a field beside it", `{"batch": [{"prompt": "x"}], "aspectRatio": "1:1"}`, 400, "aspectRatio"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postJSON(t, tt.body, nil)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.text) {
				t.Errorf("status %d, body %s; want %d mentioning %q", resp.StatusCode, body, tt.status, tt.text)
			}
		})
	}
	if n := len(stack.model.Batches()) - batches; n != 0 {
		t.Errorf("%d batches submitted for refused submissions", n)
	}
}

// TestBatchKnownIDs: ids that already hold a record, or are given twice,
// are answered job by job; only new work is submitted.
func TestBatchKnownIDs(t *testing.T) {
	done, fresh := uniq(t)+"-done", uniq(t)+"-fresh"
	if resp, body := postJSON(t, `{"prompt": "a paper boat", "aspectRatio": "3:2"}`, map[string]string{"Idempotency-Key": done}); resp.StatusCode != http.StatusOK {
		t.Fatalf("online job: status %d: %s", resp.StatusCode, body)
	}
	batches := len(stack.model.Batches())
	ans := postBatch(t, fmt.Sprintf(`{"batch": [
		{"id": %[1]q, "prompt": "a paper boat", "aspectRatio": "3:2"},
		{"id": %[1]q, "prompt": "a paper plane"},
		{"id": %[2]q, "prompt": "a glass boat"},
		{"id": %[2]q, "prompt": "a glass plane"},
		{"id": %[2]q, "prompt": "a glass boat"}]}`, done, fresh), nil)
	var got []string
	for _, bj := range ans.Jobs {
		got = append(got, bj.JobID+" "+bj.Status)
	}
	want := []string{done + " done", done + " conflict", fresh + " queued", fresh + " conflict", fresh + " duplicate"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	for _, i := range []int{1, 3} {
		if e := ans.Jobs[i].Error; e == nil || e.Code != "conflict" {
			t.Errorf("job %d: error %+v, want a conflict", i, e)
		}
	}
	got2 := waitBatches(t, batches+1)[batches:]
	settle()
	if got2 = stack.model.Batches()[batches:]; len(got2) != 1 {
		t.Fatalf("%d stand-in batches; want 1 batch of the 1 new job: %+v", len(got2), got2)
	}
	pollUntilDone(t, []string{fresh})
	rec := stack.events.waitJob(t, fresh).Record
	if rec.Outcome != job.Succeeded || rec.Batch == nil || !strings.Contains(rec.Text, "a glass boat") {
		t.Errorf("fresh job's record: outcome %s batch %+v text %q", rec.Outcome, rec.Batch, rec.Text)
	}
	// The online job's record stands, with its one event.
	if evs := stack.events.waitCount(t, done, 1); len(evs) != 1 || evs[0].Record.Batch != nil {
		t.Errorf("online job: %d events", len(evs))
	}
}
