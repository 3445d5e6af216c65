// Package job defines genimg's unit of work: the job a caller submits, how
// it is decoded and validated against what a model accepts, and the
// completion record that says what became of it.
//
// Field names follow the Gemini REST API (camelCase). The package is pure: it
// reads no environment and talks to no service, so every trigger, the
// pipeline and the tests share one definition of a valid job.
package job

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// DefaultModel is the model a job runs on when it names none.
const DefaultModel = "gemini-2.5-flash-image"

// A Job is one request for images: a prompt, optional input images to edit
// or combine, and the generation settings. It is the README, "The job".
type Job struct {
	// ID is the caller's idempotency key, [A-Za-z0-9._-]{1,128}. The same id
	// always means the same work.
	ID                 string            `json:"id,omitempty"`
	Prompt             string            `json:"prompt,omitempty"`
	Images             []Image           `json:"images,omitempty"`
	AspectRatio        string            `json:"aspectRatio,omitempty"`
	ResponseModalities []string          `json:"responseModalities,omitempty"`
	CandidateCount     int32             `json:"candidateCount,omitempty"`
	SystemInstruction  string            `json:"systemInstruction,omitempty"`
	SafetySettings     []SafetySetting   `json:"safetySettings,omitempty"`
	CachedContent      string            `json:"cachedContent,omitempty"`
	Model              string            `json:"model,omitempty"`
	Output             *OutputOptions    `json:"output,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	BillingLabels      map[string]string `json:"billingLabels,omitempty"`
	// ResponseMIMEType and ResponseSchema ask for structured output
	// (application/json and an OpenAPI-subset schema, as the Gemini API
	// takes them); only with TEXT among ResponseModalities.
	ResponseMIMEType string          `json:"responseMimeType,omitempty"`
	ResponseSchema   json.RawMessage `json:"responseSchema,omitempty"`
	// Context names a shared context (system instruction and reference
	// images) that genimg keeps in a context cache; see SharedContext.
	Context *SharedContext `json:"context,omitempty"`
	// Renditions are web-ready copies of each output image (Rendition).
	Renditions []Rendition `json:"renditions,omitempty"`
	// ImageSize is the output size ("512", "1K", "2K", "4K") for models
	// that take one (Capability.ImageSizes).
	ImageSize string `json:"imageSize,omitempty"`
	// Tools are the model's tools: Google Search grounding only.
	Tools []Tool `json:"tools,omitempty"`
	// Parent is the id of a succeeded job whose conversation this job
	// continues (conversation.go).
	Parent string `json:"parent,omitempty"`

	// History is the parent's conversation, oldest turn first, with its
	// images read back: resolved by the pipeline, never decoded or stored.
	History []Turn `json:"-"`
	// Callback is where genimg POSTs the completion event once the record
	// is final (contract 9.2).
	Callback *Callback `json:"callback,omitempty"`
}

// A Callback names the URL that receives the job's completion event as a
// signed HTTP request. In JSON: "callback": {"url": "https://receiver.example/hooks/genimg"}.
type Callback struct {
	URL string `json:"url"`
}

// A Tool is one tool the model may use, as the Gemini API spells it:
// {"googleSearch": {}} grounds the answer in Google Search results.
type Tool struct {
	GoogleSearch *GoogleSearch `json:"googleSearch,omitempty"`
}

// GoogleSearch asks for grounding with Google Search. It has no options
// in genimg.
type GoogleSearch struct{}

// An Image is one input image: a gs:// URI, or inline bytes (standard base64
// in JSON). MIMEType is a hint; the type is always sniffed from the bytes.
type Image struct {
	URI string `json:"uri,omitempty"`
	// Generation pins a gs:// input to one version of the object; zero
	// reads the live version. Upload jobs pin the uploaded generation.
	Generation int64  `json:"generation,omitempty"`
	Data       []byte `json:"data,omitempty"`
	MIMEType   string `json:"mimeType,omitempty"`
}

// A SafetySetting is a per-category blocking threshold, as the Gemini API
// spells it.
type SafetySetting struct {
	Category  string `json:"category"`
	Threshold string `json:"threshold"`
}

// OutputOptions says where the job's images go.
type OutputOptions struct {
	// Prefix is a path under the output bucket for the images; the job's
	// own folder goes beneath it.
	Prefix string `json:"prefix,omitempty"`
}

// Decode reads one JSON job. Unknown fields and trailing data are errors
// wrapping ErrInvalid, so a typo never silently changes a paid request.
func Decode(data []byte) (Job, error) {
	var j Job
	if err := DecodeStrict(data, &j); err != nil {
		return Job{}, fmt.Errorf("%w: job: %s", ErrInvalid, describeJSONError(data, err))
	}
	return j, nil
}

// DecodeStrict decodes one JSON value into v, rejecting unknown fields and
// anything after the value. It is the one strict decoder genimg uses for
// what callers write (jobs, rules).
func DecodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: expected a JSON object")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

// describeJSONError turns encoding/json's messages into ones that say what
// a caller should change. encoding/json names neither the object an unknown
// field sits in nor the field a bad base64 string is in, so those are looked
// up in data: a misspelt "url" in an image must list an image's fields, not
// the job's.
func describeJSONError(data []byte, err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		where, accepted := locateUnknownField(data, name)
		return fmt.Sprintf("%sunknown field %s; accepted fields: %s", where, name, strings.Join(accepted, ", "))
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		if typeErr.Field == "" {
			return fmt.Sprintf("expected a JSON object, got JSON %s", typeErr.Value)
		}
		return fmt.Sprintf("field %q: expected %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	var b64Err base64.CorruptInputError
	if errors.As(err, &b64Err) {
		return fmt.Sprintf("images[].data: not standard base64 (error at byte %d)", int64(b64Err))
	}
	return strings.TrimPrefix(msg, "json: ")
}

var (
	fieldNames = []string{
		"id", "prompt", "images", "aspectRatio", "responseModalities", "candidateCount",
		"systemInstruction", "safetySettings", "cachedContent", "model", "output", "labels", "billingLabels",
		"responseMimeType", "responseSchema", "context", "callback", "renditions", "imageSize", "tools", "parent",
	}
	callbackFieldNames = []string{"url"}
	imageFieldNames    = []string{"uri", "generation", "data", "mimeType"}
	safetyFieldNames   = []string{"category", "threshold"}
	outputFieldNames   = []string{"prefix"}
)

// locateUnknownField finds the object holding the unknown field quoted (as
// encoding/json quotes it) and returns a location prefix for the message and
// the fields accepted there. It falls back to the job's own fields.
func locateUnknownField(data []byte, quoted string) (where string, accepted []string) {
	name, err := strconv.Unquote(quoted)
	if err != nil {
		return "", fieldNames
	}
	var top struct {
		Images         []map[string]json.RawMessage
		SafetySettings []map[string]json.RawMessage
		Output         map[string]json.RawMessage
		Context        map[string]json.RawMessage
		Callback       map[string]json.RawMessage
		Renditions     []map[string]json.RawMessage
	}
	// Decoding without DisallowUnknownFields succeeds wherever the strict
	// decode got as far as an unknown field; on failure, fall back.
	if json.Unmarshal(data, &top) != nil {
		return "", fieldNames
	}
	unknownIn := func(obj map[string]json.RawMessage, known []string) bool {
		if _, ok := obj[name]; !ok {
			return false
		}
		return !slices.ContainsFunc(known, func(k string) bool { return strings.EqualFold(k, name) })
	}
	var all map[string]json.RawMessage
	if json.Unmarshal(data, &all) == nil && unknownIn(all, fieldNames) {
		return "", fieldNames
	}
	for i, img := range top.Images {
		if unknownIn(img, imageFieldNames) {
			return fmt.Sprintf("images[%d]: ", i), imageFieldNames
		}
	}
	for i, s := range top.SafetySettings {
		if unknownIn(s, safetyFieldNames) {
			return fmt.Sprintf("safetySettings[%d]: ", i), safetyFieldNames
		}
	}
	if unknownIn(top.Output, outputFieldNames) {
		return "output: ", outputFieldNames
	}
	if unknownIn(top.Context, contextFieldNames) {
		return "context: ", contextFieldNames
	}
	if unknownIn(top.Callback, callbackFieldNames) {
		return "callback: ", callbackFieldNames
	}
	for i, r := range top.Renditions {
		if unknownIn(r, renditionFieldNames) {
			return fmt.Sprintf("renditions[%d]: ", i), renditionFieldNames
		}
	}
	return "", fieldNames
}

// Custom metadata keys on every object genimg writes. MetaGeneratedBy is
// the loop guard's marker: an object carrying it is never taken for a job.
const (
	MetaGeneratedBy = "genimg-generated-by"
	MetaJob         = "genimg-job"
	MetaSource      = "genimg-source"
	MetaModel       = "genimg-model"
	MetaPromptHash  = "genimg-prompt-sha256"
)

// Generator is MetaGeneratedBy's value.
const Generator = "genimg"

// EventType is the CloudEvents type of genimg's completion event. A message
// carrying it is never taken for a job.
const EventType = "genimg.job.v1.completed"

// Clone is a copy of j that shares nothing mutable with it: images, their
// bytes' slice headers, labels and lists are copied (image bytes are never
// written in place, so they are shared).
func (j Job) Clone() Job {
	c := j
	c.Images = slices.Clone(j.Images)
	c.Labels = maps.Clone(j.Labels)
	c.BillingLabels = maps.Clone(j.BillingLabels)
	c.SafetySettings = slices.Clone(j.SafetySettings)
	c.ResponseModalities = slices.Clone(j.ResponseModalities)
	return c
}
