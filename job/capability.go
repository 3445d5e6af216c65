package job

import (
	"fmt"
	"slices"
	"sort"
)

// Backend is the API a model is reached through.
type Backend string

// The two backends of the Gen AI SDK.
const (
	GeminiAPI Backend = "gemini-api"
	VertexAI  Backend = "vertex"
)

// A Capability is what one model accepts on one backend. Validation reads
// it; nothing else in genimg hard-codes a model's limits.
type Capability struct {
	// AspectRatios maps each accepted ratio to the output size it yields.
	AspectRatios map[string]Size
	// MaxImages is the most input images one request may carry.
	MaxImages int
	// InputTypes are the accepted input image MIME types.
	InputTypes []string
	// Modalities are the accepted responseModalities values.
	Modalities []string
	// MaxCandidates bounds candidateCount.
	MaxCandidates int32
	// SafetyCategories and SafetyThresholds are the accepted safety settings.
	SafetyCategories []string
	SafetyThresholds []string
	// OutputTokensPerImage is what one output image costs in tokens.
	OutputTokensPerImage int32
	// InputTokenLimit bounds the prompt, instruction and images together.
	InputTokenLimit int32
}

// A Size is an image's width and height in pixels.
type Size struct{ Width, Height int }

// flashImageRatios are gemini-2.5-flash-image's aspect ratios and output
// sizes, as checked against the service.
var flashImageRatios = map[string]Size{
	"1:1": {1024, 1024}, "2:3": {832, 1248}, "3:2": {1248, 832}, "3:4": {864, 1184},
	"4:3": {1184, 864}, "4:5": {896, 1152}, "5:4": {1152, 896}, "9:16": {768, 1344},
	"16:9": {1344, 768}, "21:9": {1536, 672},
}

var (
	commonCategories = []string{
		"HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
		"HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT",
		"HARM_CATEGORY_CIVIC_INTEGRITY",
	}
	// Vertex AI also filters generated images and jailbreak attempts by
	// their own categories; the Gemini API rejects these names.
	vertexCategories = append(slices.Clone(commonCategories),
		"HARM_CATEGORY_IMAGE_HATE", "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT",
		"HARM_CATEGORY_IMAGE_HARASSMENT", "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT",
		"HARM_CATEGORY_JAILBREAK",
	)
	thresholds = []string{
		"BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF",
	}
)

func flashImage(categories []string) Capability {
	return Capability{
		AspectRatios:         flashImageRatios,
		MaxImages:            3,
		InputTypes:           []string{"image/png", "image/jpeg", "image/webp"},
		Modalities:           []string{"IMAGE", "TEXT"},
		MaxCandidates:        8,
		SafetyCategories:     categories,
		SafetyThresholds:     thresholds,
		OutputTokensPerImage: 1290,
		InputTokenLimit:      32768,
	}
}

// capabilities is the table: model → backend → what it accepts. Add a model
// here and to GENIMG_MODELS to offer it.
var capabilities = map[string]map[Backend]Capability{
	"gemini-2.5-flash-image": {
		GeminiAPI: flashImage(commonCategories),
		VertexAI:  flashImage(vertexCategories),
	},
	"gemini-2.5-flash-image-preview": {
		GeminiAPI: flashImage(commonCategories),
		VertexAI:  flashImage(vertexCategories),
	},
}

// Lookup returns what model accepts on backend.
func Lookup(model string, backend Backend) (Capability, error) {
	byBackend, ok := capabilities[model]
	if !ok {
		return Capability{}, fmt.Errorf("model %q is not one genimg knows; known: %v", model, KnownModels())
	}
	c, ok := byBackend[backend]
	if !ok {
		return Capability{}, fmt.Errorf("model %q is not available on backend %q", model, backend)
	}
	return c, nil
}

// KnownModels lists the models in the capability table, sorted.
func KnownModels() []string {
	names := make([]string, 0, len(capabilities))
	for m := range capabilities {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

// Ratios lists c's aspect ratios in a stable, readable order.
func (c Capability) Ratios() []string {
	rs := make([]string, 0, len(c.AspectRatios))
	for r := range c.AspectRatios {
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool {
		a, b := c.AspectRatios[rs[i]], c.AspectRatios[rs[j]]
		return float64(a.Width)/float64(a.Height) < float64(b.Width)/float64(b.Height)
	})
	return rs
}
