// Package pipeline is genimg's one run of a job — claim, inputs, admit,
// model, outputs, record, event — shared by every trigger and by the batch
// lane's finisher. A Service holds one instance's configuration and clients;
// the functions (function.go, internal/httpapi) decode their input and hand
// it here.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/batch"
	"github.com/genimg/genimg/internal/callback"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/internal/tracing"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// A Service is one instance of genimg: its configuration and the clients it
// shares across concurrent requests. The registered functions use one
// built from the environment; tests and the local stack may build more.
type Service struct {
	cfg    config.Config
	policy job.Policy
	output *storage.Objects
	store  *storage.Store
	model  model
	// contexts resolves jobs' shared contexts to context caches.
	contexts *gemini.ContextCaches
	// lane is the batch lane: batch submissions, and PollBatches.
	lane     *batch.Lane
	pubsub   *pubsub.Client
	requests *pubsub.Publisher
	events   *pubsub.Publisher
	spend    *spend.Guard
	// callbacks checks jobs' callback URLs and, in OnCompletion, calls them.
	callbacks *callback.Sender
	// traces starts the job's spans (package tracing).
	traces *tracing.Tracer
	now    func() time.Time
	// unfinished keeps paid answers whose draft could not be written.
	unfinished unfinished
	// waits are Generate's waiters on this instance (notify.go).
	waits notifier
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
	spendOpts  []spend.Option
	cbOpts     []callback.Option
	spans      sdktrace.SpanExporter
	now        func() time.Time
}

// WithStorageOptions passes client options to the Cloud Storage client;
// with any, its HTTP transport is theirs or the library's default, not
// storage.HTTPClient (tests bring one that injects faults).
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

// WithSpendOptions passes options to the spend guard (tests shorten its
// intervals).
func WithSpendOptions(o ...spend.Option) Option {
	return func(s *options) { s.spendOpts = append(s.spendOpts, o...) }
}

// WithStoreOptions passes options to the job store.
func WithStoreOptions(o ...storage.Option) Option {
	return func(s *options) { s.storeOpts = append(s.storeOpts, o...) }
}

// WithCallbackOptions passes options to the callback sender (a resolver
// that stays on the machine, in tests).
func WithCallbackOptions(o ...callback.Option) Option {
	return func(s *options) { s.cbOpts = append(s.cbOpts, o...) }
}

// WithSpanExporter sends every span, as it ends, to e (the local stack's
// tracing.Ring) instead of where the configuration says.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return func(s *options) { s.spans = e }
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
	// Upload jobs read the uploaded object, HTTP jobs their staged images:
	// the store may read every bucket the job policy allows.
	storeCfg := cfg.Storage
	storeCfg.InputBuckets = cfg.ReadableBuckets()
	gcsOpts, psOpts := emulators(cfg)
	traces, err := tracing.New(ctx, cfg.Trace, cfg.Topics.Project, o.spans)
	if err != nil {
		return nil, err
	}
	callbacks, err := callback.New(cfg.Callback, append([]callback.Option{callback.WithClock(o.now), callback.WithTracer(traces)}, o.cbOpts...)...)
	if err != nil {
		return nil, err
	}
	// The client libraries' own OpenTelemetry instrumentation wraps every
	// request (otelhttp: attribute sets and metric options per call, ~3 % of
	// the functions' CPU in side.sh) and records into no-op providers: genimg
	// traces with a tracer of its own (package tracing) and installs no
	// global one.
	quiet := []option.ClientOption{option.WithTelemetryDisabled()}
	gcsOpts, psOpts = slices.Concat(quiet, gcsOpts), slices.Concat(quiet, psOpts)
	if len(o.gcsOpts) == 0 {
		// genimg's transport (uploads in fewer system calls), unless the
		// caller brings client options, and with them its own transport.
		hc, err := storage.HTTPClient(ctx, gcsOpts...)
		if err != nil {
			return nil, err
		}
		gcsOpts = append(gcsOpts, option.WithHTTPClient(hc))
	}
	store, err := storage.Dial(ctx, storeCfg, cfg.Limits, cfg.Model.Backend, append(gcsOpts, o.gcsOpts...), o.storeOpts...)
	if err != nil {
		return nil, err
	}
	ps, err := pubsub.NewClient(ctx, cfg.Topics.Project, append(psOpts, o.pubsubOpts...)...)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("pub/sub client: %w", err)
	}
	output := store.Output()
	s := &Service{
		cfg:       cfg,
		policy:    cfg.Policy(),
		output:    output,
		store:     store,
		pubsub:    ps,
		requests:  ps.Publisher(cfg.Topics.Requests),
		events:    ps.Publisher(cfg.Topics.Completion),
		spend:     spend.New(output, cfg.Spend, o.spendOpts...),
		callbacks: callbacks,
		traces:    traces,
		now:       o.now,
	}
	// Only a deployment that runs jobs builds the model client, and it
	// refuses to start without the model's credentials; the front door and
	// the callback function hold none (GENIMG_ROLE).
	if cfg.RunsJobs() {
		m, err := gemini.New(ctx, cfg.Model, cfg.Prices, o.geminiOpts...)
		if err != nil {
			store.Close()
			ps.Close()
			return nil, fmt.Errorf("gemini client: %w", err)
		}
		s.model = m
		s.contexts = gemini.NewContextCaches(m, storage.NewCacheRecords(output), store)
		// Batch jobs' gs:// images are read like online ones; their shared
		// contexts resolve to the same caches.
		s.lane = batch.New(m, output, cfg.Batch, batch.WithResolver(store), batch.WithContexts(s.contexts), batch.WithAdmitter(batchAdmitter{s}))
	}
	// Completion events are awaited before a delivery is acknowledged:
	// send each at once rather than waiting to batch.
	s.events.PublishSettings.DelayThreshold = time.Millisecond
	s.requests.PublishSettings.DelayThreshold = time.Millisecond
	go s.warm()
	slog.InfoContext(ctx, "genimg ready", "config", cfg)
	return s, nil
}

// errNoModel is the answer of a Service without a model client (a front
// door or callback deployment) asked to run a job or a batch: transient,
// as the job is not at fault and a deployment that runs jobs will.
func (s *Service) errNoModel() error {
	return fmt.Errorf("%w: this deployment (GENIMG_ROLE=%s) never calls the model: jobs run in OnMessage, OnUpload and PollBatches", job.ErrTransient, s.cfg.Role)
}

// Config is the configuration the Service was built with.
func (s *Service) Config() config.Config { return s.cfg }

// Policy is what the configuration allows of a job.
func (s *Service) Policy() job.Policy { return s.policy }

// Store is the job store: state, inputs and outputs in Cloud Storage.
func (s *Service) Store() *storage.Store { return s.store }

// Output is the output bucket, for state that is not a job's.
func (s *Service) Output() *storage.Objects { return s.output }

// Spend is the spend guard.
func (s *Service) Spend() *spend.Guard { return s.spend }

// Now is the Service's clock.
func (s *Service) Now() time.Time { return s.now() }

// CheckCallback reports whether j's callback may be called (no callback:
// nil). The error wraps job.ErrInvalid, or job.ErrTransient when the
// callback host's name could not be looked up for now.
func (s *Service) CheckCallback(ctx context.Context, j job.Job) error {
	return s.callbacks.Check(ctx, j.Callback)
}

// OnCompletion is the callback function: it delivers one completion event
// to its record's callback URL (package callback).
func (s *Service) OnCompletion(ctx context.Context, e cloudevents.Event) error {
	return s.callbacks.OnCompletion(ctx, e)
}

// Traces is the Service's tracer.
func (s *Service) Traces() *tracing.Tracer { return s.traces }

// Callbacks is the callback sender.
func (s *Service) Callbacks() *callback.Sender { return s.callbacks }

// Close stops the publishers and closes the clients.
func (s *Service) Close() error {
	s.requests.Stop()
	s.events.Stop()
	// The spend ledger's last flush, so other instances count this one's spend.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return errors.Join(s.spend.Close(ctx), s.traces.Shutdown(ctx), s.pubsub.Close(), s.store.Close())
}

// emulators points the clients at the emulators the configuration names
// (STORAGE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST), so that a Service built
// from explicit configuration needs nothing from the process environment.
func emulators(cfg config.Config) (gcsOpts, psOpts []option.ClientOption) {
	if h := cfg.Storage.EmulatorHost; h != "" {
		if !strings.Contains(h, "://") {
			h = "http://" + h
		}
		gcsOpts = []option.ClientOption{option.WithEndpoint(strings.TrimSuffix(h, "/") + "/storage/v1/"), option.WithoutAuthentication()}
	}
	if h := cfg.Topics.EmulatorHost; h != "" {
		psOpts = []option.ClientOption{option.WithEndpoint(h), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	}
	return gcsOpts, psOpts
}
