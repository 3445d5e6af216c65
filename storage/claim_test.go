package storage

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

var (
	upload1 = job.Trigger{Kind: job.Upload, Source: "gs://in/a.png#1"}
	resub   = job.Trigger{Kind: job.HTTP, Source: "req-2"}
)

// commitRecord commits a minimal record under c and fails the test on error.
func commitRecord(t *testing.T, s *Store, c *Claim, rec job.Record) job.Record {
	t.Helper()
	got, _, err := s.Commit(t.Context(), c, rec)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return got
}

func TestClaimStates(t *testing.T) {
	retryable := job.Record{Outcome: job.Failed, Trigger: upload1, Attempts: 2, CostUSD: 0.078,
		Error: &job.Error{Code: "unavailable", Message: "quota", Retryable: true}}
	permanent := job.Record{Outcome: job.Failed, Trigger: upload1, Error: &job.Error{Code: "invalid_argument", Message: "bad"}}
	done := job.Record{Outcome: job.Succeeded, Trigger: upload1, Attempts: 1}

	tests := []struct {
		name string
		// setup runs as another instance, at clock time 0.
		setup   func(t *testing.T, s *Store)
		advance time.Duration
		fp      string
		trig    job.Trigger
		// want: "claim N" (attempt N), "record", or an error category.
		want       string
		wantErr    error
		priorCalls int
	}{
		{name: "new job", setup: func(*testing.T, *Store) {}, fp: "fp", trig: upload1, want: "claim 1"},
		{name: "record exists", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			commitRecord(t, s, c, done)
		}, fp: "fp", trig: upload1, want: "record"},
		{name: "record of other work", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "other", upload1)
			commitRecord(t, s, c, done)
		}, fp: "fp", trig: upload1, wantErr: job.ErrConflict},
		{name: "claim of other work", setup: func(t *testing.T, s *Store) {
			s.Claim(t.Context(), "j", "other", upload1)
		}, advance: 2 * time.Minute, fp: "fp", trig: upload1, wantErr: job.ErrConflict},
		{name: "live lease", setup: func(t *testing.T, s *Store) {
			s.Claim(t.Context(), "j", "fp", upload1)
		}, advance: 59 * time.Second, fp: "fp", trig: upload1, wantErr: job.ErrTransient},
		{name: "expired lease taken over", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			s.BeginCall(t.Context(), c, 0.039)
		}, advance: 61 * time.Second, fp: "fp", trig: upload1, want: "claim 2", priorCalls: 1},
		{name: "released lease taken over at once", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			if err := s.Release(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}, fp: "fp", trig: upload1, want: "claim 2"},
		{name: "retryable failure, redelivery", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			commitRecord(t, s, c, retryable)
		}, fp: "fp", trig: upload1, want: "record"},
		{name: "retryable failure, resubmission", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			commitRecord(t, s, c, retryable)
		}, fp: "fp", trig: resub, want: "claim 2", priorCalls: 2},
		{name: "permanent failure, resubmission", setup: func(t *testing.T, s *Store) {
			c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
			commitRecord(t, s, c, permanent)
		}, fp: "fp", trig: resub, want: "record"},
		{name: "retryable failure written without a claim, resubmission", setup: func(t *testing.T, s *Store) {
			r := retryable
			r.JobID, r.Fingerprint = "j", "fp"
			commitRecord(t, s, nil, r)
		}, fp: "fp", trig: resub, want: "claim 1", priorCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			clk := newClock()
			other, _ := srv.NewClient(t)
			tt.setup(t, newStore(other, clk, "other", job.GeminiAPI))
			clk.advance(tt.advance)
			s := newStore(srv.Client, clk, "me", job.GeminiAPI)
			c, rec, err := s.Claim(t.Context(), "j", tt.fp, tt.trig)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || c != nil || rec != nil {
					t.Fatalf("Claim = %v, %v, %v; want error %v", c, rec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			got := "record"
			if c != nil {
				got = fmt.Sprintf("claim %d", c.Attempt)
				if c.PriorCalls != tt.priorCalls {
					t.Errorf("PriorCalls = %d, want %d", c.PriorCalls, tt.priorCalls)
				}
			}
			if got != tt.want || (c == nil) == (rec == nil) {
				t.Fatalf("Claim = %v, %v; want %s", c, rec, tt.want)
			}
		})
	}
}

// A reclaimed retryable failure is replaced by the new run's record, and a
// second resubmission during the run finds it in progress.
func TestReclaimReplacesRecord(t *testing.T) {
	srv := newServer(t)
	clk := newClock()
	s := newStore(srv.Client, clk, "me", job.GeminiAPI)
	c, _, _ := s.Claim(t.Context(), "j", "fp", upload1)
	commitRecord(t, s, c, job.Record{Outcome: job.Failed, Trigger: upload1, Attempts: 1,
		Error: &job.Error{Code: "unavailable", Retryable: true}})

	c2, _, err := s.Claim(t.Context(), "j", "fp", resub)
	if err != nil || c2 == nil {
		t.Fatalf("resubmission Claim = %v, %v", c2, err)
	}
	if _, _, err := s.Claim(t.Context(), "j", "fp", job.Trigger{Kind: job.HTTP, Source: "req-3"}); !errors.Is(err, job.ErrTransient) {
		t.Errorf("second resubmission during the run: %v, want ErrTransient", err)
	}
	if st, err := s.Status(t.Context(), "j"); st.State != job.Running || err != nil {
		t.Errorf("Status during the rerun: %+v, %v; want running", st, err)
	}
	want := job.Record{JobID: "j", Outcome: job.Succeeded, Trigger: resub, Attempts: 2, Fingerprint: "fp", Outputs: []job.StoredImage{}}
	got := commitRecord(t, s, c2, want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("committed (-want +got):\n%s", diff)
	}
	st, err := s.Status(t.Context(), "j")
	if err != nil || st.State != job.Done || st.Record.Outcome != job.Succeeded {
		t.Errorf("Status after rerun = %+v, %v", st, err)
	}
}

// Many goroutines on several clients race one job id: one claim.
func TestClaimRace(t *testing.T) {
	srv := newServer(t)
	clk := newClock()
	var stores []*Store
	for i := range 4 {
		c, _ := srv.NewClient(t)
		stores = append(stores, newStore(c, clk, fmt.Sprintf("inst-%d", i), job.GeminiAPI))
	}
	for _, round := range []struct {
		name    string
		advance time.Duration
		attempt int
	}{{"create", 0, 1}, {"takeover", 2 * time.Minute, 2}} {
		t.Run(round.name, func(t *testing.T) {
			clk.advance(round.advance)
			var (
				mu      sync.Mutex
				winners []*Claim
				others  []error
				wg      sync.WaitGroup
			)
			for i := range 32 {
				wg.Go(func() {
					c, rec, err := stores[i%len(stores)].Claim(t.Context(), "race", "fp", upload1)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case c != nil:
						winners = append(winners, c)
					case rec != nil:
						others = append(others, errors.New("unexpected record"))
					default:
						others = append(others, err)
					}
				})
			}
			wg.Wait()
			if len(winners) != 1 {
				t.Fatalf("%d winners, want 1", len(winners))
			}
			if winners[0].Attempt != round.attempt {
				t.Errorf("winner's attempt = %d, want %d", winners[0].Attempt, round.attempt)
			}
			for _, err := range others {
				if !errors.Is(err, job.ErrTransient) {
					t.Errorf("loser got %v, want ErrTransient", err)
				}
			}
		})
	}
}

// A create-only write that commits but whose answer is lost: the client
// retries, gets 412, and the read-back recognises the write as ours.
func TestDroppedResponseIsOurs(t *testing.T) {
	tests := []struct {
		name   string
		object string
	}{
		{"claim", "jobs/j/claim.json"},
		{"image", "images/j/a1-0.png"},
		{"draft", "jobs/j/attempt-1.json"},
		{"record", "jobs/j/result.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			srv.Transport.Inject(storagetest.Fault{Match: storagetest.MatchUpload(tt.object), DropResponse: true, Times: 1})
			s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
			c, _, err := s.Claim(t.Context(), "j", "fp", upload1)
			if err != nil {
				t.Fatalf("Claim: %v", err)
			}
			j := job.Job{Prompt: "p", Model: job.DefaultModel}
			outs, err := s.WriteImages(t.Context(), c, &j, []job.Image{{Data: pngBytes(t, 4, 4)}}, ImageMeta{Model: job.DefaultModel})
			if err != nil {
				t.Fatalf("WriteImages: %v", err)
			}
			rec := job.Record{Outcome: job.Succeeded, Trigger: upload1, Outputs: outs, Attempts: 1}
			if err := s.WriteDraft(t.Context(), c, rec); err != nil {
				t.Fatalf("WriteDraft: %v", err)
			}
			got, raw, err := s.Commit(t.Context(), c, rec)
			if err != nil {
				t.Fatalf("Commit: %v", err)
			}
			if got.Fingerprint != "fp" || len(got.Outputs) != 1 || got.Outputs[0].URI != "gs://out/images/j/a1-0.png" {
				t.Errorf("Commit returned %+v", got)
			}
			if _, injected := srv.Transport.Counts(); injected != 1 {
				t.Errorf("%d faults fired, want 1", injected)
			}
			stored, _ := get(t, srv.Client, outBucket, "jobs/j/result.json")
			if string(stored) != string(raw) {
				t.Errorf("stored record differs from the returned bytes")
			}
			if !exists(t, srv.Client, outBucket, "images/j/a1-0.png") {
				t.Errorf("image was removed")
			}
			// Tidied as a winner: the draft is gone.
			if exists(t, srv.Client, outBucket, "jobs/j/attempt-1.json") {
				t.Errorf("draft left behind: the commit was not taken as ours")
			}
		})
	}
}

func TestJobIDGuard(t *testing.T) {
	srv := newServer(t)
	s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
	for _, id := range []string{"", ".", "..", "../x", "a/b", "a\\b", "x/../../y", strings.Repeat("a", 129)} {
		t.Run(id, func(t *testing.T) {
			if _, _, err := s.Claim(t.Context(), id, "fp", upload1); !errors.Is(err, job.ErrInvalid) {
				t.Errorf("Claim(%q): %v, want ErrInvalid", id, err)
			}
			if _, _, err := s.Commit(t.Context(), nil, job.Record{JobID: id}); !errors.Is(err, job.ErrInvalid) {
				t.Errorf("Commit(%q): %v, want ErrInvalid", id, err)
			}
			if _, err := s.Status(t.Context(), id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Status(%q): %v, want ErrNotFound", id, err)
			}
		})
	}
	c, _, err := s.Claim(t.Context(), "ok", "fp", upload1)
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"../x", "/abs", "jobs/ok", "a/../../b"} {
		j := job.Job{Output: &job.OutputOptions{Prefix: prefix}}
		if _, err := s.WriteImages(t.Context(), c, &j, []job.Image{{Data: pngBytes(t, 2, 2)}}, ImageMeta{}); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("WriteImages with prefix %q: %v, want ErrInvalid", prefix, err)
		}
	}
	it := srv.Client.Bucket(outBucket).Objects(t.Context(), nil)
	for {
		attrs, err := it.Next()
		if err != nil {
			break
		}
		if !strings.HasPrefix(attrs.Name, "jobs/ok/") {
			t.Errorf("object %q written outside jobs/ok/", attrs.Name)
		}
	}
}

// A job this instance queued is claimed without reading its queued claim
// back or looking for a record; should anyone have changed the claim
// meanwhile, the claim's generation-match write fails and both are read
// after all.
func TestClaimOfQueuedJob(t *testing.T) {
	httpTrig := job.Trigger{Kind: job.HTTP, Source: "request/r1"}
	t.Run("queued here", func(t *testing.T) {
		srv := newServer(t)
		s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
		if rec, err := s.Queue(t.Context(), "q", "fp", httpTrig, false); rec != nil || err != nil {
			t.Fatalf("Queue = %v, %v", rec, err)
		}
		before, _ := srv.Transport.Counts()
		c, rec, err := s.Claim(t.Context(), "q", "fp", httpTrig)
		if err != nil || rec != nil || c == nil || c.Attempt != 1 {
			t.Fatalf("Claim = %+v, %v, %v; want attempt 1", c, rec, err)
		}
		if after, _ := srv.Transport.Counts(); after-before != 1 {
			t.Errorf("Claim made %d Cloud Storage requests, want 1 (the claim written)", after-before)
		}
		if st, err := s.Status(t.Context(), "q"); err != nil || st.State != job.Running {
			t.Errorf("Status = %+v, %v; want running", st, err)
		}
	})
	t.Run("taken meanwhile", func(t *testing.T) {
		srv := newServer(t)
		clk := newClock()
		s, other := newStore(srv.Client, clk, "me", job.GeminiAPI), newStore(srv.Client, clk, "other", job.GeminiAPI)
		if _, err := s.Queue(t.Context(), "q", "fp", httpTrig, false); err != nil {
			t.Fatal(err)
		}
		if c, _, err := other.Claim(t.Context(), "q", "fp", httpTrig); err != nil || c == nil {
			t.Fatalf("the other instance's Claim = %v, %v", c, err)
		}
		if c, _, err := s.Claim(t.Context(), "q", "fp", httpTrig); c != nil || !errors.Is(err, job.ErrTransient) {
			t.Fatalf("Claim of a job running elsewhere = %+v, %v; want ErrTransient", c, err)
		}
	})
	t.Run("resubmission of a failed record", func(t *testing.T) {
		srv := newServer(t)
		s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
		r := job.Record{JobID: "q", Fingerprint: "fp", Outcome: job.Failed, Trigger: upload1, Attempts: 2,
			Error: &job.Error{Code: "UNAVAILABLE", Message: "down", Retryable: true}}
		commitRecord(t, s, nil, r)
		if rec, err := s.Queue(t.Context(), "q", "fp", httpTrig, false); rec != nil || err != nil {
			t.Fatalf("Queue of a resubmission = %v, %v; want it queued", rec, err)
		}
		c, rec, err := s.Claim(t.Context(), "q", "fp", httpTrig)
		if err != nil || rec != nil || c == nil || c.PriorCalls != 2 {
			t.Fatalf("Claim = %+v, %v, %v; want a claim counting the record's 2 calls", c, rec, err)
		}
		r.Outcome, r.Error, r.Attempts = job.Succeeded, nil, 3
		if got := commitRecord(t, s, c, r); got.Outcome != job.Succeeded || got.Attempts != 3 {
			t.Errorf("committed %s with %d calls; want the resubmission's record, 3 calls", got.Outcome, got.Attempts)
		}
	})
	t.Run("other work", func(t *testing.T) {
		srv := newServer(t)
		s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
		if _, err := s.Queue(t.Context(), "q", "fp", httpTrig, false); err != nil {
			t.Fatal(err)
		}
		if c, _, err := s.Claim(t.Context(), "q", "fp2", httpTrig); c != nil || !errors.Is(err, job.ErrConflict) {
			t.Fatalf("Claim for other work = %+v, %v; want ErrConflict", c, err)
		}
	})
}
