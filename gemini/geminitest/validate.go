package geminitest

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/genimg/genimg/job"
)

// validated is what a valid request asks for.
type validated struct {
	// text is every text part (prompt and instruction), for directives and
	// token counts; prompt is the contents' text alone.
	text, prompt string
	images       []inputImage
	modalities   []string
	candidates   int
	ratio        string
	imageSize    string
	grounding    bool
	capability   job.Capability
}

type inputImage struct {
	data []byte // nil for a fileData reference
	uri  string
	hash [32]byte
}

var unknownField = regexp.MustCompile(`^json: unknown field "([^"]*)"$`)

// decodeRequest decodes a body as strictly as the service's JSON parser.
func decodeRequest(body []byte) (*GenerateContentRequest, *APIError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req GenerateContentRequest
	if err := dec.Decode(&req); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return nil, badRequest(fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", m[1]))
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, badRequest(fmt.Sprintf("Invalid value at '%s' (%s), %s", typeErr.Field, typeErr.Type, typeErr.Value))
		}
		if errors.Is(err, io.EOF) {
			return nil, badRequest("* GenerateContentRequest.contents: contents is not specified\n")
		}
		return nil, badRequest("Invalid JSON payload received. " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, badRequest("Invalid JSON payload received. Unexpected token after the request object.")
	}
	return &req, nil
}

var (
	knownModalities = []string{"TEXT", "IMAGE", "AUDIO"}
	cachedName      = regexp.MustCompile(`^(projects/[^/]+/locations/[^/]+/)?cachedContents/[A-Za-z0-9._-]+$`)
)

// validate checks a request the way the service does for an image model.
func validate(req *GenerateContentRequest, backend job.Backend, model string) (validated, *APIError) {
	v := validated{candidates: 1}
	c, err := job.Lookup(model, backend)
	if err != nil {
		return v, badRequest(err.Error())
	}
	v.capability = c
	if len(req.Contents) == 0 {
		return v, badRequest("* GenerateContentRequest.contents: contents is not specified\n")
	}
	var texts, prompt []string
	for i, content := range req.Contents {
		if len(content.Parts) == 0 {
			return v, badRequest(fmt.Sprintf("* GenerateContentRequest.contents[%d].parts: contents.parts must not be empty.\n", i))
		}
		if content.Role != "" && content.Role != "user" && content.Role != "model" {
			return v, badRequest(fmt.Sprintf("Please use a valid role: user, model. Got %q.", content.Role))
		}
		for j, p := range content.Parts {
			at := fmt.Sprintf("contents[%d].parts[%d]", i, j)
			switch {
			case p.InlineData != nil:
				data, err := base64.StdEncoding.DecodeString(p.InlineData.Data)
				if err != nil {
					data, err = base64.URLEncoding.DecodeString(p.InlineData.Data)
				}
				if err != nil {
					return v, badRequest(fmt.Sprintf("Invalid value at '%s.inline_data.data' (TYPE_BYTES), Base64 decoding failed for %q", at, truncate(p.InlineData.Data)))
				}
				if !slices.Contains(c.InputTypes, p.InlineData.MIMEType) {
					return v, badRequest(fmt.Sprintf("Unsupported MIME type: %s", p.InlineData.MIMEType))
				}
				v.images = append(v.images, inputImage{data: data, hash: sha256.Sum256(data)})
			case p.FileData != nil:
				if backend == job.VertexAI && !strings.HasPrefix(p.FileData.FileURI, "gs://") {
					return v, badRequest(fmt.Sprintf("Invalid value at '%s.file_data.file_uri': expected a gs:// URI, got %q", at, truncate(p.FileData.FileURI)))
				}
				if p.FileData.MIMEType == "" {
					return v, badRequest(fmt.Sprintf("* GenerateContentRequest.%s.file_data.mime_type: mime_type must be specified.\n", at))
				}
				v.images = append(v.images, inputImage{uri: p.FileData.FileURI, hash: sha256.Sum256([]byte(p.FileData.FileURI))})
			case p.Text != "":
				texts = append(texts, p.Text)
				prompt = append(prompt, p.Text)
			default:
				return v, badRequest(fmt.Sprintf("* GenerateContentRequest.%s.data: required oneof field 'data' must have one initialized field\n", at))
			}
		}
	}
	if si := req.SystemInstruction; si != nil {
		for _, p := range si.Parts {
			texts = append(texts, p.Text)
		}
		if req.CachedContent != "" {
			return v, badRequest("CachedContent can not be used with GenerateContent request setting system_instruction, tools or tool_config.\n\nProposed fix: move those values to CachedContent from GenerateContent request.")
		}
	}
	v.text, v.prompt = strings.Join(texts, "\n"), strings.Join(prompt, "\n")

	if g := req.GenerationConfig; g != nil {
		for i, m := range g.ResponseModalities {
			if !slices.Contains(knownModalities, m) {
				return v, badRequest(fmt.Sprintf("Invalid value at 'generation_config.response_modalities[%d]' (type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig.Modality), %q", i, m))
			}
			if !slices.Contains(c.Modalities, m) {
				return v, badRequest(fmt.Sprintf("Model does not support the requested response modalities: %s", strings.ToLower(m)))
			}
		}
		v.modalities = g.ResponseModalities
		if g.CandidateCount != nil {
			n := *g.CandidateCount
			if n < 1 || n > c.MaxCandidates {
				return v, badRequest(fmt.Sprintf("* GenerateContentRequest.generation_config.candidate_count: must be between 1 and %d, got %d\n", c.MaxCandidates, n))
			}
			v.candidates = int(n)
		}
		if ic := g.ImageConfig; ic != nil && ic.AspectRatio != "" {
			if _, ok := c.AspectRatios[ic.AspectRatio]; !ok {
				return v, badRequest(fmt.Sprintf("Unsupported aspect ratio: %s. Supported aspect ratios are: %s.", ic.AspectRatio, strings.Join(c.Ratios(), ", ")))
			}
			v.ratio = ic.AspectRatio
		}
		if ic := g.ImageConfig; ic != nil && ic.ImageSize != "" {
			if !slices.Contains(c.ImageSizes, ic.ImageSize) {
				return v, badRequest(fmt.Sprintf("Unsupported image size: %s. Supported image sizes are: %s.", ic.ImageSize, strings.Join(c.ImageSizes, ", ")))
			}
			v.imageSize = ic.ImageSize
		}
	}
	for i, t := range req.Tools {
		if t.GoogleSearch == nil {
			return v, badRequest(fmt.Sprintf("* GenerateContentRequest.tools[%d]: tool must have one initialized field\n", i))
		}
		if !c.Grounding {
			return v, badRequest("Search Grounding is not supported.")
		}
		v.grounding = true
	}
	if c.RequiresSignatures {
		if apiErr := checkSignatures(req); apiErr != nil {
			return v, apiErr
		}
	}
	for i, s := range req.SafetySettings {
		if !slices.Contains(c.SafetyCategories, s.Category) {
			return v, badRequest(fmt.Sprintf("Invalid value at 'safety_settings[%d].category' (type.googleapis.com/google.ai.generativelanguage.v1beta.HarmCategory), %q", i, s.Category))
		}
		if !slices.Contains(c.SafetyThresholds, s.Threshold) {
			return v, badRequest(fmt.Sprintf("Invalid value at 'safety_settings[%d].threshold' (type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting.HarmBlockThreshold), %q", i, s.Threshold))
		}
	}
	if req.CachedContent != "" && !cachedName.MatchString(req.CachedContent) {
		return v, badRequest(fmt.Sprintf("Invalid cached content name: %q", truncate(req.CachedContent)))
	}
	if len(req.Labels) > 0 && backend == job.GeminiAPI {
		return v, badRequest(`Invalid JSON payload received. Unknown name "labels": Cannot find field.`)
	}
	return v, nil
}

// size is the answer's size: the ratio's; else, for an edit, the ratio
// nearest the first input's shape; else 1:1.
func (v validated) size() (int, int) {
	if s, ok := v.capability.OutputSize(v.ratio, v.imageSize); ok {
		return s.Width, s.Height
	}
	if len(v.images) > 0 && v.images[0].data != nil {
		if w, h, ok := imageSize(v.images[0].data); ok && w > 0 && h > 0 {
			want := math.Log(float64(w) / float64(h))
			best, bestDiff := job.Size{Width: 1024, Height: 1024}, math.Inf(1)
			for _, r := range v.capability.Ratios() {
				s, _ := v.capability.OutputSize(r, v.imageSize)
				if d := math.Abs(math.Log(float64(s.Width)/float64(s.Height)) - want); d < bestDiff {
					best, bestDiff = s, d
				}
			}
			return best.Width, best.Height
		}
	}
	if s, ok := v.capability.OutputSize("1:1", v.imageSize); ok {
		return s.Width, s.Height
	}
	return 1024, 1024
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
