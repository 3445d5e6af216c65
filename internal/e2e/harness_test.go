package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/instance"
	"github.com/genimg/genimg/internal/localstack"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

// Extra pipeline instances, each an Instance of its own (own clients, own
// fault-injecting transports, own clock) sharing the stack's emulators,
// served by the real functions framework under a path of their own
// (localstack.Mount).

// A testInstance is one extra pipeline instance and its handles.
type testInstance struct {
	*instance.Instance
	// path is the instance's functions under the framework, "instN", for
	// postEvent: path+"/OnMessage".
	path string
	// gcsFaults injects Cloud Storage faults into this instance's requests.
	gcsFaults *storagetest.Transport
	// modelFaults drops the model's answers on this instance's calls.
	modelFaults *dropTransport
	// skew moves this instance's clock (leases, event age) forward.
	skew atomic.Int64
	// publishHook, when set, runs before each completion-event publish RPC
	// of this instance; an error fails the RPC.
	publishHook atomic.Pointer[func(context.Context) error]
	// cancel, when a test sets it, hangs up the caller of a delivery.
	cancel context.CancelFunc
}

// now is the instance's clock.
func (in *testInstance) now() time.Time { return time.Now().Add(time.Duration(in.skew.Load())) }

// advance moves the instance's clock forward, as if it had been paused.
func (in *testInstance) advance(d time.Duration) { in.skew.Add(int64(d)) }

// baseConfig is the stack's configuration (localstack set the environment)
// with a private stand-in model and short timeouts, for extra instances.
func baseConfig(t *testing.T, model *geminitest.Server) config.Config {
	t.Helper()
	cfg, err := stack.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Model.BaseURL = model.URL
	cfg.Model.CallTimeout = 5 * time.Second
	cfg.Model.RetryBudget = 3 * time.Second
	cfg.Model.MaxAttempts = 3
	cfg.Storage.Lease = time.Minute
	cfg.Limits.MaxEventAge = time.Hour
	return cfg
}

// newModel starts a stand-in model private to the test, so that its call
// count is the test's alone.
func newModel(t *testing.T) *geminitest.Server {
	t.Helper()
	m := geminitest.NewServer()
	t.Cleanup(m.Close)
	return m
}

// newInstance builds an extra instance from cfg and serves it under the
// functions framework until the test ends.
func newInstance(t *testing.T, cfg config.Config, name string, extra ...pipeline.Option) *testInstance {
	t.Helper()
	in := &testInstance{
		gcsFaults:   &storagetest.Transport{Base: http.DefaultTransport},
		modelFaults: &dropTransport{Base: http.DefaultTransport},
	}
	publishGate := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoke grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if hook := in.publishHook.Load(); hook != nil && method == "/google.pubsub.v1.Publisher/Publish" {
			if err := (*hook)(ctx); err != nil {
				return err
			}
		}
		return invoke(ctx, method, req, reply, cc, opts...)
	}
	svc, err := instance.New(context.Background(), cfg, append([]pipeline.Option{
		pipeline.WithStorageOptions(
			option.WithEndpoint(strings.TrimSuffix(stack.StorageURL, "/")+"/storage/v1/"),
			option.WithoutAuthentication(),
			option.WithHTTPClient(&http.Client{Transport: in.gcsFaults}),
		),
		pipeline.WithPubSubOptions(option.WithGRPCDialOption(grpc.WithChainUnaryInterceptor(publishGate))),
		pipeline.WithGeminiOptions(
			gemini.WithHTTPClient(&http.Client{Transport: in.modelFaults}),
			gemini.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		),
		// Storage faults should surface in milliseconds, not after the
		// client's default backoff (1 s, doubling).
		pipeline.WithStoreOptions(storage.WithClock(in.now), storage.WithOwner(name), storage.WithUploadRetryDeadline(uploadDeadline()),
			storage.WithRetry(gax.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2}, 3)),
		pipeline.WithClock(in.now),
	}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	in.Instance = svc
	url, unmount, err := localstack.Mount("127.0.0.1", 0, svc)
	if err != nil {
		t.Fatal(err)
	}
	in.path = strings.TrimPrefix(url, stack.functions+"/")
	t.Cleanup(func() {
		unmount()
		svc.Close()
	})
	return in
}

// uploadDeadline bounds one upload of an extra instance: short, so that an
// injected fault that never clears surfaces quickly; long enough for a
// 2 MB image on a loaded machine, or a timeout would pay for a second call.
func uploadDeadline() time.Duration {
	if raceEnabled {
		return 30 * time.Second
	}
	return 1500 * time.Millisecond
}

// dropTransport lets the next Drop requests reach the server, reads the
// server's answer and loses it, as a connection reset after the model
// answered (and billed) looks to the client.
type dropTransport struct {
	Base http.RoundTripper
	drop atomic.Int64
}

func (d *dropTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.Base.RoundTrip(r)
	if err != nil || d.drop.Add(-1) < 0 {
		d.drop.Store(0)
		return resp, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
}

// messageEvent delivers a job message to fn ("instN/OnMessage" or
// "OnMessage") as the push subscription does, from the requests topic, and
// answers the status. Safe to call from goroutines.
func messageEvent(ctx context.Context, fn, msgID string, data []byte, when time.Time) (int, error) {
	body, err := json.Marshal(map[string]any{
		"subscription": subName("genimg-requests-push"),
		"message": map[string]any{
			"data": data, "messageId": msgID, "message_id": msgID,
			"publishTime": when.UTC().Format(time.RFC3339Nano),
		},
	})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, stack.functions+"/"+fn, strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("ce-specversion", "1.0")
	req.Header.Set("ce-id", msgID)
	req.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
	req.Header.Set("ce-source", "//pubsub.googleapis.com/"+topicName("genimg-requests"))
	req.Header.Set("ce-time", when.UTC().Format(time.RFC3339Nano))
	resp, err := deliveryClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// deliveryClient bounds a delivery, so that a hung handler fails its test
// instead of the whole run.
var deliveryClient = &http.Client{Timeout: 2 * time.Minute}

// deliver sends one message delivery and fails the test unless it answers
// want.
func deliver(t *testing.T, fn, msgID string, data []byte, when time.Time, want int) {
	t.Helper()
	status, err := messageEvent(t.Context(), fn, msgID, data, when)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("%s answered %d, want %d", fn, status, want)
	}
}

// storedRecord reads a job's result.json.
func storedRecord(t *testing.T, id string) job.Record {
	t.Helper()
	r, err := stack.gcs.Bucket(outputBucket).Object("jobs/" + id + "/result.json").NewReader(t.Context())
	if err != nil {
		t.Fatalf("reading the record of %s: %v", id, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return decodeRecord(t, b)
}

// storedLease reads a job's claim.json.
func storedLease(t *testing.T, id string) (expires time.Time, calls int) {
	t.Helper()
	r, err := stack.gcs.Bucket(outputBucket).Object("jobs/" + id + "/claim.json").NewReader(t.Context())
	if err != nil {
		t.Fatalf("reading the claim of %s: %v", id, err)
	}
	defer r.Close()
	var l struct {
		ExpiresAt time.Time `json:"expiresAt"`
		Calls     int       `json:"calls"`
	}
	if err := json.NewDecoder(r).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l.ExpiresAt, l.Calls
}

// checkAgree checks that a job's record and its images agree: every image
// the record names exists with the recorded size and hash, and the job's
// folder holds no other image.
func checkAgree(t *testing.T, rec job.Record) {
	t.Helper()
	for _, o := range rec.Outputs {
		bucket, name, err := job.ParseGCS(o.URI)
		if err != nil {
			t.Fatal(err)
		}
		attrs, err := stack.gcs.Bucket(bucket).Object(name).Attrs(t.Context())
		if err != nil {
			t.Errorf("record names %s: %v", o.URI, err)
			continue
		}
		if attrs.Size != o.Bytes {
			t.Errorf("%s is %d bytes, the record says %d", o.URI, attrs.Size, o.Bytes)
		}
	}
	if n := countObjects(t, outputBucket, "images/"+rec.JobID+"/"); n != len(rec.Outputs) {
		t.Errorf("%d images in the job's folder, the record names %d", n, len(rec.Outputs))
	}
}

// oneCallCost is what one image call costs at the configured price.
const oneCallCost = 1290 * 30.0 / 1e6
