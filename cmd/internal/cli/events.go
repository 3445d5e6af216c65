package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("events", "[flags]", stderr)
	t := addTargetFlags(fs)
	raw := fs.Bool("json", false, "print each event's record as JSON, one per line")
	n := fs.Int("n", 0, "stop after this many events (0: until Ctrl-C)")
	outcome := fs.String("outcome", "", "only events with this outcome (succeeded, blocked, no_image, failed)")
	via := fs.String("trigger", "", "only events of jobs from this trigger (http, pubsub, upload)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		fs.Usage()
		return fmt.Errorf("events takes no arguments")
	}
	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	// Filters run in Pub/Sub on the extension attributes genimg sets for
	// exactly this (README, "The completion event").
	var filters []string
	if *outcome != "" {
		filters = append(filters, fmt.Sprintf(`attributes.ce-outcome = %q`, *outcome))
	}
	if *via != "" {
		filters = append(filters, fmt.Sprintf(`attributes.ce-trigger = %q`, *via))
	}
	sub, err := c.subscribe(ctx, strings.Join(filters, " AND "))
	if err != nil {
		return err
	}
	defer sub.delete(ctx)
	fmt.Fprintf(stderr, "listening for completion events on %s (Ctrl-C stops)\n", t.topicName(t.completionTopic))

	// Delivery is at-least-once: show each event once, by ce-source + ce-id.
	var (
		mu    sync.Mutex
		seen  = map[string]bool{}
		count int
	)
	return sub.receive(ctx, func(e event) bool {
		mu.Lock()
		defer mu.Unlock()
		if seen[e.key()] || (*n > 0 && count >= *n) {
			return *n > 0 && count >= *n
		}
		seen[e.key()] = true
		count++
		if *raw {
			fmt.Fprintf(stdout, "%s\n", e.Data)
		} else {
			fmt.Fprintln(stdout, eventLine(e))
		}
		return *n > 0 && count >= *n
	})
}

// eventLine is one event as a line: time, job, outcome, trigger, cost,
// images.
func eventLine(e event) string {
	r := e.Record
	at := r.Timings.CompletedAt
	if at.IsZero() {
		at = e.Received
	}
	line := fmt.Sprintf("%s  %-40s  %-9s  %-6s  $%.4f  %d image%s",
		at.Local().Format(time.TimeOnly), r.JobID, r.Outcome, r.Trigger.Kind, r.CostUSD, len(r.Outputs), plural(len(r.Outputs)))
	for _, o := range r.Outputs {
		line += "  " + o.URI
	}
	if r.Error != nil {
		line += "  " + r.Error.Code + ": " + r.Error.Message
	}
	return line
}
