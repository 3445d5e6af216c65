package spend_test

import (
	"context"
	"errors"
	"log"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/storage"
)

// The pipeline asks the guard before each model call and tells it what
// the call cost afterwards.
func ExampleGuard_Admit() {
	ctx := context.Background()
	var output *storage.Objects // the output bucket, on the instance's shared client
	cfg, _ := config.FromEnv()
	guard := spend.New(output, cfg.Spend)
	defer guard.Close(ctx)

	const estimate = 0.039 // one image at the output image price
	release, err := guard.Admit(ctx, estimate)
	var limit *spend.LimitError
	if errors.As(err, &limit) {
		log.Printf("not now (%s); retry in %s", limit.Reason, limit.RetryAfter)
		return // a retryable error: the delivery comes back later
	}
	// ... the model call ...
	release(0.039) // what it actually cost
}
