package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/storage"
)

// runPause sets the kill switch (gs://OUTPUT_BUCKET/control/paused): no
// instance starts a model call once it sees it (within seconds); jobs that
// arrive meanwhile are held, never lost, and run once it is cleared.
func runPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return killSwitch(ctx, "pause", args, stdout, stderr, true)
}

// runResume clears the kill switch; the held jobs resume at the next
// scheduled PollBatches.
func runResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return killSwitch(ctx, "resume", args, stdout, stderr, false)
}

func killSwitch(ctx context.Context, name string, args []string, stdout, stderr io.Writer, on bool) error {
	fs := newFlagSet(name, "[flags]", stderr)
	t := addTargetFlags(fs)
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", name, rest)
	}
	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	uri := "gs://" + c.output.Bucket() + "/" + storage.PauseObject
	if on {
		if err := spend.Pause(ctx, c.output); err != nil {
			return fmt.Errorf("setting the kill switch %s: %w", uri, err)
		}
		fmt.Fprintf(stdout, "paused: %s exists; new model calls stop within seconds, and jobs are held until genimg resume\n", uri)
		return nil
	}
	if err := spend.Resume(ctx, c.output); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("clearing the kill switch %s: %w", uri, err)
	}
	fmt.Fprintf(stdout, "resumed: %s removed; held jobs run at the next scheduled poll\n", uri)
	return nil
}
