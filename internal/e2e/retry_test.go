package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// A poison message on the requests topic ends in a failed record, acknowledged
// once: it never loops.
func TestPoisonMessageThroughTheTopic(t *testing.T) {
	before := stack.Requests.Stats()
	msgID := publish(t, []byte("this is not a job"), nil)
	id := job.DeriveID("msg", "//pubsub.googleapis.com/"+topicName("genimg-requests"), msgID)
	evs := stack.events.waitCount(t, id, 1)
	if len(evs) != 1 || evs[0].Record.Outcome != job.Failed || evs[0].Record.Error.Code != "invalid_argument" {
		t.Fatalf("events %+v", evs)
	}
	after := stack.Requests.Stats()
	if after.Attempts-before.Attempts != 1 || after.Acked-before.Acked != 1 {
		t.Errorf("push attempts %d, acks %d; want one of each", after.Attempts-before.Attempts, after.Acked-before.Acked)
	}
}

// A delivery that keeps failing for a cause outside genimg (the model
// answers 503 past every retry) is retried with backoff by the push
// subscription, then moved to the dead-letter topic, where nothing is lost.
// What genimg itself waits for is held instead (TestHeldIsNeverDeadLettered).
func TestFailingDeliveryIsRetriedThenDeadLettered(t *testing.T) {
	before := stack.Requests.Stats()
	id := uniq(t)
	calls := stack.model.Calls()
	data := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a fox [[standin:status=503]]"}`, id))
	publish(t, data, nil)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var dead *pubsub.Message
	stack.pubsub.Subscriber(subName("genimg-dead-letter-hold")).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		if string(m.Data) == string(data) {
			dead = m
			cancel()
		}
	})
	if dead == nil {
		t.Fatal("the message never reached the dead-letter topic")
	}
	after := stack.Requests.Stats()
	if got := after.Attempts - before.Attempts; got != 5 {
		t.Errorf("%d push attempts, want 5 (the stack's maximum)", got)
	}
	if got := dead.Attributes["CloudPubSubDeadLetterSourceDeliveryCount"]; got != "5" {
		t.Errorf("delivery count attribute %q", got)
	}
	// Each delivery retries in process (GENIMG_MODEL_MAX_ATTEMPTS) first.
	if got := stack.model.Calls() - calls; got < 5 {
		t.Errorf("%d model calls, want at least one per delivery", got)
	}
	if n := len(stack.events.forJob(id)); n != 0 {
		t.Errorf("%d completion events for a job that never ran", n)
	}
}

// A job refused by the model's per-day quota is held, not redelivered: the
// push subscription's attempts are not spent, and nothing reaches the
// dead-letter topic. (It used to be dead-lettered after five deliveries,
// with no record.)
func TestHeldIsNeverDeadLettered(t *testing.T) {
	before := stack.Requests.Stats()
	id := uniq(t)
	data := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a fox [[standin:quota=day]]"}`, id))
	publish(t, data, nil)
	var st storage.JobStatus
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st, _ = stack.Functions.Store().Status(t.Context(), id); st.State == job.Held {
			break
		}
	}
	if st.State != job.Held || st.Reason != job.HoldQuota {
		t.Fatalf("state = %+v; want held (quota)", st)
	}
	time.Sleep(time.Second) // several backoffs of the stack's push delivery
	if got := stack.Requests.Stats().Attempts - before.Attempts; got != 1 {
		t.Errorf("%d push attempts, want 1: a held job is acknowledged", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	stack.pubsub.Subscriber(subName("genimg-dead-letter-hold")).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		if string(m.Data) == string(data) {
			t.Errorf("the held job reached the dead-letter topic")
		}
	})
}
