package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

// untilAcked delivers as the platform does: again after every 500, until the
// function acknowledges. It returns how many deliveries were refused.
func untilAcked(ctx context.Context, send func() (int, error)) (refused int, err error) {
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); {
		status, err := send()
		if err != nil {
			return refused, err
		}
		if status == http.StatusOK {
			return refused, nil
		}
		if status != http.StatusInternalServerError {
			return refused, fmt.Errorf("answered %d", status)
		}
		refused++
		select {
		case <-ctx.Done():
			return refused, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	return refused, errors.New("never acknowledged")
}

// The same job delivered many times — in sequence or at once, to one
// instance or to several sharing the emulators — costs one model call and
// leaves one set of images and one record.
func TestDuplicateDeliveries(t *testing.T) {
	for _, n := range []int{2, 10} {
		for _, concurrent := range []bool{false, true} {
			for _, instances := range []int{1, 3} {
				name := fmt.Sprintf("%d deliveries/concurrent=%v/%d instances", n, concurrent, instances)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					m := newModel(t)
					// A slow answer keeps concurrent deliveries overlapping.
					m.Enqueue(geminitest.Behavior{Latency: 300 * time.Millisecond})
					cfg := baseConfig(t, m)
					var ins []*testInstance
					for i := range instances {
						ins = append(ins, newInstance(t, cfg, fmt.Sprintf("dup-%d", i)))
					}
					msgID := "dup-" + uniq(t)
					data := []byte(`{"prompt": "a heron in the reeds", "aspectRatio": "1:1"}`)
					when := time.Now()

					var wg sync.WaitGroup
					errs := make([]error, n)
					for i := range n {
						send := func() (int, error) {
							return messageEvent(t.Context(), ins[i%instances].path+"/OnMessage", msgID, data, when)
						}
						if concurrent {
							wg.Go(func() { _, errs[i] = untilAcked(t.Context(), send) })
						} else {
							_, errs[i] = untilAcked(t.Context(), send)
						}
					}
					wg.Wait()
					if err := errors.Join(errs...); err != nil {
						t.Fatal(err)
					}

					id := derivedMessageID(msgID)
					if got := m.Calls(); got != 1 {
						t.Errorf("%d model calls, want 1", got)
					}
					rec := storedRecord(t, id)
					if rec.Outcome != job.Succeeded || rec.Attempts != 1 || len(rec.Outputs) != 1 {
						t.Errorf("record: outcome %s, attempts %d, %d outputs", rec.Outcome, rec.Attempts, len(rec.Outputs))
					}
					checkAgree(t, rec)
					evs := stack.events.waitCount(t, id, n)
					if len(evs) != n {
						t.Errorf("%d completion events, want %d (one per acknowledged delivery)", len(evs), n)
					}
					for _, e := range evs {
						if e.Record.ResponseID != rec.ResponseID || e.Attributes["ce-id"] != evs[0].Attributes["ce-id"] {
							t.Errorf("event %s for response %s; the record is response %s", e.Attributes["ce-id"], e.Record.ResponseID, rec.ResponseID)
						}
					}
				})
			}
		}
	}
}

// A delivery that dies at any point of the pipeline is finished by its
// redelivery, paying at most once more, and the record counts what was
// paid.
func TestCrashWindows(t *testing.T) {
	tests := []struct {
		name string
		// crash arranges the first delivery's death; it returns what the
		// first delivery answers.
		crash func(t *testing.T, in *testInstance, id string) (status int)
		// takeOver: the crashed attempt left a live lease; the
		// redelivery comes after it expires.
		takeOver bool
		calls    int     // model calls in all
		attempts int     // the record's count
		cost     float64 // at least, in the record
	}{
		{
			name: "before the model call (claim renewal fails)",
			crash: func(t *testing.T, in *testInstance, id string) int {
				// The first claim.json write is the claim; the second
				// notes the call (BeginCall) and fails, every retry.
				seen := 0
				var mu sync.Mutex
				match := storagetest.MatchUpload("jobs/" + id + "/claim.json")
				in.gcsFaults.Inject(storagetest.Fault{Status: 503, Match: func(r *http.Request, b []byte) bool {
					if !match(r, b) {
						return false
					}
					mu.Lock()
					defer mu.Unlock()
					seen++
					return seen > 1
				}})
				return http.StatusInternalServerError
			},
			takeOver: true, calls: 1, attempts: 1, cost: oneCallCost,
		},
		{
			name: "after the model call (its answer lost)",
			crash: func(t *testing.T, in *testInstance, id string) int {
				in.modelFaults.drop.Store(1)
				return http.StatusInternalServerError
			},
			// The failed call released the lease: no wait.
			calls: 2, attempts: 2, cost: 2 * oneCallCost,
		},
		{
			// The record, and the draft that keeps the answer when the
			// record is refused, are retried in process (for three
			// quarters of the function's timeout: 6 s here); when Cloud
			// Storage refuses both throughout, the claim is released and
			// the paid answer kept in memory: the redelivery commits it,
			// no second call. (It used to wait out the lease and pay
			// again.)
			name: "after the images (record and draft writes fail)",
			crash: func(t *testing.T, in *testInstance, id string) int {
				in.gcsFaults.Inject(storagetest.Fault{Status: 503, Match: answerWrites(id, 1)})
				return http.StatusInternalServerError
			},
			calls: 1, attempts: 1, cost: oneCallCost,
		},
		{
			name: "after the record (event publish fails)",
			crash: func(t *testing.T, in *testInstance, id string) int {
				fail := func(context.Context) error { return status.Error(codes.PermissionDenied, "injected: publish refused") }
				in.publishHook.Store(&fail)
				return http.StatusInternalServerError
			},
			calls: 1, attempts: 1, cost: oneCallCost,
		},
		{
			name: "after the record (caller gone while publishing)",
			crash: func(t *testing.T, in *testInstance, id string) int {
				// The publish RPC is held until the delivery's caller
				// has hung up (the handler's context is cancelled while
				// it waits for the publish), then refused.
				started, hungUp := make(chan struct{}), make(chan struct{})
				var once sync.Once
				hold := func(context.Context) error {
					once.Do(func() { close(started) })
					select {
					case <-hungUp:
						time.Sleep(100 * time.Millisecond)
					case <-time.After(5 * time.Second):
					}
					return status.Error(codes.PermissionDenied, "injected: publish refused")
				}
				in.publishHook.Store(&hold)
				go func() {
					<-started
					in.cancel()
					close(hungUp)
				}()
				return 0 // the caller never sees an answer
			},
			calls: 1, attempts: 1, cost: oneCallCost,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newModel(t)
			cfg := baseConfig(t, m)
			cfg.Model.MaxAttempts = 1 // a lost answer goes back to the platform
			cfg.Limits.FunctionTimeout = 8 * time.Second
			in := newInstance(t, cfg, "crashing")
			msgID := "crash-" + uniq(t)
			id := derivedMessageID(msgID)
			data := []byte(`{"prompt": "a lantern on a jetty", "aspectRatio": "1:1"}`)
			when := time.Now()

			ctx, cancel := context.WithCancel(t.Context())
			in.cancel = cancel
			want := tt.crash(t, in, id)
			status, err := messageEvent(ctx, in.path+"/OnMessage", msgID, data, when)
			switch {
			case want == 0 && err == nil:
				t.Fatalf("the delivery answered %d; the caller should have gone", status)
			case want != 0 && (err != nil || status != want):
				t.Fatalf("first delivery: status %d, error %v; want %d", status, err, want)
			}
			in.gcsFaults.Clear()
			in.publishHook.Store(nil)
			// Let an abandoned delivery end.
			time.Sleep(200 * time.Millisecond)

			if tt.takeOver {
				// The crashed holder's lease is live: a redelivery
				// before it expires is refused.
				deliver(t, in.path+"/OnMessage", msgID, data, when, http.StatusInternalServerError)
				in.advance(cfg.Storage.Lease + time.Second)
			}
			if _, err := untilAcked(t.Context(), func() (int, error) {
				return messageEvent(t.Context(), in.path+"/OnMessage", msgID, data, when)
			}); err != nil {
				t.Fatal(err)
			}

			rec := storedRecord(t, id)
			if got := m.Calls(); got != tt.calls {
				t.Errorf("%d model calls, want %d", got, tt.calls)
			}
			if rec.Outcome != job.Succeeded || rec.Attempts != tt.attempts || rec.CostUSD < tt.cost-1e-9 || rec.CostUSD > tt.cost+0.001 {
				t.Errorf("record: outcome %s, attempts %d, cost %.4f; want succeeded, %d attempts, cost %.4f", rec.Outcome, rec.Attempts, rec.CostUSD, tt.attempts, tt.cost)
			}
			checkAgree(t, rec)
			e := stack.events.waitJob(t, id)
			if e.Record.ResponseID != rec.ResponseID {
				t.Errorf("event for response %s, record %s", e.Record.ResponseID, rec.ResponseID)
			}
		})
	}
}

// A holder paused past its lease wakes to find the job taken over: the
// record and the images still come from one answer, and none of the
// sleeper's images remain.
func TestPausedHolder(t *testing.T) {
	m := newModel(t)
	cfg := baseConfig(t, m)
	sleeper := newInstance(t, cfg, "sleeper")
	taker := newInstance(t, cfg, "taker")
	// The taker lives after the sleeper's lease would have expired.
	taker.advance(cfg.Storage.Lease + time.Second)
	// The sleeper's model call is slow; the taker's is not.
	m.Enqueue(geminitest.Behavior{Latency: 1500 * time.Millisecond})

	msgID := "paused-" + uniq(t)
	id := derivedMessageID(msgID)
	data := []byte(`{"prompt": "a moth at a window", "aspectRatio": "1:1"}`)
	when := time.Now()
	sleeperDone := deliverLater(t, sleeper.path+"/OnMessage", msgID, data, when)
	waitCalls(t, m, 1, "the sleeper")
	deliver(t, taker.path+"/OnMessage", msgID, data, when, http.StatusOK)
	won := storedRecord(t, id)
	if a := <-sleeperDone; a.err != nil || a.status != http.StatusOK {
		t.Fatalf("the sleeper answered %d, %v; want 200", a.status, a.err)
	}

	rec := storedRecord(t, id)
	if rec.ResponseID != won.ResponseID {
		t.Errorf("the record changed after the sleeper woke: response %s, then %s", won.ResponseID, rec.ResponseID)
	}
	if m.Calls() != 2 || rec.Attempts != 2 {
		t.Errorf("%d model calls, record counts %d; want 2 and 2", m.Calls(), rec.Attempts)
	}
	checkAgree(t, rec)
	for _, e := range stack.events.waitCount(t, id, 2) {
		if e.Record.ResponseID != rec.ResponseID {
			t.Errorf("an event carries response %s, the record %s", e.Record.ResponseID, rec.ResponseID)
		}
	}
}

// Model trouble is retried in process with backoff, then handed back to the
// platform (500) with the lease released, and once the delivery is older
// than the maximum age it ends in a retryable failed record. Nothing is
// left running.
func TestModelFaults(t *testing.T) {
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	before := runtime.NumGoroutine()
	t.Run("cases", func(t *testing.T) {
		tests := []struct {
			name     string
			behavior geminitest.Behavior
			timeout  time.Duration
			calls    int           // model calls per delivery
			atLeast  time.Duration // a delivery takes at least this long
		}{
			{"429 storm with retryDelay", geminitest.Behavior{Status: 429, RetryDelay: 40 * time.Millisecond}, 0, 3, 80 * time.Millisecond},
			// A per-day quota holds the job instead: TestQuotaHoldsThenTooOld.
			{"run of 503s", geminitest.Behavior{Status: 503}, 0, 3, 0},
			{"hang past the deadline", geminitest.Behavior{Hang: true}, 150 * time.Millisecond, 3, 450 * time.Millisecond},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				m := newModel(t)
				for range 10 {
					m.Enqueue(tt.behavior)
				}
				cfg := baseConfig(t, m)
				if tt.timeout > 0 {
					cfg.Model.CallTimeout = tt.timeout
				}
				in := newInstance(t, cfg, "faulty")
				msgID := "model-" + uniq(t)
				id := derivedMessageID(msgID)
				data := []byte(`{"prompt": "a kingfisher", "aspectRatio": "1:1"}`)
				when := time.Now()

				// First delivery, then the platform's retry: each backs
				// off in process, then asks for redelivery.
				for round := 1; round <= 2; round++ {
					start := time.Now()
					deliver(t, in.path+"/OnMessage", msgID, data, when, http.StatusInternalServerError)
					if took := time.Since(start); took < tt.atLeast {
						t.Errorf("delivery %d took %v; backoff should make it at least %v", round, took, tt.atLeast)
					}
					if got := m.Calls(); got != round*tt.calls {
						t.Errorf("after delivery %d: %d model calls, want %d", round, got, round*tt.calls)
					}
					// Every call made is noted on the claim before it is made,
					// retries too: a crash during one still counts it.
					expires, calls := storedLease(t, id)
					if expires.After(in.now()) || calls != tt.calls {
						t.Errorf("after delivery %d the lease runs until %v with %d calls; want released (expired), %d calls", round, expires, calls, tt.calls)
					}
				}
				// Too old now: a retryable failed record, no model call.
				calls := m.Calls()
				deliver(t, in.path+"/OnMessage", msgID, data, when.Add(-2*cfg.Limits.MaxEventAge), http.StatusOK)
				rec := storedRecord(t, id)
				if rec.Outcome != job.Failed || rec.Error == nil || !rec.Error.Retryable || rec.Error.Code != "unavailable" {
					t.Errorf("record: outcome %s, error %+v; want a retryable failure", rec.Outcome, rec.Error)
				}
				// The record counts the calls the earlier deliveries made.
				if rec.Attempts < 1 {
					t.Errorf("record counts %d attempts; earlier deliveries made model calls", rec.Attempts)
				}
				if m.Calls() != calls {
					t.Errorf("the stale delivery made %d model calls", m.Calls()-calls)
				}
				if e := stack.events.waitJob(t, id); e.Record.Outcome != job.Failed {
					t.Errorf("event outcome %s", e.Record.Outcome)
				}
			})
		}
	})
	// Every instance and stand-in is closed now: the goroutine count goes
	// back to where it was, give or take the transports' idle connections.
	const tolerance = 10
	deadline := time.Now().Add(5 * time.Second)
	for {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		after := runtime.NumGoroutine()
		if after <= before+tolerance {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines before, %d after settling:\n%s", before, after, buf[:runtime.Stack(buf, true)])
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cloud Storage failing mid-job loses nothing: the delivery is refused, and
// its redelivery finishes with one record whose images exist.
func TestStorageFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault func(id string) storagetest.Fault
		// first is what the faulty delivery answers; takeOver: it left a
		// live lease, so the redelivery comes after it expires.
		first    int
		takeOver bool
		calls    int
	}{
		{"claim write 429", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 429, Match: storagetest.MatchUpload("jobs/" + id + "/claim.json")}
		}, 500, false, 1},
		{"claim write 503", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 503, Match: storagetest.MatchUpload("jobs/" + id + "/claim.json")}
		}, 500, false, 1},
		{"record read 503", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 503, Match: storagetest.MatchObject("jobs/" + id + "/result.json")}
		}, 500, false, 1},
		// A paid answer whose image, or record and draft, Cloud Storage
		// refuses past its retries (6 s here) is kept (the image in the
		// spool, the record in memory) and finished by the redelivery:
		// one call. (Both used to cost a second call.)
		{"image write 503", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 503, Match: storagetest.MatchUpload("images/" + id + "/a1-0.png")}
		}, 500, false, 1},
		{"image write 429", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 429, Match: storagetest.MatchUpload("images/" + id + "/a1-0.png")}
		}, 500, false, 1},
		{"record and draft writes 429", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 429, Match: answerWrites(id, 1)}
		}, 500, false, 1},
		// The record refused throughout, its draft written: another
		// instance (or this one) commits the draft, no second call.
		{"record write 503", func(id string) storagetest.Fault {
			return storagetest.Fault{Status: 503, Match: storagetest.MatchUpload("jobs/" + id + "/result.json")}
		}, 500, true, 1},
		{"record write answer lost", func(id string) storagetest.Fault {
			return storagetest.Fault{DropResponse: true, Times: 1, Match: storagetest.MatchUpload("jobs/" + id + "/result.json")}
		}, 200, false, 1},
		{"image write answer lost", func(id string) storagetest.Fault {
			return storagetest.Fault{DropResponse: true, Times: 1, Match: storagetest.MatchUpload("images/" + id + "/a1-0.png")}
		}, 200, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newModel(t)
			cfg := baseConfig(t, m)
			cfg.Limits.FunctionTimeout = 8 * time.Second
			in := newInstance(t, cfg, "storage-faults")
			msgID := "gcs-" + uniq(t)
			id := derivedMessageID(msgID)
			data := []byte(`{"prompt": "a beacon on a hill", "aspectRatio": "1:1"}`)
			when := time.Now()

			in.gcsFaults.Inject(tt.fault(id))
			deliver(t, in.path+"/OnMessage", msgID, data, when, tt.first)
			if _, injected := in.gcsFaults.Counts(); injected == 0 {
				t.Fatal("the fault never fired")
			}
			in.gcsFaults.Clear()
			if tt.takeOver {
				in.advance(cfg.Storage.Lease + time.Second)
			}
			if tt.first != http.StatusOK {
				deliver(t, in.path+"/OnMessage", msgID, data, when, http.StatusOK)
			}

			rec := storedRecord(t, id)
			if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
				t.Fatalf("record: outcome %s, %d outputs, error %+v", rec.Outcome, len(rec.Outputs), rec.Error)
			}
			if got := m.Calls(); got != tt.calls || rec.Attempts != tt.calls {
				t.Errorf("%d model calls, the record counts %d; want %d", got, rec.Attempts, tt.calls)
			}
			checkAgree(t, rec)
			if e := stack.events.waitJob(t, id); e.Record.ResponseID != rec.ResponseID {
				t.Errorf("event for response %s, record %s", e.Record.ResponseID, rec.ResponseID)
			}
		})
	}
}

// A holder paused past its lease mid-call whose answer still comes first
// must not commit it: the taker, which paid again, commits a record that
// counts both calls. (The sleeper's record, counting one, used to win.)
func TestPausedHolderAnswersFirst(t *testing.T) {
	m := newModel(t)
	cfg := baseConfig(t, m)
	sleeper, taker := newInstance(t, cfg, "sleeper-first"), newInstance(t, cfg, "taker-second")
	// The sleeper's answer comes after 1.5 s, the taker's after 3 s.
	m.Enqueue(geminitest.Behavior{Latency: 1500 * time.Millisecond})
	m.Enqueue(geminitest.Behavior{Latency: 3 * time.Second})

	msgID := "paused-first-" + uniq(t)
	id := derivedMessageID(msgID)
	data := []byte(`{"prompt": "a heron at dusk", "aspectRatio": "1:1"}`)
	when := time.Now()
	sleeperDone := deliverLater(t, sleeper.path+"/OnMessage", msgID, data, when)
	waitCalls(t, m, 1, "the sleeper")
	// The sleeper pauses past its lease; the taker takes the job over.
	sleeper.advance(cfg.Storage.Lease + time.Second)
	taker.advance(cfg.Storage.Lease + time.Second)
	deliver(t, taker.path+"/OnMessage", msgID, data, when, http.StatusOK)
	if a := <-sleeperDone; a.status != http.StatusInternalServerError {
		t.Errorf("the sleeper answered %d, %v; want 500 (the job was taken over)", a.status, a.err)
	}

	rec := storedRecord(t, id)
	if m.Calls() != 2 || rec.Attempts != 2 || rec.CostUSD < 2*oneCallCost-1e-9 {
		t.Errorf("%d model calls; the record counts %d calls, %.4f USD; want 2 calls, %.4f USD", m.Calls(), rec.Attempts, rec.CostUSD, 2*oneCallCost)
	}
	checkAgree(t, rec)
}

// A paid answer whose record and draft Cloud Storage refuses for a while
// is retried for as long as the run may last, holding the job, even after
// its caller has hung up: a redelivery to another instance meanwhile is
// refused, then finds the record. One call. (The writes used to give up
// after six tries and release the job, and another instance paid for it
// again.)
func TestPaidAnswerOutlastsRefusals(t *testing.T) {
	t.Parallel()
	m := newModel(t)
	cfg := baseConfig(t, m)
	first, second := newInstance(t, cfg, "refused-1"), newInstance(t, cfg, "refused-2")
	msgID := "refused-" + uniq(t)
	id := derivedMessageID(msgID)
	data := []byte(`{"prompt": "a windmill at dusk", "aspectRatio": "1:1"}`)
	when := time.Now()

	// 403 is not retried inside the client library: two refusals per try
	// (the record, then the draft), eight tries.
	const refusals = 2 * 8
	first.gcsFaults.Inject(storagetest.Fault{Status: 403, Times: refusals, Match: answerWrites(id, 1)})
	deliverHangingUp(t, first, msgID, data, when)
	refused, err := untilAcked(t.Context(), func() (int, error) {
		return messageEvent(t.Context(), second.path+"/OnMessage", msgID, data, when)
	})
	if err != nil {
		t.Fatal(err)
	}
	if refused == 0 {
		t.Error("the redelivery was not refused while the first instance held the job")
	}
	if _, got := first.gcsFaults.Counts(); got != refusals {
		t.Errorf("the record and draft were refused %d times, want %d", got, refusals)
	}
	rec := storedRecord(t, id)
	if got := m.Calls(); got != 1 || rec.Attempts != 1 {
		t.Errorf("%d model calls, the record counts %d; want 1", got, rec.Attempts)
	}
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
		t.Fatalf("record: outcome %s, %d outputs, error %+v", rec.Outcome, len(rec.Outputs), rec.Error)
	}
	checkAgree(t, rec)
	if e := stack.events.waitJob(t, id); e.Record.ResponseID != rec.ResponseID {
		t.Errorf("event for response %s, record %s", e.Record.ResponseID, rec.ResponseID)
	}
}

// An instance paused while it retries a paid answer's writes (its CPU
// throttled once the caller is gone) may wake to find the job taken over
// and paid for again. It must not commit its record then: the taker's
// counts both calls, its own would count one.
func TestTakenOverWhileKeepingAnAnswer(t *testing.T) {
	t.Parallel()
	m := newModel(t)
	cfg := baseConfig(t, m)
	cfg.Model.MaxAttempts = 1
	// The taker, refused its record throughout, keeps retrying it for 6 s.
	cfg.Limits.FunctionTimeout = 8 * time.Second
	sleeper, taker := newInstance(t, cfg, "sleeper"), newInstance(t, cfg, "taker")
	msgID := "sleeper-" + uniq(t)
	id := derivedMessageID(msgID)
	data := []byte(`{"prompt": "a kite over the dunes", "aspectRatio": "1:1"}`)
	when := time.Now()
	draft := func(attempt int) string { return fmt.Sprintf("jobs/%s/attempt-%d.json", id, attempt) }

	// Four refusals of the sleeper's record and draft: its first try is
	// refused both, and each later one the draft (once the job is taken
	// over) or both (before): it gets its draft in within 1.4 s, and its
	// record could go in on its third try at the earliest (0.6 s). Its
	// caller hangs up at the first refusal.
	sleeper.gcsFaults.Inject(storagetest.Fault{Status: 403, Times: 4, Match: answerWrites(id, 1)})
	deliverHangingUp(t, sleeper, msgID, data, when)
	// Meanwhile the sleeper's lease runs out (it is paused), and the taker
	// claims the job, pays, is refused its record and writes its draft
	// (for 6 s, then it answers 500). The sleeper wakes once the taker
	// has paid.
	taker.advance(cfg.Storage.Lease + time.Second)
	taker.gcsFaults.Inject(storagetest.Fault{Status: 403, Match: storagetest.MatchUpload("jobs/" + id + "/result.json")})
	takerDone := deliverLater(t, taker.path+"/OnMessage", msgID, data, when)
	waitCalls(t, m, 2, "the taker")
	sleeper.advance(cfg.Storage.Lease + time.Second)
	if a := <-takerDone; a.err != nil || a.status != http.StatusInternalServerError {
		t.Fatalf("the taker answered %d, %v; want 500", a.status, a.err)
	}
	if m.Calls() != 2 {
		t.Fatalf("%d model calls before the redelivery, want 2", m.Calls())
	}
	// The sleeper's retries end: it finds the job taken over and writes
	// its draft (were it to commit instead, a record); wait for that.
	exists := func(name string) bool {
		_, err := stack.gcs.Bucket(outputBucket).Object(name).Attrs(t.Context())
		return err == nil
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if exists(draft(1)) || exists("jobs/"+id+"/result.json") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sleeper never wrote its draft")
		}
	}
	time.Sleep(500 * time.Millisecond)

	// The platform redelivers once the taker's lease runs out.
	taker.gcsFaults.Clear()
	taker.advance(cfg.Storage.Lease + time.Second)
	if _, err := untilAcked(t.Context(), func() (int, error) {
		return messageEvent(t.Context(), taker.path+"/OnMessage", msgID, data, when)
	}); err != nil {
		t.Fatal(err)
	}
	rec := storedRecord(t, id)
	if got := m.Calls(); got != 2 || rec.Attempts != 2 || rec.CostUSD < 2*oneCallCost-1e-9 {
		t.Errorf("%d model calls; the record counts %d calls, %.4f USD; want 2 calls, %.4f USD", got, rec.Attempts, rec.CostUSD, 2*oneCallCost)
	}
	checkAgree(t, rec)
}

// answerWrites matches the writes that keep attempt's answer: the job's
// record and the attempt's draft.
func answerWrites(id string, attempt int) func(*http.Request, []byte) bool {
	record := storagetest.MatchUpload("jobs/" + id + "/result.json")
	draft := storagetest.MatchUpload(fmt.Sprintf("jobs/%s/attempt-%d.json", id, attempt))
	return func(r *http.Request, body []byte) bool { return record(r, body) || draft(r, body) }
}

// An answer is a delivery's status, or why there was none.
type answer struct {
	status int
	err    error
}

// deliverLater sends a message delivery to fn without waiting for it; its
// answer comes on the channel.
func deliverLater(t *testing.T, fn, msgID string, data []byte, when time.Time) <-chan answer {
	done := make(chan answer, 1)
	go func() {
		status, err := messageEvent(t.Context(), fn, msgID, data, when)
		done <- answer{status, err}
	}()
	return done
}

// waitCalls waits until the model has made n calls, the last of them who's.
func waitCalls(t *testing.T, m *geminitest.Server, n int, who string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); m.Calls() < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d model calls: %s never called the model", m.Calls(), who)
		}
	}
}

// deliverHangingUp sends a message delivery to in whose caller hangs up at
// the first fault in's Cloud Storage injects; the delivery must not have
// answered by then.
func deliverHangingUp(t *testing.T, in *testInstance, msgID string, data []byte, when time.Time) {
	t.Helper()
	ctx, hangUp := context.WithCancel(t.Context())
	go func() {
		for _, n := in.gcsFaults.Counts(); n == 0; _, n = in.gcsFaults.Counts() {
			time.Sleep(5 * time.Millisecond)
		}
		hangUp()
	}()
	if status, err := messageEvent(ctx, in.path+"/OnMessage", msgID, data, when); err == nil {
		t.Fatalf("the delivery to %s answered %d; its caller should have gone", in.path, status)
	}
}
