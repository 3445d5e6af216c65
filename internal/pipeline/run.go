package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/trigger"
)

// ErrIgnored marks a delivery that is not a job: acknowledged, no record.
var ErrIgnored = errors.New("not a job")

// Run runs one delivery to its end: claim → read inputs → model →
// write outputs → write record → publish event. It is the same for every
// trigger. It returns the record, published; or a transient error, for
// the platform to redeliver; or ErrIgnored. A permanent failure is a
// failed record, not an error.
func (s *Service) Run(ctx context.Context, d trigger.Delivery) (job.Record, error) {
	ctx = WithJobID(ctx, d.ID)
	if d.Ignore != "" {
		slog.InfoContext(ctx, "delivery ignored", "reason", d.Ignore, "source", d.Trigger.Source)
		return job.Record{}, ErrIgnored
	}
	if d.DryRun != nil {
		// A dry-run rule counts what a backfill would cost; the sum of
		// these lines' costUsd is the estimate.
		model, usd, err := spend.EstimateRule(*d.DryRun, s.cfg.Prices, s.policy)
		slog.InfoContext(ctx, "dry run", "rule", d.DryRun.Name, "source", d.Trigger.Source, "model", model, "costUsd", usd, "error", err)
		return job.Record{}, ErrIgnored
	}
	start := s.now()
	j := d.Job
	j.ID = d.ID
	j.Normalize(s.policy)
	rec := job.Record{
		JobID:       d.ID,
		Parent:      j.Parent,
		Trigger:     d.Trigger,
		Model:       j.Model,
		Labels:      j.Labels,
		Fingerprint: j.Fingerprint(),
		Timings:     job.Timings{CreatedAt: start},
	}

	if d.Err != nil {
		return s.failUnclaimed(ctx, rec, d.Err)
	}
	if err := j.Validate(s.policy); err != nil {
		return s.failUnclaimed(ctx, rec, err)
	}

	claim, done, err := s.store.Claim(ctx, d.ID, rec.Fingerprint, d.Trigger)
	switch {
	case errors.Is(err, job.ErrConflict):
		return s.conflict(ctx, rec, d, err)
	case err != nil:
		return job.Record{}, err // transient: held elsewhere, or storage unavailable; redeliver
	case done != nil:
		// A redelivery of finished work: no model call, the same event again.
		slog.InfoContext(ctx, "job already done", "outcome", done.Outcome)
		return *done, s.publish(ctx, *done)
	case claim.Draft != nil:
		// An earlier attempt stored its images and crashed before the
		// record: finish it without paying again.
		slog.InfoContext(ctx, "finishing an earlier attempt", "attempt", claim.Attempt)
		return s.commit(ctx, claim, *claim.Draft)
	}
	rec.Attempts, rec.CostUSD = claim.PriorCalls, claim.PriorCost
	if age := start.Sub(d.Time); !d.Time.IsZero() && age > s.cfg.Limits.MaxEventAge {
		// Retryable: the work itself may be fine; an explicit resubmission
		// runs it. Recording it now means the platform never drops it
		// silently at 24 h, and the record counts what earlier attempts paid.
		return s.commit(ctx, claim, failed(rec, fmt.Errorf("%w: the delivery is %s old, over the maximum event age %s (GENIMG_MAX_EVENT_AGE); resubmit the job to run it",
			job.ErrTransient, age.Round(1e9), s.cfg.Limits.MaxEventAge), s.now()))
	}

	// A conversation's history and this job's inputs are read and checked
	// before anything is paid: a parent that cannot be continued fails the
	// job here.
	if err := s.store.History(ctx, &j); err != nil {
		if job.Retryable(err) {
			return job.Record{}, err // storage unavailable: redeliver
		}
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}
	inputs, err := s.store.ResolveInputs(ctx, &j)
	if err != nil {
		if job.Retryable(err) {
			return job.Record{}, err // storage unavailable: redeliver
		}
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}

	// The spend guard: a paused pipeline, a spent budget or the rate limit
	// turn the job away for now; the redelivery runs it, nothing is lost.
	estimate := s.estimate(j)
	release, err := s.spend.Admit(ctx, estimate)
	if err != nil {
		s.release(ctx, claim)
		return job.Record{}, err // transient: redeliver later
	}
	// Note the call on the claim before paying for it: if this instance
	// dies mid-call, the next attempt still counts it; and if the claim
	// was taken over meanwhile, this attempt is a zombie and must not pay.
	if err := s.store.BeginCall(ctx, claim, estimate); err != nil {
		release(0)
		return job.Record{}, err
	}
	// The answer's images stream into Cloud Storage while it is read: no
	// whole image is held in memory (BENCHMARKS.md "## memory design").
	meta := storage.ImageMeta{Model: j.Model, PromptSHA256: job.PromptHash(j.Prompt), Source: sourceObject(d),
		CacheControl: cmp.Or(d.CacheControl, s.cfg.Storage.CacheControl)}
	outputs, err := s.store.NewOutputs(ctx, claim, &j, meta)
	if err != nil {
		release(0)
		return job.Record{}, err
	}
	// On the job's shared context cache when it names one; a JSON answer
	// checked against the job's schema.
	res, err := s.contexts.GenerateWith(ctx, j, func(ctx context.Context, run job.Job) (*gemini.Result, error) {
		return s.model.GenerateTo(ctx, run, outputs)
	})
	release(res.CostUSD)
	rec.Attempts += res.Attempts
	rec.CostUSD += res.CostUSD
	rec.Timings.ModelMs = res.ModelTime.Milliseconds()
	if err != nil {
		if job.Retryable(err) {
			s.release(ctx, claim)
			return job.Record{}, err // quota or outage outlasted the retry budget: redeliver
		}
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}
	fillFromModel(&rec, res)
	rec.Outputs = outputs.Stored()
	s.renditions(ctx, claim, j.Renditions, rec.Outputs, meta)
	if rec.Outcome == job.Succeeded {
		// Like renditions, the turns never cost a second model call: a
		// record without them only cannot be continued, which a child job
		// is told.
		if rec.Turns, err = s.turns(ctx, &j, inputs, res, outputs); err != nil {
			slog.WarnContext(ctx, "conversation turns not kept", "error", err)
		}
	}
	rec.Timings.CompletedAt = s.now()
	rec.Timings.TotalMs = rec.Timings.CompletedAt.Sub(start).Milliseconds()
	if err := s.store.WriteDraft(ctx, claim, rec); err != nil {
		return job.Record{}, err
	}
	return s.commit(ctx, claim, rec)
}

// commit stores the record (or finds the one that won) and publishes it.
func (s *Service) commit(ctx context.Context, c *storage.Claim, rec job.Record) (job.Record, error) {
	stored, _, err := s.store.Commit(ctx, c, rec)
	if err != nil {
		return job.Record{}, err
	}
	if err := s.publish(ctx, stored); err != nil {
		return job.Record{}, err
	}
	logCompleted(ctx, stored)
	return stored, nil
}

// failUnclaimed records a job that failed before it could be claimed
// (undecodable or invalid). The record is create-only: a job that
// already has a record keeps it, and it is republished — unless that
// record is of different work, which makes this a conflict.
func (s *Service) failUnclaimed(ctx context.Context, rec job.Record, cause error) (job.Record, error) {
	if rec.JobID == "" || !job.ValidID(rec.JobID) {
		// Nothing to record under: say why, and let the delivery go.
		slog.ErrorContext(ctx, "delivery rejected without a job id", "error", cause)
		return job.Record{}, ErrIgnored
	}
	rec = failed(rec, cause, s.now())
	stored, _, err := s.store.Commit(ctx, nil, rec)
	if err != nil {
		return job.Record{}, err
	}
	if stored.Fingerprint != rec.Fingerprint {
		return s.conflict(ctx, rec, trigger.Delivery{}, fmt.Errorf("%w: job %s already has a record for different work", job.ErrConflict, rec.JobID))
	}
	if err := s.publish(ctx, stored); err != nil {
		return job.Record{}, err
	}
	logCompleted(ctx, stored)
	return stored, nil
}

// conflict answers a job id reused for different work: a failed record,
// published but not stored, so the first job's record stands. Its times
// are the delivery's, so that a redelivery publishes the same event.
func (s *Service) conflict(ctx context.Context, rec job.Record, d trigger.Delivery, cause error) (job.Record, error) {
	at := d.Time
	if at.IsZero() {
		at = rec.Timings.CreatedAt
	}
	rec.Timings = job.Timings{CreatedAt: at, CompletedAt: at}
	rec.Outcome = job.Failed
	rec.Error = job.ErrorOf(cause)
	slog.WarnContext(ctx, "job id reused for a different job", "error", cause)
	logCompleted(ctx, rec)
	return rec, s.publish(ctx, rec)
}

// failed turns rec into a failed record for cause.
func failed(rec job.Record, cause error, now time.Time) job.Record {
	rec.Outcome = job.Failed
	rec.Error = job.ErrorOf(cause)
	rec.Outputs = nil
	rec.Timings.CompletedAt = now
	rec.Timings.TotalMs = now.Sub(rec.Timings.CreatedAt).Milliseconds()
	return rec
}

// fillFromModel copies the model's answer into the record.
func fillFromModel(rec *job.Record, res *gemini.Result) {
	rec.Outcome = res.Outcome
	rec.Text = res.Text
	rec.FinishReason = res.FinishReason
	rec.FinishMessage = res.FinishMessage
	rec.SafetyRatings = res.SafetyRatings
	rec.PromptFeedback = res.PromptFeedback
	rec.Usage = res.Usage
	rec.ModelVersion = res.ModelVersion
	rec.ResponseID = res.ResponseID
	rec.JSON = res.JSON
	rec.JSONError = res.JSONError
	rec.GroundingMetadata = res.GroundingMetadata
}

// release lets the redelivery take the job over at once rather than wait
// out this attempt's lease.
func (s *Service) release(ctx context.Context, c *storage.Claim) {
	if err := s.store.Release(ctx, c); err != nil {
		slog.WarnContext(ctx, "releasing the claim", "error", err)
	}
}

// estimate is what one model call for j should cost: the images it asks
// for, at the output image price. It is noted on the claim before the call.
func (s *Service) estimate(j job.Job) float64 {
	c, err := job.Lookup(j.Model, s.cfg.Model.Backend)
	if err != nil {
		return 0
	}
	tokens := float64(c.ImageTokens(j.ImageSize)) * float64(max(j.CandidateCount, 1))
	return tokens * s.cfg.Prices.For(j.Model).OutputImage / 1e6
}

// sourceObject names the uploaded object a job came from, if any.
func sourceObject(d trigger.Delivery) string {
	if d.Object == nil {
		return ""
	}
	return d.Object.Source()
}

// turns are the record's two turns of the conversation (contract 9.3): the
// user's, as sent, and the model's answer as returned, its images by the
// URI and SHA-256 they were stored under.
func (s *Service) turns(ctx context.Context, j *job.Job, inputs []storage.Input, res *gemini.Result, outputs *storage.Outputs) ([]job.Turn, error) {
	user, err := s.store.UserTurn(ctx, j, inputs)
	if err != nil {
		return nil, err
	}
	model := job.Turn{Role: "model", Parts: make([]job.TurnPart, 0, len(res.ModelTurn))}
	for _, p := range res.ModelTurn {
		if p.Image != nil {
			st, ok := outputs.StoredAt(p.Image.Index)
			if !ok {
				continue // not kept: nothing to send back
			}
			p.Image = &job.TurnImage{URI: st.URI, MIMEType: st.MIMEType, SHA256: st.SHA256}
		}
		model.Parts = append(model.Parts, p)
	}
	return []job.Turn{user, model}, nil
}
