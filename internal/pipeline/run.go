package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/trigger"
)

// ErrIgnored marks a delivery that is not a job: acknowledged, no record.
var ErrIgnored = errors.New("not a job")

// ErrHeld marks a job genimg parked because it must wait itself (job.Held):
// acknowledged, no record yet; Resume runs it once the cause clears.
var ErrHeld = errors.New("job held")

// Run runs one delivery to its end: claim → read inputs → admit → model →
// write outputs → draft → record → event. It is the same for every trigger,
// and the batch lane's finisher shares its ending. It returns the record,
// published; or a transient error, for the platform to redeliver; or
// ErrIgnored, ErrHeld or ErrRejected, which are acknowledged. A permanent
// failure is a failed record, not an error.
func (s *Service) Run(ctx context.Context, d trigger.Delivery) (job.Record, error) {
	ctx = WithJobID(ctx, d.ID)
	keepUntil := s.keepUntil(time.Now())
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
	j := d.Job
	j.ID = d.ID
	j.Normalize(s.policy)
	rec := s.newRecord(j, d.Trigger)
	cause := d.Err
	if cause == nil {
		cause = j.Validate(s.policy)
	}
	if cause == nil {
		if err := s.CheckCallback(ctx, j); job.Retryable(err) {
			return job.Record{}, err // the callback host's name could not be looked up: redeliver
		} else if err != nil {
			cause = err
		}
	}
	if cause != nil {
		rec.Callback = nil // only a URL that passed the checks is ever called
	} else if s.model == nil {
		// A valid job reached a deployment without a model client: leave
		// it untouched (no claim) for one that runs jobs.
		return job.Record{}, s.errNoModel()
	}

	sctx, end := s.traces.Step(ctx, "claim")
	trace.SpanFromContext(sctx).SetAttributes(attribute.String(tracing.AttrJob, d.ID))
	claim, done, err := s.store.Claim(sctx, d.ID, rec.Fingerprint, d.Trigger)
	end(err)
	switch {
	case errors.Is(err, job.ErrConflict):
		// The id belongs to other work: this delivery never touches it.
		return job.Record{}, s.reject(ctx, d, err)
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
	if kept, ok := s.unfinished.take(s.now(), d.ID, rec.Fingerprint); ok {
		// This instance's earlier attempt was paid, but Cloud Storage
		// refused its images or its draft: finish it from memory.
		slog.InfoContext(ctx, "finishing an earlier attempt kept in memory", "attempt", claim.Attempt)
		kept.rec.Attempts, kept.rec.CostUSD = max(kept.rec.Attempts, claim.PriorCalls), max(kept.rec.CostUSD, claim.PriorCost)
		return s.finish(ctx, claim, kept.rec, kept.outputs, kept.after, keepUntil)
	}
	rec.Attempts, rec.CostUSD = claim.PriorCalls, claim.PriorCost
	if cause != nil {
		// Invalid work under an id it now owns: recorded failed.
		return s.commit(ctx, claim, failed(rec, cause, s.now()))
	}
	if err := s.tooOld(firstSeen(d.Time, claim.CreatedAt)); err != nil {
		// Retryable: the work itself may be fine; an explicit resubmission
		// runs it. Recording it now means the platform never drops it
		// silently at 24 h, and the record counts what earlier attempts paid.
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}
	return s.call(ctx, claim, j, rec, d, keepUntil)
}

// call is the paid part of a run: inputs, admission, the model call with its
// images written to Cloud Storage as they arrive, the draft and the record.
// keepUntil bounds the retries of the paid answer's writes (finish).
func (s *Service) call(ctx context.Context, claim *storage.Claim, j job.Job, rec job.Record, d trigger.Delivery, keepUntil time.Time) (job.Record, error) {
	created := firstSeen(d.Time, claim.CreatedAt)
	parked := j.Clone() // the job as it came, should it have to wait
	// A conversation's history and this job's inputs are read and checked
	// before anything is paid: a parent that cannot be continued fails the
	// job here.
	sctx, end := s.traces.Step(ctx, "inputs")
	err := s.store.History(sctx, &j)
	var inputs []storage.Input
	if err == nil {
		inputs, err = s.store.ResolveInputs(sctx, &j)
	}
	if end(err); err != nil {
		if job.Retryable(err) {
			s.release(ctx, claim)
			return job.Record{}, err // storage unavailable: redeliver
		}
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}

	// The spend guard: a paused pipeline, a spent budget or the rate limit
	// park the job; Resume runs it when the cause clears.
	estimate := s.estimate(j)
	sctx, end = s.traces.Step(ctx, "admit")
	release, err := s.spend.Admit(sctx, estimate)
	end(err)
	if err != nil {
		var limit *spend.LimitError
		if errors.As(err, &limit) {
			return job.Record{}, s.hold(ctx, claim, parked, limit.Reason, created)
		}
		s.release(ctx, claim)
		return job.Record{}, err // the ledger is unreadable: redeliver
	}
	// Note the call on the claim before paying for it: if this instance
	// dies mid-call, the next attempt still counts it; and if the claim
	// was taken over meanwhile, this attempt is a zombie and must not pay.
	if err := s.store.BeginCall(ctx, claim, estimate); err != nil {
		release(0)
		return job.Record{}, err
	}
	// The answer's images go to Cloud Storage while it is read: each is
	// held in the spool's bounded budget and sent in one request, or, past
	// the budget, streamed (storage.ImageWriter); no image is held beyond
	// the budget.
	meta := storage.ImageMeta{Model: j.Model, PromptSHA256: job.PromptHash(j.Prompt), Source: sourceObject(d),
		CacheControl: cmp.Or(d.CacheControl, s.cfg.Storage.CacheControl)}
	outputs, err := s.store.NewOutputs(ctx, claim, &j, meta)
	if err != nil {
		release(0)
		return job.Record{}, err
	}
	// The lease is renewed while the call and its writes run, so that a
	// long answer is never taken for an abandoned attempt.
	stop := s.store.KeepAlive(ctx, claim)
	// On the job's shared context cache when it names one; a JSON answer
	// checked against the job's schema.
	sctx, end = s.traces.Step(ctx, "model")
	res, err := s.contexts.GenerateWith(sctx, j, func(ctx context.Context, run job.Job) (*gemini.Result, error) {
		return s.model.GenerateTo(ctx, run, notedSink{tracedSink{outputs, ctx, s.traces}, func() error {
			return s.store.BeginCall(ctx, claim, estimate) // each retry is noted before it is paid
		}})
	})
	modelDone(sctx, end, j.Model, res, err)
	stop()
	// Calls the service refused were noted as made, and are, but not paid.
	claim.Refunded(float64(res.Refused) * estimate)
	// An answer the model gave is paid, whatever happens to it next.
	release(res.CostUSD)
	rec.Attempts += res.Attempts
	rec.CostUSD += res.CostUSD
	rec.Timings.ModelMs = res.ModelTime.Milliseconds()
	switch {
	case err != nil && gemini.PerDayQuota(err) && res.CostUSD == 0:
		// The day's quota is out: nothing was paid; park until it resets.
		return job.Record{}, s.hold(ctx, claim, parked, job.HoldQuota, created)
	case err != nil && job.Retryable(err):
		s.release(ctx, claim)
		return job.Record{}, err // quota or outage outlasted the retry budget: redeliver
	case err != nil:
		return s.commit(ctx, claim, failed(rec, err, s.now()))
	}
	fillFromModel(&rec, res)
	rec.Outputs = outputs.Stored()
	// Once the images are all stored: their renditions, and the turns a
	// child job continues from. Neither ever costs a second model call: a
	// record without them says why, or only cannot be continued.
	after := func(ctx context.Context, rec *job.Record) {
		s.renditions(ctx, claim, j.Renditions, rec.Outputs, meta)
		if rec.Outcome == job.Succeeded {
			var err error
			if rec.Turns, err = s.turns(ctx, &j, inputs, res, outputs); err != nil {
				slog.WarnContext(ctx, "conversation turns not kept", "error", err)
			}
		}
		rec.Timings.CompletedAt = s.now()
		rec.Timings.TotalMs = rec.Timings.CompletedAt.Sub(rec.Timings.CreatedAt).Milliseconds()
	}
	return s.finish(ctx, claim, rec, outputs, after, keepUntil)
}

// finish keeps a paid answer: the images the spool held through a failed
// upload are written, then after completes the record (renditions, turns;
// once), then the record is committed — or, if Cloud Storage refuses it,
// the answer goes into the attempt's draft (storage.Commit).
//
// A paid answer is worth waiting for: while Cloud Storage refuses these
// writes they are retried in process until keepUntil, on a context the
// caller's hang-up does not cancel, and the lease is kept alive meanwhile,
// so that no other instance takes the job over and pays for it again (and
// should the instance pause past its lease meanwhile, Commit finds the job
// taken over and leaves it to its taker). Past keepUntil the answer stays
// in memory for a redelivery to this instance (unfinished) and the claim
// is released; a draft that was written meanwhile lets any instance finish
// it.
func (s *Service) finish(ctx context.Context, c *storage.Claim, rec job.Record, outputs *storage.Outputs, after func(context.Context, *job.Record), keepUntil time.Time) (job.Record, error) {
	var stored *job.Record
	write := func(ctx context.Context) error {
		if outputs != nil {
			if err := outputs.Flush(ctx); err != nil {
				return err
			}
		}
		if after != nil {
			after(ctx, &rec)
			after = nil
		}
		r, err := s.record(ctx, c, rec)
		if err != nil {
			return err
		}
		stored = &r
		return nil
	}
	// Like commit, the first try goes on after the caller hangs up.
	first, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	err := write(first)
	cancel()
	if err != nil && job.Retryable(err) && !errors.Is(err, storage.ErrTakenOver) {
		kctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), keepUntil)
		stop := s.store.KeepAlive(kctx, c)
		err = retryStorage(kctx, err, write)
		stop()
		cancel()
	}
	switch {
	case errors.Is(err, storage.ErrTakenOver):
		return job.Record{}, err // the job is its taker's now
	case err != nil:
		s.unfinished.keep(s.now(), rec, outputs, after)
		s.release(context.WithoutCancel(ctx), c)
		return job.Record{}, err
	}
	return s.announce(ctx, *stored)
}

// retryStorage runs write again after err until it succeeds, fails for
// good, or ctx ends; the pause between tries doubles from 200 ms to 5 s.
func retryStorage(ctx context.Context, err error, write func(context.Context) error) error {
	delay := 200 * time.Millisecond
	for job.Retryable(err) && !errors.Is(err, storage.ErrTakenOver) {
		slog.WarnContext(ctx, "keeping a paid answer: Cloud Storage refused it; retrying", "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
			delay = min(2*delay, 5*time.Second)
		}
		if err = write(ctx); err == nil {
			return nil
		}
	}
	return err
}

// keepUntil is until when a run that started at start retries the writes
// of a paid answer: three quarters of the function's timeout, leaving the
// rest for the record and its event (minKeep without a timeout).
func (s *Service) keepUntil(start time.Time) time.Time {
	if s.cfg.Limits.FunctionTimeout <= 0 {
		return start.Add(minKeep)
	}
	return start.Add(s.cfg.Limits.FunctionTimeout * 3 / 4)
}

// minKeep is how long a paid answer's writes are retried for where the
// answer can be had again without paying (a batch's) or no timeout is set.
const minKeep = 12 * time.Second

// hold parks a claimed job that genimg itself must wait for. If it cannot
// be parked, the claim is released and the delivery redelivered.
func (s *Service) hold(ctx context.Context, c *storage.Claim, j job.Job, reason string, created time.Time) error {
	// Inline images go to the staging area first: the parked job stays
	// small, and keeps its fingerprint (job.Fingerprint).
	if err := s.store.StageInputs(ctx, j.ID, &j); err != nil {
		s.release(ctx, c)
		return err
	}
	if err := s.store.Hold(ctx, c, reason, j, created); err != nil {
		s.release(ctx, c)
		return err
	}
	return ErrHeld
}

// commit stores the record (or finds the one that won) and publishes it.
//
// Both go on if the caller hangs up meanwhile (a push deadline, a client
// gone): a record whose write was cut off may have committed all the same,
// and its event would then wait for a redelivery that may never come —
// another copy of the delivery may have been acknowledged already, as a
// held job's is when a duplicate claims it. commitTimeout bounds them.
func (s *Service) commit(ctx context.Context, c *storage.Claim, rec job.Record) (job.Record, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	stored, err := s.record(ctx, c, rec)
	if err != nil {
		return job.Record{}, err
	}
	return s.announce(ctx, stored)
}

// record stores the record, or finds the one that won.
func (s *Service) record(ctx context.Context, c *storage.Claim, rec job.Record) (job.Record, error) {
	sctx, end := s.traces.Step(ctx, "record")
	stored, _, err := s.store.Commit(sctx, c, rec)
	end(err)
	return stored, err
}

// announce publishes a stored record's event. Like commit, it goes on after
// the caller hangs up.
func (s *Service) announce(ctx context.Context, stored job.Record) (job.Record, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if err := s.publish(ctx, stored); err != nil {
		return job.Record{}, err
	}
	logCompleted(ctx, stored)
	return stored, nil
}

// commitTimeout bounds commit once it no longer follows its caller: the
// record's write with its retries (storage's upload deadline, 32 s) and the
// event's publication.
const commitTimeout = time.Minute

// newRecord starts a job's record.
func (s *Service) newRecord(j job.Job, trig job.Trigger) job.Record {
	return job.Record{
		JobID:       j.ID,
		Parent:      j.Parent,
		Trigger:     trig,
		Model:       j.Model,
		Labels:      j.Labels,
		Fingerprint: j.Fingerprint(),
		Callback:    j.Callback,
		Timings:     job.Timings{CreatedAt: s.now()},
	}
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

// tooOld fails a delivery older than the maximum event age, retryably:
// recorded now, the platform never drops it silently.
func (s *Service) tooOld(when time.Time) error {
	if age := s.now().Sub(when); !when.IsZero() && age > s.cfg.Limits.MaxEventAge {
		return fmt.Errorf("%w: the delivery is %s old, over the maximum event age %s (GENIMG_MAX_EVENT_AGE); resubmit the job to run it",
			job.ErrTransient, age.Round(time.Second), s.cfg.Limits.MaxEventAge)
	}
	return nil
}

// firstSeen is the earlier of two times, ignoring zeros: a job's age runs
// from the first time genimg saw it, across holds and redeliveries.
func firstSeen(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
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

// notedSink notes each retry of the model call on the claim before it is
// made (gemini.RetryNoter).
type notedSink struct {
	gemini.ImageSink
	note func() error
}

func (n notedSink) BeforeRetry() error { return n.note() }
