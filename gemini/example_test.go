package gemini_test

import (
	"context"
	"fmt"
	"time"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// A client against the stand-in model, as tests and the local stack use it.
func ExampleClient_Generate() {
	srv := geminitest.NewServer()
	defer srv.Close()

	ctx := context.Background()
	c, err := gemini.New(ctx, config.Model{
		Backend: job.GeminiAPI, APIKey: "local-key", BaseURL: srv.URL,
		CallTimeout: 30 * time.Second, RetryBudget: time.Minute, MaxAttempts: 3, MaxConcurrent: 4,
	}, config.DefaultPrices())
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := c.Generate(ctx, job.Job{
		Model: job.DefaultModel, Prompt: "A lighthouse at dawn", AspectRatio: "16:9", ResponseModalities: []string{"IMAGE"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %d image(s), %d output tokens, $%.4f after %d call(s)\n",
		res.Outcome, len(res.Images), res.Usage.CandidatesTokens, res.CostUSD, res.Attempts)
	// Output: succeeded: 1 image(s), 1290 output tokens, $0.0387 after 1 call(s)
}
