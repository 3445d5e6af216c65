package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// lastRequest is the last generateContent request a private stand-in got.
func lastRequest(t *testing.T, m *geminitest.Server) geminitest.Request {
	t.Helper()
	reqs := m.Requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Decoded != nil {
			return reqs[i]
		}
	}
	t.Fatal("the stand-in received no generateContent request")
	return geminitest.Request{}
}

// A job on a newer model at 2K with Google Search grounding: the request
// carries the model, imageConfig.imageSize and the tool; the record the
// 2K image, the grounding metadata and the model's 2K price.
func TestNewerModelAt2KWithGrounding(t *testing.T) {
	for _, tt := range []struct {
		model      string
		w, h       int
		tokens     int32
		imageUSDPM float64 // image output price per 1M tokens
	}{
		{"gemini-3.1-flash-image", 2752, 1536, 1680, 60},
		{"gemini-3-pro-image", 2752, 1536, 1120, 120},
	} {
		t.Run(tt.model, func(t *testing.T) {
			model := newModel(t)
			cfg := baseConfig(t, model)
			in := newInstance(t, cfg, "models")
			id := uniq(t)
			rec := runOn(t, in, id, fmt.Sprintf(`{"id": %q, "prompt": "a poster of tomorrow's weather in Lyon", "model": %q,
				"aspectRatio": "16:9", "imageSize": "2k", "responseModalities": ["TEXT", "IMAGE"], "tools": [{"googleSearch": {}}]}`, id, tt.model))
			if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
				t.Fatalf("outcome %s, %d outputs, error %+v", rec.Outcome, len(rec.Outputs), rec.Error)
			}

			req := lastRequest(t, model)
			type sent struct {
				Model, Ratio, Size string
				Tools              int
				Search             bool
			}
			d := req.Decoded
			got := sent{Model: req.Model, Tools: len(d.Tools), Search: len(d.Tools) == 1 && d.Tools[0].GoogleSearch != nil}
			if ic := d.GenerationConfig.ImageConfig; ic != nil {
				got.Ratio, got.Size = ic.AspectRatio, ic.ImageSize
			}
			if diff := cmp.Diff(sent{tt.model, "16:9", "2K", 1, true}, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if !strings.Contains(string(req.Body), `"tools":[{"googleSearch":{}}]`) {
				t.Errorf("the body does not carry the tool as the API spells it: %.300s", req.Body)
			}

			out := rec.Outputs[0]
			if w, h, _ := readOutput(t, out); w != tt.w || h != tt.h || out.Width != tt.w || out.Height != tt.h {
				t.Errorf("image %d×%d (record %d×%d), want %d×%d", w, h, out.Width, out.Height, tt.w, tt.h)
			}
			var gm struct {
				WebSearchQueries []string `json:"webSearchQueries"`
				SearchEntryPoint struct {
					RenderedContent string `json:"renderedContent"`
				} `json:"searchEntryPoint"`
				GroundingChunks []struct {
					Web struct{ URI string } `json:"web"`
				} `json:"groundingChunks"`
			}
			if err := json.Unmarshal(rec.GroundingMetadata, &gm); err != nil || len(gm.WebSearchQueries) != 1 ||
				gm.SearchEntryPoint.RenderedContent == "" || len(gm.GroundingChunks) != 1 || gm.GroundingChunks[0].Web.URI == "" {
				t.Errorf("groundingMetadata %s (%v)", rec.GroundingMetadata, err)
			}

			if got := rec.Usage.CandidatesTokensByModality["IMAGE"]; got != tt.tokens {
				t.Errorf("%d image tokens, want %d for a 2K image", got, tt.tokens)
			}
			prices := cfg.Prices.For(tt.model)
			if prices.OutputImage != tt.imageUSDPM {
				t.Errorf("image output price %v per 1M tokens, want %v", prices.OutputImage, tt.imageUSDPM)
			}
			want := gemini.Cost(prices, rec.Usage, false)
			if math.Abs(rec.CostUSD-want) > 1e-12 || rec.CostUSD < float64(tt.tokens)*tt.imageUSDPM/1e6 {
				t.Errorf("cost %v, want %v (at least the image's %v)", rec.CostUSD, want, float64(tt.tokens)*tt.imageUSDPM/1e6)
			}
		})
	}
}

// imageSize and grounding are refused, before any call, for a model that
// lacks them; and a ratio only the newer flash model has is refused on Pro.
func TestModelFeatureRefusals(t *testing.T) {
	calls := stack.model.Calls()
	for _, tt := range []struct{ body, want string }{
		{`{"prompt": "x", "imageSize": "2K"}`, `gemini-2.5-flash-image has one output size and takes no imageSize`},
		{`{"prompt": "x", "model": "gemini-3-pro-image", "imageSize": "512"}`, `imageSize "512" is not supported by gemini-3-pro-image; accepted: 1K, 2K, 4K`},
		{`{"prompt": "x", "tools": [{"googleSearch": {}}]}`, `tools[0]: gemini-2.5-flash-image does not take googleSearch grounding`},
		{`{"prompt": "x", "model": "gemini-3-pro-image", "aspectRatio": "8:1"}`, `aspectRatio "8:1" is not supported by gemini-3-pro-image`},
	} {
		resp, b := postJSON(t, tt.body, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(b), tt.want) {
			t.Errorf("%s: status %d: %s; want 400 saying %q", tt.body, resp.StatusCode, b, tt.want)
		}
	}
	if got := stack.model.Calls() - calls; got != 0 {
		t.Errorf("%d model calls for refused jobs", got)
	}
}

// The extreme ratios of Gemini 3.1 Flash Image, and 2:3 and 5:4 of the
// default model, reach the request and come back at their sizes.
func TestRatios(t *testing.T) {
	for _, tt := range []struct {
		model, ratio, size string
		w, h               int
	}{
		{"gemini-2.5-flash-image", "2:3", "", 832, 1248},
		{"gemini-2.5-flash-image", "5:4", "", 1152, 896},
		{"gemini-3.1-flash-image", "1:4", "512", 256, 1024},
		{"gemini-3.1-flash-image", "8:1", "512", 1536, 192},
	} {
		t.Run(tt.model+"-"+tt.ratio, func(t *testing.T) {
			body := fmt.Sprintf(`{"prompt": "a kite over dunes", "model": %q, "aspectRatio": %q, "imageSize": %q}`, tt.model, tt.ratio, tt.size)
			resp, b := postJSON(t, body, nil)
			rec := decodeRecord(t, b)
			if resp.StatusCode != http.StatusOK || len(rec.Outputs) != 1 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if w, h, _ := readOutput(t, rec.Outputs[0]); w != tt.w || h != tt.h {
				t.Errorf("%s: image %d×%d, want %d×%d", tt.ratio, w, h, tt.w, tt.h)
			}
		})
	}
}
