// Command genimg is the day-to-day command line of genimg: it submits jobs
// through any of the three triggers and waits for them, tails completion
// events, shows records, resubmits failed jobs, and drives load.
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
//	go run ./cmd/genimg load --local -n 200 -c 200 --latency 2s --via pubsub
//	go run ./cmd/genimg backfill --rules rules.json
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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/genimg/genimg" // the functions, for load --local
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var exit exitError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case errors.As(err, &exit):
		os.Exit(int(exit))
	default:
		fmt.Fprintln(os.Stderr, "genimg:", err)
		os.Exit(1)
	}
}

// exitError ends the command with a status and no further message (the
// subcommand already said why).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `genimg runs image jobs on genimg (the local stack by default).

Usage:
  genimg generate "prompt" [--image FILE]... [--aspect 16:9] [--via http|pubsub|upload] [--id ID] [--out DIR] [--wait 5m]
  genimg events [--json] [-n N]
  genimg get JOB [--from http|storage] [--out DIR] [--json]
  genimg replay JOB [--job FILE] [--via pubsub|http] [--out DIR]
  genimg load -n N -c C --via http|pubsub|upload [--local] [--latency 2s] [--error-rate 0.05]
  genimg backfill --rules RULES [--json]     (what running upload rules over existing objects would cost)
  genimg listen [--addr 127.0.0.1:9000] [--json]   (a callback receiver that verifies signatures and prints events)

Run "genimg COMMAND -h" for a command's flags. Against Google Cloud, an
IAM-protected function needs --token (or GENIMG_ID_TOKEN) or --impersonate SA:
a person's own credentials cannot mint ID tokens.
`

// run is the command, for main and for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"generate": runGenerate,
		"events":   runEvents,
		"get":      runGet,
		"replay":   runReplay,
		"load":     runLoad,
		"backfill": runBackfill,
		"listen":   runListen,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// parseFlags parses a subcommand's flags, allowing them after positional
// arguments (genimg get JOB --from storage), and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newFlagSet is a subcommand's flag set, writing help to stderr.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("genimg "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: genimg %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
