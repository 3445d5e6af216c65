package batch_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

// Regression tests: the batch lane submits each chunk
// exactly once, and its own submissions pass the spend guard.

// clock is a test clock safe for the lane's lease renewals.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hookModel is the real client with a hook around SubmitBatch, and a log
// of the batches submitted and cancelled, in order.
type hookModel struct {
	batch.Model
	// before runs before each submission reaches the model; after once
	// it answered, and may replace its answer.
	before func(ctx context.Context, displayName string)
	after  func(ctx context.Context, displayName string, sub gemini.Submitted, err error) (gemini.Submitted, error)

	mu  sync.Mutex
	log []string
}

func (m *hookModel) note(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, s)
}

func (m *hookModel) calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

func (m *hookModel) SubmitBatch(ctx context.Context, model, displayName string, jobs []job.Job, inlineLimit int, opts ...gemini.BatchOption) (gemini.Submitted, error) {
	if m.before != nil {
		m.before(ctx, displayName)
	}
	sub, err := m.Model.SubmitBatch(ctx, model, displayName, jobs, inlineLimit, opts...)
	if err == nil {
		m.note("submit " + sub.Name)
	}
	if m.after != nil {
		return m.after(ctx, displayName, sub, err)
	}
	return sub, err
}

func (m *hookModel) CancelBatch(ctx context.Context, name string) error {
	m.note("cancel " + name)
	return m.Model.(interface {
		CancelBatch(context.Context, string) error
	}).CancelBatch(ctx, name)
}

// lane builds another lane (another instance) on e's stand-in and bucket.
func (e *env) newLane(t *testing.T, m batch.Model, clk *clock, cfg config.Batch, opts ...batch.Option) *batch.Lane {
	t.Helper()
	if cfg.OnExpired == "" {
		cfg.OnExpired = config.BatchResubmit
	}
	// A write gives up after a second of retries: a fault that never
	// clears surfaces quickly.
	return batch.New(m, storage.NewObjects(e.gcs.Client, "genimg-output", 0, time.Second), cfg, append([]batch.Option{batch.WithClock(clk.now)}, opts...)...)
}

func chunkState(t *testing.T, l *batch.Lane) *batch.State {
	t.Helper()
	states, err := l.States(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 {
		t.Fatalf("%d chunk states, want 1", len(states))
	}
	return states[0]
}

// pollDone polls until every chunk is done or failed, and returns what the
// finisher was handed, per job.
func pollDone(t *testing.T, l *batch.Lane, fin *finisher) {
	t.Helper()
	for range 10 {
		rep, err := l.Poll(t.Context(), fin)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Checked == 0 {
			return
		}
	}
	t.Fatalf("chunks still open after 10 polls")
}

// TestSlowSubmitterKeepsItsChunk: a submitter still at work on a chunk
// older than the old fixed 2-minute grace is not raced by a poller while
// its lease is live — whether the lease is long, or short and renewed —
// and the chunk is paid for once.
func TestSlowSubmitterKeepsItsChunk(t *testing.T) {
	for _, tt := range []struct {
		name  string
		lease time.Duration
		// renewed waits for the submitter to renew its lease past the
		// clock's jump.
		renewed bool
	}{
		{name: "lease longer than the old grace", lease: 10 * time.Minute},
		{name: "short lease renewed while working", lease: 600 * time.Millisecond, renewed: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, config.Batch{Chunk: 16, MaxAge: time.Hour})
			clk := newClock()
			entered, unblock := make(chan struct{}), make(chan struct{})
			slow := &hookModel{Model: laneModel(t, e), before: func(context.Context, string) {
				close(entered)
				<-unblock // uploading 16 jobs × 3 images, say
			}}
			submitter := e.newLane(t, slow, clk, config.Batch{Chunk: 16, MaxAge: time.Hour}, batch.WithSubmitLease(tt.lease))
			poller := e.newLane(t, laneModel(t, e), clk, config.Batch{Chunk: 16, MaxAge: time.Hour}, batch.WithSubmitLease(tt.lease))

			done := make(chan error, 1)
			go func() {
				_, err := submitter.Submit(context.Background(), jobs(3, func(i int) string { return fmt.Sprint("a slow boat ", i) }))
				done <- err
			}()
			<-entered
			jump := 3 * time.Minute // past the old grace
			clk.advance(jump)
			if tt.renewed {
				deadline := time.Now().Add(10 * time.Second)
				for !chunkState(t, poller).LeaseUntil.After(clk.now()) {
					if time.Now().After(deadline) {
						t.Fatal("the submitter never renewed its lease")
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			rep, err := poller.Poll(t.Context(), e.fin)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Open != 1 || len(e.model.Batches()) != 0 {
				t.Errorf("Poll while the submitter works = %+v, %d batches; want it left open, no batch", rep, len(e.model.Batches()))
			}
			close(unblock)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			pollDone(t, poller, e.fin)
			if n := len(e.model.Batches()); n != 1 {
				t.Errorf("%d batches created, want 1", n)
			}
			if len(e.fin.seen) != 3 {
				t.Errorf("finisher handed %v, want the 3 jobs once", e.fin.seen)
			}
		})
	}
}

// TestCrashAfterSubmitAdopted: the submitter's batch was created but its
// state never recorded it — the answer was lost on the way back, or the
// state write failed as a crash would leave it (its lease then runs out by
// itself). The next Poll finds the batch by its display name and adopts
// it: one batch created, every job finished once.
func TestCrashAfterSubmitAdopted(t *testing.T) {
	for _, tt := range []struct {
		name string
		// crash makes the submission fail after the model created it.
		crash func(e *env) func(ctx context.Context, displayName string, sub gemini.Submitted, err error) (gemini.Submitted, error)
	}{
		{name: "answer lost", crash: func(*env) func(context.Context, string, gemini.Submitted, error) (gemini.Submitted, error) {
			return func(_ context.Context, _ string, _ gemini.Submitted, err error) (gemini.Submitted, error) {
				if err != nil {
					return gemini.Submitted{}, err
				}
				return gemini.Submitted{}, fmt.Errorf("%w: creating batch: %w", job.ErrTransient, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET})
			}
		}},
		{name: "state never written", crash: func(e *env) func(context.Context, string, gemini.Submitted, error) (gemini.Submitted, error) {
			return func(_ context.Context, displayName string, sub gemini.Submitted, err error) (gemini.Submitted, error) {
				chunk := strings.TrimPrefix(displayName, "genimg ")
				e.gcs.Transport.Inject(storagetest.Fault{Match: storagetest.MatchUpload(storage.BatchStateObject(chunk)), Status: 503})
				return sub, err
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, config.Batch{Chunk: 16, MaxAge: time.Hour})
			clk := newClock()
			crashing := &hookModel{Model: laneModel(t, e), after: tt.crash(e)}
			submitter := e.newLane(t, crashing, clk, config.Batch{Chunk: 16, MaxAge: time.Hour})
			if _, err := submitter.Submit(t.Context(), jobs(4, func(i int) string { return fmt.Sprint("a boat that crashed ", i) })); err != nil {
				t.Logf("Submit: %v", err)
			}
			e.gcs.Transport.Clear()
			if n := len(e.model.Batches()); n != 1 {
				t.Fatalf("%d batches after the crashed submission, want 1", n)
			}
			clk.advance(batch.DefaultSubmitLease + time.Minute) // the crashed submitter's lease runs out
			poller := e.newLane(t, laneModel(t, e), clk, config.Batch{Chunk: 16, MaxAge: time.Hour})
			rep, err := poller.Poll(t.Context(), e.fin)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(e.model.Batches()); n != 1 || len(rep.Adopted) != 1 {
				t.Errorf("after the poll: %d batches, report %+v; want the 1 batch adopted", n, rep)
			}
			pollDone(t, poller, e.fin)
			if n := len(e.model.Batches()); n != 1 {
				t.Errorf("%d batches created, want 1 (paid once)", n)
			}
			if len(e.fin.seen) != 4 {
				t.Errorf("finisher handed %v, want the 4 jobs once", e.fin.seen)
			}
			for id, f := range e.fin.got {
				if f.Err != nil || f.Result == nil {
					t.Errorf("%s: %v, want an answer", id, f.Err)
				}
			}
		})
	}
}

// TestStuckBatchCancelledBeforeResubmission: a batch still open past
// MaxAge is cancelled before its jobs are resubmitted, and its chunk names
// the replacement, never polled again.
func TestStuckBatchCancelledBeforeResubmission(t *testing.T) {
	e := newEnv(t, config.Batch{Chunk: 10, MaxAge: time.Hour})
	clk := newClock()
	m := &hookModel{Model: laneModel(t, e)}
	l := e.newLane(t, m, clk, config.Batch{Chunk: 10, MaxAge: time.Hour, OnExpired: config.BatchResubmit, MaxResubmits: 1})
	e.model.SetBatchPolls(100)
	if _, err := l.Submit(t.Context(), jobs(2, func(i int) string { return fmt.Sprint("a slow boat ", i) })); err != nil {
		t.Fatal(err)
	}
	first := e.model.Batches()[0].Name
	clk.advance(2 * time.Hour)
	rep, err := l.Poll(t.Context(), e.fin)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Stuck) != 1 || len(rep.Resubmitted) != 1 {
		t.Fatalf("Poll past MaxAge = %+v; want 1 stuck, 1 resubmitted", rep)
	}
	bs := e.model.Batches()
	if len(bs) != 2 {
		t.Fatalf("stand-in batches %+v; want the stuck one and its resubmission", bs)
	}
	want := []string{"submit " + first, "cancel " + first, "submit " + bs[1].Name}
	if diff := cmp.Diff(want, m.calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if bs[0].State != geminitest.BatchCancelled {
		t.Errorf("stuck batch %s is %s, want cancelled", first, bs[0].State)
	}
	states, err := l.States(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var old *batch.State
	for _, st := range states {
		if st.Name == first {
			old = st
		}
	}
	if old == nil || old.State != "failed" || old.Cancelled != first || old.ReplacedBy == "" || old.ReplacedBy != rep.Resubmitted[0] {
		t.Errorf("the stuck chunk's state %+v; want failed, its batch cancelled, replaced by %v", old, rep.Resubmitted)
	}
}

// guardAdmitter admits through the real spend guard, a cent per job.
type guardAdmitter struct{ g *spend.Guard }

func (a guardAdmitter) AdmitBatch(ctx context.Context, jobs []job.Job) (func(bool), error) {
	total := 0.01 * float64(len(jobs))
	release, err := a.g.Admit(ctx, total)
	if err != nil {
		return nil, err
	}
	return func(paid bool) {
		if paid {
			release(total)
		} else {
			release(0)
		}
	}, nil
}

// TestKillSwitchHoldsPollSubmissions: a chunk whose first submission
// failed is sent by Poll, through the spend guard: while the kill switch
// is on, Poll holds it ("submitting", lease released; not failed) and
// creates no batch; once resumed, the next Poll sends it and its jobs
// finish.
func TestKillSwitchHoldsPollSubmissions(t *testing.T) {
	e := newEnv(t, config.Batch{Chunk: 16, MaxAge: time.Hour})
	clk := newClock()
	objects := storage.NewObjects(e.gcs.Client, "genimg-output", 0, 0)
	guard := spend.New(objects, config.Spend{}, spend.WithRefreshInterval(time.Nanosecond))
	t.Cleanup(func() { guard.Close(context.Background()) })
	l := e.newLane(t, laneModel(t, e), clk, config.Batch{Chunk: 16, MaxAge: time.Hour}, batch.WithAdmitter(guardAdmitter{guard}))

	e.model.FailBatchCreates(503, 1)
	rep, err := l.Submit(t.Context(), jobs(3, func(i int) string { return fmt.Sprint("a paused boat ", i) }))
	if err != nil || len(rep.Pending) != 1 {
		t.Fatalf("Submit = %+v, %v; want its chunk pending", rep, err)
	}
	if err := spend.Pause(t.Context(), objects); err != nil {
		t.Fatal(err)
	}
	clk.advance(3 * time.Minute) // past the old grace and any lease
	for i := range 2 {
		p, err := l.Poll(t.Context(), e.fin)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Held) != 1 || len(e.model.Batches()) != 0 || len(p.Failed) != 0 {
			t.Errorf("Poll %d while paused = %+v, %d batches; want the chunk held, no batch", i, p, len(e.model.Batches()))
		}
		if st := chunkState(t, l); st.State != "submitting" || st.LeaseOwner != "" {
			t.Errorf("Poll %d while paused left the chunk %s, lease owner %q; want submitting, no lease", i, st.State, st.LeaseOwner)
		}
	}
	if err := spend.Resume(t.Context(), objects); err != nil {
		t.Fatal(err)
	}
	p, err := l.Poll(t.Context(), e.fin)
	if err != nil || len(p.Submitted) != 1 || len(p.Held) != 0 {
		t.Errorf("Poll after resume = %+v, %v; want the chunk submitted", p, err)
	}
	pollDone(t, l, e.fin)
	if n := len(e.model.Batches()); n != 1 || len(e.fin.seen) != 3 {
		t.Errorf("%d batches, finisher handed %v; want 1 batch, 3 jobs", n, e.fin.seen)
	}
}

// TestRefusedSubmissionFailsJobs: a chunk Poll sends and the model
// refuses for good (400) fails each job once, through the finisher, with
// a permanent error, and the chunk with them; later polls do nothing.
func TestRefusedSubmissionFailsJobs(t *testing.T) {
	e := newEnv(t, config.Batch{Chunk: 16, MaxAge: time.Hour})
	clk := newClock()
	l := e.newLane(t, laneModel(t, e), clk, config.Batch{Chunk: 16, MaxAge: time.Hour})
	e.model.FailBatchCreates(503, 1)
	if rep, err := l.Submit(t.Context(), jobs(3, func(i int) string { return fmt.Sprint("a refused boat ", i) })); err != nil || len(rep.Pending) != 1 {
		t.Fatalf("Submit = %+v, %v; want its chunk pending", rep, err)
	}
	e.model.FailBatchCreates(400, 100)
	clk.advance(3 * time.Minute)
	for range 3 {
		if _, err := l.Poll(t.Context(), e.fin); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff([]string{"job-00", "job-01", "job-02"}, e.fin.seen); diff != "" {
		t.Errorf("jobs failed (-want +got):\n%s", diff)
	}
	for id, f := range e.fin.got {
		if f.Err == nil || job.Retryable(f.Err) || !strings.Contains(f.Err.Error(), "400") {
			t.Errorf("%s: error %v, want the model's refusal, not retryable", id, f.Err)
		}
	}
	if st := chunkState(t, l); st.State != "failed" {
		t.Errorf("chunk %s, want failed", st.State)
	}
}
