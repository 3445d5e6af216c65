package delivery

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const project = "p"

// env is a pstest server with a source topic and subscription, and a
// dead-letter topic with a subscription to read it.
type env struct {
	client     *pubsub.Client
	source     *pubsub.Publisher
	sub        *pubsub.Subscriber
	deadLetter *pubsub.Publisher
	dlSub      *pubsub.Subscriber
}

func newEnv(t *testing.T) env {
	t.Helper()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := pubsub.NewClient(t.Context(), project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"src", "dl"} {
		if _, err := c.TopicAdminClient.CreateTopic(t.Context(), &pb.Topic{Name: "projects/p/topics/" + topic}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SubscriptionAdminClient.CreateSubscription(t.Context(), &pb.Subscription{
			Name: "projects/p/subscriptions/" + topic, Topic: "projects/p/topics/" + topic, AckDeadlineSeconds: 60,
		}); err != nil {
			t.Fatal(err)
		}
	}
	return env{
		client: c, source: c.Publisher("projects/p/topics/src"), sub: c.Subscriber("projects/p/subscriptions/src"),
		deadLetter: c.Publisher("projects/p/topics/dl"), dlSub: c.Subscriber("projects/p/subscriptions/dl"),
	}
}

// recorder is a function endpoint answering with scripted statuses.
type recorder struct {
	mu       sync.Mutex
	statuses []int // answered in order; the last repeats
	requests []*http.Request
	bodies   [][]byte
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests = append(r.requests, req)
	r.bodies = append(r.bodies, body)
	status := r.statuses[min(len(r.requests)-1, len(r.statuses)-1)]
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

func publishOne(t *testing.T, e env, data []byte, attrs map[string]string) *pubsub.Message {
	t.Helper()
	if _, err := e.source.Publish(t.Context(), &pubsub.Message{Data: data, Attributes: attrs}).Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got *pubsub.Message
	e.sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		got = m
		m.Ack()
		cancel()
	})
	if got == nil {
		t.Fatal("no message received")
	}
	return got
}

func TestDeliverRetriesThenAcks(t *testing.T) {
	e := newEnv(t)
	fn := &recorder{statuses: []int{500, 503, 204}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	p := &Pusher{Endpoint: srv.URL, Kind: MessagePublished, Topic: "projects/p/topics/src", Subscription: "projects/p/subscriptions/src",
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAttempts: 5, DeadLetter: e.deadLetter}
	m := publishOne(t, e, []byte(`{"prompt": "x"}`), map[string]string{"a": "b"})
	if !p.Deliver(t.Context(), m) {
		t.Fatal("a 204 after two failures must count as acknowledged")
	}
	if got := p.Stats(); got != (Stats{Attempts: 3, Acked: 1}) {
		t.Errorf("stats %+v", got)
	}
	req := fn.requests[0]
	for k, want := range map[string]string{
		"ce-type": "google.cloud.pubsub.topic.v1.messagePublished", "ce-source": "//pubsub.googleapis.com/projects/p/topics/src",
		"ce-id": m.ID, "ce-specversion": "1.0", "Content-Type": "application/json",
	} {
		if got := req.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	var body struct {
		Subscription string
		Message      struct {
			Data       []byte
			Attributes map[string]string
			MessageID  string `json:"messageId"`
			Snake      string `json:"message_id"`
		}
	}
	if err := json.Unmarshal(fn.bodies[0], &body); err != nil {
		t.Fatal(err)
	}
	if string(body.Message.Data) != `{"prompt": "x"}` || body.Message.Attributes["a"] != "b" || body.Message.MessageID != m.ID || body.Message.Snake != m.ID {
		t.Errorf("body %s", fn.bodies[0])
	}
}

func TestDeliverDeadLetters(t *testing.T) {
	e := newEnv(t)
	fn := &recorder{statuses: []int{500}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	p := &Pusher{Endpoint: srv.URL, Kind: MessagePublished, Topic: "projects/p/topics/src", Subscription: "projects/p/subscriptions/src",
		MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 4, DeadLetter: e.deadLetter}
	m := publishOne(t, e, []byte("poison"), nil)
	if p.Deliver(t.Context(), m) {
		t.Fatal("never acknowledged, yet reported delivered")
	}
	if fn.count() != 4 {
		t.Errorf("%d attempts, want 4", fn.count())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var dead *pubsub.Message
	e.dlSub.Receive(ctx, func(_ context.Context, dm *pubsub.Message) {
		dead = dm
		dm.Ack()
		cancel()
	})
	if dead == nil || string(dead.Data) != "poison" || dead.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"] != "4" ||
		dead.Attributes["CloudPubSubDeadLetterSourceSubscription"] != "projects/p/subscriptions/src" {
		t.Fatalf("dead-lettered message %+v", dead)
	}
}

func TestDeliverStorageFinalized(t *testing.T) {
	e := newEnv(t)
	fn := &recorder{statuses: []int{200}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	p := &Pusher{Endpoint: srv.URL, Kind: StorageFinalized, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	object := []byte(`{"bucket": "in", "name": "a/b.png", "generation": "7"}`)
	attrs := map[string]string{"eventType": "OBJECT_FINALIZE", "bucketId": "in", "objectId": "a/b.png",
		"objectGeneration": "7", "payloadFormat": "JSON_API_V1", "eventTime": "2026-11-25T10:00:00Z"}

	m := publishOne(t, e, object, attrs)
	if !p.Deliver(t.Context(), m) {
		t.Fatal("not delivered")
	}
	h := fn.requests[0].Header
	if h.Get("ce-type") != "google.cloud.storage.object.v1.finalized" || h.Get("ce-source") != "//storage.googleapis.com/projects/_/buckets/in" ||
		h.Get("ce-subject") != "objects/a/b.png" || h.Get("ce-time") != "2026-11-25T10:00:00Z" || string(fn.bodies[0]) != string(object) {
		t.Errorf("headers %v body %s", h, fn.bodies[0])
	}
	// The same upload redelivered carries the same event id, as Eventarc's do.
	m2 := publishOne(t, e, object, attrs)
	p.Deliver(t.Context(), m2)
	if fn.requests[1].Header.Get("ce-id") != h.Get("ce-id") {
		t.Error("a redelivered upload got a new event id")
	}

	// Other notifications are not uploads.
	del := publishOne(t, e, object, map[string]string{"eventType": "OBJECT_DELETE", "bucketId": "in", "objectId": "a/b.png"})
	if p.Deliver(t.Context(), del) || fn.count() != 2 {
		t.Error("an OBJECT_DELETE notification was delivered")
	}
}

func TestDeliverEnforcesEventarcLimit(t *testing.T) {
	e := newEnv(t)
	fn := &recorder{statuses: []int{200}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	p := &Pusher{Endpoint: srv.URL, Kind: StorageFinalized, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
	big := []byte(`{"bucket": "in", "name": "a", "metadata": {"x": "` + strings.Repeat("y", MaxEventarcBytes) + `"}}`)
	m := publishOne(t, e, big, map[string]string{"eventType": "OBJECT_FINALIZE", "bucketId": "in", "objectId": "a", "payloadFormat": "JSON_API_V1"})
	if p.Deliver(t.Context(), m) || fn.count() != 0 || p.Stats().Rejected != 1 {
		t.Errorf("an event over 512 KB reached the function (%d requests, stats %+v)", fn.count(), p.Stats())
	}
}

func TestDeliverGivesUpAfterMaxAge(t *testing.T) {
	e := newEnv(t)
	fn := &recorder{statuses: []int{503}}
	srv := httptest.NewServer(fn)
	defer srv.Close()
	p := &Pusher{Endpoint: srv.URL, Kind: MessagePublished, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxAge: time.Nanosecond}
	m := publishOne(t, e, []byte("x"), nil)
	if p.Deliver(t.Context(), m) || fn.count() != 1 || p.Stats().DeadLettered != 1 {
		t.Errorf("%d attempts, stats %+v; want one attempt, then dropped", fn.count(), p.Stats())
	}
}
