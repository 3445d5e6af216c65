package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// A SharedContext is a system instruction and reference images that many
// jobs share. genimg keeps it in a Gemini context cache (Caches.Create with
// a TTL), named by Name, reuses the cache for every job that names the same
// context with the same content and model, and recreates it when it has
// expired. A job with a context sends cachedContent instead of the
// instruction and images, and its record counts the cached tokens.
//
// In JSON:
//
//	"context": {"name": "style-guide", "systemInstruction": "…", "images": [{"uri": "gs://…"}], "ttl": "3600s"}
type SharedContext struct {
	// Name identifies the context across jobs and instances,
	// [A-Za-z0-9._-]{1,64}.
	Name string `json:"name"`
	// SystemInstruction is the cached instruction.
	SystemInstruction string `json:"systemInstruction,omitempty"`
	// Images are cached reference images, given like a job's images.
	Images []Image `json:"images,omitempty"`
	// TTL is how long the cache lives after creation, as a Go or protobuf
	// duration ("3600s", "1h"); default DefaultContextTTL.
	TTL string `json:"ttl,omitempty"`
}

// Context limits.
const (
	DefaultContextTTL = time.Hour
	MinContextTTL     = time.Minute
	MaxContextTTL     = 48 * time.Hour
)

// MIME types a job may ask the answer's text in.
const (
	MIMEJSON = "application/json"
	MIMEText = "text/plain"
)

var (
	contextNamePattern  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`) // at most 64
	contextFieldNames   = []string{"name", "systemInstruction", "images", "ttl"}
	schemaTypes         = []string{"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
	responseMIMETypes   = []string{MIMEJSON, MIMEText}
	maxSchemaBytes      = 64 << 10
	maxSchemaDepth      = 16
	maxContextInstrByte = 1 << 20
)

// ContextTTL is the context's TTL, DefaultContextTTL when unset. The value
// was checked by Validate; an unparsable one yields the default.
func (c *SharedContext) ContextTTL() time.Duration {
	if c == nil || c.TTL == "" {
		return DefaultContextTTL
	}
	d, err := time.ParseDuration(c.TTL)
	if err != nil {
		return DefaultContextTTL
	}
	return d
}

// WantsJSON reports whether the job asked for a JSON answer.
func (j *Job) WantsJSON() bool { return j.ResponseMIMEType == MIMEJSON }

// normalizeFeatures canonicalises the fields of structured output.
func (j *Job) normalizeFeatures() {
	j.ResponseMIMEType = strings.ToLower(strings.TrimSpace(j.ResponseMIMEType))
	if len(j.ResponseSchema) > 0 {
		// Compact, so that the fingerprint ignores layout.
		var b bytes.Buffer
		if json.Compact(&b, j.ResponseSchema) == nil {
			j.ResponseSchema = b.Bytes()
		}
	}
}

// validateFeatures checks structured output and the shared context.
func (j *Job) validateFeatures(c Capability, p Policy) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if err := j.checkCallback(); err != nil {
		errs = append(errs, err)
	}
	if j.ResponseMIMEType != "" {
		if !slices.Contains(responseMIMETypes, j.ResponseMIMEType) {
			bad("responseMimeType %q: accepted: %s", truncate(j.ResponseMIMEType), strings.Join(responseMIMETypes, ", "))
		}
		if !slices.Contains(j.ResponseModalities, "TEXT") {
			bad(`responseMimeType needs "TEXT" among responseModalities: structured output is the answer's text`)
		}
	}
	if len(j.ResponseSchema) > 0 {
		if j.ResponseMIMEType != MIMEJSON {
			bad("responseSchema needs responseMimeType %q", MIMEJSON)
		}
		if err := CheckSchema(j.ResponseSchema); err != nil {
			bad("responseSchema: %v", err)
		}
	}

	ctx := j.Context
	if ctx == nil {
		return errs
	}
	if !matches(contextNamePattern, ctx.Name, 64) {
		bad("context.name %q: must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'", truncate(ctx.Name))
	}
	if j.CachedContent != "" {
		bad("context and cachedContent cannot be combined: both name the cache the request uses")
	}
	if j.SystemInstruction != "" {
		bad("context and systemInstruction cannot be combined (the API rejects an instruction beside a cache): put the instruction in context.systemInstruction")
	}
	if strings.TrimSpace(ctx.SystemInstruction) == "" && len(ctx.Images) == 0 {
		bad("context %q is empty: give a systemInstruction, images or both", truncate(ctx.Name))
	}
	if !utf8.ValidString(ctx.SystemInstruction) {
		bad("context.systemInstruction is not valid UTF-8")
	}
	if len(ctx.SystemInstruction) > maxContextInstrByte {
		bad("context.systemInstruction is %d bytes; at most %d are accepted", len(ctx.SystemInstruction), maxContextInstrByte)
	}
	if ctx.TTL != "" {
		d, err := time.ParseDuration(ctx.TTL)
		if err != nil || d < MinContextTTL || d > MaxContextTTL {
			bad("context.ttl %q: expected a duration from %v to %v, such as 3600s", truncate(ctx.TTL), MinContextTTL, MaxContextTTL)
		}
	}
	if len(ctx.Images) > c.MaxImages {
		bad("context.images: %d images; at most %d", len(ctx.Images), c.MaxImages)
	}
	// The context's images are checked like a job's: same buckets, same
	// types, same sizes.
	probe := Job{Model: j.Model, Images: ctx.Images}
	for i := range probe.Images {
		if err := probe.validateImage(i, c, p); err != nil {
			errs = append(errs, fmt.Errorf("context.%w", err))
		}
	}
	return errs
}

// CheckSchema checks that a responseSchema is what the Gemini API takes: a
// JSON object in the OpenAPI subset, with known types (either case),
// properties that are schemas, and required names that are properties.
func CheckSchema(raw json.RawMessage) error {
	if len(raw) > maxSchemaBytes {
		return fmt.Errorf("%d bytes; at most %d are accepted", len(raw), maxSchemaBytes)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	return checkSchemaNode("", v, 0)
}

func checkSchemaNode(at string, v any, depth int) error {
	where := func() string {
		if at == "" {
			return ""
		}
		return at + ": "
	}
	if depth > maxSchemaDepth {
		return fmt.Errorf("%snested deeper than %d levels", where(), maxSchemaDepth)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("%sexpected a JSON object (a schema), got %s", where(), jsonKind(v))
	}
	if t, ok := obj["type"]; ok {
		s, isStr := t.(string)
		if !isStr || !slices.Contains(schemaTypes, strings.ToUpper(s)) {
			return fmt.Errorf("%stype %v: accepted: %s", where(), t, strings.Join(schemaTypes, ", "))
		}
	}
	props := map[string]any{}
	if p, ok := obj["properties"]; ok {
		if props, ok = p.(map[string]any); !ok {
			return fmt.Errorf("%sproperties: expected an object of schemas", where())
		}
		for _, name := range slices.Sorted(maps.Keys(props)) {
			if err := checkSchemaNode(at+"properties."+name, props[name], depth+1); err != nil {
				return err
			}
		}
	}
	if r, ok := obj["required"]; ok {
		list, ok := r.([]any)
		if !ok {
			return fmt.Errorf("%srequired: expected an array of property names", where())
		}
		for _, n := range list {
			name, ok := n.(string)
			if _, known := props[name]; !ok || !known {
				return fmt.Errorf("%srequired: %v is not one of the properties", where(), n)
			}
		}
	}
	if items, ok := obj["items"]; ok {
		if err := checkSchemaNode(at+"items", items, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	default:
		return "an object"
	}
}
