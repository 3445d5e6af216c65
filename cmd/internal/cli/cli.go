// Package cli is the genimg command line: the subcommands of cmd/genimg,
// and the load driver that cmd/local also runs against a stack in its own
// process. It is a client only: it talks to genimg through its triggers,
// the output bucket and the completion topic, and links none of the
// functions, the stand-in model or the emulators.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// ExitCode is the exit status of a command that ended with err, which it
// reports on stderr after prog when a subcommand did not already say why.
func ExitCode(prog string, err error, stderr io.Writer) int {
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 2
	case errors.As(err, &exit):
		return int(exit)
	}
	fmt.Fprintln(stderr, prog+":", err)
	return 1
}

// exitError ends the command with a status and no further message (the
// subcommand already said why).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `genimg runs image jobs on genimg (the local stack by default).

Usage:
  genimg generate "prompt" [--image FILE]... [--aspect 16:9] [--via http|pubsub|upload] [--id ID] [--parent JOB] [--out DIR] [--wait 5m]
  genimg events [--json] [-n N]
  genimg get JOB [--from http|storage] [--out DIR] [--json]
  genimg replay JOB [--job FILE] [--via pubsub|http] [--out DIR]
  genimg load -n N -c C --via http|pubsub|upload [--standin] [--latency 2s] [--error-rate 0.05]
                                           (against a running stack; go run ./cmd/local load starts its own)
  genimg backfill --rules RULES [--json]     (what running upload rules over existing objects would cost)
  genimg backfill --rules RULES --run [--yes] [--concurrency 8] [--max-usd X]   (and then run them)
  genimg pause | genimg resume               (the kill switch: hold every job, or let them run)
  genimg listen [--addr 127.0.0.1:9000] [--json]   (a callback receiver that verifies signatures and prints events)

Run "genimg COMMAND -h" for a command's flags. Against Google Cloud, an
IAM-protected function needs --token (or GENIMG_ID_TOKEN) or --impersonate SA:
a person's own credentials cannot mint ID tokens.
`

// Run is the genimg command with args (without the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
		"pause":    runPause,
		"resume":   runResume,
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
