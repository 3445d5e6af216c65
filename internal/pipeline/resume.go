package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/trigger"
)

// A ResumeReport is what one Resume did.
type ResumeReport struct {
	// Held jobs still wait; Requeued went back on the requests topic;
	// Expired ended in a failed, retryable record; Dropped were markers of
	// jobs no longer held.
	Held, Requeued, Expired, Dropped int
	Errors                           []string `json:",omitempty"`
}

// Resume runs the held jobs whose cause has cleared: each is put back on
// the requests topic as it first came (its trigger, its age), and its claim
// stays held until OnMessage takes it — so a crash between the two steps
// costs at most a second message, which the claim deduplicates. A held job
// older than GENIMG_MAX_EVENT_AGE ends in a failed, retryable record. It is
// called on a schedule (PollBatches), locally every few seconds.
func (s *Service) Resume(ctx context.Context) (ResumeReport, error) {
	var rep ResumeReport
	clear := s.spend.Check(ctx) == nil
	err := s.store.Held(ctx, func(id string, h storage.HeldJob, found bool) error {
		jctx := WithJobID(ctx, id)
		var err error
		switch {
		case !found:
			err = s.store.Unmark(jctx, id)
			rep.Dropped++
		case s.tooOld(h.CreatedAt) != nil:
			err = s.expire(jctx, id, h)
			rep.Expired++
		case h.Reason == job.HoldQuota && s.now().Sub(h.Since) < s.cfg.Limits.QuotaRetry,
			h.Reason != job.HoldQuota && !clear:
			rep.Held++
		default:
			err = s.requeue(jctx, h)
			if err == nil {
				err = s.store.Unmark(jctx, id)
			}
			rep.Requeued++
		}
		if err != nil {
			slog.WarnContext(jctx, "resuming a held job failed; the next pass retries", "error", err)
			rep.Errors = append(rep.Errors, id+": "+err.Error())
		}
		return nil
	})
	if rep.Requeued+rep.Expired > 0 || len(rep.Errors) > 0 {
		slog.InfoContext(ctx, "held jobs resumed", "requeued", rep.Requeued, "expired", rep.Expired, "held", rep.Held, "errors", len(rep.Errors))
	}
	return rep, err
}

// requeue puts a held job back on the requests topic.
func (s *Service) requeue(ctx context.Context, h storage.HeldJob) error {
	data, err := json.Marshal(h.Job)
	if err != nil {
		return fmt.Errorf("encoding the held job: %w", err)
	}
	msg := &pubsub.Message{Data: data, Attributes: map[string]string{
		trigger.AttrTrigger: string(h.Trigger.Kind),
		trigger.AttrSource:  h.Trigger.Source,
		trigger.AttrCreated: h.CreatedAt.UTC().Format(time.RFC3339Nano),
	}}
	if _, err := s.requests.Publish(ctx, msg).Get(ctx); err != nil {
		return fmt.Errorf("%w: requeueing on %s: %v", job.ErrTransient, s.cfg.Topics.Requests, err)
	}
	slog.InfoContext(ctx, "held job requeued", "reason", h.Reason, "heldFor", s.now().Sub(h.Since).Round(time.Second))
	return nil
}

// expire ends a job held past the maximum event age: failed, retryable,
// through its own claim so the record counts what earlier attempts paid.
func (s *Service) expire(ctx context.Context, id string, h storage.HeldJob) error {
	j := h.Job
	rec := s.newRecord(j, h.Trigger)
	claim, done, err := s.store.Claim(ctx, id, rec.Fingerprint, h.Trigger)
	switch {
	case err != nil:
		return err
	case done != nil:
		return s.store.Unmark(ctx, id)
	}
	rec.Attempts, rec.CostUSD = claim.PriorCalls, claim.PriorCost
	cause := fmt.Errorf("%w: held (%s) since %s, past the maximum event age %s (GENIMG_MAX_EVENT_AGE); resubmit the job to run it",
		job.ErrTransient, h.Reason, h.Since.UTC().Format(time.RFC3339), s.cfg.Limits.MaxEventAge)
	if _, err := s.commit(ctx, claim, failed(rec, cause, s.now())); err != nil {
		return err
	}
	if err := s.store.Unmark(ctx, id); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return nil
}
