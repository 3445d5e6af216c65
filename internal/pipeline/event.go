package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"cloud.google.com/go/pubsub/v2"

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
	return &pubsub.Message{
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
	}, nil
}

// publish sends rec's completion event and waits for the topic to take it:
// the triggering delivery is acknowledged only after that.
func (s *Service) publish(ctx context.Context, rec job.Record) error {
	msg, err := completionMessage(s.cfg.Topics.EventSource, rec)
	if err != nil {
		return err
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
	if _, err := s.requests.Publish(ctx, msg).Get(ctx); err != nil {
		return fmt.Errorf("%w: queueing the job on %s: %v", job.ErrTransient, s.cfg.Topics.Requests, err)
	}
	return nil
}
