package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/genimg/genimg/cmd/internal/cli"
	"github.com/genimg/genimg/internal/localstack"
	"github.com/genimg/genimg/internal/pipeline"
)

// runLoad is `go run ./cmd/local load`: genimg load against a stack this
// process starts on free ports, so that the model calls, peak RSS and CPU
// time of the functions are measured with the load.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return cli.Load(ctx, args, stdout, stderr, startLoadStack)
}

// startLoadStack starts the stack of a load: free ports, deliveries
// retried quickly, and room in the model for every job in flight.
func startLoadStack(ctx context.Context, concurrency int) (*cli.Local, error) {
	// Warnings only, on stderr: the report is on stdout.
	slog.SetDefault(slog.New(pipeline.NewLogHandler(os.Stderr, localstack.Defaults().Project, slog.LevelWarn)))
	s, err := localstack.Start(ctx, localstack.Options{
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second, MaxAttempts: 10,
		Env: map[string]string{
			// Every job in flight may be in the model at once: the
			// default cap (64) would queue the rest in the process.
			"GENIMG_MAX_CONCURRENT_CALLS": strconv.Itoa(max(concurrency, 64)),
			"GENIMG_LOG_LEVEL":            "WARN",
		},
	})
	if err != nil {
		return nil, err
	}
	l := &cli.Local{
		URL: s.FunctionsURL + "/Generate", Project: s.Project,
		InputBucket: s.InputBucket, OutputBucket: s.OutputBucket,
		RequestsTopic: s.RequestsTopic, CompletionTopic: s.CompletionTopic,
		StorageEmulatorHost: s.StorageURL, PubSubEmulatorHost: s.PubSubAddr,
		Close: s.Close,
	}
	if s.Model != nil {
		l.ModelCalls = s.Model.Calls
	}
	return l, nil
}
