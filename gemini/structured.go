package gemini

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// structuredConfig puts a job's structured-output settings in the request:
// generationConfig.responseMimeType and responseSchema (the OpenAPI subset,
// the SDK's ResponseSchema; not responseJsonSchema).
func structuredConfig(j job.Job, cfg *genai.GenerateContentConfig) error {
	cfg.ResponseMIMEType = j.ResponseMIMEType
	if len(j.ResponseSchema) == 0 {
		return nil
	}
	s, err := SchemaOf(j.ResponseSchema)
	if err != nil {
		return fmt.Errorf("%w: gemini: responseSchema: %v", job.ErrInvalid, err)
	}
	cfg.ResponseSchema = s
	return nil
}

// SchemaOf decodes a job's responseSchema into the SDK's Schema. Type names
// are upper-cased (the API's enum spells them so; callers often write
// OpenAPI's lower case). A keyword the API does not know is an error, so it
// is never silently dropped from a paid request.
func SchemaOf(raw json.RawMessage) (*genai.Schema, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	upperTypes(v)
	canon, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(canon))
	dec.DisallowUnknownFields()
	var s genai.Schema
	if err := dec.Decode(&s); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "json: "))
	}
	return &s, nil
}

// upperTypes upper-cases every "type" of a schema tree, in place.
func upperTypes(v any) {
	switch n := v.(type) {
	case map[string]any:
		for k, c := range n {
			if s, ok := c.(string); ok && k == "type" {
				n[k] = strings.ToUpper(s)
				continue
			}
			if k == "properties" {
				if props, ok := c.(map[string]any); ok {
					for _, p := range props {
						upperTypes(p)
					}
				}
				continue
			}
			upperTypes(c)
		}
	case []any:
		for _, c := range n {
			upperTypes(c)
		}
	}
}

// CheckAnswer checks a JSON answer: when j asked for application/json, the
// answer's text is parsed and checked against the schema's basic
// constraints (type, required properties, property and item types, enum).
// A conforming answer sets res.JSON; otherwise res.JSONError says why and
// res.JSON stays nil. The outcome is left alone: it follows the images.
func CheckAnswer(j job.Job, res *Result) {
	if res == nil || !j.WantsJSON() {
		return
	}
	res.JSON, res.JSONError = nil, ""
	doc, err := CheckJSON(j.ResponseSchema, res.Text)
	if err != nil {
		res.JSONError = err.Error()
		return
	}
	res.JSON = doc
}

// CheckJSON parses text as one JSON value (a Markdown code fence around it
// is tolerated) and checks it against schema, which may be empty. It
// returns the value compacted.
func CheckJSON(schema json.RawMessage, text string) (json.RawMessage, error) {
	body := strings.TrimSpace(text)
	if body == "" {
		return nil, errors.New("the answer has no text to parse as JSON")
	}
	if rest, ok := strings.CutPrefix(body, "```"); ok {
		rest = strings.TrimPrefix(rest, "json")
		body = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "```"))
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the answer's text is not JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("the answer's text holds more than one JSON value")
	}
	if len(schema) > 0 {
		var s any
		if err := json.Unmarshal(schema, &s); err != nil {
			return nil, fmt.Errorf("responseSchema is not JSON: %v", err)
		}
		if err := conforms("$", v, s); err != nil {
			return nil, fmt.Errorf("the answer does not match responseSchema: %w", err)
		}
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(body)); err != nil {
		return nil, fmt.Errorf("the answer's text is not JSON: %v", err)
	}
	return b.Bytes(), nil
}

// conforms checks v against the schema node s: type, nullable, enum,
// required, properties and items. Formats, patterns and bounds are the
// model's to honour and are not checked.
func conforms(at string, v any, s any) error {
	node, ok := s.(map[string]any)
	if !ok {
		return nil
	}
	if v == nil {
		if n, _ := node["nullable"].(bool); n || strings.EqualFold(str(node["type"]), "NULL") || node["type"] == nil {
			return nil
		}
		return fmt.Errorf("%s is null", at)
	}
	if t := strings.ToUpper(str(node["type"])); t != "" {
		if got := kind(v); got != t && !(t == "NUMBER" && got == "INTEGER") {
			return fmt.Errorf("%s is %s, want %s", at, strings.ToLower(got), strings.ToLower(t))
		}
	}
	if enum, ok := node["enum"].([]any); ok && len(enum) > 0 {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			return fmt.Errorf("%s is %v, not one of the schema's enum", at, v)
		}
	}
	switch val := v.(type) {
	case map[string]any:
		if req, ok := node["required"].([]any); ok {
			for _, r := range req {
				if _, has := val[str(r)]; !has {
					return fmt.Errorf("%s lacks required property %q", at, str(r))
				}
			}
		}
		props, _ := node["properties"].(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(props)) {
			if pv, has := val[k]; has {
				if err := conforms(at+"."+k, pv, props[k]); err != nil {
					return err
				}
			}
		}
	case []any:
		if items, ok := node["items"]; ok {
			for i, e := range val {
				if err := conforms(fmt.Sprintf("%s[%d]", at, i), e, items); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// kind names a decoded JSON value's schema type.
func kind(v any) string {
	switch n := v.(type) {
	case map[string]any:
		return "OBJECT"
	case []any:
		return "ARRAY"
	case string:
		return "STRING"
	case bool:
		return "BOOLEAN"
	case json.Number:
		if _, err := n.Int64(); err == nil {
			return "INTEGER"
		}
		return "NUMBER"
	default:
		return "NULL"
	}
}
