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
	"sync"
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
	// CreatedAt is when genimg first took the job, across attempts.
	CreatedAt time.Time

	// mu guards lease and gen, which KeepAlive renews from its own
	// goroutine.
	mu      sync.Mutex
	lease   lease
	gen     int64     // generation of claim.json as this attempt wrote it
	renewed time.Time // when this attempt last wrote it (the store's clock)
	drafted bool      // this attempt's draft is written
	// draftTried: a draft of this attempt may exist (its write was tried).
	draftTried bool
	// folder and written are this attempt's image folder and objects.
	folder  string
	written []string
}

// lease is claim.json: the job's state until its record exists. Every
// change is one generation-match write (putLease), so two writers never both
// move a job.
type lease struct {
	JobID string `json:"jobId"`
	// State is queued, held or running ("" in claims written before states:
	// running). Running counts only while ExpiresAt is ahead.
	State job.State `json:"state,omitempty"`
	// Reason says why a held job waits (job.HoldPaused, …).
	Reason string `json:"reason,omitempty"`
	// Since is when the job entered State; CreatedAt when genimg first
	// took it (its age, for GENIMG_MAX_EVENT_AGE, once it is held).
	Since     time.Time `json:"since,omitzero"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// Job is the work itself while it is held, inline images staged: the
	// sweeper requeues it from here (Resume).
	Job *job.Job `json:"job,omitempty"`

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

// ErrTakenOver: another attempt owns the job now; this one must not pay or
// write further. Errors wrapping it wrap job.ErrTransient too.
var ErrTakenOver = errors.New("the claim was taken over")

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
	// A job this instance queued moments ago for the same work (Queue),
	// finding no record, is taken as queued, unread: while claim.json is
	// still that create-only write, no attempt has claimed the job since,
	// so none has committed a record either (the pipeline commits records
	// only under a claim). The first pass's generation-match write is what
	// proves it; should it fail, the next pass reads both as usual. Two
	// requests fewer for a job queued and run by the same instance.
	q, queued := s.queued.take(jobID, s.now())
	queued = queued && q.l.Fingerprint == fingerprint
	// Each pass reads the state and makes one conditional write; a lost race
	// (412 that is not ours) re-reads, which then sees the winner's lease.
	for pass := range 4 {
		unread := queued && pass == 0
		var rec job.Record
		var recGen int64
		err := gcs.ErrObjectNotExist
		if !unread {
			rec, _, recGen, err = s.readRecord(ctx, dir)
		}
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
			JobID: jobID, State: job.Running, Since: now, CreatedAt: now,
			Owner: s.owner, Nonce: randomHex(8), Attempt: 1,
			ClaimedAt: now, ExpiresAt: now.Add(s.cfg.Lease),
			Fingerprint: fingerprint, Trigger: trig, Run: run,
			PriorCalls: priorCalls, PriorCost: priorCost,
		}
		cond := CreateOnly

		cur, curGen, err := q.l, q.gen, error(nil)
		if !unread {
			cur, curGen, err = s.readLease(ctx, dir)
		}
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
			// reclaimed is over, live lease or not; a queued or held job
			// is nobody's.
			if cur.Run == run && cur.running(now) {
				// Retry later: the holder either finishes (the redelivery
				// then finds the record) or its lease runs out.
				return nil, nil, fmt.Errorf("%w: job %s in progress elsewhere (owner %s, attempt %d, lease until %s)",
					job.ErrTransient, jobID, cur.Owner, cur.Attempt, cur.ExpiresAt.Format(time.RFC3339))
			}
			next.Attempt = cur.Attempt + 1
			if cur.Run == run {
				next.PriorCalls = max(next.PriorCalls, cur.PriorCalls+cur.Calls)
				next.PriorCost = max(next.PriorCost, cur.PriorCost+cur.CallCost)
				if !cur.CreatedAt.IsZero() {
					next.CreatedAt = cur.CreatedAt
				}
			}
			cond = IfGeneration(curGen)
		}

		gen, won, err := s.putLease(ctx, dir, next, cond)
		if err != nil {
			return nil, nil, err
		}
		if !won {
			continue
		}
		c := &Claim{JobID: jobID, Attempt: next.Attempt, PriorCalls: next.PriorCalls, PriorCost: next.PriorCost,
			CreatedAt: next.CreatedAt, lease: next, gen: gen, renewed: now}
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

// queuedClaims remembers, for queuedFor, the queued claims an instance
// wrote (Queue) for its own Claim of the job; at most maxQueued at once.
type queuedClaims struct {
	mu sync.Mutex
	m  map[string]queuedClaim
}

type queuedClaim struct {
	l   lease
	gen int64
	at  time.Time
}

const (
	queuedFor = time.Minute
	maxQueued = 4096
)

func (q *queuedClaims) put(jobID string, l lease, gen int64, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.m == nil {
		q.m = map[string]queuedClaim{}
	}
	if len(q.m) >= maxQueued {
		for id, c := range q.m {
			if now.Sub(c.at) > queuedFor {
				delete(q.m, id)
			}
		}
		if len(q.m) >= maxQueued {
			return // run elsewhere: their claims are read
		}
	}
	q.m[jobID] = queuedClaim{l, gen, now}
}

func (q *queuedClaims) take(jobID string, now time.Time) (queuedClaim, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	c, ok := q.m[jobID]
	if ok {
		delete(q.m, jobID)
	}
	return c, ok && now.Sub(c.at) <= queuedFor
}

// reclaimable: a failed, retryable record may be run again by an explicit
// resubmission, which a redelivery (same source) is not.
func reclaimable(rec job.Record, trig job.Trigger) bool {
	return rec.Outcome == job.Failed && rec.Error != nil && rec.Error.Retryable && trig.Source != rec.Trigger.Source
}

// running reports whether the lease is an attempt at work now.
func (l lease) running(now time.Time) bool {
	return (l.State == "" || l.State == job.Running) && now.Before(l.ExpiresAt)
}

// putLease writes claim.json under cond. won is false when the write lost a
// race to another writer (the write primitive reads a 412 back, so the
// client's retry of our own committed write counts as won).
func (s *Store) putLease(ctx context.Context, dir string, l lease, cond Precondition) (gen int64, won bool, err error) {
	data, err := json.Marshal(l)
	if err != nil {
		return 0, false, fmt.Errorf("encoding lease: %w", err)
	}
	a, err := s.output.Put(ctx, dir+claimFile, data, Put{If: cond, ContentType: "application/json",
		Metadata: map[string]string{MetaJob: l.JobID}})
	switch {
	case errors.Is(err, ErrPrecondition):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	return a.Generation, true, nil
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
		// A draft's counts are cumulative over the attempts before it; and
		// calls noted after it was written count too (an attempt that took
		// the job over before the draft landed, and paid again).
		c.PriorCalls = max(c.PriorCalls, rec.Attempts)
		c.PriorCost = max(c.PriorCost, rec.CostUSD)
		rec.Attempts, rec.CostUSD = c.PriorCalls, c.PriorCost
		c.Draft = &rec
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
	c.mu.Lock()
	next := c.lease
	c.mu.Unlock()
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
	c.mu.Lock()
	next := c.lease
	c.mu.Unlock()
	next.ExpiresAt = s.now()
	return s.replaceLease(ctx, c, next)
}

func (s *Store) replaceLease(ctx context.Context, c *Claim, next lease) error {
	dir, err := jobDir(c.JobID)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next.Nonce = randomHex(8)
	gen, won, err := s.putLease(ctx, dir, next, IfGeneration(c.gen))
	if err != nil {
		return err
	}
	if !won {
		// Stop: another attempt owns the job now; this one must not pay or
		// write further.
		return fmt.Errorf("%w: %w: job %s, attempt %d", job.ErrTransient, ErrTakenOver, c.JobID, c.Attempt)
	}
	c.lease, c.gen, c.renewed = next, gen, s.now()
	return nil
}

// A JobStatus is where a job stands (contract 9.1).
type JobStatus struct {
	State job.State
	// Reason says why a held job waits; Since when it entered State.
	Reason string
	Since  time.Time
	// Fingerprint is the work that owns the id ("" when only a batch
	// marker says so).
	Fingerprint string
	// Record and Raw (its stored bytes) are set when the job is done.
	Record *job.Record
	Raw    []byte
}

// Refunded takes back the estimated cost BeginCall noted for calls the
// service refused (an error status: nothing generated, nothing paid); the
// calls stay counted as made. The next lease write carries it.
func (c *Claim) Refunded(usd float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lease.CallCost = max(0, c.lease.CallCost-usd)
}

// KeepAlive renews c's lease every third of its length until stop is
// called, so that an attempt busy with a long answer or a slow write is
// never taken for an abandoned one. A renewal that finds the claim taken
// over stops renewing: the commit decides between the attempts.
func (s *Store) KeepAlive(ctx context.Context, c *Claim) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.renew(ctx, c); err != nil {
				if ctx.Err() == nil {
					slog.WarnContext(ctx, "renewing the lease failed", "jobId", c.JobID, "error", err)
				}
				if errors.Is(err, ErrTakenOver) {
					return
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// renew renews c's lease now. Its generation-match write is also the check
// that the job is still this attempt's: it fails with ErrTakenOver when
// another attempt has taken it over.
func (s *Store) renew(ctx context.Context, c *Claim) error {
	c.mu.Lock()
	next := c.lease
	c.mu.Unlock()
	next.ExpiresAt = s.now().Add(s.cfg.Lease)
	return s.replaceLease(ctx, c, next)
}

// renewedBefore reports whether this attempt last wrote its lease before t.
func (c *Claim) renewedBefore(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.renewed.Before(t)
}

// Status answers GET ?id=: done with the record; else the claim's state
// (running only under a live lease: an expired one is queued, waiting for
// its redelivery), or batched; an error wrapping ErrNotFound for an id
// genimg has never seen. A failed, retryable record being run again by a
// resubmission reads as the new run's state.
func (s *Store) Status(ctx context.Context, jobID string) (JobStatus, error) {
	dir, err := jobDir(jobID)
	if err != nil {
		return JobStatus{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	r, data, gen, err := s.readRecord(ctx, dir)
	switch {
	case err == nil:
		st := JobStatus{State: job.Done, Since: r.Timings.CompletedAt, Fingerprint: r.Fingerprint, Record: &r, Raw: data}
		if r.Outcome == job.Failed && r.Error != nil && r.Error.Retryable {
			if l, _, lerr := s.readLease(ctx, dir); lerr == nil && l.Run == gen && l.Nonce != "" {
				return l.status(s.now()), nil
			}
		}
		return st, nil
	case !errors.Is(err, gcs.ErrObjectNotExist):
		return JobStatus{}, classify(err, "reading "+dir+resultFile)
	}
	l, _, err := s.readLease(ctx, dir)
	switch {
	case err == nil:
		st := l.status(s.now())
		if st.State == job.Queued && l.State == job.Queued {
			// Queued by the front door and since taken into a model batch
			// (an HTTP batch goes through OnMessage to the lane).
			if a, err := s.output.Stat(ctx, BatchMarkerObject(jobID)); err == nil {
				st.State, st.Since = job.Batched, a.Updated
			}
		}
		return st, nil
	case !errors.Is(err, gcs.ErrObjectNotExist):
		return JobStatus{}, classify(err, "reading "+dir+claimFile)
	}
	if a, err := s.output.Stat(ctx, BatchMarkerObject(jobID)); err == nil {
		return JobStatus{State: job.Batched, Since: a.Updated}, nil
	} else if !errors.Is(err, ErrNotFound) {
		return JobStatus{}, err
	}
	return JobStatus{}, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
}

// status is what a claim says of its job at now.
func (l lease) status(now time.Time) JobStatus {
	st := JobStatus{State: l.State, Reason: l.Reason, Since: l.Since, Fingerprint: l.Fingerprint}
	switch {
	case st.State == "":
		st.State, st.Since = job.Running, l.ClaimedAt
		fallthrough
	case st.State == job.Running:
		if !now.Before(l.ExpiresAt) {
			// The attempt is gone; the job waits for its redelivery.
			st.State, st.Since = job.Queued, l.ExpiresAt
		}
	}
	return st
}

// equalJSON reports byte equality, ignoring a trailing newline.
func equalJSON(a, b []byte) bool {
	return bytes.Equal(bytes.TrimRight(a, "\n"), bytes.TrimRight(b, "\n"))
}
