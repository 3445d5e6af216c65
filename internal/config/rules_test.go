package config_test

import (
	"testing"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

func TestRuleJob(t *testing.T) {
	r := config.Rule{
		Bucket: "genimg-input", Prefix: "watercolor/", Name: "wc", DryRun: true,
		Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1",
		ResponseModalities: []string{"IMAGE"}, CandidateCount: 2, SystemInstruction: "s",
		SafetySettings: []job.SafetySetting{{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "OFF"}},
		CachedContent:  "cachedContents/c", Model: "gemini-2.5-flash-image",
		Output: &job.OutputOptions{Prefix: "wc/"}, Labels: map[string]string{"rule": "wc"},
		BillingLabels: map[string]string{"team": "art"},
	}
	img := job.Image{URI: "gs://genimg-input/watercolor/a.png", Generation: 42}
	got := r.Job(img)
	want := job.Job{
		Prompt: r.Prompt, Images: []job.Image{img}, AspectRatio: "1:1", ResponseModalities: []string{"IMAGE"},
		CandidateCount: 2, SystemInstruction: "s",
		SafetySettings: []job.SafetySetting{{Category: "HARM_CATEGORY_HATE_SPEECH", Threshold: "OFF"}},
		CachedContent:  "cachedContents/c", Model: "gemini-2.5-flash-image", Output: &job.OutputOptions{Prefix: "wc/"},
		Labels: map[string]string{"rule": "wc"}, BillingLabels: map[string]string{"team": "art"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Rule.Job (-want +got):\n%s", diff)
	}
	// Changing one job (as Normalize and the pipeline may) leaves the rule,
	// shared by concurrent jobs, alone.
	got.ResponseModalities[0] = "x"
	got.SafetySettings[0].Threshold = "x"
	got.Output.Prefix = "x"
	got.Labels["rule"] = "x"
	got.BillingLabels["team"] = "x"
	again := r.Job(img)
	if diff := cmp.Diff(want, again); diff != "" {
		t.Errorf("a job changed its rule (-want +got):\n%s", diff)
	}
}

func TestRuleMatches(t *testing.T) {
	r := config.Rule{Bucket: "genimg-input", Prefix: "watercolor/"}
	tests := []struct {
		bucket, name string
		want         bool
	}{
		{"genimg-input", "watercolor/a.png", true},
		{"genimg-input", "watercolor/deep/a.png", true},
		{"genimg-input", "watercolors/a.png", false},
		{"genimg-input", "a/watercolor/a.png", false},
		{"genimg-input", "watercolor", false},
		{"other", "watercolor/a.png", false},
	}
	for _, tt := range tests {
		if got := r.Matches(tt.bucket, tt.name); got != tt.want {
			t.Errorf("Matches(%s, %s) = %v, want %v", tt.bucket, tt.name, got, tt.want)
		}
	}
}
