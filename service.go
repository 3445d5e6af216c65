package genimg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"cloud.google.com/go/pubsub/v2"
	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/option"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// A Service is one instance of genimg: its configuration and the clients it
// shares across concurrent requests. The registered functions use one
// built from the environment; tests and the local stack may build more.
type Service struct {
	cfg    config.Config
	policy job.Policy
	gcs    *gcs.Client
	store  *storage.Store
	model  model
	// contexts resolves jobs' shared contexts to context caches.
	contexts *gemini.Contexts
	// lane is the batch lane: batch submissions, and PollBatches.
	lane     *batch.Lane
	pubsub   *pubsub.Client
	requests *pubsub.Publisher
	events   *pubsub.Publisher
	spend    *spend.Guard
	// webhookKey and replay verify signed HTTP callers when
	// GENIMG_WEBHOOK_SECRET is set; webhookKey is nil otherwise.
	webhookKey webhook.Key
	replay     *webhook.Replay
	now        func() time.Time
}

// model is what the pipeline needs of the Gemini client: a call whose
// images stream into a sink (the job's storage.Outputs) as they arrive.
type model interface {
	GenerateTo(ctx context.Context, j job.Job, sink gemini.ImageSink) (*gemini.Result, error)
}

// An Option changes how New builds a Service.
type Option func(*options)

type options struct {
	gcsOpts    []option.ClientOption
	pubsubOpts []option.ClientOption
	geminiOpts []gemini.Option
	storeOpts  []storage.Option
	now        func() time.Time
}

// WithStorageOptions passes client options to the Cloud Storage client.
func WithStorageOptions(o ...option.ClientOption) Option {
	return func(s *options) { s.gcsOpts = append(s.gcsOpts, o...) }
}

// WithPubSubOptions passes client options to the Pub/Sub client.
func WithPubSubOptions(o ...option.ClientOption) Option {
	return func(s *options) { s.pubsubOpts = append(s.pubsubOpts, o...) }
}

// WithGeminiOptions passes options to the Gemini client.
func WithGeminiOptions(o ...gemini.Option) Option {
	return func(s *options) { s.geminiOpts = append(s.geminiOpts, o...) }
}

// WithStoreOptions passes options to the job store.
func WithStoreOptions(o ...storage.Option) Option {
	return func(s *options) { s.storeOpts = append(s.storeOpts, o...) }
}

// WithClock replaces time.Now, for tests of event age.
func WithClock(now func() time.Time) Option {
	return func(s *options) { s.now = now }
}

// New builds a Service from a loaded configuration. The clients find the
// emulators through STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST, as the
// Cloud client libraries define them.
func New(ctx context.Context, cfg config.Config, opts ...Option) (*Service, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	gcsClient, err := gcs.NewClient(ctx, append([]option.ClientOption{gcs.WithJSONReads()}, o.gcsOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("cloud storage client: %w", err)
	}
	ps, err := pubsub.NewClient(ctx, cfg.Topics.Project, o.pubsubOpts...)
	if err != nil {
		gcsClient.Close()
		return nil, fmt.Errorf("pub/sub client: %w", err)
	}
	m, err := gemini.New(ctx, cfg.Model, cfg.Prices, o.geminiOpts...)
	if err != nil {
		gcsClient.Close()
		ps.Close()
		return nil, fmt.Errorf("gemini client: %w", err)
	}
	// Upload jobs read the uploaded object, HTTP jobs their staged images:
	// the store may read every bucket the job policy allows.
	storeCfg := cfg.Storage
	storeCfg.InputBuckets = cfg.ReadableBuckets()
	store := storage.New(gcsClient, storeCfg, cfg.Limits, cfg.Model.Backend, o.storeOpts...)
	s := &Service{
		cfg:      cfg,
		policy:   cfg.Policy(),
		gcs:      gcsClient,
		store:    store,
		contexts: gemini.NewContexts(m, gemini.NewGCSCacheStore(gcsClient, cfg.Storage.OutputBucket), store),
		model:    m,
		pubsub:   ps,
		requests: ps.Publisher(cfg.Topics.Requests),
		events:   ps.Publisher(cfg.Topics.Completion),
		spend:    spend.New(gcsClient, cfg.Storage.OutputBucket, cfg.Spend),
		now:      o.now,
	}
	// Batch jobs' gs:// images are read like online ones; their shared
	// contexts resolve to the same caches.
	s.lane = batch.New(m, gcsClient, cfg.Storage.OutputBucket, cfg.Batch, batch.WithResolver(store), batch.WithContexts(s.contexts))
	if cfg.Webhook.Secret != "" {
		key, err := webhook.ParseKey(cfg.Webhook.Secret)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("GENIMG_WEBHOOK_SECRET: %w", err)
		}
		s.webhookKey = key
		s.replay = webhook.NewReplay(gcsClient, cfg.Storage.OutputBucket, cfg.Webhook.Tolerance)
	}
	// Completion events are awaited before a delivery is acknowledged:
	// send each at once rather than waiting to batch.
	s.events.PublishSettings.DelayThreshold = time.Millisecond
	s.requests.PublishSettings.DelayThreshold = time.Millisecond
	slog.InfoContext(ctx, "genimg ready", "config", cfg)
	return s, nil
}

// Close stops the publishers and closes the clients.
func (s *Service) Close() error {
	s.requests.Stop()
	s.events.Stop()
	// The spend ledger's last flush, so other instances count this one's spend.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(s.spend.Close(ctx), s.pubsub.Close(), s.gcs.Close())
}
