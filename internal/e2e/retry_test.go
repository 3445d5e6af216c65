package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/job"
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

// A delivery that keeps failing for a transient cause is retried with
// backoff by the push subscription, then moved to the dead-letter topic,
// where nothing is lost.
func TestFailingDeliveryIsRetriedThenDeadLettered(t *testing.T) {
	before := stack.Requests.Stats()
	id := uniq(t)
	calls := stack.model.Calls()
	data := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a fox [[standin:quota=day]]"}`, id))
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
	// A per-day quota is not retried in process: one model call per delivery.
	if got := stack.model.Calls() - calls; got != 5 {
		t.Errorf("%d model calls, want 5", got)
	}
	if n := len(stack.events.forJob(id)); n != 0 {
		t.Errorf("%d completion events for a job that never ran", n)
	}
}
