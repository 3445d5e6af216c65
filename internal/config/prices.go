package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Prices are US dollars per million tokens, by direction and modality: the
// one price table of genimg. The top-level rates are gemini-2.5-flash-image's
// and any model's not in Models; Models holds the other models' rates. A
// price per image size follows from the tokens each size costs
// (job.Capability.SizeTokens) at these rates, which is how Google bills.
// GENIMG_PRICES overrides any of them with a JSON object of the same shape;
// a model named under "models" there replaces that model's rates whole.
type Prices struct {
	// InputText and InputImage price prompt tokens by modality.
	InputText  float64 `json:"inputText"`
	InputImage float64 `json:"inputImage"`
	// OutputImage prices image output tokens (1290 per image);
	// OutputText prices text output tokens.
	OutputImage float64 `json:"outputImage"`
	OutputText  float64 `json:"outputText"`
	// Cached prices cached prompt tokens.
	Cached float64 `json:"cached"`
	// BatchDiscount multiplies every price in the batch lane.
	BatchDiscount float64 `json:"batchDiscount"`
	// Models are per-model rates (For).
	Models map[string]Prices `json:"models,omitempty"`
}

// For is model's rates: its entry in Models, else the entry whose id
// model starts with (an answer's modelVersion may add a suffix), else the
// top-level rates.
func (p Prices) For(model string) Prices {
	if m, ok := p.Models[model]; ok {
		return m
	}
	// Longest id first, so that gemini-3-pro-image-preview is not priced
	// as gemini-3-pro-image.
	ids := slices.SortedFunc(maps.Keys(p.Models), func(a, b string) int { return len(b) - len(a) })
	for _, id := range ids {
		if strings.HasPrefix(model, id) {
			return p.Models[id]
		}
	}
	top := p
	top.Models = nil
	return top
}

// DefaultPrices is the public price page: input $0.30 per 1M tokens, image
// output $30 per 1M ($0.039 per image), text output $2.50 per 1M, cached
// input $0.03 per 1M, batch at half price.
//
// The Gemini 3 image models' rates are from the Gemini API price page as
// third parties transcribed it (Google's page was not readable here):
// unconfirmed, check them against https://ai.google.dev/gemini-api/docs/pricing
// and override with GENIMG_PRICES. The cached rates (a tenth of input, as
// for the other Gemini models) are assumed, not read anywhere.
func DefaultPrices() Prices {
	// Gemini 3 Pro Image: $2 input, $12 text output, $120 image output per
	// 1M tokens ($0.134 per 1K/2K image at 1120 tokens, $0.24 per 4K at
	// 2000); batch at half price ($0.067 / $0.12). Sources (third-party):
	// https://github.com/api-evangelist/gemini/blob/main/plans/gemini-plans-pricing.yml
	// https://www.aifreeapi.com/en/posts/gemini-3-pro-image-preview-pricing
	pro := Prices{InputText: 2, InputImage: 2, OutputImage: 120, OutputText: 12, Cached: 0.20, BatchDiscount: 0.5}
	// Gemini 3.1 Flash Image: $0.50 input, $3 text output, $60 image output
	// per 1M tokens ($0.045 at 512, $0.067 at 1K, $0.101 at 2K, $0.151 at
	// 4K); batch at half price. Third-party only:
	// https://aifreeapi.com/en/posts/gemini-flash-image-generation-pricing
	flash31 := Prices{InputText: 0.50, InputImage: 0.50, OutputImage: 60, OutputText: 3, Cached: 0.05, BatchDiscount: 0.5}
	return Prices{
		InputText:     0.30,
		InputImage:    0.30,
		OutputImage:   30,
		OutputText:    2.50,
		Cached:        0.03,
		BatchDiscount: 0.5,
		Models: map[string]Prices{
			"gemini-3-pro-image": pro, "gemini-3-pro-image-preview": pro,
			"gemini-3.1-flash-image": flash31, "gemini-3.1-flash-image-preview": flash31,
		},
	}
}

func (p Prices) validate() error {
	for _, m := range slices.Sorted(maps.Keys(p.Models)) {
		if len(p.Models[m].Models) > 0 {
			return fmt.Errorf("models.%s: per-model rates cannot nest models", m)
		}
		if err := p.Models[m].validate(); err != nil {
			return fmt.Errorf("models.%s: %w", m, err)
		}
	}
	// In field order, so that the message is the same on every start.
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"inputText", p.InputText}, {"inputImage", p.InputImage}, {"outputImage", p.OutputImage},
		{"outputText", p.OutputText}, {"cached", p.Cached}, {"batchDiscount", p.BatchDiscount},
	} {
		if f.v < 0 {
			return fmt.Errorf("price %s is negative", f.name)
		}
	}
	if p.BatchDiscount > 1 {
		return fmt.Errorf("batchDiscount %v: expected a factor from 0 to 1", p.BatchDiscount)
	}
	return nil
}
