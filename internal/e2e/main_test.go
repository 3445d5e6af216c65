package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/localstack"
	"github.com/genimg/genimg/job"
)

// The end-to-end tests run the registered functions under the real
// functions framework, against fake-gcs-server, pstest and the stand-in
// model, with delivery from the emulators to the functions as Google Cloud
// does it (package delivery): the local stack, on free ports, serves the whole
// test binary.
const (
	project      = "genimg-test"
	inputBucket  = "genimg-input"
	outputBucket = "genimg-output"
	refBucket    = "genimg-refs"
)

var stack struct {
	*localstack.Stack
	functions string // http://127.0.0.1:PORT
	gcs       *gcs.Client
	pubsub    *pubsub.Client
	model     *geminitest.Handler
	requests  *pubsub.Publisher
	events    *collector
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	slog.SetDefault(slog.New(&tap{Handler: slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s, err := localstack.Start(ctx, localstack.Options{
		Project: project, InputBucket: inputBucket, OutputBucket: outputBucket,
		RequestsTopic: "genimg-requests", CompletionTopic: "genimg-completions", DeadLetterTopic: "genimg-dead-letter",
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 5,
		Env: map[string]string{
			"GENIMG_INPUT_BUCKETS": inputBucket + "," + refBucket,
			"GENIMG_MAX_EVENT_AGE": "1h",
			"GENIMG_HTTP_WAIT":     "20s",
			"GENIMG_RETRY_BUDGET":  "5s",
			"GENIMG_LOG_LEVEL":     "WARN",
			// Callbacks are given up quickly here (production: 24h).
			"GENIMG_CALLBACK_MAX_AGE": "6s",
			"GENIMG_MODELS":           "gemini-2.5-flash-image,gemini-3.1-flash-image,gemini-3-pro-image",
			// Batches go as JSONL files: the SDK decodes large inline
			// answers several times slower (package batch tests both).
			"GENIMG_BATCH_INLINE_BYTES": "1",
			"GENIMG_RULES": `[{"bucket": "genimg-input", "prefix": "watercolor/", "prompt": "Turn this photo into a watercolor painting", "aspectRatio": "1:1"},
				{"bucket": "genimg-input", "prefix": "backfill/", "prompt": "Restore this old photo", "dryRun": true},
				{"bucket": "genimg-input", "prefix": "products/", "prompt": "Put this product on a white background", "aspectRatio": "4:3",
				 "renditions": [{"format": "webp", "maxSize": 128}, {"format": "jpeg", "maxSize": 600}], "cacheControl": "public, max-age=600"}]`,
		},
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	stack.Stack, stack.functions, stack.gcs, stack.pubsub, stack.model = s, s.FunctionsURL, s.Storage, s.PubSub, s.Model
	if err := stack.gcs.Bucket(refBucket).Create(ctx, project, nil); err != nil {
		panic(err)
	}
	if _, err := stack.pubsub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
		Name: subName("test-completions"), Topic: topicName("genimg-completions"), AckDeadlineSeconds: 600,
	}); err != nil {
		panic(err)
	}
	stack.requests = stack.pubsub.Publisher(topicName("genimg-requests"))
	stack.events = collect(ctx, stack.pubsub.Subscriber(subName("test-completions")))
	return m.Run()
}

func topicName(id string) string { return "projects/" + project + "/topics/" + id }
func subName(id string) string   { return "projects/" + project + "/subscriptions/" + id }

// An event is one completion event as a consumer sees it.
type event struct {
	Attributes map[string]string
	Record     job.Record
}

// collector gathers completion events.
type collector struct {
	mu     sync.Mutex
	events []event
	added  chan struct{}
}

func collect(ctx context.Context, sub *pubsub.Subscriber) *collector {
	c := &collector{added: make(chan struct{})}
	go sub.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		var rec job.Record
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			panic(fmt.Sprintf("completion event data is not a record: %v", err))
		}
		c.mu.Lock()
		c.events = append(c.events, event{Attributes: m.Attributes, Record: rec})
		close(c.added)
		c.added = make(chan struct{})
		c.mu.Unlock()
		m.Ack()
	})
	return c
}

// all returns every event so far.
func (c *collector) all() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

// forJob returns the events for a job so far.
func (c *collector) forJob(id string) []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event
	for _, e := range c.events {
		if e.Record.JobID == id {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first event that matches, failing the test after 30 s.
func (c *collector) wait(t *testing.T, match func(event) bool) event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		for _, e := range c.events {
			if match(e) {
				c.mu.Unlock()
				return e
			}
		}
		added := c.added
		c.mu.Unlock()
		select {
		case <-added:
		case <-deadline:
			t.Fatal("no matching completion event within 30 s")
		}
	}
}

// waitCount waits until a job has n events (or 20 s pass), then a little
// longer for any stray duplicate, and returns them all.
func (c *collector) waitCount(t *testing.T, id string, n int) []event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(c.forJob(id)) < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	settle()
	return c.forJob(id)
}

// waitJob waits for the first event of a job.
func (c *collector) waitJob(t *testing.T, id string) event {
	t.Helper()
	return c.wait(t, func(e event) bool { return e.Record.JobID == id })
}
