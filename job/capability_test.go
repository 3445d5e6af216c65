package job_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/google/go-cmp/cmp"
)

func TestCapabilityTable(t *testing.T) {
	models := job.KnownModels()
	if diff := cmp.Diff([]string{"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image",
		"gemini-3-pro-image-preview", "gemini-3.1-flash-image", "gemini-3.1-flash-image-preview"}, models); diff != "" {
		t.Errorf("KnownModels (-want +got):\n%s", diff)
	}
	if !slices.Contains(models, job.DefaultModel) {
		t.Errorf("DefaultModel %q is not in the capability table", job.DefaultModel)
	}
	// gemini-2.5-flash-image ratios and output sizes.
	wantSizes := map[string]job.Size{
		"1:1": {Width: 1024, Height: 1024}, "2:3": {Width: 832, Height: 1248}, "3:2": {Width: 1248, Height: 832},
		"3:4": {Width: 864, Height: 1184}, "4:3": {Width: 1184, Height: 864}, "4:5": {Width: 896, Height: 1152},
		"5:4": {Width: 1152, Height: 896}, "9:16": {Width: 768, Height: 1344}, "16:9": {Width: 1344, Height: 768},
		"21:9": {Width: 1536, Height: 672},
	}
	for _, m := range []string{"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview"} {
		for _, b := range []job.Backend{job.GeminiAPI, job.VertexAI} {
			c, err := job.Lookup(m, b)
			if err != nil {
				t.Errorf("Lookup(%s, %s): %v", m, b, err)
				continue
			}
			if diff := cmp.Diff(wantSizes, c.AspectRatios); diff != "" {
				t.Errorf("%s on %s: aspect ratio sizes (-want +got):\n%s", m, b, diff)
			}
			got := struct {
				MaxImages     int
				InputTypes    []string
				Modalities    []string
				MaxCandidates int32
				Thresholds    []string
				TokensPerImg  int32
				InputTokens   int32
			}{c.MaxImages, c.InputTypes, c.Modalities, c.MaxCandidates, c.SafetyThresholds, c.OutputTokensPerImage, c.InputTokenLimit}
			want := got
			want.MaxImages, want.MaxCandidates, want.TokensPerImg, want.InputTokens = 3, 8, 1290, 32768
			want.InputTypes = []string{"image/png", "image/jpeg", "image/webp"}
			want.Modalities = []string{"IMAGE", "TEXT"}
			want.Thresholds = []string{"BLOCK_LOW_AND_ABOVE", "BLOCK_MEDIUM_AND_ABOVE", "BLOCK_ONLY_HIGH", "BLOCK_NONE", "OFF"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s on %s (-want +got):\n%s", m, b, diff)
			}
			for _, r := range c.Ratios() {
				if _, ok := c.AspectRatios[r]; !ok {
					t.Errorf("%s on %s: Ratios() lists %s, not in AspectRatios", m, b, r)
				}
			}
			if len(c.Ratios()) != len(c.AspectRatios) {
				t.Errorf("%s on %s: Ratios() has %d entries, AspectRatios %d", m, b, len(c.Ratios()), len(c.AspectRatios))
			}
		}
		// The Gemini API's categories are a subset of Vertex's, and the
		// image categories exist only on Vertex.
		g, _ := job.Lookup(m, job.GeminiAPI)
		v, _ := job.Lookup(m, job.VertexAI)
		for _, cat := range g.SafetyCategories {
			if !slices.Contains(v.SafetyCategories, cat) {
				t.Errorf("%s: category %s accepted on gemini-api but not on vertex", m, cat)
			}
			if strings.Contains(cat, "IMAGE") || strings.Contains(cat, "JAILBREAK") {
				t.Errorf("%s: Vertex-only category %s accepted on gemini-api", m, cat)
			}
		}
		if !slices.Contains(v.SafetyCategories, "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT") {
			t.Errorf("%s: vertex lacks HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT", m)
		}
	}
}

func TestRatiosOrder(t *testing.T) {
	c, err := job.Lookup(job.DefaultModel, job.GeminiAPI)
	if err != nil {
		t.Fatal(err)
	}
	// Tallest to widest.
	want := []string{"9:16", "2:3", "3:4", "4:5", "1:1", "5:4", "4:3", "3:2", "16:9", "21:9"}
	for range 10 { // map iteration differs run to run; the order may not
		if diff := cmp.Diff(want, c.Ratios()); diff != "" {
			t.Fatalf("Ratios (-want +got):\n%s", diff)
		}
	}
}

func TestLookupErrors(t *testing.T) {
	tests := []struct {
		model   string
		backend job.Backend
		want    string
	}{
		{"imagen-4", job.GeminiAPI, `model "imagen-4" is not one genimg knows; known: [gemini-2.5-flash-image gemini-2.5-flash-image-preview gemini-3-pro-image gemini-3-pro-image-preview gemini-3.1-flash-image gemini-3.1-flash-image-preview]`},
		{"gemini-2.5-flash-image", "bedrock", `model "gemini-2.5-flash-image" is not available on backend "bedrock"`},
	}
	for _, tt := range tests {
		_, err := job.Lookup(tt.model, tt.backend)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Lookup(%s, %s) = %v, want %s", tt.model, tt.backend, err, tt.want)
		}
	}
}

func TestSniff(t *testing.T) {
	tests := []struct {
		name string
		head []byte
		want string
	}{
		{"png", pngBytes, "image/png"},
		{"png magic only", []byte("\x89PNG\r\n\x1a\n"), "image/png"},
		{"jpeg", jpegBytes, "image/jpeg"},
		{"webp", webpBytes, "image/webp"},
		{"gif", gifBytes, "image/gif"},
		{"gif87a", []byte("GIF87a\x01\x00\x01\x00"), "image/gif"},
		{"heic", heicBytes, "image/heic"},
		{"heix", []byte("\x00\x00\x00\x18ftypheix\x00\x00\x00\x00"), "image/heic"},
		{"heif mif1", []byte("\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00"), "image/heic"},
		{"bmp", []byte("BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"), "image/bmp"},
		{"garbage", garbage, ""},
		{"empty", nil, ""},
		{"truncated png magic", []byte("\x89PN"), ""},
		{"riff but wav", []byte("RIFF\x24\x00\x00\x00WAVEfmt "), ""},
		{"short riff", []byte("RIFF\x00\x00"), ""},
		{"html", []byte("<html><img src=x></html>"), ""},
		{"pdf", []byte("%PDF-1.7\n"), ""},
		{"mp4 ftyp", []byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00"), ""},
	}
	for _, tt := range tests {
		if got := job.Sniff(tt.head); got != tt.want {
			t.Errorf("Sniff(%s) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// The Gemini 3 image models: sizes, ratios, limits and features.
func TestNewerImageModels(t *testing.T) {
	type facts struct {
		Sizes                                    []string
		Ratios                                   int
		MaxImages                                int
		Tokens                                   map[string]int32
		Grounding, Thinking, Signatures, Preview bool
		Px16x9At2K, Px1x4At1K                    job.Size
	}
	for _, tt := range []struct {
		model   string
		backend job.Backend
		want    facts
	}{
		{"gemini-3-pro-image", job.VertexAI, facts{[]string{"1K", "2K", "4K"}, 10, 14,
			map[string]int32{"1K": 1120, "2K": 1120, "4K": 2000}, true, true, false, false, job.Size{Width: 2752, Height: 1536}, job.Size{}}},
		{"gemini-3-pro-image-preview", job.GeminiAPI, facts{[]string{"1K", "2K", "4K"}, 10, 14,
			map[string]int32{"1K": 1120, "2K": 1120, "4K": 2000}, true, true, false, true, job.Size{Width: 2752, Height: 1536}, job.Size{}}},
		{"gemini-3.1-flash-image", job.GeminiAPI, facts{[]string{"512", "1K", "2K", "4K"}, 14, 14,
			map[string]int32{"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}, true, true, true, false, job.Size{Width: 2752, Height: 1536}, job.Size{Width: 512, Height: 2048}}},
		{"gemini-3.1-flash-image-preview", job.GeminiAPI, facts{[]string{"512", "1K", "2K", "4K"}, 14, 14,
			map[string]int32{"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}, true, true, true, true, job.Size{Width: 2752, Height: 1536}, job.Size{Width: 512, Height: 2048}}},
	} {
		c, err := job.Lookup(tt.model, tt.backend)
		if err != nil {
			t.Fatal(err)
		}
		tokens := map[string]int32{}
		for _, s := range c.ImageSizes {
			tokens[s] = c.ImageTokens(s)
		}
		px, _ := c.OutputSize("16:9", "2K")
		tall, _ := c.OutputSize("1:4", "1K")
		got := facts{c.ImageSizes, len(c.AspectRatios), c.MaxImages, tokens, c.Grounding, c.Thinking, c.RequiresSignatures, c.Preview, px, tall}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s on %s (-want +got):\n%s", tt.model, tt.backend, diff)
		}
	}
	if _, err := job.Lookup("gemini-3-pro-image-preview", job.VertexAI); err == nil {
		t.Error("a preview id Vertex AI retired is offered there")
	}
}
