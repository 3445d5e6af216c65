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

	// ImageSizes are the accepted imageSize values, smallest first; empty
	// for a model that takes none (one output size). DefaultSize is the
	// size the model makes when a job names none; AspectRatios and
	// OutputTokensPerImage are that size's.
	ImageSizes  []string
	DefaultSize string
	// SizeScale is each size's pixel factor over DefaultSize's
	// (0.5, 1, 2, 4); SizeTokens each size's output tokens per image.
	SizeScale  map[string]float64
	SizeTokens map[string]int32
	// Grounding: the model takes the googleSearch tool.
	Grounding bool
	// Thinking: the model thinks before it answers, and returns thought
	// signatures that a conversation must send back.
	Thinking bool
	// RequiresSignatures: the model rejects (400) a history whose model
	// turns lack their thought signatures.
	RequiresSignatures bool
	// Preview marks a preview model: it may change or go away at short
	// notice.
	Preview bool
}

// OutputSize is the pixel size of an image of ratio at size ("" for the
// default size); ok is false for a ratio or size the model does not take.
func (c Capability) OutputSize(ratio, size string) (Size, bool) {
	s, ok := c.AspectRatios[ratio]
	if !ok {
		return Size{}, false
	}
	if size == "" || size == c.DefaultSize {
		return s, true
	}
	f, ok := c.SizeScale[size]
	if !ok {
		return Size{}, false
	}
	return Size{int(float64(s.Width) * f), int(float64(s.Height) * f)}, true
}

// ImageTokens is what one output image of size costs in tokens ("" for
// the default size).
func (c Capability) ImageTokens(size string) int32 {
	if t, ok := c.SizeTokens[size]; ok {
		return t
	}
	return c.OutputTokensPerImage
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

// proImageRatios are Gemini 3 Pro Image's aspect ratios at 1K; 2K and 4K
// are twice and four times each side. Source: the Gemini cookbook's
// "Generate 4K images" table,
// https://github.com/google-gemini/cookbook/blob/f49ea3a5f78d8eca19fd22ec2f7f68b4cb12e080/quickstarts/Get_Started_Nano_Banana.ipynb
var proImageRatios = map[string]Size{
	"1:1": {1024, 1024}, "2:3": {848, 1264}, "3:2": {1264, 848}, "3:4": {896, 1200},
	"4:3": {1200, 896}, "4:5": {928, 1152}, "5:4": {1152, 928}, "9:16": {768, 1376},
	"16:9": {1376, 768}, "21:9": {1584, 672},
}

// flash31Ratios are Gemini 3.1 Flash Image's: Pro's ten and four extreme
// ratios (Vertex model page,
// https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/3-1-flash-image).
// The pixel sizes of 1:4, 4:1, 1:8 and 8:1 (and every 512 size, taken as
// half of 1K) come from third-party transcriptions of Google's table, not
// a Google page: unconfirmed. 9:21, on one Vertex page only, is left out.
var flash31Ratios = func() map[string]Size {
	m := map[string]Size{"1:4": {512, 2048}, "4:1": {2048, 512}, "1:8": {384, 3072}, "8:1": {3072, 384}}
	for r, s := range proImageRatios {
		m[r] = s
	}
	return m
}()

// newImageInputTypes are what the Gemini 3 image models read (Vertex model
// pages): HEIC/HEIF besides PNG, JPEG and WebP.
var newImageInputTypes = []string{"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}

// proImage is Gemini 3 Pro Image ("Nano Banana Pro"): 1K/2K/4K, up to 14
// input images, thinking, Google Search grounding; 1120 output tokens per
// 1K or 2K image, 2000 per 4K.
// https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/3-pro-image
// Vertex says it "doesn't return a 400 error if a thought signature isn't
// returned" (https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures).
func proImage(categories []string, preview bool) Capability {
	return Capability{
		AspectRatios: proImageRatios, MaxImages: 14, InputTypes: newImageInputTypes,
		Modalities: []string{"IMAGE", "TEXT"}, MaxCandidates: 1,
		SafetyCategories: categories, SafetyThresholds: thresholds,
		OutputTokensPerImage: 1120, InputTokenLimit: 65536,
		ImageSizes: []string{"1K", "2K", "4K"}, DefaultSize: "1K",
		SizeScale:  map[string]float64{"1K": 1, "2K": 2, "4K": 4},
		SizeTokens: map[string]int32{"1K": 1120, "2K": 1120, "4K": 2000},
		Grounding:  true, Thinking: true, Preview: preview,
	}
}

// flash31Image is Gemini 3.1 Flash Image ("Nano Banana 2"): 512/1K/2K/4K,
// 14 ratios, up to 14 input images, thinking, grounding; 747, 1120, 1680
// and 2520 output tokens per image by size.
// https://docs.cloud.google.com/vertex-ai/generative-ai/docs/models/gemini/3-1-flash-image
// That it rejects a history without thought signatures is reported by
// third parties only (https://blog.laozhang.ai/es/posts/nano-banana-2-thought-signature-error).
func flash31Image(categories []string, preview bool) Capability {
	return Capability{
		AspectRatios: flash31Ratios, MaxImages: 14, InputTypes: newImageInputTypes,
		Modalities: []string{"IMAGE", "TEXT"}, MaxCandidates: 1,
		SafetyCategories: categories, SafetyThresholds: thresholds,
		OutputTokensPerImage: 1120, InputTokenLimit: 131072,
		ImageSizes: []string{"512", "1K", "2K", "4K"}, DefaultSize: "1K",
		SizeScale:  map[string]float64{"512": 0.5, "1K": 1, "2K": 2, "4K": 4},
		SizeTokens: map[string]int32{"512": 747, "1K": 1120, "2K": 1680, "4K": 2520},
		Grounding:  true, Thinking: true, RequiresSignatures: true, Preview: preview,
	}
}

// capabilities is the table: model → backend → what it accepts. Add a model
// here and to GENIMG_MODELS to offer it.
//
// The -preview ids are the Gemini 3 image models' preview names: Vertex AI
// retired them on 2026-07-17 for the GA ids (gemini-3-pro-image and
// gemini-3.1-flash-image, GA on Vertex 2026-05-28), so they are offered on
// the Gemini API only. candidateCount above 1 is not documented for these
// models: genimg asks for one image per call.
var capabilities = map[string]map[Backend]Capability{
	"gemini-3-pro-image": {
		GeminiAPI: proImage(commonCategories, false),
		VertexAI:  proImage(vertexCategories, false),
	},
	"gemini-3-pro-image-preview": {
		GeminiAPI: proImage(commonCategories, true),
	},
	"gemini-3.1-flash-image": {
		GeminiAPI: flash31Image(commonCategories, false),
		VertexAI:  flash31Image(vertexCategories, false),
	},
	"gemini-3.1-flash-image-preview": {
		GeminiAPI: flash31Image(commonCategories, true),
	},
	"gemini-2.5-flash-image": {
		GeminiAPI: flashImage(commonCategories),
		VertexAI:  flashImage(vertexCategories),
	},
	"gemini-2.5-flash-image-preview": {
		GeminiAPI: preview(flashImage(commonCategories)),
		VertexAI:  preview(flashImage(vertexCategories)),
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

// modelsWith lists the models with a capability on some backend, sorted.
func modelsWith(has func(Capability) bool) []string {
	var out []string
	for _, m := range KnownModels() {
		for _, c := range capabilities[m] {
			if has(c) {
				out = append(out, m)
				break
			}
		}
	}
	return out
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

func preview(c Capability) Capability {
	c.Preview = true
	return c
}
