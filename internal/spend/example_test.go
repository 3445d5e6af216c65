package spend_test

import (
	"context"
	"errors"
	"log"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
)

// The pipeline asks the guard before each model call and tells it what
// the call cost afterwards.
func ExampleGuard_Admit() {
	ctx := context.Background()
	var client *gcs.Client // the instance's shared Cloud Storage client
	cfg, _ := config.FromEnv()
	guard := spend.New(client, cfg.Storage.OutputBucket, cfg.Spend)
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
