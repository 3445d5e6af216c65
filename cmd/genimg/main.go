// Command genimg is the day-to-day command line of genimg: it submits jobs
// through any of the three triggers and waits for them, tails completion
// events, shows records, resubmits failed jobs, and drives load against a
// running stack or deployment. It is a client only: it links none of the
// functions, the stand-in model or the emulators (go run ./cmd/local load
// runs a load against a stack in its own process).
//
// It talks to the local stack (go run ./cmd/local) unless flags or the
// environment point elsewhere:
//
//	go run ./cmd/genimg generate "a lighthouse at dusk" --aspect 16:9
//	go run ./cmd/genimg generate "make it snow" --image photo.png --via upload
//	go run ./cmd/genimg generate "a red fox" --via pubsub --id fox-1 --out ./fox
//	go run ./cmd/genimg events [--json]
//	go run ./cmd/genimg get JOB [--from storage]
//	go run ./cmd/genimg replay JOB [--job job.json]
//	go run ./cmd/genimg load -n 200 -c 50 --via pubsub [--standin]
//	go run ./cmd/genimg backfill --rules rules.json
//	go run ./cmd/genimg listen --addr 127.0.0.1:9000
//	go run ./cmd/genimg listen --addr 127.0.0.1:9000
//
// Every subcommand takes --url (the Generate function), --project,
// --input-bucket, --output-bucket, --requests-topic and --completion-topic;
// the environment variables GENIMG_URL, GOOGLE_CLOUD_PROJECT,
// GENIMG_UPLOAD_BUCKETS, GENIMG_OUTPUT_BUCKET, GENIMG_REQUESTS_TOPIC,
// GENIMG_COMPLETION_TOPIC, STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST
// stand in for them. With none of them set it uses the local stack's
// defaults and emulators.
//
// Against Google Cloud the Cloud clients use Application Default
// Credentials. An IAM-protected Generate function needs an ID token: pass
// one with --token (or GENIMG_ID_TOKEN), e.g. from
// `gcloud auth print-identity-token --impersonate-service-account=SA --audiences=URL`,
// or let genimg mint one with --impersonate SA. A person's own user
// credentials cannot mint ID tokens. Tokens are never printed.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/genimg/genimg/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode("genimg", err, os.Stderr))
}
