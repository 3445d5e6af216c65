package job

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// A Policy is what a deployment allows, on top of what the model accepts.
// It comes from configuration.
type Policy struct {
	Backend Backend
	// Models is the allow-list; DefaultModel is used when a job names none.
	Models       []string
	DefaultModel string
	// InputBuckets are the buckets gs:// inputs may be read from.
	InputBuckets []string
	// MaxImageBytes bounds each inline input image.
	MaxImageBytes int64
	// MaxPromptBytes bounds the prompt and the system instruction each.
	MaxPromptBytes int
}

// The patterns leave lengths to the code (matches): a bounded repetition
// such as {1,512} compiles into that many copies of its class, and these
// took 3.6 ms and 1 MB of a cold start to compile.
var (
	idPattern     = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)                                                    // at most 128
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9._/-]+$`)                                                   // at most 512
	cachePattern  = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/)?cachedContents/([A-Za-z0-9._-]+)$`) // NAME at most 256
	// Vertex AI request label rules: at most 63 bytes each.
	vertexLabelKey   = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	vertexLabelValue = regexp.MustCompile(`^[a-z0-9_-]*$`)
)

// matches reports whether s is at most max bytes and matches re.
func matches(re *regexp.Regexp, s string, max int) bool {
	return len(s) <= max && re.MatchString(s)
}

// Label limits for the free-form labels echoed in records and events.
const (
	maxLabels          = 64
	maxLabelKeyBytes   = 63
	maxLabelValueBytes = 256
)

// ValidID reports whether id may name a job: [A-Za-z0-9._-]{1,128}, and not
// "." or "..", so that jobs/<id>/ never escapes its folder.
func ValidID(id string) bool {
	return matches(idPattern, id, 128) && id != "." && id != ".."
}

// Normalize fills the defaults a policy implies and canonicalises case, so
// that the same work always has the same fingerprint.
func (j *Job) Normalize(p Policy) {
	if j.Model == "" {
		j.Model = p.DefaultModel
		if j.Model == "" {
			j.Model = DefaultModel
		}
	}
	for i, m := range j.ResponseModalities {
		j.ResponseModalities[i] = strings.ToUpper(strings.TrimSpace(m))
	}
	if j.CandidateCount == 0 {
		j.CandidateCount = 1
	}
	for i := range j.SafetySettings {
		s := &j.SafetySettings[i]
		s.Category = strings.ToUpper(strings.TrimSpace(s.Category))
		s.Threshold = strings.ToUpper(strings.TrimSpace(s.Threshold))
	}
	if j.Output != nil && j.Output.Prefix == "" {
		j.Output = nil
	}
	j.normalizeFeatures()
	j.normalizeRenditions()
	j.ImageSize = strings.ToUpper(strings.TrimSpace(j.ImageSize))
}

// Validate checks a normalised job against the policy and the model's
// capability. Every problem is reported, each saying what was wrong and what
// is accepted; the error wraps ErrInvalid. Inline image bytes are sniffed and
// their MIMEType set from the bytes.
func (j *Job) Validate(p Policy) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if j.ID != "" && !ValidID(j.ID) {
		bad("id %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-' (and not '.' or '..')", truncate(j.ID))
	}
	if !slices.Contains(p.Models, j.Model) {
		bad("model %q is not allowed here; allowed: %s", truncate(j.Model), strings.Join(p.Models, ", "))
		return wrapInvalid(errs)
	}
	c, err := Lookup(j.Model, p.Backend)
	if err != nil {
		bad("%v", err)
		return wrapInvalid(errs)
	}

	switch {
	case strings.TrimSpace(j.Prompt) == "":
		bad("prompt is required: describe the image to generate or the edit to make")
	case !utf8.ValidString(j.Prompt):
		bad("prompt is not valid UTF-8")
	case p.MaxPromptBytes > 0 && len(j.Prompt) > p.MaxPromptBytes:
		bad("prompt is %d bytes; at most %d are accepted", len(j.Prompt), p.MaxPromptBytes)
	}
	if !utf8.ValidString(j.SystemInstruction) {
		bad("systemInstruction is not valid UTF-8")
	}
	if p.MaxPromptBytes > 0 && len(j.SystemInstruction) > p.MaxPromptBytes {
		bad("systemInstruction is %d bytes; at most %d are accepted", len(j.SystemInstruction), p.MaxPromptBytes)
	}

	if len(j.Images) > c.MaxImages {
		bad("%d images: %s accepts at most %d input images", len(j.Images), j.Model, c.MaxImages)
	}
	for i := range j.Images {
		if err := j.validateImage(i, c, p); err != nil {
			errs = append(errs, err)
		}
	}

	if j.AspectRatio != "" {
		if _, ok := c.AspectRatios[j.AspectRatio]; !ok {
			bad("aspectRatio %q is not supported by %s; accepted: %s", truncate(j.AspectRatio), j.Model, strings.Join(c.Ratios(), ", "))
		}
	}
	for _, m := range j.ResponseModalities {
		if !slices.Contains(c.Modalities, m) {
			bad("responseModalities: %q is not accepted by %s; accepted: %s", truncate(m), j.Model, strings.Join(c.Modalities, ", "))
		}
	}
	if len(j.ResponseModalities) > 0 && !slices.Contains(j.ResponseModalities, "IMAGE") {
		bad(`responseModalities must include "IMAGE": genimg jobs produce images`)
	}
	if j.CandidateCount < 1 || j.CandidateCount > c.MaxCandidates {
		bad("candidateCount %d: accepted 1 to %d", j.CandidateCount, c.MaxCandidates)
	}

	seen := map[string]bool{}
	for _, s := range j.SafetySettings {
		if !slices.Contains(c.SafetyCategories, s.Category) {
			bad("safetySettings: category %q is not accepted on %s; accepted: %s", truncate(s.Category), p.Backend, strings.Join(c.SafetyCategories, ", "))
		}
		if !slices.Contains(c.SafetyThresholds, s.Threshold) {
			bad("safetySettings: threshold %q is not accepted; accepted: %s", truncate(s.Threshold), strings.Join(c.SafetyThresholds, ", "))
		}
		if seen[s.Category] {
			bad("safetySettings: category %q is set twice", truncate(s.Category))
		}
		seen[s.Category] = true
	}

	if j.CachedContent != "" {
		if m := cachePattern.FindStringSubmatch(j.CachedContent); m == nil || len(m[2]) > 256 {
			bad("cachedContent %q: expected cachedContents/NAME (or projects/P/locations/L/cachedContents/NAME)", truncate(j.CachedContent))
		}
		if j.SystemInstruction != "" {
			bad("cachedContent and systemInstruction cannot be combined (the API rejects the pair): put the instruction in the cache")
		}
	}

	if j.Output != nil {
		pre := j.Output.Prefix
		if !matches(prefixPattern, pre, 512) || strings.HasPrefix(pre, "/") || slices.Contains(strings.Split(pre, "/"), "..") ||
			slices.Contains(strings.Split(strings.TrimSuffix(pre, "/"), "/"), "") || slices.Contains(strings.Split(pre, "/"), ".") {
			bad("output.prefix %q: must be a relative path of A-Z, a-z, 0-9, '.', '_', '-' and '/' without empty, '.' or '..' segments", truncate(pre))
		} else if pre == "jobs" || strings.HasPrefix(pre, "jobs/") {
			bad("output.prefix %q: jobs/ holds genimg's job state; choose another prefix", truncate(pre))
		}
	}

	if len(j.Labels) > maxLabels {
		bad("labels: %d entries; at most %d", len(j.Labels), maxLabels)
	}
	// Keys in sorted order: the same job always gets the same message, in
	// every record written for it.
	for _, k := range slices.Sorted(maps.Keys(j.Labels)) {
		v := j.Labels[k]
		// Key and value are checked apart: halves of one character split
		// across them would pass as a whole.
		if k == "" || len(k) > maxLabelKeyBytes || len(v) > maxLabelValueBytes || !utf8.ValidString(k) || !utf8.ValidString(v) {
			bad("labels: %q: keys must be 1 to %d bytes and values at most %d bytes of UTF-8", truncate(k), maxLabelKeyBytes, maxLabelValueBytes)
		}
	}
	if len(j.BillingLabels) > maxLabels {
		bad("billingLabels: %d entries; Vertex AI accepts at most %d", len(j.BillingLabels), maxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(j.BillingLabels)) {
		v := j.BillingLabels[k]
		if !matches(vertexLabelKey, k, 63) {
			bad("billingLabels: key %q: must start with a lowercase letter and be at most 63 lowercase letters, digits, '_' or '-'", truncate(k))
		}
		if !matches(vertexLabelValue, v, 63) {
			bad("billingLabels: value %q of %q: must be at most 63 lowercase letters, digits, '_' or '-'", truncate(v), truncate(k))
		}
	}
	errs = append(errs, j.validateFeatures(c, p)...)
	errs = append(errs, ValidateRenditions("renditions", j.Renditions)...)
	errs = append(errs, j.validateModelFeatures(c)...)
	errs = append(errs, j.validateParent()...)
	return wrapInvalid(errs)
}

func (j *Job) validateImage(i int, c Capability, p Policy) error {
	img := &j.Images[i]
	switch {
	case img.URI != "" && len(img.Data) > 0:
		return fmt.Errorf("images[%d]: give either uri or data, not both", i)
	case img.URI != "":
		bucket, _, err := ParseGCS(img.URI)
		if err != nil {
			return fmt.Errorf("images[%d]: %v", i, err)
		}
		if !slices.Contains(p.InputBuckets, bucket) {
			return fmt.Errorf("images[%d]: bucket %q is not one genimg may read inputs from; allowed: %s", i, bucket, listOrNone(p.InputBuckets))
		}
		return nil
	case len(img.Data) > 0:
		if p.MaxImageBytes > 0 && int64(len(img.Data)) > p.MaxImageBytes {
			return fmt.Errorf("%w: images[%d]: %d bytes; at most %d bytes per image are accepted", ErrTooLarge, i, len(img.Data), p.MaxImageBytes)
		}
		got := Sniff(img.Data)
		if !slices.Contains(c.InputTypes, got) {
			return fmt.Errorf("images[%d]: content is %s; %s accepts %s", i, describeType(got), j.Model, strings.Join(c.InputTypes, ", "))
		}
		img.MIMEType = got
		return nil
	default:
		return fmt.Errorf("images[%d]: give uri (gs://bucket/object) or data (base64) with the image", i)
	}
}

// ParseGCS splits gs://bucket/object.
func ParseGCS(uri string) (bucket, object string, err error) {
	rest, ok := strings.CutPrefix(uri, "gs://")
	bucket, object, _ = strings.Cut(rest, "/")
	// Cloud Storage object names are UTF-8; anything else could never be
	// read, and would not survive a JSON round trip of the job.
	if !ok || bucket == "" || object == "" || strings.ContainsAny(bucket, "#?") || !utf8.ValidString(object) {
		return "", "", fmt.Errorf("uri %q: expected gs://bucket/object", truncate(uri))
	}
	return bucket, object, nil
}

func wrapInvalid(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	// An image over the size limit stays recognisable as ErrTooLarge
	// through the join, so HTTP can answer 413 for it.
	return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none configured (GENIMG_INPUT_BUCKETS)"
	}
	return strings.Join(s, ", ")
}

func describeType(mime string) string {
	if mime == "" {
		return "not a recognised image"
	}
	return mime
}

// truncate keeps caller-supplied values short in messages.
func truncate(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut-- // never split a character
	}
	return s[:cut] + "…"
}

// validateModelFeatures checks the fields only some models take: imageSize
// and Google Search grounding.
func (j *Job) validateModelFeatures(c Capability) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if j.ImageSize != "" {
		switch {
		case len(c.ImageSizes) == 0:
			bad("imageSize %q: %s has one output size and takes no imageSize; models that take one: %s", truncate(j.ImageSize), j.Model, strings.Join(modelsWith(func(c Capability) bool { return len(c.ImageSizes) > 0 }), ", "))
		case !slices.Contains(c.ImageSizes, j.ImageSize):
			bad("imageSize %q is not supported by %s; accepted: %s", truncate(j.ImageSize), j.Model, strings.Join(c.ImageSizes, ", "))
		}
	}
	for i, t := range j.Tools {
		switch {
		case t.GoogleSearch == nil:
			bad(`tools[%d]: name a tool; accepted: {"googleSearch": {}}`, i)
		case !c.Grounding:
			bad("tools[%d]: %s does not take googleSearch grounding; models that do: %s", i, j.Model, strings.Join(modelsWith(func(c Capability) bool { return c.Grounding }), ", "))
		}
	}
	if len(j.Tools) > 1 {
		bad("tools: %d tools; googleSearch is the one tool genimg passes on, once", len(j.Tools))
	}
	return errs
}
