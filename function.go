// Package genimg runs Gemini image generation as an event pipeline on
// Google Cloud: three functions — Generate (HTTP), OnMessage (Pub/Sub) and
// OnUpload (Cloud Storage) — decode their input into one job and run one
// pipeline that claims the job, calls the model, stores the images and the
// completion record, and publishes a completion event. A fourth,
// PollBatches (HTTP, called by Cloud Scheduler), finishes the jobs of the
// batch lane with the same steps.
package genimg

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"sync"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

func init() {
	functions.HTTP("Generate", Generate)
	functions.CloudEvent("OnMessage", OnMessage)
	functions.CloudEvent("OnUpload", OnUpload)
	functions.HTTP("PollBatches", PollBatches)

	// On Cloud Run, a bad configuration stops the start with a message
	// that names the variable, rather than failing every request.
	if os.Getenv("K_SERVICE") != "" {
		if _, err := instance(); err != nil {
			slog.Error("genimg cannot start", "error", err)
			os.Exit(1)
		}
	}
}

// instance is the Service the registered functions share, built once from
// the environment on first use.
var instance = sync.OnceValues(func() (*Service, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, err
	}
	slog.SetDefault(slog.New(NewLogHandler(os.Stdout, cfg.Topics.Project, cfg.Log.Level)))
	return New(context.Background(), cfg)
})

// Generate is the HTTP entry point: POST a job, GET ?id= its record.
func Generate(w http.ResponseWriter, r *http.Request) {
	s, err := instance()
	if err != nil {
		slog.ErrorContext(r.Context(), "genimg is not configured", "error", err)
		http.Error(w, "genimg is not configured; see the logs", http.StatusInternalServerError)
		return
	}
	s.Generate(w, r)
}

// OnMessage is the Pub/Sub entry point: a message carrying a job, or a
// Cloud Storage notification of an upload.
func OnMessage(ctx context.Context, e cloudevents.Event) error {
	s, err := instance()
	if err != nil {
		return err // retry: configuration is fixed by a redeploy, not by dropping work
	}
	return s.OnMessage(ctx, e)
}

// OnUpload is the Cloud Storage entry point: an object finalized in an
// upload bucket.
func OnUpload(ctx context.Context, e cloudevents.Event) error {
	s, err := instance()
	if err != nil {
		return err // retry: as above
	}
	return s.OnUpload(ctx, e)
}

// PollBatches is the batch lane's poller, called by Cloud Scheduler: it
// finishes the jobs of every batch that is done.
func PollBatches(w http.ResponseWriter, r *http.Request) {
	s, err := instance()
	if err != nil {
		slog.ErrorContext(r.Context(), "genimg is not configured", "error", err)
		http.Error(w, "genimg is not configured; see the logs", http.StatusInternalServerError)
		return
	}
	s.PollBatches(w, r)
}

// OnMessage handles one messagePublished event.
func (s *Service) OnMessage(ctx context.Context, e cloudevents.Event) error {
	d := trigger.FromMessage(e, s.cfg.Uploads)
	if d.Object != nil {
		var err error
		if d, err = s.completeUpload(ctx, d); err != nil {
			return s.ack(ctx, err)
		}
	}
	return s.take(ctx, d)
}

// OnUpload handles one storage object finalized event.
func (s *Service) OnUpload(ctx context.Context, e cloudevents.Event) error {
	d, err := s.completeUpload(ctx, trigger.FromUpload(e, s.cfg.Uploads))
	if err != nil {
		return s.ack(ctx, err)
	}
	return s.take(ctx, d)
}

// take runs a decoded event delivery: a batch goes to the batch lane, a job
// through the pipeline.
func (s *Service) take(ctx context.Context, d trigger.Delivery) error {
	if d.Batch != nil {
		return s.ack(ctx, s.takeBatchDelivery(ctx, d))
	}
	_, err := s.process(ctx, d)
	return s.ack(ctx, err)
}

// ack maps the pipeline's result to the event platform's answer: nil (200)
// acknowledges; an error (500) asks for redelivery. Only transient failures
// are redelivered — everything permanent already ended in a failed record,
// and a delivery too old for retries was recorded before it got here.
func (s *Service) ack(ctx context.Context, err error) error {
	switch {
	case err == nil, errors.Is(err, errIgnored):
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
