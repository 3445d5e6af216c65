package gemini

import (
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// Cost prices a usage of model with the client's price table
// (config.Prices.For); batch applies the batch discount.
func (c *Client) Cost(model string, u job.Usage, batch bool) float64 {
	return Cost(c.prices.For(model), u, batch)
}

// Cost prices a usage in US dollars at one model's rates (p.For(model)): prompt tokens by modality (cached
// tokens at the cached price), output tokens by modality, thoughts as text
// output. Tokens whose modality the answer did not say are priced at the
// higher rate of their direction, so the estimate errs high, never low.
func Cost(p config.Prices, u job.Usage, batch bool) float64 {
	const perToken = 1e-6 // prices are per million tokens

	// Cached tokens are part of the prompt count; they are billed at the
	// cached price instead of the input price.
	cached := float64(u.CachedTokens)
	inText := float64(u.PromptTokensByModality["TEXT"]) - cached
	if inText < 0 {
		inText = 0
	}
	inImage := float64(u.PromptTokensByModality["IMAGE"])
	inOther := float64(u.PromptTokens) - cached - inText - inImage
	if inOther < 0 {
		inOther = 0
	}
	outImage := float64(u.CandidatesTokensByModality["IMAGE"])
	outText := float64(u.CandidatesTokensByModality["TEXT"]) + float64(u.ThoughtsTokens)
	outOther := float64(u.CandidatesTokens) - outImage - float64(u.CandidatesTokensByModality["TEXT"])
	if outOther < 0 {
		outOther = 0
	}

	usd := perToken * (cached*p.Cached +
		inText*p.InputText + inImage*p.InputImage + inOther*max(p.InputText, p.InputImage) +
		outImage*p.OutputImage + outText*p.OutputText + outOther*max(p.OutputImage, p.OutputText))
	if batch {
		usd *= p.BatchDiscount
	}
	return usd
}
