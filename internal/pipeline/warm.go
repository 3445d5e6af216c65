package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
)

// warm does at start, in the background, what the first request would
// otherwise wait for: the spend ledger's first read (which also opens the
// Cloud Storage connection) and the Pub/Sub connection (the requests
// topic's publisher shares it). A failure here costs nothing: the first
// request does the same work again, and reports its errors itself.
func (s *Service) warm() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.spend.Check(ctx); err != nil {
			slog.DebugContext(ctx, "warm-up: spend ledger", "error", err)
		}
	})
	wg.Go(func() {
		topic := "projects/" + s.cfg.Topics.Project + "/topics/" + s.cfg.Topics.Requests
		if _, err := s.pubsub.TopicAdminClient.GetTopic(ctx, &pb.GetTopicRequest{Topic: topic}); err != nil {
			slog.DebugContext(ctx, "warm-up: pub/sub", "error", err)
		}
	})
	wg.Wait()
}
