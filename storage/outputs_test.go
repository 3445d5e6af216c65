package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestOutputsRoundTrip(t *testing.T) {
	a, b := pngBytes(t, 32, 16), pngBytes(t, 8, 24)
	meta := ImageMeta{Model: job.DefaultModel, PromptSHA256: job.PromptHash("p"), Source: "gs://in/a.png#1"}
	tests := []struct {
		name   string
		prefix string
		want   []job.StoredImage
	}{
		{"configured prefix", "", []job.StoredImage{
			{URI: "gs://out/images/rt/a1-0.png", MIMEType: "image/png", Bytes: int64(len(a)), Width: 32, Height: 16, SHA256: sha(a)},
			{URI: "gs://out/images/rt/a1-1.png", MIMEType: "image/png", Bytes: int64(len(b)), Width: 8, Height: 24, SHA256: sha(b)},
		}},
		{"job prefix", "custom/dir", []job.StoredImage{
			{URI: "gs://out/custom/dir/rt/a1-0.png", MIMEType: "image/png", Bytes: int64(len(a)), Width: 32, Height: 16, SHA256: sha(a)},
			{URI: "gs://out/custom/dir/rt/a1-1.png", MIMEType: "image/png", Bytes: int64(len(b)), Width: 8, Height: 24, SHA256: sha(b)},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
			if _, err := s.Status(t.Context(), "rt"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Status of an unknown job: %v, want ErrNotFound", err)
			}
			c, _, err := s.Claim(t.Context(), "rt", "fp", upload1)
			if err != nil {
				t.Fatal(err)
			}
			if st, err := s.Status(t.Context(), "rt"); st.State != job.Running || err != nil {
				t.Errorf("Status while claimed: %+v, %v; want running", st, err)
			}
			j := job.Job{Prompt: "p", Model: job.DefaultModel}
			if tt.prefix != "" {
				j.Output = &job.OutputOptions{Prefix: tt.prefix}
			}
			outs, err := s.WriteImages(t.Context(), c, &j, []job.Image{{Data: a, MIMEType: "image/png"}, {Data: b}}, meta)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, outs); diff != "" {
				t.Errorf("stored images (-want +got):\n%s", diff)
			}
			for i, o := range outs {
				_, name, _ := job.ParseGCS(o.URI)
				data, attrs := get(t, srv.Client, outBucket, name)
				if sha(data) != o.SHA256 || attrs.ContentType != "image/png" {
					t.Errorf("image %d: sha %s, type %q", i, sha(data), attrs.ContentType)
				}
				wantMeta := map[string]string{MetaJob: "rt", MetaSource: meta.Source, MetaModel: meta.Model,
					MetaPromptSHA256: meta.PromptSHA256, MetaGeneratedBy: GeneratedBy, "genimg-attempt": "1"}
				if diff := cmp.Diff(wantMeta, attrs.Metadata); diff != "" {
					t.Errorf("image %d metadata (-want +got):\n%s", i, diff)
				}
			}
			rec := job.Record{Outcome: job.Succeeded, Trigger: upload1, Outputs: outs, Attempts: 1, CostUSD: 0.039,
				Model: job.DefaultModel, Labels: map[string]string{"k": "v"},
				Timings: job.Timings{CreatedAt: time.Unix(1, 0).UTC(), CompletedAt: time.Unix(2, 0).UTC()}}
			got, raw, err := s.Commit(t.Context(), c, rec)
			if err != nil {
				t.Fatal(err)
			}
			rec.JobID, rec.Fingerprint = "rt", "fp"
			if diff := cmp.Diff(rec, got); diff != "" {
				t.Errorf("Commit record (-want +got):\n%s", diff)
			}
			var decoded job.Record
			if err := json.Unmarshal(raw, &decoded); err != nil || !cmp.Equal(rec, decoded) {
				t.Errorf("returned bytes do not decode to the record: %v", err)
			}
			stored, attrs := get(t, srv.Client, outBucket, "jobs/rt/result.json")
			if string(stored) != string(raw) || attrs.ContentType != "application/json" || !IsGenerated(attrs.Metadata) || attrs.Metadata[MetaJob] != "rt" {
				t.Errorf("result.json: type %q, metadata %v, bytes equal %v", attrs.ContentType, attrs.Metadata, string(stored) == string(raw))
			}
			st, err := s.Status(t.Context(), "rt")
			if err != nil || st.State != job.Done || string(st.Raw) != string(raw) || !cmp.Equal(rec, *st.Record) {
				t.Errorf("Status = %+v, %v", st, err)
			}
			// A redelivery finds the record.
			if c2, r2, err := s.Claim(t.Context(), "rt", "fp", upload1); c2 != nil || err != nil || !cmp.Equal(rec, *r2) {
				t.Errorf("redelivery Claim = %v, %v, %v", c2, r2, err)
			}
		})
	}
}

func TestIsGenerated(t *testing.T) {
	tests := []struct {
		md   map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"prompt": "x"}, false},
		{map[string]string{MetaGeneratedBy: "someone"}, false},
		{map[string]string{MetaGeneratedBy: GeneratedBy}, true},
	}
	for _, tt := range tests {
		if got := IsGenerated(tt.md); got != tt.want {
			t.Errorf("IsGenerated(%v) = %v, want %v", tt.md, got, tt.want)
		}
	}
}

// runAttempt plays the pipeline for one attempt up to (not including)
// Commit: images written, draft written if draft is set. It counts as one
// paid model call costing $0.039.
func runAttempt(t *testing.T, s *Store, c *Claim, draft bool) job.Record {
	t.Helper()
	if err := s.BeginCall(t.Context(), c, 0.039); err != nil {
		t.Fatalf("BeginCall: %v", err)
	}
	j := job.Job{Prompt: "p", Model: job.DefaultModel}
	outs, err := s.WriteImages(t.Context(), c, &j, []job.Image{{Data: pngBytes(t, 4+c.Attempt, 4)}}, ImageMeta{Model: job.DefaultModel})
	if err != nil {
		t.Fatalf("WriteImages: %v", err)
	}
	rec := job.Record{Outcome: job.Succeeded, Trigger: upload1, Outputs: outs,
		Attempts: c.PriorCalls + 1, CostUSD: c.PriorCost + 0.039, ResponseID: "resp-" + string(rune('0'+c.Attempt))}
	if draft {
		if err := s.WriteDraft(t.Context(), c, rec); err != nil {
			t.Fatalf("WriteDraft: %v", err)
		}
	}
	return rec
}

// A holder that crashes after its images (and draft) but before the record:
// the next attempt gets the draft and commits it without a model call.
func TestCrashAfterImages(t *testing.T) {
	srv := newServer(t)
	clk := newClock()
	s := newStore(srv.Client, clk, "me", job.GeminiAPI)
	c1, _, _ := s.Claim(t.Context(), "crash", "fp", upload1)
	draft := runAttempt(t, s, c1, true)
	// Crash. The lease runs out; the redelivery arrives.
	clk.advance(2 * time.Minute)
	c2, _, err := s.Claim(t.Context(), "crash", "fp", upload1)
	if err != nil || c2 == nil {
		t.Fatalf("Claim after crash = %v, %v", c2, err)
	}
	draft.JobID, draft.Fingerprint = "crash", "fp"
	if diff := cmp.Diff(&draft, c2.Draft); diff != "" {
		t.Fatalf("Draft (-want +got):\n%s", diff)
	}
	if c2.Attempt != 2 || c2.PriorCalls != 1 || c2.PriorCost != 0.039 {
		t.Errorf("attempt %d, prior calls %d, cost %v; want 2, 1, 0.039", c2.Attempt, c2.PriorCalls, c2.PriorCost)
	}
	got := commitRecord(t, s, c2, *c2.Draft)
	if got.Attempts != 1 || got.Outputs[0].URI != "gs://out/images/crash/a1-0.png" || !exists(t, srv.Client, outBucket, "images/crash/a1-0.png") {
		t.Errorf("committed %+v", got)
	}
}

// A first attempt whose record goes in at once writes nothing else: no
// draft, and so no draft to delete — one request for the commit.
func TestCommitIsOneRequest(t *testing.T) {
	srv := newServer(t)
	s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
	c, _, err := s.Claim(t.Context(), "one", "fp", upload1)
	if err != nil {
		t.Fatal(err)
	}
	rec := runAttempt(t, s, c, false)
	before, _ := srv.Transport.Counts()
	if _, _, err := s.Commit(t.Context(), c, rec); err != nil {
		t.Fatal(err)
	}
	if after, _ := srv.Transport.Counts(); after-before != 1 {
		t.Errorf("Commit made %d Cloud Storage requests, want 1 (the record)", after-before)
	}
	if exists(t, srv.Client, outBucket, "jobs/one/attempt-1.json") {
		t.Error("a draft was left behind")
	}
}

// A record Cloud Storage refuses leaves the answer in a draft: should the
// instance die then, the attempt that takes the job over commits it without
// a model call; should the write go in on a later try, the draft goes.
func TestRefusedRecordKeepsDraft(t *testing.T) {
	for _, retry := range []bool{false, true} {
		t.Run(map[bool]string{false: "crash", true: "retry"}[retry], func(t *testing.T) {
			srv := newServer(t)
			clk := newClock()
			s := newStore(srv.Client, clk, "me", job.GeminiAPI)
			c1, _, err := s.Claim(t.Context(), "refused", "fp", upload1)
			if err != nil {
				t.Fatal(err)
			}
			rec := runAttempt(t, s, c1, false)
			srv.Transport.Inject(storagetest.Fault{Status: 403, Times: 1, Match: storagetest.MatchUpload("jobs/refused/result.json")})
			if _, _, err := s.Commit(t.Context(), c1, rec); !errors.Is(err, job.ErrTransient) {
				t.Fatalf("Commit with the record refused: %v, want a transient error", err)
			}
			if !exists(t, srv.Client, outBucket, "jobs/refused/attempt-1.json") {
				t.Fatal("no draft after the record was refused")
			}
			if retry {
				if _, _, err := s.Commit(t.Context(), c1, rec); err != nil {
					t.Fatalf("Commit again: %v", err)
				}
				if exists(t, srv.Client, outBucket, "jobs/refused/attempt-1.json") {
					t.Error("the draft was left behind after the record went in")
				}
				return
			}
			clk.advance(2 * time.Minute)
			c2, _, err := s.Claim(t.Context(), "refused", "fp", upload1)
			if err != nil || c2 == nil || c2.Draft == nil {
				t.Fatalf("Claim after the crash = %+v, %v; want a claim with the draft", c2, err)
			}
			got := commitRecord(t, s, c2, *c2.Draft)
			if got.Attempts != 1 || got.ResponseID != rec.ResponseID {
				t.Errorf("committed %d calls, response %q; want the first attempt's answer, 1 call", got.Attempts, got.ResponseID)
			}
		})
	}
}

// A draft that lands after its attempt was taken over — its record
// refused, and the taker paid again — is committed by the attempt after
// them counting both calls: the draft's answer, everyone's calls.
func TestLateDraftCountsLaterCalls(t *testing.T) {
	srv := newServer(t)
	clk := newClock()
	s := newStore(srv.Client, clk, "me", job.GeminiAPI)
	c1, _, _ := s.Claim(t.Context(), "late", "fp", upload1)
	rec1 := runAttempt(t, s, c1, false) // paid; its record is refused
	clk.advance(2 * time.Minute)
	c2, _, err := s.Claim(t.Context(), "late", "fp", upload1)
	if err != nil || c2 == nil || c2.Draft != nil {
		t.Fatalf("takeover = %+v, %v; want a claim without a draft", c2, err)
	}
	runAttempt(t, s, c2, false) // paid again; then it dies
	if err := s.WriteDraft(t.Context(), c1, rec1); err != nil {
		t.Fatal(err) // the first attempt's draft lands late
	}
	clk.advance(2 * time.Minute)
	c3, _, err := s.Claim(t.Context(), "late", "fp", upload1)
	if err != nil || c3 == nil || c3.Draft == nil {
		t.Fatalf("Claim = %+v, %v; want a claim with the first attempt's draft", c3, err)
	}
	got := commitRecord(t, s, c3, *c3.Draft)
	if got.Attempts != 2 || got.CostUSD != 0.078 || got.ResponseID != rec1.ResponseID {
		t.Errorf("committed %d calls, $%v, response %q; want 2 calls, $0.078, the first attempt's answer", got.Attempts, got.CostUSD, got.ResponseID)
	}
}

// A holder that crashes after its images but before any draft: the next
// attempt pays again (counted, via the lease's call count) and the orphaned
// images are removed when its record wins.
func TestCrashBeforeDraft(t *testing.T) {
	srv := newServer(t)
	clk := newClock()
	s := newStore(srv.Client, clk, "me", job.GeminiAPI)
	c1, _, _ := s.Claim(t.Context(), "crash", "fp", upload1)
	runAttempt(t, s, c1, false)
	clk.advance(2 * time.Minute)
	c2, _, err := s.Claim(t.Context(), "crash", "fp", upload1)
	if err != nil || c2 == nil || c2.Draft != nil {
		t.Fatalf("Claim after crash = %+v, %v; want a claim without draft", c2, err)
	}
	rec := runAttempt(t, s, c2, true)
	got := commitRecord(t, s, c2, rec)
	if got.Attempts != 2 || got.CostUSD != 0.078 {
		t.Errorf("record counts %d calls, $%v; want 2, $0.078", got.Attempts, got.CostUSD)
	}
	if exists(t, srv.Client, outBucket, "images/crash/a1-0.png") || !exists(t, srv.Client, outBucket, "images/crash/a2-0.png") {
		t.Errorf("want a1 image removed, a2 kept")
	}
}

// A zombie — an attempt whose lease ran out and was taken over — never
// commits, whichever commits first: the taker, which paid again, commits
// the record (counting both calls), and the zombie's images go with its
// commit.
func TestZombieAttempt(t *testing.T) {
	for _, zombieFirst := range []bool{false, true} {
		name := map[bool]string{false: "taker commits first", true: "zombie commits first"}[zombieFirst]
		t.Run(name, func(t *testing.T) {
			srv := newServer(t)
			clk := newClock()
			otherClient, _ := srv.NewClient(t)
			zs := newStore(otherClient, clk, "zombie", job.GeminiAPI)
			s := newStore(srv.Client, clk, "taker", job.GeminiAPI)
			zc, _, _ := zs.Claim(t.Context(), "z", "fp", upload1)
			clk.advance(2 * time.Minute)
			tc, _, err := s.Claim(t.Context(), "z", "fp", upload1)
			if err != nil {
				t.Fatal(err)
			}
			if err := zs.BeginCall(t.Context(), zc, 0.039); !errors.Is(err, job.ErrTransient) {
				t.Errorf("zombie BeginCall: %v, want ErrTransient (claim taken over)", err)
			}
			// The zombie had already called the model: it writes images.
			j := job.Job{Prompt: "p", Model: job.DefaultModel}
			zOuts, err := zs.WriteImages(t.Context(), zc, &j, []job.Image{{Data: pngBytes(t, 5, 5)}}, ImageMeta{})
			if err != nil {
				t.Fatal(err)
			}
			tRec := runAttempt(t, s, tc, true)
			zRec := job.Record{Outcome: job.Succeeded, Trigger: upload1, Outputs: zOuts, Attempts: 1, CostUSD: 0.039}

			zombie := func() {
				t.Helper()
				if got, _, err := zs.Commit(t.Context(), zc, zRec); !errors.Is(err, job.ErrTransient) {
					t.Errorf("zombie Commit = %+v, %v; want ErrTransient (taken over)", got.Outcome, err)
				}
			}
			if zombieFirst {
				zombie()
				if exists(t, srv.Client, outBucket, "jobs/z/result.json") {
					t.Fatal("the zombie's Commit wrote a record")
				}
			}
			won := commitRecord(t, s, tc, tRec)
			if !zombieFirst {
				zombie()
			}
			raw, _ := get(t, srv.Client, outBucket, "jobs/z/result.json")
			var stored job.Record
			if err := json.Unmarshal(raw, &stored); err != nil {
				t.Fatal(err)
			}
			if stored.ResponseID != won.ResponseID || stored.Attempts != won.Attempts {
				t.Errorf("stored record %s (%d calls), want the taker's %s (%d)", stored.ResponseID, stored.Attempts, won.ResponseID, won.Attempts)
			}
			for _, o := range won.Outputs {
				_, name, _ := job.ParseGCS(o.URI)
				if !exists(t, srv.Client, outBucket, name) {
					t.Errorf("winner's image %s missing", o.URI)
				}
			}
			for _, o := range zRec.Outputs {
				_, name, _ := job.ParseGCS(o.URI)
				if exists(t, srv.Client, outBucket, name) {
					t.Errorf("zombie's image %s left behind", o.URI)
				}
			}
		})
	}
}

// 429/503 from storage in the middle of a job: the error is transient, and
// the redelivery finishes the job without another model call.
func TestTransientFaultsMidJob(t *testing.T) {
	tests := []struct {
		name   string
		status int
		object string
	}{
		{"503 on the record", 503, "jobs/f/result.json"},
		{"429 on the record", 429, "jobs/f/result.json"},
		{"503 on an image", 503, "images/f/a1-0.png"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			clk := newClock()
			s := newStore(srv.Client, clk, "me", job.GeminiAPI)
			c, _, _ := s.Claim(t.Context(), "f", "fp", upload1)
			srv.Transport.Inject(storagetest.Fault{Match: storagetest.MatchObject(tt.object), Status: tt.status})
			err := func() error {
				j := job.Job{Prompt: "p", Model: job.DefaultModel}
				outs, err := s.WriteImages(t.Context(), c, &j, []job.Image{{Data: pngBytes(t, 4, 4)}}, ImageMeta{})
				if err != nil {
					return err
				}
				_, _, err = s.Commit(t.Context(), c, job.Record{Outcome: job.Succeeded, Trigger: upload1, Outputs: outs, Attempts: 1})
				return err
			}()
			if !errors.Is(err, job.ErrTransient) || !job.Retryable(err) {
				t.Fatalf("mid-job error %v, want ErrTransient", err)
			}
			if err := s.Release(t.Context(), c); err != nil {
				t.Fatalf("Release: %v", err)
			}
			srv.Transport.Clear()

			// Redelivery.
			c2, _, err := s.Claim(t.Context(), "f", "fp", upload1)
			if err != nil || c2 == nil {
				t.Fatalf("redelivery Claim = %v, %v", c2, err)
			}
			rec := job.Record{Outcome: job.Succeeded, Trigger: upload1}
			if c2.Draft != nil {
				rec = *c2.Draft // the images were written: no model call
			} else {
				rec = runAttempt(t, s, c2, true)
			}
			got := commitRecord(t, s, c2, rec)
			if len(got.Outputs) != 1 {
				t.Fatalf("record %+v", got)
			}
			if st, err := s.Status(t.Context(), "f"); err != nil || st.Record == nil || st.Record.Outcome != job.Succeeded {
				t.Errorf("Status = %+v, %v", st, err)
			}
			// The draft path is taken exactly when the images were stored.
			if wantDraft := tt.object == "jobs/f/result.json"; (c2.Draft != nil) != wantDraft {
				t.Errorf("redelivery draft = %v, want %v", c2.Draft != nil, wantDraft)
			}
		})
	}
}
