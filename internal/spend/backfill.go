package spend

import (
	"context"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// Token figures of the estimate. An input image is 258 tokens (the
// Gemini API's figure for an image up to 384 px a side; larger ones are
// tiled, 258 tokens a 768 × 768 tile, so the input side errs low, but it
// is under 1 % of a job's cost). Text is about 4 characters a token.
const (
	InputImageTokens = 258
	CharsPerToken    = 4
)

// A Report is what a backfill of upload rules would cost: every object
// already under each rule's prefix run once.
type Report struct {
	Rules []RuleReport `json:"rules"`
	// Objects and CostUSD are the totals over all rules.
	Objects int     `json:"objects"`
	CostUSD float64 `json:"costUsd"`
}

// A RuleReport is one rule's share of a backfill.
type RuleReport struct {
	Rule   string `json:"rule"`
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	Model  string `json:"model"`
	// Objects are the images that would become jobs; Bytes their size.
	Objects int   `json:"objects"`
	Bytes   int64 `json:"bytes"`
	// Skipped are objects under the prefix that would not be jobs: not an
	// image the model accepts, a job file, genimg's own output, or over
	// the image size limit.
	Skipped int `json:"skipped"`
	// PerJobUSD is the estimate for one job; CostUSD for all of them.
	PerJobUSD float64 `json:"perJobUsd"`
	CostUSD   float64 `json:"costUsd"`
}

// EstimateRule is what one job of rule costs: candidateCount images of
// output tokens, one input image, and the prompt and instruction at about
// four characters a token, at prices. The model is the rule's, else the
// policy's default; its capability gives the tokens per output image.
func EstimateRule(rule config.Rule, prices config.Prices, policy job.Policy) (model string, usd float64, err error) {
	model = rule.Model
	if model == "" {
		model = policy.DefaultModel
	}
	c, err := job.Lookup(model, policy.Backend)
	if err != nil {
		return model, 0, fmt.Errorf("rule %s: %w: %w", rule.Name, job.ErrInvalid, err)
	}
	images := float64(max(rule.CandidateCount, 1))
	chars := utf8.RuneCountInString(rule.Prompt) + utf8.RuneCountInString(rule.SystemInstruction)
	promptTokens := math.Ceil(float64(chars) / CharsPerToken)
	const perToken = 1e-6 // prices are per million tokens
	prices = prices.For(model)
	usd = perToken * (images*float64(c.ImageTokens(rule.ImageSize))*prices.OutputImage +
		InputImageTokens*prices.InputImage +
		promptTokens*prices.InputText)
	return model, usd, nil
}

// Backfill lists the objects under each rule's prefix (objects is any
// bucket of the client: each rule names its own) and estimates what
// running the rule over all of them would cost, without calling the model.
// It counts what the upload path would take for the rule's job: images
// the model accepts (by content type, else by file extension), not job
// files, not genimg's own outputs, within policy.MaxImageBytes.
// config.Rule.DryRun rules are estimated like any other; the caller
// chooses the rules.
func Backfill(ctx context.Context, objects *storage.Objects, rules []config.Rule, prices config.Prices, policy job.Policy) (Report, error) {
	var rep Report
	for _, rule := range rules {
		model, per, err := EstimateRule(rule, prices, policy)
		if err != nil {
			return Report{}, err
		}
		c, _ := job.Lookup(model, policy.Backend) // checked by EstimateRule
		rr := RuleReport{Rule: rule.Name, Bucket: rule.Bucket, Prefix: rule.Prefix, Model: model, PerJobUSD: per}
		err = objects.In(rule.Bucket).List(ctx, rule.Prefix, "", func(a storage.Attrs) error {
			if !takes(a, c, policy) {
				rr.Skipped++
				return nil
			}
			rr.Objects++
			rr.Bytes += a.Size
			return nil
		})
		if err != nil {
			return Report{}, err
		}
		rr.CostUSD = float64(rr.Objects) * per
		rep.Rules = append(rep.Rules, rr)
		rep.Objects += rr.Objects
		rep.CostUSD += rr.CostUSD
	}
	return rep, nil
}

// imageExt maps file extensions to the types the upload path sniffs.
var imageExt = map[string]string{".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

// takes reports whether an upload of this object would run the rule.
func takes(a storage.Attrs, c job.Capability, policy job.Policy) bool {
	if strings.HasSuffix(a.Name, "/") || strings.HasSuffix(a.Name, ".job.json") || storage.IsGenerated(a.Metadata) {
		return false
	}
	if policy.MaxImageBytes > 0 && a.Size > policy.MaxImageBytes {
		return false
	}
	ct, _, _ := strings.Cut(a.ContentType, ";")
	if !slices.Contains(c.InputTypes, ct) {
		ct = imageExt[strings.ToLower(path.Ext(a.Name))]
	}
	return slices.Contains(c.InputTypes, ct)
}
