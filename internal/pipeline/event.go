package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// Completion event attributes beyond the CloudEvents core (README, "The
// completion event"): subscriptions filter on these.
const (
	attrOutcome = "ce-outcome"
	attrTrigger = "ce-trigger"
)

// completionMessage is the completion event for rec in Pub/Sub binary
// content mode: the record is the data, the CloudEvent context attributes.
// ce-id is derived from the record's content, so the same record
// republished carries the same id and consumers can deduplicate on
// ce-source + ce-id.
func completionMessage(source string, rec job.Record) (*pubsub.Message, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding the completion record: %w", err)
	}
	sum := sha256.Sum256(data)
	msg := &pubsub.Message{
		Data: data,
		Attributes: map[string]string{
			"ce-specversion": "1.0",
			"ce-type":        job.EventType,
			"ce-source":      source,
			"ce-id":          rec.JobID + "." + hex.EncodeToString(sum[:8]),
			"ce-subject":     "jobs/" + rec.JobID,
			"ce-time":        rec.Timings.CompletedAt.UTC().Format(time.RFC3339Nano),
			"content-type":   "application/json",
			attrOutcome:      string(rec.Outcome),
			attrTrigger:      string(rec.Trigger.Kind),
		},
	}
	if rec.Callback != nil {
		// The callback function's subscription filters on it, so that
		// OnCompletion runs only for records that name a callback.
		msg.Attributes[AttrHasCallback] = "true"
	}
	return msg, nil
}

// AttrHasCallback marks a completion event whose record names a callback:
// the OnCompletion subscription's filter is attributes.genimg-callback = "true".
const AttrHasCallback = "genimg-callback"

// publish sends rec's completion event and waits for the topic to take it:
// the triggering delivery is acknowledged only after that.
func (s *Service) publish(ctx context.Context, rec job.Record) (err error) {
	ctx, end := s.traces.Step(ctx, "publish")
	defer func() { end(err) }()
	msg, err := completionMessage(s.cfg.Topics.EventSource, rec)
	if err != nil {
		return err
	}
	// The CloudEvents distributed-tracing extension: the callback, and any
	// consumer, continue the job's trace.
	if tp := tracing.Traceparent(ctx); tp != "" {
		msg.Attributes[tracing.AttrCETraceparent] = tp
	}
	if _, err := s.events.Publish(ctx, msg).Get(ctx); err != nil {
		return fmt.Errorf("%w: publishing the completion event to %s: %v", job.ErrTransient, s.cfg.Topics.Completion, err)
	}
	s.waits.published(rec)
	return nil
}

// Enqueue puts an HTTP job on the requests topic, where OnMessage runs it:
// once the topic has taken it, the job is durable. source names the
// request in the record's trigger.
func (s *Service) Enqueue(ctx context.Context, j job.Job, source string) error {
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("%w: encoding the job: %v", job.ErrPermanent, err)
	}
	msg := &pubsub.Message{Data: data, Attributes: map[string]string{
		trigger.AttrTrigger: string(job.HTTP),
		trigger.AttrSource:  source,
	}}
	// The request's trace continues in OnMessage, across the queue.
	if tp := tracing.Traceparent(ctx); tp != "" {
		msg.Attributes[trigger.AttrGoogTraceparent] = tp
	}
	if _, err := s.requests.Publish(ctx, msg).Get(ctx); err != nil {
		return fmt.Errorf("%w: queueing the job on %s: %v", job.ErrTransient, s.cfg.Topics.Requests, err)
	}
	return nil
}

// enqueueBatch puts HTTP batch jobs (ids set, inline images staged) on the
// requests topic as {"batch": [...]} messages, each within what a
// delivery may carry (trigger.MaxEventBytes), where OnMessage submits them
// to the batch lane. It returns once the topic has taken every message.
func (s *Service) enqueueBatch(ctx context.Context, jobs []job.Job, source string) error {
	const room = trigger.MaxEventBytes - 1024 // the envelope, with margin
	var (
		msgs []*pubsub.Message
		buf  []byte
	)
	flush := func() {
		if len(buf) == 0 {
			return
		}
		msg := &pubsub.Message{Data: append(append([]byte(`{"batch": [`), buf...), ']', '}'), Attributes: map[string]string{
			trigger.AttrTrigger: string(job.HTTP),
			trigger.AttrSource:  source,
		}}
		if tp := tracing.Traceparent(ctx); tp != "" {
			msg.Attributes[trigger.AttrGoogTraceparent] = tp
		}
		msgs = append(msgs, msg)
		buf = nil
	}
	for _, j := range jobs {
		data, err := json.Marshal(j)
		if err != nil {
			return fmt.Errorf("%w: encoding job %s: %v", job.ErrPermanent, j.ID, err)
		}
		if len(buf) > 0 && len(buf)+1+len(data) > room {
			flush()
		}
		if len(buf) > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, data...)
	}
	flush()
	results := make([]*pubsub.PublishResult, len(msgs))
	for i, msg := range msgs {
		results[i] = s.requests.Publish(ctx, msg)
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			return fmt.Errorf("%w: queueing the batch on %s: %v", job.ErrTransient, s.cfg.Topics.Requests, err)
		}
	}
	return nil
}

// RejectedEventType is the CloudEvent type of a delivery genimg refused
// without touching any job: its id belongs to other work, or it has no
// usable id at all (contract 9.1).
const RejectedEventType = "genimg.delivery.v1.rejected"

// A Rejection is the data of a rejected event.
type Rejection struct {
	// JobID is the id the delivery asked for, if it had a usable one.
	JobID   string      `json:"jobId,omitempty"`
	Trigger job.Trigger `json:"trigger"`
	Error   *job.Error  `json:"error"`
	// At is when the delivery was made (its event time), so that a
	// redelivery publishes the same event.
	At time.Time `json:"at"`
}

// ErrRejected marks a delivery refused with a rejected event: acknowledged.
var ErrRejected = errors.New("delivery rejected")

// reject reports a delivery that may not touch the job it names on the
// completion topic, under its own subject (deliveries/<trigger source>),
// never under the job's: the owner's record and events stay its own.
func (s *Service) reject(ctx context.Context, d trigger.Delivery, cause error) error {
	at := d.Time
	if at.IsZero() {
		at = s.now()
	}
	r := Rejection{JobID: d.ID, Trigger: d.Trigger, Error: job.ErrorOf(cause), At: at.UTC()}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding the rejection: %w", err)
	}
	sum := sha256.Sum256(data)
	subject := "deliveries/" + d.Trigger.Source
	msg := &pubsub.Message{Data: data, Attributes: map[string]string{
		"ce-specversion": "1.0",
		"ce-type":        RejectedEventType,
		"ce-source":      s.cfg.Topics.EventSource,
		"ce-id":          "rejected." + hex.EncodeToString(sum[:12]),
		"ce-subject":     subject,
		"ce-time":        r.At.Format(time.RFC3339Nano),
		"content-type":   "application/json",
		attrTrigger:      string(d.Trigger.Kind),
	}}
	slog.WarnContext(ctx, "delivery rejected", "subject", subject, "error", cause)
	if _, err := s.events.Publish(ctx, msg).Get(ctx); err != nil {
		return fmt.Errorf("%w: publishing the rejection to %s: %v", job.ErrTransient, s.cfg.Topics.Completion, err)
	}
	return ErrRejected
}
