package genimg

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	gcs "cloud.google.com/go/storage"
	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/genimg/genimg/delivery"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// The end-to-end tests run the registered functions under the real
// functions framework, against fake-gcs-server, pstest and the stand-in
// model, with delivery from the emulators to the functions as Google Cloud
// does it (package delivery). One stack serves the whole test binary.
const (
	project      = "genimg-test"
	inputBucket  = "genimg-input"
	outputBucket = "genimg-output"
	refBucket    = "genimg-refs"
)

var stack struct {
	functions string // http://127.0.0.1:PORT
	gcs       *gcs.Client
	pubsub    *pubsub.Client
	model     *geminitest.Server
	pstest    *pstest.Server
	requests  *pubsub.Publisher
	events    *collector
	pushers   []*delivery.Pusher
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Nothing leaves this machine: no metadata-server probes.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ps := pstest.NewServer()
	defer ps.Close()
	stack.pstest = ps
	os.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)

	gcsPort := freePort()
	fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http", Host: "127.0.0.1", Port: uint16(gcsPort), PublicHost: "127.0.0.1:" + strconv.Itoa(gcsPort),
		InitialObjects: nil, Writer: ioDiscard{},
	})
	if err != nil {
		panic(err)
	}
	defer fake.Stop()
	os.Setenv("STORAGE_EMULATOR_HOST", fake.URL())

	stack.model = geminitest.NewServer()
	defer stack.model.Close()

	env := map[string]string{
		"GOOGLE_CLOUD_PROJECT":    project,
		"GEMINI_API_KEY":          "test-key-not-secret",
		"GOOGLE_GEMINI_BASE_URL":  stack.model.URL,
		"GENIMG_OUTPUT_BUCKET":    outputBucket,
		"GENIMG_UPLOAD_BUCKETS":   inputBucket,
		"GENIMG_INPUT_BUCKETS":    refBucket,
		"GENIMG_REQUESTS_TOPIC":   "genimg-requests",
		"GENIMG_COMPLETION_TOPIC": "genimg-completions",
		"GENIMG_MAX_EVENT_AGE":    "1h",
		"GENIMG_HTTP_WAIT":        "20s",
		"GENIMG_RETRY_BUDGET":     "5s",
		"GENIMG_LOG_LEVEL":        "WARN",
		"GENIMG_RULES":            `[{"bucket": "genimg-input", "prefix": "watercolor/", "prompt": "Turn this photo into a watercolor painting", "aspectRatio": "1:1"}]`,
	}
	for k, v := range env {
		os.Setenv(k, v)
	}

	if stack.gcs, err = gcs.NewClient(ctx, gcs.WithJSONReads()); err != nil {
		panic(err)
	}
	if stack.pubsub, err = pubsub.NewClient(ctx, project); err != nil {
		panic(err)
	}
	for _, b := range []string{inputBucket, outputBucket, refBucket} {
		if err := stack.gcs.Bucket(b).Create(ctx, project, nil); err != nil {
			panic(err)
		}
	}
	for _, topic := range []string{"genimg-requests", "genimg-completions", "genimg-dead-letter", "genimg-uploads"} {
		if _, err := stack.pubsub.TopicAdminClient.CreateTopic(ctx, &pb.Topic{Name: topicName(topic)}); err != nil {
			panic(err)
		}
	}
	for sub, topic := range map[string]string{
		"genimg-requests-push": "genimg-requests", "genimg-uploads-eventarc": "genimg-uploads",
		"test-completions": "genimg-completions", "test-dead-letter": "genimg-dead-letter",
	} {
		if _, err := stack.pubsub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
			Name: subName(sub), Topic: topicName(topic), AckDeadlineSeconds: 600,
		}); err != nil {
			panic(err)
		}
	}
	// Uploads reach OnUpload as Eventarc delivers them: the bucket's
	// notifications, turned into storage CloudEvents.
	if _, err := stack.gcs.Bucket(inputBucket).AddNotification(ctx, &gcs.Notification{
		TopicProjectID: project, TopicID: "genimg-uploads", PayloadFormat: gcs.JSONPayload,
		EventTypes: []string{gcs.ObjectFinalizeEvent},
	}); err != nil {
		panic(err)
	}

	port := freePort()
	stack.functions = "http://127.0.0.1:" + strconv.Itoa(port)
	go func() {
		if err := funcframework.StartHostPort("127.0.0.1", strconv.Itoa(port)); err != nil {
			panic(err)
		}
	}()
	waitListening(port)

	deadLetter := stack.pubsub.Publisher(topicName("genimg-dead-letter"))
	stack.pushers = []*delivery.Pusher{
		{
			Subscriber: stack.pubsub.Subscriber(subName("genimg-requests-push")), Endpoint: stack.functions + "/OnMessage",
			Kind: delivery.MessagePublished, Topic: topicName("genimg-requests"), Subscription: subName("genimg-requests-push"),
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 5, DeadLetter: deadLetter,
		},
		{
			Subscriber: stack.pubsub.Subscriber(subName("genimg-uploads-eventarc")), Endpoint: stack.functions + "/OnUpload",
			Kind: delivery.StorageFinalized, Topic: topicName("genimg-uploads"), Subscription: subName("genimg-uploads-eventarc"),
			MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 5,
		},
	}
	for _, p := range stack.pushers {
		go p.Run(ctx)
	}
	stack.requests = stack.pubsub.Publisher(topicName("genimg-requests"))
	stack.events = collect(ctx, stack.pubsub.Subscriber(subName("test-completions")))

	return m.Run()
}

func topicName(id string) string { return "projects/" + project + "/topics/" + id }
func subName(id string) string   { return "projects/" + project + "/subscriptions/" + id }

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(port int) {
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	panic("functions framework did not start")
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

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
