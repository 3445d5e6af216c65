package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// OnMessage handles one messagePublished event: a message carrying a job
// or a batch, or a Cloud Storage notification of an upload.
func (s *Service) OnMessage(ctx context.Context, e cloudevents.Event) error {
	start := time.Now()
	d := trigger.FromMessage(e, s.cfg.Uploads)
	var err error
	if d.Object != nil {
		d, err = trigger.CompleteUpload(ctx, d, s.store.Uploads(), s.cfg.Uploads, s.cfg.Limits.MaxRequestBytes)
	}
	ctx, end := s.startDelivery(ctx, "OnMessage", d.Traceparent, start, errors.Join(err, d.Err))
	defer end()
	if err != nil {
		return s.ack(ctx, err)
	}
	return s.runDelivery(ctx, d)
}

// OnUpload handles one storage object finalized event.
func (s *Service) OnUpload(ctx context.Context, e cloudevents.Event) error {
	start := time.Now()
	d, err := trigger.CompleteUpload(ctx, trigger.FromUpload(e, s.cfg.Uploads), s.store.Uploads(), s.cfg.Uploads, s.cfg.Limits.MaxRequestBytes)
	ctx, end := s.startDelivery(ctx, "OnUpload", "", start, errors.Join(err, d.Err))
	defer end()
	if err != nil {
		return s.ack(ctx, err)
	}
	return s.runDelivery(ctx, d)
}

// runDelivery runs a decoded event delivery: a batch goes to the batch lane, a job
// through the pipeline.
func (s *Service) runDelivery(ctx context.Context, d trigger.Delivery) error {
	defer s.flushSpend(ctx)
	if d.Batch != nil {
		_, err := s.TakeBatch(ctx, *d.Batch, d.Trigger, d.Time)
		return s.ack(ctx, err) // the ids are the delivery's: a redelivery submits nothing twice
	}
	defer s.waits.running(d.ID)()
	_, err := s.Run(ctx, d)
	return s.ack(ctx, err)
}

// ack maps the pipeline's result to the event platform's answer: nil (200)
// acknowledges; an error (500) asks for redelivery. Only transient failures
// are redelivered — everything permanent already ended in a failed record,
// and a delivery too old for retries was recorded before it got here.
func (s *Service) ack(ctx context.Context, err error) error {
	switch {
	case err == nil, errors.Is(err, ErrIgnored), errors.Is(err, ErrHeld), errors.Is(err, ErrRejected):
		return nil
	case job.Retryable(err):
		slog.WarnContext(ctx, "delivery will be retried", "error", err)
		return err
	default:
		// A permanent error that reached here has no record to go in
		// (nothing identifies the job): log it once, and let it go.
		slog.ErrorContext(ctx, "delivery dropped", "error", err)
		return nil
	}
}

// flushSpend writes the spend ledger before the delivery is answered, so
// that other instances count what this one paid even if its CPU is
// throttled afterwards (spend.Guard.FlushDue).
func (s *Service) flushSpend(ctx context.Context) {
	if err := s.spend.FlushDue(context.WithoutCancel(ctx)); err != nil {
		slog.WarnContext(ctx, "spend ledger not written; the background flush retries", "error", err)
	}
}

// FlushSpend writes the spend ledger now: on SIGTERM, before the instance
// goes away.
func (s *Service) FlushSpend(ctx context.Context) error { return s.spend.Flush(ctx) }
