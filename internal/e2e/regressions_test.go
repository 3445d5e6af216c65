package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
	"github.com/genimg/genimg/trigger"
)

// An invalid job sent with the id of a job that is running never touches
// it: it is rejected on its own subject, and the running job ends in its
// own record with its images. (The invalid job used to commit a failed
// record create-only, win result.json, and have the paid job's images
// deleted and its failure published as that job's event.)
func TestInvalidJobNeverSquatsOnARunningID(t *testing.T) {
	id := uniq(t)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "a slow heron [[standin:latency=1500ms]]"}`, id)), nil)
	st, _ := stack.Functions.Store().Status(t.Context(), id)
	for deadline := time.Now().Add(20 * time.Second); st.State != job.Running && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, _ = stack.Functions.Store().Status(t.Context(), id)
	}
	if st.State != job.Running {
		t.Fatalf("the first job never ran: %+v", st)
	}
	// The same id, an invalid job (no prompt, an unknown field).
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "colour": "red"}`, id)), nil)
	rejected := stack.events.wait(t, func(e event) bool {
		return e.Attributes["ce-type"] == pipeline.RejectedEventType && e.Record.JobID == id
	})
	if rejected.Record.Error == nil || rejected.Record.Error.Code != "conflict" {
		t.Errorf("rejection %+v", rejected.Record.Error)
	}
	first := stack.events.wait(t, func(e event) bool {
		return e.Attributes["ce-subject"] == "jobs/"+id && e.Attributes["ce-type"] == job.EventType
	})
	if first.Record.Outcome != job.Succeeded || len(first.Record.Outputs) != 1 {
		t.Fatalf("the running job's record: %s %+v", first.Record.Outcome, first.Record.Error)
	}
	rec := storedRecord(t, id)
	if rec.ResponseID != first.Record.ResponseID || rec.Outcome != job.Succeeded {
		t.Errorf("stored record %s %s, event %s", rec.Outcome, rec.ResponseID, first.Record.ResponseID)
	}
	checkAgree(t, rec)
	for _, e := range stack.events.forJob(id) {
		if e.Attributes["ce-subject"] == "jobs/"+id && e.Record.Outcome != job.Succeeded {
			t.Errorf("a failure published under the job's subject: %+v", e.Record.Error)
		}
	}
}

// A published job without an id, keyed by genimg-idempotency-key, is one
// job however often the publisher's client library retries it (each retry
// is a new message id). (A message without an id used to be keyed by its
// message id: every retried publish was a second paid job.)
func TestPublisherRetriesAreOneJob(t *testing.T) {
	key := uniq(t)
	data := []byte(`{"prompt": "a lighthouse, published twice"}`)
	attrs := map[string]string{trigger.AttrIdempotencyKey: key}
	m1 := publish(t, data, attrs)
	m2 := publish(t, data, attrs)
	if m1 == m2 {
		t.Fatalf("the two publishes share a message id %s", m1)
	}
	id := job.DeriveID("key", "//pubsub.googleapis.com/"+topicName("genimg-requests"), key)
	e := stack.events.waitJob(t, id)
	time.Sleep(500 * time.Millisecond) // the second delivery's turn
	evs := stack.events.forJob(id)
	for _, x := range evs {
		if x.Attributes["ce-id"] != e.Attributes["ce-id"] {
			t.Errorf("two records for one key: %s and %s", e.Attributes["ce-id"], x.Attributes["ce-id"])
		}
	}
	if rec := storedRecord(t, id); rec.Attempts != 1 {
		t.Errorf("record counts %d calls, want 1", rec.Attempts)
	}
}

// Cloud Storage refusing genimg's own objects (401/403: IAM still
// propagating after an apply) makes the delivery come back, not vanish;
// once the permission is there, the job runs. (A 401/403 used to be
// classified permanent and the delivery acknowledged with a log line: the
// job was lost.)
func TestStorageRefusalIsRetried(t *testing.T) {
	for _, status := range []int{401, 403} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			m := newModel(t)
			in := newInstance(t, baseConfig(t, m), "iam")
			msgID := "iam-" + uniq(t)
			id := derivedMessageID(msgID)
			data := []byte(`{"prompt": "a beacon", "aspectRatio": "1:1"}`)
			in.gcsFaults.Inject(storagetest.Fault{Status: status, Match: storagetest.MatchUpload("jobs/" + id + "/claim.json")})
			deliver(t, in.path+"/OnMessage", msgID, data, time.Now(), http.StatusInternalServerError)
			in.gcsFaults.Clear()
			deliver(t, in.path+"/OnMessage", msgID, data, time.Now(), http.StatusOK)
			if rec := storedRecord(t, id); rec.Outcome != job.Succeeded || m.Calls() != 1 {
				t.Errorf("record %s after the refusal, %d model calls; want succeeded, 1", rec.Outcome, m.Calls())
			}
		})
	}
}

// A caller that hangs up while the record is being written does not leave
// a stored record without its event: the write may commit all the same,
// and no redelivery may come to publish the event (another copy of the
// delivery may have been acknowledged already). The record and its event
// go on without the caller.
func TestCallerGoneDuringRecordWrite(t *testing.T) {
	m := newModel(t)
	in := newInstance(t, baseConfig(t, m), "gone")
	msgID := "gone-" + uniq(t)
	id := derivedMessageID(msgID)
	ctx, hangUp := context.WithCancel(t.Context())
	defer hangUp()
	in.gcsFaults.Base = hangUpOn{base: in.gcsFaults.Base, object: "jobs/" + id + "/result.json", hangUp: hangUp}
	data := []byte(`{"prompt": "a harbour at night", "aspectRatio": "1:1"}`)
	messageEvent(ctx, in.path+"/OnMessage", msgID, data, time.Now())

	rec := storedRecord(t, id)
	deadline := time.Now().Add(5 * time.Second)
	for len(stack.events.forJob(id)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if evs := stack.events.forJob(id); len(evs) != 1 || evs[0].Record.ResponseID != rec.ResponseID {
		t.Errorf("%d completion events for the stored record, want 1 (the caller hung up during its write)", len(evs))
	}
}

// hangUpOn lets the upload of object through, then hangs up the caller and
// waits for the hang-up to reach the request (at most a second) before
// answering: a write that committed while its caller went away.
type hangUpOn struct {
	base   http.RoundTripper
	object string
	hangUp context.CancelFunc
}

func (h hangUpOn) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(r)
	if err != nil || r.URL.Query().Get("name") != h.object {
		return resp, err
	}
	h.hangUp()
	select {
	case <-r.Context().Done():
		resp.Body.Close()
		return nil, r.Context().Err()
	case <-time.After(time.Second):
		return resp, nil
	}
}
