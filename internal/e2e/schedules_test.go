package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/delivery"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

// TestFaultSchedules runs random fault schedules — seeded, the seed printed
// on failure and replayable with GENIMG_SCHEDULE_SEED — of repeated and
// concurrent deliveries of a few jobs through Pub/Sub and uploads, on three
// instances, with callers that hang up mid-run, expired leases, Cloud
// Storage faults (401, 403, 429, 503, answers lost after the write),
// model faults (429s, 503s, a per-day quota, answers lost), the kill switch
// and a spent budget; then everything clears, the platform keeps
// redelivering until each delivery is acknowledged, and the invariants are
// checked:
//
//   - every job ends in exactly one record (nothing is left held or queued
//     once its causes clear; a job held past the maximum age ends failed
//     and retryable);
//   - the record names images that exist, all of one attempt's answer;
//   - a job is paid for more than once only where the schedule made an
//     answer unkeepable (lost on the wire, or its caller gone mid-call),
//     and the record then counts every paid call;
//   - every completion event under a job's subject is its record's.
//
// (That a held job's delivery is acknowledged rather than redelivered is
// TestHeldIsNeverDeadLettered's to check.)
//
// GENIMG_SCHEDULES sets how many run (default 6; .ci/run runs 1000).
func TestFaultSchedules(t *testing.T) {
	n := 6
	if v, err := strconv.Atoi(os.Getenv("GENIMG_SCHEDULES")); err == nil && v > 0 {
		n = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("GENIMG_SCHEDULE_SEED"), 10, 64); err == nil {
		seed, n = v, 1
	}
	h := newScheduleHarness(t)
	for i := range n {
		s := seed + uint64(i)
		if !t.Run(fmt.Sprint("seed=", s), func(t *testing.T) { h.run(t, s) }) {
			t.Fatalf("schedule failed; replay it with GENIMG_SCHEDULE_SEED=%d go test ./internal/e2e -run TestFaultSchedules", s)
		}
	}
}

// scheduleHarness is what every schedule shares: three instances on a
// private stand-in, an upload bucket and a requests topic of their own
// (requeued held jobs come back to instance 0).
type scheduleHarness struct {
	// dropped: the schedule lost an answer on the wire (any of its jobs'
	// may have been paid twice).
	dropped  bool
	model    *geminitest.Server
	ins      [3]*testInstance
	uploads  string
	requests string
}

func newScheduleHarness(t *testing.T) *scheduleHarness {
	h := &scheduleHarness{model: newModel(t), uploads: "genimg-schedules-in", requests: "genimg-schedules-requests"}
	ctx := t.Context()
	if err := stack.gcs.Bucket(h.uploads).Create(ctx, project, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := stack.pubsub.TopicAdminClient.CreateTopic(ctx, &pb.Topic{Name: topicName(h.requests)}); err != nil {
		t.Fatal(err)
	}
	if _, err := stack.pubsub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
		Name: subName(h.requests + "-push"), Topic: topicName(h.requests), AckDeadlineSeconds: 600,
	}); err != nil {
		t.Fatal(err)
	}
	for i := range h.ins {
		cfg := baseConfig(t, h.model)
		cfg.Topics.Requests = h.requests
		cfg.Uploads.Buckets = []string{h.uploads}
		cfg.Storage.InputBuckets = append(cfg.Storage.InputBuckets, h.uploads)
		cfg.Model.MaxAttempts = 2
		// Room to keep every answer whose upload a schedule refuses (the
		// default 16 MiB is sized for production's rarer faults).
		cfg.Storage.SpoolBytes = 128 << 20
		cfg.Model.RetryBudget = time.Second
		if i == 2 {
			// Instance 2's budget is always spent: what it takes, it holds.
			cfg.Spend.HourlyUSD = 1e-9
		}
		// The kill switch is seen within 50 ms, not the production 2 s.
		h.ins[i] = newInstance(t, cfg, fmt.Sprint("schedule-", i), pipeline.WithSpendOptions(spend.WithRefreshInterval(50*time.Millisecond)))
	}
	pusher := &delivery.Pusher{
		Subscriber: stack.pubsub.Subscriber(subName(h.requests + "-push")), Endpoint: stack.functions + "/" + h.ins[0].path + "/OnMessage",
		Kind: delivery.MessagePublished, Topic: topicName(h.requests), Subscription: subName(h.requests + "-push"),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, MaxAttempts: 1000,
	}
	pushCtx, stop := context.WithCancel(context.Background())
	go pusher.Run(pushCtx)
	t.Cleanup(stop)
	return h
}

// A scheduledJob is one job of a schedule and what the schedule did to it.
type scheduledJob struct {
	id, prompt string
	// deliver sends the job's delivery (the same one every time, as the
	// platform redelivers it) to an instance, with a context the schedule
	// may cancel; it answers the status, 0 when the caller hung up.
	deliver func(ctx context.Context, in *testInstance) int
	// failFirst is how many model calls the stand-in refuses (unpaid);
	// quota: every call is refused for the day.
	failFirst int
	quota     bool
	// lossy: the schedule may have lost a paid answer (a second payment is
	// allowed, and must be counted).
	lossy bool
	// acked: a delivery was acknowledged (2xx). Until then the platform
	// redelivers, even when the record is already stored: a delivery whose
	// caller hung up as the record committed published no event, and its
	// redelivery does.
	acked atomic.Bool
}

// delivered notes an acknowledged delivery; it answers st.
func (j *scheduledJob) delivered(st int) int {
	if st >= 200 && st < 300 {
		j.acked.Store(true)
	}
	return st
}

func (h *scheduleHarness) run(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ctx := t.Context()
	h.dropped = false
	jobs := make([]*scheduledJob, 1+r.IntN(3))
	for k := range jobs {
		jobs[k] = h.newJob(t, r, seed, k)
	}
	paused := r.IntN(5) == 0
	output := storage.NewObjects(stack.gcs, outputBucket, 0, 0)
	if paused {
		if err := spend.Pause(ctx, output); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond) // the guards' refresh interval
	}

	// The chaos: a few rounds of deliveries, some concurrent, under faults.
	for round := range 2 + r.IntN(3) {
		var wg sync.WaitGroup
		for _, j := range jobs {
			for range 1 + r.IntN(2) { // a duplicate delivery now and then
				in := h.ins[r.IntN(len(h.ins))]
				h.inject(r, in, j)
				dctx, cancel := context.WithCancel(ctx)
				if r.IntN(6) == 0 {
					// The caller hangs up (or the instance dies) mid-run.
					j.lossy = true
					time.AfterFunc(time.Duration(r.IntN(150))*time.Millisecond, cancel)
				}
				wg.Go(func() {
					defer cancel()
					j.deliver(dctx, in)
				})
			}
		}
		wg.Wait()
		if r.IntN(3) == 0 {
			// A holder paused past its lease: the others may take over.
			for _, in := range h.ins {
				in.advance(time.Minute + time.Second)
			}
		}
		_ = round
	}

	// Everything clears; the platform redelivers until acknowledged, and
	// the scheduled resume runs what was held.
	for _, in := range h.ins {
		in.gcsFaults.Clear()
		in.modelFaults.drop.Store(0)
		in.publishHook.Store(nil)
	}
	if paused {
		if err := spend.Resume(ctx, output); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	settle := h.ins[0]
	for try := 0; ; try++ {
		pending, quota := 0, 0
		for _, j := range jobs {
			if st, err := settle.Store().Status(ctx, j.id); err == nil && st.State == job.Done && j.acked.Load() {
				continue
			}
			pending++
			if j.quota {
				quota++
			}
			j.deliver(ctx, settle)
		}
		if pending == 0 {
			break
		}
		if try == 40 {
			t.Fatalf("seed %d: %d jobs never ended in a record", seed, pending)
		}
		if try%4 == 3 {
			// Leases run out; when only jobs out of their day's quota are
			// left, so does the quota wait, and a job held past the
			// maximum event age ends.
			d := time.Minute + time.Second
			if quota == pending {
				d = 31 * time.Minute
			}
			for _, in := range h.ins {
				in.advance(d)
			}
		}
		if _, err := settle.Resume(ctx); err != nil {
			t.Logf("resume: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, j := range jobs {
		h.check(t, seed, j)
	}
}

// newJob makes the k-th job of a schedule: its trigger, its model
// behaviour, and its delivery.
func (h *scheduleHarness) newJob(t *testing.T, r *rand.Rand, seed uint64, k int) *scheduledJob {
	j := &scheduledJob{prompt: fmt.Sprintf("schedule %d job %d, a lighthouse", seed, k)}
	switch x := r.IntN(10); {
	case x < 2:
		j.failFirst = 1 + r.IntN(3)
		j.prompt += fmt.Sprintf(" [[standin:fail=%d:%d]]", j.failFirst, []int{429, 503}[r.IntN(2)])
	case x == 2:
		j.quota = true
		j.prompt += " [[standin:quota=day]]"
	}
	// The instances' clocks move together, and only forward (leases,
	// quota waits, answers kept in memory expire on them).
	when := h.ins[0].now()
	if r.IntN(2) == 0 {
		msgID := fmt.Sprintf("sched-%d-%d", seed, k)
		j.id = derivedMessageID(msgID)
		data, _ := json.Marshal(map[string]string{"prompt": j.prompt, "aspectRatio": "1:1"})
		j.deliver = func(ctx context.Context, in *testInstance) int {
			st, _ := messageEvent(ctx, in.path+"/OnMessage", msgID, data, when)
			return j.delivered(st)
		}
		return j
	}
	name := fmt.Sprintf("sched/%d-%d.png", seed, k)
	meta := map[string]string{"prompt": j.prompt}
	a := upload(t, h.uploads, name, testPNG(t, 64, 48), "image/png", meta)
	j.id = job.DeriveID("up", fmt.Sprintf("gs://%s/%s#%d", h.uploads, name, a.Generation), "metadata")
	data := storageEvent(t, h.uploads, name, a.Generation, "image/png", meta)
	j.deliver = func(ctx context.Context, in *testInstance) int {
		st, _ := sendEvent(ctx, in.path+"/OnUpload", "evt-"+name, "google.cloud.storage.object.v1.finalized",
			"//storage.googleapis.com/projects/_/buckets/"+h.uploads, "objects/"+name, when, data)
		return j.delivered(st)
	}
	return j
}

// inject arms zero or more faults on in for j's next delivery.
func (h *scheduleHarness) inject(r *rand.Rand, in *testInstance, j *scheduledJob) {
	objects := []string{
		"jobs/" + j.id + "/claim.json", "jobs/" + j.id + "/result.json",
		"jobs/" + j.id + "/attempt-", "images/" + j.id + "/", "spend/",
	}
	for range r.IntN(3) {
		name := objects[r.IntN(len(objects))]
		f := storagetest.Fault{Times: 1 + r.IntN(3), Match: matchPrefix(name)}
		switch r.IntN(5) {
		case 0:
			f.Status = 401
		case 1:
			f.Status = 403
		case 2:
			f.Status = 429
		case 3:
			f.Status = 503
		default:
			// The write commits and its answer is lost: the client's
			// retry meets 412.
			f.DropResponse, f.Times = true, 1
		}
		in.gcsFaults.Inject(f)
	}
	if r.IntN(8) == 0 {
		// A paid answer lost on the wire: the instance's next answer,
		// whichever job's it is.
		in.modelFaults.drop.Store(1)
		h.dropped = true
	}
	if r.IntN(10) == 0 {
		// The completion topic refuses once.
		var once sync.Once
		fail := func(context.Context) error {
			var err error
			once.Do(func() { err = status.Error(codes.Unavailable, "injected: publish refused") })
			return err
		}
		in.publishHook.Store(&fail)
	}
}

// check asserts the invariants of one job.
func (h *scheduleHarness) check(t *testing.T, seed uint64, j *scheduledJob) {
	t.Helper()
	rec := storedRecord(t, j.id)
	requests := 0
	for _, q := range h.model.Requests() {
		if q.Decoded != nil && strings.Contains(string(q.Body), j.prompt) {
			requests++
		}
	}
	paid := max(0, requests-j.failFirst)
	if j.quota {
		paid = 0
	}
	switch {
	case j.quota:
		if rec.Outcome != job.Failed || rec.Error == nil || !rec.Error.Retryable {
			t.Errorf("seed %d job %s (per-day quota): record %s %+v; want failed, retryable", seed, j.id, rec.Outcome, rec.Error)
		}
	case rec.Outcome != job.Succeeded:
		t.Errorf("seed %d job %s: record %s %+v; want succeeded", seed, j.id, rec.Outcome, rec.Error)
	}
	if paid > 1 && !j.lossy && !h.dropped {
		t.Errorf("seed %d job %s: paid %d times with no answer lost", seed, j.id, paid)
	}
	// Every call the model answered is counted (an answer lost on the wire
	// is paid too, though its cost was never read: the record counts the
	// call, and its cost where it was noted before the call).
	if rec.Attempts < paid || (paid > 0 && rec.CostUSD < oneCallCost-1e-9) {
		t.Errorf("seed %d job %s: paid %d calls, the record counts %d calls, %.4f USD", seed, j.id, paid, rec.Attempts, rec.CostUSD)
	}
	// The record's images exist and are one attempt's.
	attempt := ""
	for _, o := range rec.Outputs {
		_, name, err := job.ParseGCS(o.URI)
		if err != nil {
			t.Fatal(err)
		}
		a, err := stack.gcs.Bucket(outputBucket).Object(name).Attrs(t.Context())
		if err != nil || a.Size != o.Bytes {
			t.Errorf("seed %d job %s: the record names %s (%d bytes): %v", seed, j.id, o.URI, o.Bytes, err)
		}
		base := name[strings.LastIndex(name, "/")+1:]
		if a := base[:strings.Index(base, "-")]; attempt == "" {
			attempt = a
		} else if a != attempt {
			t.Errorf("seed %d job %s: images of two attempts in one record: %v", seed, j.id, rec.Outputs)
		}
	}
	// Every event under the job's subject is its record's.
	var want string
	for deadline := time.Now().Add(10 * time.Second); want == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, e := range stack.events.forJob(j.id) {
			if e.Attributes["ce-subject"] == "jobs/"+j.id && e.Record.ResponseID == rec.ResponseID && e.Record.Outcome == rec.Outcome {
				want = e.Attributes["ce-id"]
			}
		}
	}
	if want == "" {
		t.Errorf("seed %d job %s: no completion event for its record", seed, j.id)
	}
	for _, e := range stack.events.forJob(j.id) {
		if e.Attributes["ce-subject"] == "jobs/"+j.id && e.Attributes["ce-id"] != want {
			t.Errorf("seed %d job %s: an event under its subject that is not its record's: %v", seed, j.id, e.Attributes)
		}
	}
}

// matchPrefix matches requests that touch objects under prefix: reads,
// deletes and metadata calls by path, uploads by the name in the query or
// body.
func matchPrefix(prefix string) func(*http.Request, []byte) bool {
	esc := url.PathEscape(prefix)
	return func(r *http.Request, body []byte) bool {
		return strings.Contains(r.URL.EscapedPath(), "/o/"+esc) || strings.Contains(r.URL.Path, "/o/"+prefix) ||
			strings.HasPrefix(r.URL.Query().Get("name"), prefix) || bytes.Contains(body, []byte(`"name":"`+prefix))
	}
}

// sendEvent delivers a CloudEvent in binary mode, as Eventarc does, and
// answers the status (0 when the caller hung up).
func sendEvent(ctx context.Context, fn, id, typ, source, subject string, when time.Time, data []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, stack.functions+"/"+fn, bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", id)
	req.Header.Set("ce-type", typ)
	req.Header.Set("ce-source", source)
	req.Header.Set("ce-subject", subject)
	req.Header.Set("ce-time", when.UTC().Format(time.RFC3339Nano))
	resp, err := deliveryClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
