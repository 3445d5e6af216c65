package config

import "fmt"

// Prices are US dollars per million tokens, by direction and modality. The
// defaults are the Gemini API's public prices for gemini-2.5-flash-image;
// GENIMG_PRICES overrides any of them with a JSON object of the same shape.
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
}

// DefaultPrices is the public price page: input $0.30 per 1M tokens, image
// output $30 per 1M ($0.039 per image), text output $2.50 per 1M, cached
// input $0.03 per 1M, batch at half price.
func DefaultPrices() Prices {
	return Prices{
		InputText:     0.30,
		InputImage:    0.30,
		OutputImage:   30,
		OutputText:    2.50,
		Cached:        0.03,
		BatchDiscount: 0.5,
	}
}

func (p Prices) validate() error {
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
