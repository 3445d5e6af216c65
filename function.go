// Package genimg runs Gemini image generation as an event pipeline on
// Google Cloud: three functions — Generate (HTTP), OnMessage (Pub/Sub) and
// OnUpload (Cloud Storage) — decode their input into one job and run one
// pipeline that claims the job, calls the model, stores the images and the
// completion record, and publishes a completion event. A fourth,
// PollBatches (HTTP, called by Cloud Scheduler), finishes the jobs of the
// batch lane with the same steps. A fifth, OnCompletion (Pub/Sub, on the
// completion topic), delivers each completion event to the callback URL
// its job named.
//
// This file only registers the functions; internal/pipeline runs jobs and
// internal/httpapi is the HTTP front door.
package genimg

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/instance"
	"github.com/genimg/genimg/internal/pipeline"
)

func init() {
	functions.HTTP("Generate", Generate)
	functions.CloudEvent("OnMessage", OnMessage)
	functions.CloudEvent("OnUpload", OnUpload)
	functions.HTTP("PollBatches", PollBatches)
	functions.CloudEvent("OnCompletion", OnCompletion)

	// On Cloud Run, a bad configuration stops the start with a message
	// that names the variable, rather than failing every request.
	if os.Getenv("K_SERVICE") != "" {
		if _, err := shared(); err != nil {
			slog.Error("genimg cannot start", "error", err)
			os.Exit(1)
		}
		go flushOnTerm()
	}
}

// flushOnTerm writes the spend ledger when Cloud Run stops the instance
// (SIGTERM, then 10 s before SIGKILL), so that no paid call goes uncounted
// by the other instances' budgets, then exits.
func flushOnTerm() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	<-term
	if in, err := shared(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		if err := in.FlushSpend(ctx); err != nil {
			slog.Error("spend ledger not written at shutdown", "error", err)
		}
		cancel()
	}
	os.Exit(0)
}

// shared is built once from the environment on first use.
var shared = sync.OnceValues(func() (*instance.Instance, error) {
	cfg, err := config.FromEnv()
	if err != nil {
		return nil, err
	}
	slog.SetDefault(slog.New(pipeline.NewLogHandler(os.Stdout, cfg.Topics.Project, cfg.Log.Level)))
	return instance.New(context.Background(), cfg)
})

// Generate is the HTTP entry point: POST a job, GET ?id= its record.
func Generate(w http.ResponseWriter, r *http.Request) {
	if in, ok := configured(w, r); ok {
		in.Generate(w, r)
	}
}

// PollBatches is the batch lane's poller, called by Cloud Scheduler: it
// finishes the jobs of every batch that is done.
func PollBatches(w http.ResponseWriter, r *http.Request) {
	if in, ok := configured(w, r); ok {
		in.PollBatches(w, r)
	}
}

// OnMessage is the Pub/Sub entry point: a message carrying a job, or a
// Cloud Storage notification of an upload.
func OnMessage(ctx context.Context, e cloudevents.Event) error {
	in, err := shared()
	if err != nil {
		return err // retry: configuration is fixed by a redeploy, not by dropping work
	}
	return in.OnMessage(ctx, e)
}

// OnUpload is the Cloud Storage entry point: an object finalized in an
// upload bucket.
func OnUpload(ctx context.Context, e cloudevents.Event) error {
	in, err := shared()
	if err != nil {
		return err // retry: as above
	}
	return in.OnUpload(ctx, e)
}

// OnCompletion is the callback function: subscribed to the completion
// topic, it POSTs each completion event, signed, to the callback URL of
// its job, and answers an error for Pub/Sub to retry a failed delivery.
func OnCompletion(ctx context.Context, e cloudevents.Event) error {
	in, err := shared()
	if err != nil {
		return err // retry: as above
	}
	return in.OnCompletion(ctx, e)
}

// configured answers 500 when genimg cannot be built from its environment.
func configured(w http.ResponseWriter, r *http.Request) (*instance.Instance, bool) {
	in, err := shared()
	if err != nil {
		slog.ErrorContext(r.Context(), "genimg is not configured", "error", err)
		http.Error(w, "genimg is not configured; see the logs", http.StatusInternalServerError)
		return nil, false
	}
	return in, true
}
