package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/job"
)

// A Claim is one attempt's hold on a job, from Claim to Commit. It is used
// by one goroutine at a time.
type Claim struct {
	JobID string
	// Attempt is this attempt's number, 1-based, across all deliveries.
	Attempt int
	// PriorCalls are model calls already made by earlier attempts (from
	// their drafts and leases); PriorCost is their cost in USD. The record
	// this attempt commits counts them.
	PriorCalls int
	PriorCost  float64
	// Draft is a complete record left by an earlier attempt that crashed
	// after writing its images but before result.json: commit it instead of
	// calling the model again.
	Draft *job.Record

	lease   lease
	gen     int64 // generation of claim.json as this attempt wrote it
	drafted bool  // this attempt's draft is written
	// folder and written are this attempt's image folder and objects.
	folder  string
	written []string
}

// lease is claim.json.
type lease struct {
	JobID       string      `json:"jobId"`
	Owner       string      `json:"owner"`
	Nonce       string      `json:"nonce"`
	Attempt     int         `json:"attempt"`
	ClaimedAt   time.Time   `json:"claimedAt"`
	ExpiresAt   time.Time   `json:"expiresAt"`
	Fingerprint string      `json:"fingerprint"`
	Trigger     job.Trigger `json:"trigger"`
	// Run is the generation of the result.json this claim's run replaces
	// (an explicit resubmission of a retryable failure), or 0.
	Run int64 `json:"run,omitempty"`
	// PriorCalls and PriorCost are what earlier attempts spent.
	PriorCalls int     `json:"priorCalls"`
	PriorCost  float64 `json:"priorCostUsd"`
	// Calls and CallCost are what this attempt has begun to spend
	// (BeginCall), so a takeover counts calls whose answers were lost.
	Calls    int     `json:"calls"`
	CallCost float64 `json:"callCostUsd"`
}

// maxStateBytes bounds reads of claim, draft and record objects.
const maxStateBytes = 4 << 20

// Claim takes the job for this attempt. It answers:
//   - (nil, rec, nil) when a record with the same fingerprint exists: the job
//     is done and the caller republishes rec. Exception: a failed, retryable
//     record met by a trigger with another source (an explicit resubmission,
//     not a redelivery) is reclaimed: a new Claim, and Commit replaces it;
//   - an error wrapping job.ErrConflict for a record or claim of another
//     fingerprint;
//   - an error wrapping job.ErrTransient while another attempt's lease is
//     live (retry later), or when a race for the claim was lost;
//   - a Claim otherwise: created if none existed, or taken over from an
//     expired lease with a generation-match write (one taker wins).
func (s *Store) Claim(ctx context.Context, jobID, fingerprint string, trig job.Trigger) (*Claim, *job.Record, error) {
	dir, err := jobDir(jobID)
	if err != nil {
		return nil, nil, err
	}
	// Each pass reads the state and makes one conditional write; a lost race
	// (412 that is not ours) re-reads, which then sees the winner's lease.
	for range 4 {
		rec, _, recGen, err := s.readRecord(ctx, dir)
		run := int64(0)
		priorCalls, priorCost := 0, 0.0
		switch {
		case errors.Is(err, gcs.ErrObjectNotExist):
		case err != nil:
			return nil, nil, classify(err, "reading "+dir+resultFile)
		default:
			if rec.Fingerprint != "" && fingerprint != "" && rec.Fingerprint != fingerprint {
				return nil, nil, fmt.Errorf("%w: job %s already has a record for different work (fingerprint %s, this job %s)",
					job.ErrConflict, jobID, rec.Fingerprint, fingerprint)
			}
			if !reclaimable(rec, trig) {
				return nil, &rec, nil
			}
			run, priorCalls, priorCost = recGen, rec.Attempts, rec.CostUSD
		}

		now := s.now()
		next := lease{
			JobID: jobID, Owner: s.owner, Nonce: randomHex(8), Attempt: 1,
			ClaimedAt: now, ExpiresAt: now.Add(s.cfg.Lease),
			Fingerprint: fingerprint, Trigger: trig, Run: run,
			PriorCalls: priorCalls, PriorCost: priorCost,
		}
		cond := gcs.Conditions{DoesNotExist: true}

		cur, curGen, err := s.readLease(ctx, dir)
		switch {
		case errors.Is(err, gcs.ErrObjectNotExist):
		case err != nil:
			return nil, nil, classify(err, "reading "+dir+claimFile)
		default:
			if cur.Nonce == "" { // unreadable: nobody's, take it over
				cur.Fingerprint, cur.Run = fingerprint, run
			}
			if cur.Fingerprint != fingerprint {
				return nil, nil, fmt.Errorf("%w: job %s is claimed for different work (fingerprint %s, this job %s)",
					job.ErrConflict, jobID, cur.Fingerprint, fingerprint)
			}
			// A claim of the current run with a live lease: someone is at
			// work. A claim left by the run whose record is being
			// reclaimed is over, live lease or not.
			if cur.Run == run && now.Before(cur.ExpiresAt) {
				// Retry later: the holder either finishes (the redelivery
				// then finds the record) or its lease runs out.
				return nil, nil, fmt.Errorf("%w: job %s in progress elsewhere (owner %s, attempt %d, lease until %s)",
					job.ErrTransient, jobID, cur.Owner, cur.Attempt, cur.ExpiresAt.Format(time.RFC3339))
			}
			next.Attempt = cur.Attempt + 1
			if cur.Run == run {
				next.PriorCalls = max(next.PriorCalls, cur.PriorCalls+cur.Calls)
				next.PriorCost = max(next.PriorCost, cur.PriorCost+cur.CallCost)
			}
			cond = gcs.Conditions{GenerationMatch: curGen}
		}

		gen, won, err := s.putLease(ctx, dir, next, cond)
		if err != nil {
			return nil, nil, err
		}
		if !won {
			continue
		}
		c := &Claim{JobID: jobID, Attempt: next.Attempt, PriorCalls: next.PriorCalls, PriorCost: next.PriorCost, lease: next, gen: gen}
		if next.Attempt > 1 {
			if err := s.findDraft(ctx, dir, c); err != nil {
				return nil, nil, err
			}
		}
		slog.InfoContext(ctx, "job claimed", "jobId", jobID, "attempt", c.Attempt, "owner", s.owner,
			"priorCalls", c.PriorCalls, "draft", c.Draft != nil)
		return c, nil, nil
	}
	// Retry later: the claim changed hands under every pass.
	return nil, nil, fmt.Errorf("%w: job %s: claim contended, try again", job.ErrTransient, jobID)
}

// reclaimable: a failed, retryable record may be run again by an explicit
// resubmission, which a redelivery (same source) is not.
func reclaimable(rec job.Record, trig job.Trigger) bool {
	return rec.Outcome == job.Failed && rec.Error != nil && rec.Error.Retryable && trig.Source != rec.Trigger.Source
}

// putLease writes claim.json under cond. won is false when the write lost a
// race; a 412 whose stored lease carries our nonce is our own write (the
// client retried it after a first try that had committed) and counts as won.
func (s *Store) putLease(ctx context.Context, dir string, l lease, cond gcs.Conditions) (gen int64, won bool, err error) {
	data, err := json.Marshal(l)
	if err != nil {
		return 0, false, fmt.Errorf("encoding lease: %w", err)
	}
	attrs, err := s.write(ctx, s.cfg.OutputBucket, dir+claimFile, data, writeOpts{
		contentType: "application/json",
		metadata:    map[string]string{MetaJob: l.JobID, MetaGeneratedBy: GeneratedBy},
		cond:        &cond,
	})
	if err == nil {
		return attrs.Generation, true, nil
	}
	if !isPrecondition(err) {
		return 0, false, classify(err, "writing "+dir+claimFile)
	}
	got, gotGen, rerr := s.readLease(ctx, dir)
	if rerr != nil && !errors.Is(rerr, gcs.ErrObjectNotExist) {
		return 0, false, classify(rerr, "reading back "+dir+claimFile)
	}
	if rerr == nil && got.Nonce == l.Nonce {
		return gotGen, true, nil
	}
	return 0, false, nil
}

func (s *Store) readLease(ctx context.Context, dir string) (lease, int64, error) {
	data, attrs, err := s.read(ctx, s.cfg.OutputBucket, dir+claimFile, maxStateBytes)
	if err != nil {
		return lease{}, 0, err
	}
	var l lease
	if err := json.Unmarshal(data, &l); err != nil {
		// A claim genimg cannot read is not a lease anyone holds; treat it
		// as expired so the job is not stuck behind it.
		slog.WarnContext(ctx, "unreadable claim", "object", dir+claimFile, "error", err)
		// Claim sees the empty nonce and takes it over.
		return lease{}, attrs.Generation, nil
	}
	return l, attrs.Generation, nil
}

// readRecord reads result.json: the record, its bytes and its generation.
func (s *Store) readRecord(ctx context.Context, dir string) (job.Record, []byte, int64, error) {
	data, attrs, err := s.read(ctx, s.cfg.OutputBucket, dir+resultFile, maxStateBytes)
	if err != nil {
		return job.Record{}, nil, 0, err
	}
	var rec job.Record
	if err := json.Unmarshal(data, &rec); err != nil {
		return job.Record{}, nil, 0, fmt.Errorf("%w: %s%s is not a record: %v", job.ErrPermanent, dir, resultFile, err)
	}
	return rec, data, attrs.Generation, nil
}

// findDraft gives c the latest draft left by an earlier attempt of the same
// run, and counts its calls and cost.
func (s *Store) findDraft(ctx context.Context, dir string, c *Claim) error {
	it := s.client.Bucket(s.cfg.OutputBucket).Objects(ctx, &gcs.Query{Prefix: dir + "attempt-", Delimiter: "/"})
	type found struct {
		n    int
		name string
	}
	var drafts []found
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return classify(err, "listing drafts in "+dir)
		}
		n, ok := draftAttempt(dir, attrs.Name)
		if !ok || n >= c.Attempt || attrs.Metadata[metaRun] != strconv.FormatInt(c.lease.Run, 10) {
			continue
		}
		drafts = append(drafts, found{n, attrs.Name})
	}
	sort.Slice(drafts, func(i, j int) bool { return drafts[i].n > drafts[j].n })
	for _, d := range drafts {
		data, _, err := s.read(ctx, s.cfg.OutputBucket, d.name, maxStateBytes)
		if errors.Is(err, gcs.ErrObjectNotExist) {
			continue
		}
		if err != nil {
			return classify(err, "reading draft "+d.name)
		}
		var rec job.Record
		if err := json.Unmarshal(data, &rec); err != nil || rec.JobID != c.JobID ||
			(rec.Fingerprint != "" && rec.Fingerprint != c.lease.Fingerprint) {
			slog.WarnContext(ctx, "draft ignored", "object", d.name)
			continue
		}
		c.Draft = &rec
		// A draft's counts are cumulative over the attempts before it.
		c.PriorCalls = max(c.PriorCalls, rec.Attempts)
		c.PriorCost = max(c.PriorCost, rec.CostUSD)
		return nil
	}
	return nil
}

func draftName(dir string, attempt int) string {
	return dir + "attempt-" + strconv.Itoa(attempt) + ".json"
}

func draftAttempt(dir, name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, dir+"attempt-")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, ".json")
	n, err := strconv.Atoi(num)
	return n, ok && err == nil && n > 0
}

// BeginCall notes on the claim, before a paid model call, that the call is
// being made and what it is estimated to cost, and renews the lease. A
// takeover after a crash then counts the call even if its answer was lost.
// It fails with job.ErrTransient when the claim was taken over (this
// attempt is a zombie and must not pay): the generation-match write is the
// check.
func (s *Store) BeginCall(ctx context.Context, c *Claim, estimatedCostUSD float64) error {
	next := c.lease
	next.Calls++
	next.CallCost += estimatedCostUSD
	next.ExpiresAt = s.now().Add(s.cfg.Lease)
	return s.replaceLease(ctx, c, next)
}

// Release drops a claim's lease after a transient failure, so that the
// redelivery takes the job over at once instead of waiting out the lease.
// The claim stays (with its counts); only its expiry moves to now. It is
// optional: without it the redelivery waits for the lease to expire. A
// claim already taken over is left alone.
func (s *Store) Release(ctx context.Context, c *Claim) error {
	next := c.lease
	next.ExpiresAt = s.now()
	return s.replaceLease(ctx, c, next)
}

func (s *Store) replaceLease(ctx context.Context, c *Claim, next lease) error {
	dir, err := jobDir(c.JobID)
	if err != nil {
		return err
	}
	next.Nonce = randomHex(8)
	gen, won, err := s.putLease(ctx, dir, next, gcs.Conditions{GenerationMatch: c.gen})
	if err != nil {
		return err
	}
	if !won {
		// Stop: another attempt owns the job now; this one must not pay or
		// write further.
		return fmt.Errorf("%w: job %s: claim of attempt %d was taken over", job.ErrTransient, c.JobID, c.Attempt)
	}
	c.lease, c.gen = next, gen
	return nil
}

// Status answers GET ?id=: the record and its stored bytes when the job is
// done; running when only a claim exists (or a resubmission is rerunning a
// failed job); an error wrapping ErrNotFound for an unknown id.
func (s *Store) Status(ctx context.Context, jobID string) (rec *job.Record, raw []byte, running bool, err error) {
	dir, err := jobDir(jobID)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	r, data, gen, err := s.readRecord(ctx, dir)
	switch {
	case err == nil:
		if r.Outcome == job.Failed && r.Error != nil && r.Error.Retryable {
			if l, _, lerr := s.readLease(ctx, dir); lerr == nil && l.Run == gen && s.now().Before(l.ExpiresAt) {
				return nil, nil, true, nil
			}
		}
		return &r, data, false, nil
	case !errors.Is(err, gcs.ErrObjectNotExist):
		return nil, nil, false, classify(err, "reading "+dir+resultFile)
	}
	_, _, err = s.readLease(ctx, dir)
	switch {
	case err == nil:
		return nil, nil, true, nil
	case errors.Is(err, gcs.ErrObjectNotExist):
		return nil, nil, false, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	default:
		return nil, nil, false, classify(err, "reading "+dir+claimFile)
	}
}

// equalJSON reports byte equality, ignoring a trailing newline.
func equalJSON(a, b []byte) bool {
	return bytes.Equal(bytes.TrimRight(a, "\n"), bytes.TrimRight(b, "\n"))
}
