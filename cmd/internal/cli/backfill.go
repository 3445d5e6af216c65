package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
)

// stdin answers backfill's confirmation; the tests replace it.
var stdin io.Reader = os.Stdin

// runBackfill prices running upload rules over what is already in their
// buckets, without calling the model: what a backfill would cost. With
// --run it then submits the jobs, once confirmed.
func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", "--rules RULES [--run [--yes] [--concurrency N] [--max-usd X]] [flags]", stderr)
	t := addTargetFlags(fs)
	rules := fs.String("rules", os.Getenv("GENIMG_RULES"), "upload rules: a JSON array or a file holding one (env GENIMG_RULES);\nwith --run, the rules the functions run with, so that the ids agree")
	model := fs.String("model", job.DefaultModel, "model of rules that name none")
	prices := fs.String("prices", os.Getenv("GENIMG_PRICES"), "price table override, as GENIMG_PRICES (JSON, USD per 1M tokens)")
	vertex := fs.Bool("vertex", os.Getenv("GOOGLE_GENAI_USE_VERTEXAI") == "true", "price for the Vertex AI backend")
	raw := fs.Bool("json", false, "print the report as JSON (with --run, the estimate and the run's summary)")
	run := fs.Bool("run", false, "submit a job per matching object after the estimate, once confirmed")
	yes := fs.Bool("yes", false, "with --run: do not ask for confirmation")
	concurrency := fs.Int("concurrency", 8, "with --run: objects checked and submitted at once")
	maxUSD := fs.Float64("max-usd", 0, "with --run: stop submitting once the estimate of the submitted jobs would pass this (USD; 0 is no cap)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rules == "" {
		fs.Usage()
		return errors.New("backfill needs --rules (or GENIMG_RULES)")
	}
	if !*run {
		var runOnly []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "yes" || f.Name == "concurrency" || f.Name == "max-usd" {
				runOnly = append(runOnly, "--"+f.Name)
			}
		})
		if len(runOnly) > 0 {
			return fmt.Errorf("%s only apply with --run (without it, backfill only prices the rules)", strings.Join(runOnly, ", "))
		}
	}
	if *concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", *concurrency)
	}
	if *maxUSD < 0 || math.IsNaN(*maxUSD) || math.IsInf(*maxUSD, 0) {
		return fmt.Errorf("--max-usd %v: a spend cap in USD, 0 or more (0 is no cap)", *maxUSD)
	}
	// The same reading and checks as the functions' start: a rule that
	// would not load there is refused here too.
	env := map[string]string{
		"GENIMG_RULES": *rules, "GENIMG_PRICES": *prices, "GENIMG_MODEL": *model,
		"GENIMG_OUTPUT_BUCKET": "backfill-estimate", "GOOGLE_CLOUD_PROJECT": "backfill-estimate",
	}
	if *vertex {
		env["GOOGLE_GENAI_USE_VERTEXAI"] = "true"
	}
	env["GENIMG_UPLOAD_BUCKETS"] = strings.Join(ruleBuckets(*rules), ",")
	cfg, err := config.LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		return err
	}

	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rep, err := spend.Backfill(ctx, c.output, cfg.Uploads.Rules, cfg.Prices, cfg.Policy())
	if err != nil {
		return err
	}
	if !*run {
		if *raw {
			return writeJSON(stdout, rep)
		}
		printEstimate(stdout, rep, "estimate; nothing was sent to the model")
		return nil
	}

	// The estimate is shown before anything is submitted: on stdout, or
	// on stderr when stdout carries JSON.
	shown := stdout
	if *raw {
		shown = stderr
	}
	printEstimate(shown, rep, "estimate")
	if rep.Objects == 0 {
		fmt.Fprintln(shown, "nothing to submit")
		if *raw {
			return writeJSON(stdout, backfillRun{Estimate: rep})
		}
		return nil
	}
	if !*yes {
		ok, err := confirm(stdin, stderr, rep, *maxUSD)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintln(stderr, "cancelled: nothing was submitted")
			return nil
		}
	}

	pub := c.pubsub.Publisher(t.topicName(t.requestsTopic))
	defer pub.Stop()
	bar := &runProgress{w: stderr, tty: isTerminal(stderr), total: rep.Objects}
	sum, runErr := spend.RunBackfill(ctx, c.output, c.output, cfg.Uploads.Rules, cfg.Prices, cfg.Policy(),
		func(ctx context.Context, u spend.Upload) error { return notifyUpload(ctx, pub, u) },
		spend.RunOptions{Concurrency: *concurrency, SpendCapUSD: *maxUSD, Progress: bar.update})
	bar.end()
	for _, msg := range sum.Errors {
		fmt.Fprintln(stderr, "error:", msg)
	}
	if *raw {
		if err := writeJSON(stdout, backfillRun{Estimate: rep, Run: &sum}); err != nil {
			return err
		}
	} else {
		printRunSummary(stdout, sum, *maxUSD)
	}
	switch {
	case runErr != nil && ctx.Err() != nil:
		return fmt.Errorf("interrupted (%w): what was submitted runs; run the same command again to submit the rest", runErr)
	case runErr != nil:
		return runErr
	case sum.Failed > 0:
		return exitError(1)
	}
	return nil
}

// backfillRun is backfill --run --json's answer.
type backfillRun struct {
	Estimate spend.Report      `json:"estimate"`
	Run      *spend.RunSummary `json:"run,omitempty"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printEstimate writes the estimate a line per rule, then the total.
func printEstimate(w io.Writer, rep spend.Report, note string) {
	for _, r := range rep.Rules {
		fmt.Fprintf(w, "%-24s gs://%s/%s  %d images (%d skipped)  %s  $%.4f each  $%.2f\n",
			r.Rule, r.Bucket, r.Prefix, r.Objects, r.Skipped, r.Model, r.PerJobUSD, r.CostUSD)
	}
	fmt.Fprintf(w, "total: %d images, $%.2f (%s)\n", rep.Objects, rep.CostUSD, note)
}

// confirm asks on w whether to submit the estimated jobs and reads the
// answer from r: only y or yes (any case) goes ahead; anything else,
// including no answer at all, is no.
func confirm(r io.Reader, w io.Writer, rep spend.Report, maxUSD float64) (bool, error) {
	capped := ""
	if maxUSD > 0 {
		capped = fmt.Sprintf(", stopping at $%.2f", maxUSD)
	}
	fmt.Fprintf(w, "Submit %d job%s for about $%.2f%s? [y/N] ", rep.Objects, plural(rep.Objects), rep.CostUSD, capped)
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading the answer: %w", err)
	}
	if errors.Is(err, io.EOF) && line == "" {
		fmt.Fprintln(w) // no answer: end the prompt's line
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// notifyUpload hands an object to the pipeline as its bucket's Cloud
// Storage notification would (OBJECT_FINALIZE, payload NONE: the function
// reads the object's attributes itself), on the requests topic, whose push
// subscription reaches OnMessage. The function decides the job as for a
// fresh upload, with the id spend.UploadJobID derives from the object's
// generation. No eventTime: the delivery's age is the message's, not the
// object's (an old object is not an old delivery).
func notifyUpload(ctx context.Context, pub *pubsub.Publisher, u spend.Upload) error {
	res := pub.Publish(ctx, &pubsub.Message{Attributes: map[string]string{
		"eventType":        "OBJECT_FINALIZE",
		"payloadFormat":    "NONE",
		"bucketId":         u.Bucket,
		"objectId":         u.Object.Name,
		"objectGeneration": strconv.FormatInt(u.Object.Generation, 10),
	}})
	if _, err := res.Get(ctx); err != nil {
		return fmt.Errorf("publishing the upload notification: %w", err)
	}
	return nil
}

// printRunSummary writes what a backfill run did, a "name  value" line each.
func printRunSummary(w io.Writer, s spend.RunSummary, maxUSD float64) {
	fmt.Fprintf(w, "submitted     %d\n", s.Submitted)
	fmt.Fprintf(w, "already done  %d\n", s.Done)
	fmt.Fprintf(w, "running       %d (claimed now: not submitted again)\n", s.Running)
	if maxUSD > 0 {
		fmt.Fprintf(w, "capped        %d (left out by --max-usd $%.2f)\n", s.Capped, maxUSD)
	}
	fmt.Fprintf(w, "failed        %d\n", s.Failed)
	fmt.Fprintf(w, "cost          $%.4f (estimate of the submitted jobs; each record has its real cost)\n", s.CostUSD)
	if s.Submitted > 0 {
		fmt.Fprintln(w, "the jobs run now: follow them with genimg events")
	}
}

// runProgress draws a backfill run's progress: on a terminal one line
// redrawn in place, a bar of the objects seen; otherwise a plain line at
// every tenth of the way, so that logs stay short. update is called one
// call at a time (spend.RunOptions.Progress).
type runProgress struct {
	w      io.Writer
	tty    bool
	total  int
	tenths int // the last tenth printed as a plain line
	drawn  bool
}

const barWidth = 30

func (p *runProgress) update(s spend.RunSummary) {
	seen := s.Submitted + s.Done + s.Running + s.Capped + s.Failed
	total := max(p.total, seen) // objects uploaded since the estimate
	line := fmt.Sprintf("%d/%d  submitted %d, already done %d, running %d, capped %d, failed %d, $%.2f",
		seen, total, s.Submitted, s.Done, s.Running, s.Capped, s.Failed, s.CostUSD)
	if p.tty {
		filled := barWidth * seen / max(total, 1)
		fmt.Fprintf(p.w, "\r\033[K[%s%s] %s", strings.Repeat("#", filled), strings.Repeat(".", barWidth-filled), line)
		p.drawn = true
		return
	}
	if tenths := 10 * seen / max(total, 1); tenths > p.tenths || seen == total {
		p.tenths = tenths
		fmt.Fprintln(p.w, line)
	}
}

// end finishes the redrawn line.
func (p *runProgress) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// ruleBuckets lists the buckets rules name (JSON, or a file holding it),
// so that configuration takes them as upload buckets. Rules that do not
// decode are left to LoadConfig to explain.
func ruleBuckets(rules string) []string {
	data := []byte(rules)
	if !strings.HasPrefix(strings.TrimSpace(rules), "[") {
		b, err := os.ReadFile(rules)
		if err != nil {
			return nil
		}
		data = b
	}
	var rs []config.Rule
	if json.Unmarshal(data, &rs) != nil {
		return nil
	}
	var buckets []string
	for _, r := range rs {
		buckets = append(buckets, r.Bucket)
	}
	return buckets
}
