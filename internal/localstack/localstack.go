// Package localstack runs the whole genimg pipeline in one process: a Cloud
// Storage emulator (fake-gcs-server), a Pub/Sub emulator (pstest), the
// stand-in model, the three functions under the functions framework, and
// delivery from the emulators to the functions the way Google Cloud does it.
// cmd/local serves it to people; the end-to-end tests start it on free
// ports.
package localstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	gcs "cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/callback"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/delivery"
	"github.com/genimg/genimg/internal/instance"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/tracing"
)

// Options name every endpoint and resource of the stack. The zero value of
// a port means a free port; Defaults are the documented ones.
type Options struct {
	Host                                   string
	FunctionsPort, StoragePort, PubSubPort int
	// ModelPort serves the stand-in model; ignored when UseRealModel.
	ModelPort int
	Project   string

	InputBucket, OutputBucket                       string
	RequestsTopic, CompletionTopic, DeadLetterTopic string

	// UseRealModel calls the real Gemini API with the credentials in the
	// environment instead of the stand-in.
	UseRealModel bool
	// ModelLatency is the stand-in's answer time.
	ModelLatency time.Duration
	// Env is extra configuration for the functions (GENIMG_*), applied
	// over the stack's own.
	Env map[string]string

	// Delivery: backoff between attempts, attempts before the dead-letter
	// topic (push) and the longest an upload event is retried (Eventarc).
	MinBackoff, MaxBackoff time.Duration
	MaxAttempts            int
	MaxEventAge            time.Duration

	// Tick, when set, is how often the stack calls PollBatches as Cloud
	// Scheduler does in production: batches are finished and held jobs
	// resumed by themselves. 0 leaves it to the caller.
	Tick time.Duration

	// Log receives the emulators' chatter; nil discards it.
	Log io.Writer

	// ExternalFunctions, when set, is the URL of functions served by
	// another process (ServeFunctions): the stack starts no functions of
	// its own and delivers there.
	ExternalFunctions string
}

// Defaults are the local stack's documented endpoints and names (README).
func Defaults() Options {
	return Options{
		Host: "127.0.0.1", FunctionsPort: 8080, StoragePort: 4443, PubSubPort: 8085, ModelPort: 8090,
		Project: "genimg-local", InputBucket: "genimg-input", OutputBucket: "genimg-output",
		RequestsTopic: "genimg-requests", CompletionTopic: "genimg-completions", DeadLetterTopic: "genimg-dead-letter",
		MinBackoff: time.Second, MaxBackoff: time.Minute, MaxAttempts: 5, MaxEventAge: 24 * time.Hour,
		Tick: 10 * time.Second,
	}
}

// A Stack is the running pipeline.
type Stack struct {
	Options
	// FunctionsURL, StorageURL and ModelURL are http://host:port;
	// PubSubAddr is host:port.
	FunctionsURL, StorageURL, ModelURL, PubSubAddr string
	// Model is the stand-in, nil with UseRealModel.
	Model *geminitest.Handler
	// Storage and PubSub are clients of the emulators.
	Storage *gcs.Client
	PubSub  *pubsub.Client
	// Requests and Uploads are the deliveries to OnMessage and OnUpload;
	// Callbacks delivers the completion topic to OnCompletion.
	Requests, Uploads, Callbacks *delivery.Pusher
	// Functions is the instance the stack serves (nil with
	// ExternalFunctions).
	Functions *instance.Instance
	// Env is the configuration the stack gives its functions, over the
	// process environment (Config).
	Env map[string]string
	// Traces keeps the spans of the stack's functions, in memory: nothing
	// leaves the machine (the console reads them).
	Traces *tracing.Ring

	cancel  context.CancelFunc
	closers []func()
}

// uploadsTopic carries the input bucket's notifications to the Eventarc
// stand-in.
const uploadsTopic = "genimg-upload-notifications"

// callbackSub suffixes the completion topic's subscription that feeds
// OnCompletion.
const callbackSub = "-callbacks"

// Start brings the stack up. The functions are built from explicit
// configuration (Config: the stack's settings over the process
// environment), never from a process-wide setting, so that one process can
// hold several stacks: the first is served at the functions port's root,
// the others under /iN/ on the same server (FunctionsURL says where).
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(ctx)
	s := &Stack{Options: o, cancel: cancel}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	// Nothing leaves this machine: Google client libraries must never probe
	// the metadata server for credentials or a project. These are the
	// libraries' own settings, not genimg's, and the same for every stack.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")

	// Pub/Sub first: fake-gcs-server publishes notifications to it.
	psPort, err := freePort(o.Host, o.PubSubPort)
	if err != nil {
		return nil, fmt.Errorf("pub/sub emulator: %w", err)
	}
	ps := pstest.NewServerWithAddress(net.JoinHostPort(o.Host, strconv.Itoa(psPort)))
	s.closers = append(s.closers, func() { ps.Close() })
	s.PubSubAddr = ps.Addr
	// fake-gcs-server publishes bucket notifications to the Pub/Sub
	// emulator it finds in its process environment when it is created: the
	// emulator's own setting, read once, not genimg's configuration.
	os.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)

	gcsPort, err := freePort(o.Host, o.StoragePort)
	if err != nil {
		return nil, fmt.Errorf("cloud storage emulator: %w", err)
	}
	hostPort := net.JoinHostPort(o.Host, strconv.Itoa(gcsPort))
	fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http", Host: o.Host, Port: uint16(gcsPort), PublicHost: hostPort, Writer: o.Log,
	})
	if err != nil {
		return nil, fmt.Errorf("cloud storage emulator: %w", err)
	}
	s.closers = append(s.closers, fake.Stop)
	s.StorageURL = fake.URL()

	modelURL := ""
	if !o.UseRealModel {
		modelPort, err := freePort(o.Host, o.ModelPort)
		if err != nil {
			return nil, fmt.Errorf("stand-in model: %w", err)
		}
		s.Model = geminitest.NewHandler(geminitest.Options{Latency: o.ModelLatency})
		go s.Model.Warm() // the first job's answer then comes as fast as the rest
		url, stop, err := serve(net.JoinHostPort(o.Host, strconv.Itoa(modelPort)), s.Model)
		if err != nil {
			return nil, fmt.Errorf("stand-in model: %w", err)
		}
		s.closers = append(s.closers, stop)
		s.ModelURL, modelURL = url, url
	}
	s.Env = o.functionsEnv(s.StorageURL, ps.Addr, modelURL)

	if s.Storage, err = gcs.NewClient(ctx, gcs.WithJSONReads(), option.WithEndpoint(s.StorageURL+"/storage/v1/"), option.WithoutAuthentication()); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.Storage.Close() })
	if s.PubSub, err = pubsub.NewClient(ctx, o.Project, option.WithEndpoint(ps.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials()))); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.PubSub.Close() })
	if err := s.provision(ctx); err != nil {
		return nil, err
	}

	if err := s.startFunctions(ctx); err != nil {
		return nil, err
	}
	s.startDeliveries(ctx)
	if o.Tick > 0 {
		go s.tick(ctx, o.Tick)
	}
	return s, nil
}

// startFunctions builds the stack's instance from its configuration and
// mounts it under the functions framework, or points at functions served
// elsewhere (ExternalFunctions).
func (s *Stack) startFunctions(ctx context.Context) error {
	o := s.Options
	if o.ExternalFunctions != "" {
		s.FunctionsURL = strings.TrimSuffix(o.ExternalFunctions, "/")
	} else {
		cfg, err := s.Config()
		if err != nil {
			return err
		}
		s.Traces = tracing.NewRing(tracing.DefaultRingSize)
		in, err := instance.New(ctx, cfg, pipeline.WithSpanExporter(s.Traces))
		if err != nil {
			return err
		}
		s.closers = append(s.closers, func() { in.Close() })
		s.Functions = in
		url, unmount, err := Mount(o.Host, o.FunctionsPort, in)
		if err != nil {
			return fmt.Errorf("functions: %w", err)
		}
		s.closers = append(s.closers, unmount)
		s.FunctionsURL = url
	}

	return nil
}

// startDeliveries delivers from the emulators to the functions as Google
// Cloud does: the requests topic's push subscription (retries, then the
// dead-letter topic), Eventarc for uploads (retries until the maximum age),
// and the callback function's own push subscription.
func (s *Stack) startDeliveries(ctx context.Context) {
	o := s.Options
	deadLetter := s.PubSub.Publisher(s.Topic(o.DeadLetterTopic))
	s.closers = append(s.closers, deadLetter.Stop)
	s.Requests = &delivery.Pusher{
		Subscriber: s.PubSub.Subscriber(s.Subscription(o.RequestsTopic + "-push")), Endpoint: s.FunctionsURL + "/OnMessage",
		Kind: delivery.MessagePublished, Topic: s.Topic(o.RequestsTopic), Subscription: s.Subscription(o.RequestsTopic + "-push"),
		MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, MaxAttempts: o.MaxAttempts, DeadLetter: deadLetter,
	}
	s.Uploads = &delivery.Pusher{
		Subscriber: s.PubSub.Subscriber(s.Subscription(uploadsTopic + "-eventarc")), Endpoint: s.FunctionsURL + "/OnUpload",
		Kind: delivery.StorageFinalized, Topic: s.Topic(uploadsTopic), Subscription: s.Subscription(uploadsTopic + "-eventarc"),
		MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, MaxAge: o.MaxEventAge,
	}
	// The callback function's own push subscription: no attempt limit, so
	// that OnCompletion's maximum age decides when a callback is given up
	// (in production the subscription's dead-letter policy backs it up).
	s.Callbacks = &delivery.Pusher{
		Subscriber: s.PubSub.Subscriber(s.Subscription(o.CompletionTopic + callbackSub)), Endpoint: s.FunctionsURL + "/OnCompletion",
		Kind: delivery.MessagePublished, Topic: s.Topic(o.CompletionTopic), Subscription: s.Subscription(o.CompletionTopic + callbackSub),
		MinBackoff: min(o.MinBackoff, time.Second), MaxBackoff: o.MaxBackoff, MaxAge: o.MaxEventAge, DeadLetter: deadLetter,
	}
	go s.Requests.Run(ctx)
	go s.Uploads.Run(ctx)
	go s.Callbacks.Run(ctx)
}

// withDefaults fills what o leaves unset with Defaults().
func (o Options) withDefaults() Options {
	d := Defaults()
	if o.Host == "" {
		o.Host = d.Host
	}
	for _, pair := range []struct {
		v *string
		d string
	}{{&o.Project, d.Project}, {&o.InputBucket, d.InputBucket}, {&o.OutputBucket, d.OutputBucket},
		{&o.RequestsTopic, d.RequestsTopic}, {&o.CompletionTopic, d.CompletionTopic}, {&o.DeadLetterTopic, d.DeadLetterTopic}} {
		if *pair.v == "" {
			*pair.v = pair.d
		}
	}
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = d.MinBackoff, d.MaxBackoff
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = d.MaxAttempts
	}
	if o.MaxEventAge == 0 {
		o.MaxEventAge = d.MaxEventAge
	}
	if o.Log == nil {
		o.Log = io.Discard
	}

	return o
}

// tick calls PollBatches every d, as the deployment's Cloud Scheduler job
// does, until ctx ends.
func (s *Stack) tick(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.FunctionsURL+"/PollBatches", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				slog.Warn("the scheduled PollBatches failed", "error", err)
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// functionsEnv is the configuration the functions run with in the stack.
func (o Options) functionsEnv(storageURL, pubsubAddr, modelURL string) map[string]string {
	env := map[string]string{
		"GCE_METADATA_HOST":         "127.0.0.1:9",
		"METADATA_SERVER_DETECTION": "none",
		"STORAGE_EMULATOR_HOST":     storageURL,
		"PUBSUB_EMULATOR_HOST":      pubsubAddr,
		"GOOGLE_CLOUD_PROJECT":      o.Project,
		"GENIMG_OUTPUT_BUCKET":      o.OutputBucket,
		"GENIMG_UPLOAD_BUCKETS":     o.InputBucket,
		"GENIMG_INPUT_BUCKETS":      o.InputBucket,
		"GENIMG_REQUESTS_TOPIC":     o.RequestsTopic,
		"GENIMG_COMPLETION_TOPIC":   o.CompletionTopic,
		"GENIMG_EVENT_SOURCE":       "//genimg.dev/projects/" + o.Project,
	}
	// Callbacks go to receivers on this machine (genimg listen, over plain
	// http), signed with a local secret; every job is traced, into memory.
	// The environment may say otherwise (9.7: it is passed through).
	for k, v := range map[string]string{"GENIMG_CALLBACK_SECRET": callback.LocalSecret, "GENIMG_CALLBACK_ALLOW_LOOPBACK": "true",
		"GENIMG_TRACE_SAMPLE": "1", "GENIMG_TRACE_EXPORTER": "memory"} {
		if os.Getenv(k) == "" {
			env[k] = v
		}
	}
	if modelURL != "" {
		env["GOOGLE_GEMINI_BASE_URL"] = modelURL
		env["GEMINI_API_KEY"] = "local-stand-in"
		env["GOOGLE_GENAI_USE_VERTEXAI"] = "false"
	}
	for k, v := range o.Env {
		env[k] = v
	}
	return env
}

// Config is the configuration of the stack's functions: the stack's own
// settings (emulators, buckets, topics, the stand-in) and Options.Env over
// the process environment, so that every GENIMG_* variable set for
// `go run ./cmd/local` reaches the functions as it would in production.
func (s *Stack) Config() (config.Config, error) {
	return config.LoadConfig(func(k string) string {
		if v, ok := s.Env[k]; ok {
			return v
		}
		return os.Getenv(k)
	})
}

// ServeFunctions serves only the functions, configured for the emulators
// and stand-in of a stack started elsewhere with the same options and
// ExternalFunctions pointing here: the functions then run in a process of
// their own, whose memory and CPU can be measured alone. It calls
// listening once the functions are served (or failed to be), and blocks.
func ServeFunctions(ctx context.Context, o Options, listening func()) error {
	d := Defaults()
	if o.Host == "" {
		o.Host = d.Host
	}
	hostPort := func(p int) string { return net.JoinHostPort(o.Host, strconv.Itoa(p)) }
	modelURL := ""
	if !o.UseRealModel {
		modelURL = "http://" + hostPort(o.ModelPort)
	}
	s := &Stack{Options: o}
	s.Env = o.functionsEnv("http://"+hostPort(o.StoragePort), hostPort(o.PubSubPort), modelURL)
	cfg, err := s.Config()
	if err != nil {
		return err
	}
	in, err := instance.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer in.Close()
	_, _, err = Mount(o.Host, o.FunctionsPort, in)
	listening()
	if err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// provision creates the buckets, topics, subscriptions and the input
// bucket's notification configuration.
func (s *Stack) provision(ctx context.Context) error {
	for _, b := range []string{s.InputBucket, s.OutputBucket} {
		if err := s.Storage.Bucket(b).Create(ctx, s.Project, nil); err != nil {
			return fmt.Errorf("creating bucket %s: %w", b, err)
		}
	}
	for _, t := range []string{s.RequestsTopic, s.CompletionTopic, s.DeadLetterTopic, uploadsTopic} {
		if _, err := s.PubSub.TopicAdminClient.CreateTopic(ctx, &pb.Topic{Name: s.Topic(t)}); err != nil {
			return fmt.Errorf("creating topic %s: %w", t, err)
		}
	}
	// The push subscription's and Eventarc's own subscriptions, and one on
	// the dead-letter topic so that nothing is lost there.
	for _, sub := range []struct{ name, topic string }{
		{s.RequestsTopic + "-push", s.RequestsTopic},
		{s.CompletionTopic + callbackSub, s.CompletionTopic},
		{uploadsTopic + "-eventarc", uploadsTopic},
		{s.DeadLetterTopic + "-hold", s.DeadLetterTopic},
	} {
		if _, err := s.PubSub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
			Name: s.Subscription(sub.name), Topic: s.Topic(sub.topic), AckDeadlineSeconds: 600,
		}); err != nil {
			return fmt.Errorf("creating subscription %s: %w", sub.name, err)
		}
	}
	if _, err := s.Storage.Bucket(s.InputBucket).AddNotification(ctx, &gcs.Notification{
		TopicProjectID: s.Project, TopicID: uploadsTopic, PayloadFormat: gcs.JSONPayload,
		EventTypes: []string{gcs.ObjectFinalizeEvent},
	}); err != nil {
		return fmt.Errorf("notification on %s: %w", s.InputBucket, err)
	}
	return nil
}

// Topic is a topic's full name in the stack's project.
func (s *Stack) Topic(id string) string { return "projects/" + s.Project + "/topics/" + id }

// Subscription is a subscription's full name in the stack's project.
func (s *Stack) Subscription(id string) string {
	return "projects/" + s.Project + "/subscriptions/" + id
}

// Close stops the deliveries and the emulators. The functions framework's
// server cannot be stopped and ends with the process.
func (s *Stack) Close() {
	s.cancel()
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// serve runs h on addr until stop is called.
func serve(addr string, h http.Handler) (url string, stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return "http://" + l.Addr().String(), func() { srv.Close() }, nil
}
