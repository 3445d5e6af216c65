package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// Queue notes a job the front door has taken as queued, before it is put
// on the requests topic: from here on the id belongs to this work. It
// answers the job's record when the job is already done; an error wrapping
// job.ErrConflict when the id holds other work (a claim, a record or a
// queued job of another fingerprint). A job queued or running for the same
// work is left as it is: the caller's retry changes nothing.
//
// fresh says the id was just made up for this job: no record can exist,
// and the read of one is skipped.
func (s *Store) Queue(ctx context.Context, jobID, fingerprint string, trig job.Trigger, fresh bool) (*job.Record, error) {
	dir, err := jobDir(jobID)
	if err != nil {
		return nil, err
	}
	var rec job.Record
	if !fresh {
		rec, _, _, err = s.readRecord(ctx, dir)
	} else {
		err = gcs.ErrObjectNotExist
	}
	noRecord := errors.Is(err, gcs.ErrObjectNotExist)
	switch {
	case noRecord:
	case err != nil:
		return nil, classify(err, "reading "+dir+resultFile)
	case rec.Fingerprint != "" && rec.Fingerprint != fingerprint:
		return nil, conflict(jobID, "a record", rec.Fingerprint, fingerprint)
	case !reclaimable(rec, trig):
		return &rec, nil
	}
	now := s.now()
	l := lease{JobID: jobID, State: job.Queued, Since: now, CreatedAt: now, Nonce: randomHex(8),
		Fingerprint: fingerprint, Trigger: trig}
	gen, won, err := s.putLease(ctx, dir, l, CreateOnly)
	if err != nil || won {
		if won && noRecord {
			// For this instance's Claim of the job (not a reclaimed
			// record's: its claim must name the record it replaces).
			s.queued.put(jobID, l, gen, now)
		}
		return nil, err
	}
	cur, _, err := s.readLease(ctx, dir)
	switch {
	case errors.Is(err, gcs.ErrObjectNotExist):
		return nil, fmt.Errorf("%w: job %s: its claim changed while queueing; retry", job.ErrTransient, jobID)
	case err != nil:
		return nil, classify(err, "reading "+dir+claimFile)
	case cur.Nonce != "" && cur.Fingerprint != fingerprint:
		return nil, conflict(jobID, "a claim", cur.Fingerprint, fingerprint)
	}
	return nil, nil
}

func conflict(jobID, what, theirs, ours string) error {
	return fmt.Errorf("%w: job id %s already holds different work (%s of fingerprint %s; this job %s); use a new id",
		job.ErrConflict, jobID, what, theirs, ours)
}

// heldObject marks a held job for the sweeper (Held, Unmark): listing
// held/ is cheap where listing every job would not be.
func heldObject(id string) string { return HeldPrefix + id }

// Hold parks a claimed job that genimg itself must wait for (reason: one of
// job.HoldPaused, HoldBudget, HoldRate, HoldQuota): the job — j, with
// inline images already staged, and its trigger — goes into the claim,
// which moves from running to held, and a marker tells the sweeper. created
// is when the job was first delivered: its age runs from there. The
// delivery can then be acknowledged: nothing is lost, and the platform's
// retries are not spent waiting. The marker is written first, so a crash in
// between leaves at worst a marker the sweeper drops.
func (s *Store) Hold(ctx context.Context, c *Claim, reason string, j job.Job, created time.Time) error {
	if _, err := jobDir(c.JobID); err != nil {
		return err
	}
	if _, err := s.output.Put(ctx, heldObject(c.JobID), []byte(reason), Put{If: Overwrite, ContentType: "text/plain",
		Metadata: map[string]string{MetaJob: c.JobID}}); err != nil {
		return err
	}
	next := c.lease
	now := s.now()
	next.State, next.Reason, next.Since, next.ExpiresAt = job.Held, reason, now, now
	next.Job = &j
	if !created.IsZero() && created.Before(next.CreatedAt) {
		next.CreatedAt = created
	}
	if err := s.replaceLease(ctx, c, next); err != nil {
		return err
	}
	slog.InfoContext(ctx, "job held", "jobId", c.JobID, "reason", reason)
	return nil
}

// A HeldJob is a parked job as the sweeper finds it.
type HeldJob struct {
	Job     job.Job
	Trigger job.Trigger
	Reason  string
	// Since is when it was held; CreatedAt when genimg first took it.
	Since, CreatedAt time.Time
}

// Held lists the jobs parked by Hold. found is false for a marker whose
// job is no longer held (it ran, or was never held): Unmark it.
func (s *Store) Held(ctx context.Context, fn func(id string, h HeldJob, found bool) error) error {
	return s.output.List(ctx, HeldPrefix, "/", func(a Attrs) error {
		id := strings.TrimPrefix(a.Name, HeldPrefix)
		dir, err := jobDir(id)
		if err != nil {
			return nil // not a marker of ours
		}
		l, _, err := s.readLease(ctx, dir)
		switch {
		case errors.Is(err, gcs.ErrObjectNotExist):
			return fn(id, HeldJob{}, false)
		case err != nil:
			return classify(err, "reading "+dir+claimFile)
		case l.State != job.Held || l.Job == nil:
			return fn(id, HeldJob{}, false)
		}
		return fn(id, HeldJob{Job: *l.Job, Trigger: l.Trigger, Reason: l.Reason, Since: l.Since, CreatedAt: l.CreatedAt}, true)
	})
}

// Unmark drops a held job's marker: after it is requeued, or when it is
// not held any more.
func (s *Store) Unmark(ctx context.Context, id string) error {
	return s.output.Delete(ctx, heldObject(id), 0)
}
