package config

import (
	"maps"
	"os"
	"strings"

	"github.com/genimg/genimg/job"
)

// A Rule turns images uploaded under a prefix of an upload bucket into edit
// jobs (README, "Upload"):
//
//	{"bucket": "in", "prefix": "watercolor/", "prompt": "Turn this photo into a watercolor painting", "aspectRatio": "1:1"}
//
// Besides bucket and prefix, a rule carries any job field but id and images;
// the uploaded image is the job's one input.
type Rule struct {
	Bucket string `json:"bucket"`
	Prefix string `json:"prefix"`
	// Name tells rules apart in job ids and logs; it defaults to the prefix.
	Name string `json:"name,omitempty"`
	// DryRun counts matching uploads and their estimated cost instead of
	// calling the model (a backfill preview).
	DryRun bool `json:"dryRun,omitempty"`

	Prompt             string              `json:"prompt"`
	AspectRatio        string              `json:"aspectRatio,omitempty"`
	ResponseModalities []string            `json:"responseModalities,omitempty"`
	CandidateCount     int32               `json:"candidateCount,omitempty"`
	SystemInstruction  string              `json:"systemInstruction,omitempty"`
	SafetySettings     []job.SafetySetting `json:"safetySettings,omitempty"`
	CachedContent      string              `json:"cachedContent,omitempty"`
	Model              string              `json:"model,omitempty"`
	Output             *job.OutputOptions  `json:"output,omitempty"`
	Labels             map[string]string   `json:"labels,omitempty"`
	BillingLabels      map[string]string   `json:"billingLabels,omitempty"`
	// Callback receives the completion event of every job the rule makes.
	Callback   *job.Callback   `json:"callback,omitempty"`
	Renditions []job.Rendition `json:"renditions,omitempty"`
	ImageSize  string          `json:"imageSize,omitempty"`
	Tools      []job.Tool      `json:"tools,omitempty"`
	// CacheControl is the Cache-Control of the rule's output objects, in
	// place of GENIMG_CACHE_CONTROL.
	CacheControl string `json:"cacheControl,omitempty"`
}

// Job is the job the rule makes of an uploaded image. The job shares
// nothing mutable with the rule: one rule serves concurrent jobs.
func (r Rule) Job(image job.Image) job.Job {
	var output *job.OutputOptions
	if r.Output != nil {
		o := *r.Output
		output = &o
	}
	var callback *job.Callback
	if r.Callback != nil {
		c := *r.Callback
		callback = &c
	}
	return job.Job{
		Callback:           callback,
		Prompt:             r.Prompt,
		Images:             []job.Image{image},
		AspectRatio:        r.AspectRatio,
		ResponseModalities: append([]string(nil), r.ResponseModalities...),
		CandidateCount:     r.CandidateCount,
		SystemInstruction:  r.SystemInstruction,
		SafetySettings:     append([]job.SafetySetting(nil), r.SafetySettings...),
		CachedContent:      r.CachedContent,
		Model:              r.Model,
		Output:             output,
		Labels:             maps.Clone(r.Labels),
		BillingLabels:      maps.Clone(r.BillingLabels),
		Renditions:         append([]job.Rendition(nil), r.Renditions...),
		ImageSize:          r.ImageSize,
		Tools:              append([]job.Tool(nil), r.Tools...),
	}
}

// Matches reports whether the rule applies to an object.
func (r Rule) Matches(bucket, name string) bool {
	return bucket == r.Bucket && strings.HasPrefix(name, r.Prefix)
}

// rules reads GENIMG_RULES: a JSON array, or the path of a file holding one.
func (r *reader) rules(name string) []Rule {
	v := r.str(name, "")
	if v == "" {
		return nil
	}
	data := []byte(v)
	// Anything that looks like JSON is JSON, so that a single rule object
	// gets "expected an array" rather than "no such file".
	if !strings.HasPrefix(v, "[") && !strings.HasPrefix(v, "{") {
		b, err := os.ReadFile(v)
		if err != nil {
			r.fail(name, v, "expected a JSON array of rules or the path of a file holding one: "+err.Error())
			return nil
		}
		data = b
	}
	var rules []Rule
	if err := job.DecodeStrict(data, &rules); err != nil {
		r.fail(name, v, "invalid rules: "+err.Error())
		return nil
	}
	for i := range rules {
		rule := &rules[i]
		switch {
		case rule.Bucket == "":
			r.fail(name, v, "every rule needs a bucket")
		case rule.Prefix == "" || !strings.HasSuffix(rule.Prefix, "/"):
			r.fail(name, rule.Prefix, "every rule needs a prefix ending in '/', such as watercolor/")
		case strings.TrimSpace(rule.Prompt) == "":
			r.fail(name, rule.Prefix, "every rule needs a prompt")
		}
		for i := range rule.Renditions {
			rule.Renditions[i].Format = strings.ToLower(strings.TrimSpace(rule.Renditions[i].Format))
		}
		for _, err := range job.ValidateRenditions("renditions", rule.Renditions) {
			r.fail(name, rule.Prefix, err.Error())
		}
		if err := checkCacheControl(rule.CacheControl); err != nil {
			r.fail(name, rule.Prefix, "cacheControl: "+err.Error())
		}
		if rule.Name == "" {
			rule.Name = rule.Prefix
		}
	}
	return rules
}
