package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
)

// runBackfill prices running upload rules over what is already in their
// buckets, without calling the model: what a backfill would cost.
func runBackfill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backfill", "--rules RULES [flags]", stderr)
	t := addTargetFlags(fs)
	rules := fs.String("rules", os.Getenv("GENIMG_RULES"), "upload rules: a JSON array or a file holding one (env GENIMG_RULES)")
	model := fs.String("model", job.DefaultModel, "model of rules that name none")
	prices := fs.String("prices", os.Getenv("GENIMG_PRICES"), "price table override, as GENIMG_PRICES (JSON, USD per 1M tokens)")
	vertex := fs.Bool("vertex", os.Getenv("GOOGLE_GENAI_USE_VERTEXAI") == "true", "price for the Vertex AI backend")
	raw := fs.Bool("json", false, "print the report as JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rules == "" {
		fs.Usage()
		return errors.New("backfill needs --rules (or GENIMG_RULES)")
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
	if *raw {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	for _, r := range rep.Rules {
		fmt.Fprintf(stdout, "%-24s gs://%s/%s  %d images (%d skipped)  %s  $%.4f each  $%.2f\n",
			r.Rule, r.Bucket, r.Prefix, r.Objects, r.Skipped, r.Model, r.PerJobUSD, r.CostUSD)
	}
	fmt.Fprintf(stdout, "total: %d images, $%.2f (estimate; nothing was sent to the model)\n", rep.Objects, rep.CostUSD)
	return nil
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
