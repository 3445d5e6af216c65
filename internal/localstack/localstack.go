// Package localstack runs the whole genimg pipeline in one process: a Cloud
// Storage emulator (fake-gcs-server), a Pub/Sub emulator (pstest), the
// stand-in model, the three functions under the functions framework, and
// delivery from the emulators to the functions the way Google Cloud does it.
// cmd/local serves it to people; the end-to-end tests start it on free
// ports.
package localstack

import (
	"context"
	"errors"
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
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/delivery"
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
	// Requests and Uploads are the deliveries to OnMessage and OnUpload.
	Requests, Uploads *delivery.Pusher

	cancel  context.CancelFunc
	closers []func()
}

// uploadsTopic carries the input bucket's notifications to the Eventarc
// stand-in.
const uploadsTopic = "genimg-upload-notifications"

// Start brings the stack up. It sets the process environment the functions
// and client libraries read (STORAGE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST,
// GENIMG_*), so one process holds one stack.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
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

	ctx, cancel := context.WithCancel(ctx)
	s := &Stack{Options: o, cancel: cancel}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	// Nothing leaves this machine: Google client libraries must never probe
	// the metadata server for credentials or a project.
	setenv := map[string]string{"GCE_METADATA_HOST": "127.0.0.1:9", "METADATA_SERVER_DETECTION": "none"}
	for k, v := range setenv {
		os.Setenv(k, v)
	}

	// Pub/Sub first: fake-gcs-server publishes notifications to it.
	psPort, err := port(o.Host, o.PubSubPort)
	if err != nil {
		return nil, fmt.Errorf("pub/sub emulator: %w", err)
	}
	ps := pstest.NewServerWithAddress(net.JoinHostPort(o.Host, strconv.Itoa(psPort)))
	s.closers = append(s.closers, func() { ps.Close() })
	s.PubSubAddr = ps.Addr
	os.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)

	gcsPort, err := port(o.Host, o.StoragePort)
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
	os.Setenv("STORAGE_EMULATOR_HOST", s.StorageURL)

	modelURL := ""
	if !o.UseRealModel {
		modelPort, err := port(o.Host, o.ModelPort)
		if err != nil {
			return nil, fmt.Errorf("stand-in model: %w", err)
		}
		s.Model = geminitest.NewHandler(geminitest.Options{Latency: o.ModelLatency})
		url, stop, err := serve(net.JoinHostPort(o.Host, strconv.Itoa(modelPort)), s.Model)
		if err != nil {
			return nil, fmt.Errorf("stand-in model: %w", err)
		}
		s.closers = append(s.closers, stop)
		s.ModelURL, modelURL = url, url
	}
	for k, v := range o.functionsEnv(s.StorageURL, ps.Addr, modelURL) {
		os.Setenv(k, v)
	}

	if s.Storage, err = gcs.NewClient(ctx, gcs.WithJSONReads()); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.Storage.Close() })
	if s.PubSub, err = pubsub.NewClient(ctx, o.Project); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.PubSub.Close() })
	if err := s.provision(ctx); err != nil {
		return nil, err
	}

	if o.ExternalFunctions != "" {
		s.FunctionsURL = strings.TrimSuffix(o.ExternalFunctions, "/")
	} else {
		fnPort, err := port(o.Host, o.FunctionsPort)
		if err != nil {
			return nil, fmt.Errorf("functions: %w", err)
		}
		s.FunctionsURL = "http://" + net.JoinHostPort(o.Host, strconv.Itoa(fnPort))
		go func() {
			// StartHostPort cannot be stopped; it ends with the process.
			if err := funcframework.StartHostPort(o.Host, strconv.Itoa(fnPort)); err != nil {
				slog.Error("functions framework stopped", "error", err)
			}
		}()
		if err := waitListening(ctx, net.JoinHostPort(o.Host, strconv.Itoa(fnPort))); err != nil {
			return nil, err
		}
	}

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
	go s.Requests.Run(ctx)
	go s.Uploads.Run(ctx)
	return s, nil
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

// ServeFunctions serves only the functions, configured for the emulators
// and stand-in of a stack started elsewhere with the same options and
// ExternalFunctions pointing here: the functions then run in a process of
// their own, whose memory and CPU can be measured alone. It blocks.
func ServeFunctions(o Options) error {
	d := Defaults()
	if o.Host == "" {
		o.Host = d.Host
	}
	hostPort := func(p int) string { return net.JoinHostPort(o.Host, strconv.Itoa(p)) }
	modelURL := ""
	if !o.UseRealModel {
		modelURL = "http://" + hostPort(o.ModelPort)
	}
	for k, v := range o.functionsEnv("http://"+hostPort(o.StoragePort), hostPort(o.PubSubPort), modelURL) {
		os.Setenv(k, v)
	}
	return funcframework.StartHostPort(o.Host, strconv.Itoa(o.FunctionsPort))
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

// port returns p, or a free port when p is zero.
func port(host string, p int) (int, error) {
	if p != 0 {
		return p, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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

func waitListening(ctx context.Context, addr string) error {
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return errors.New("the functions framework did not start listening on " + addr)
}
