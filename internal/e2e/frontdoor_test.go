package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/instance"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
)

// TestFrontDoorWithoutModelKey: a front door deployment (GENIMG_ROLE=front)
// starts without GEMINI_API_KEY and never calls the model: a job POSTed to
// it, and a batch, are queued and run by the stack's OnMessage (which
// holds the key); its own stand-in sees no call. A deployment that runs
// jobs still refuses to start without the key.
func TestFrontDoorWithoutModelKey(t *testing.T) {
	own := newModel(t)
	cfg := baseConfig(t, own)
	cfg.Model.APIKey = ""

	t.Run("a deployment that runs jobs needs the key", func(t *testing.T) {
		if _, err := instance.New(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "GEMINI_API_KEY") {
			t.Fatalf("instance.New without a key = %v; want an error naming GEMINI_API_KEY", err)
		}
	})

	cfg.Role = config.RoleFront
	front := newInstance(t, cfg, "front")
	post := func(t *testing.T, body string, header map[string]string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/"+front.path+"/Generate", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		return do(t, req)
	}

	t.Run("a job", func(t *testing.T) {
		resp, body := post(t, `{"prompt": "a lantern in the fog", "aspectRatio": "1:1"}`, nil)
		if rec := decodeRecord(t, body); resp.StatusCode != http.StatusOK || rec.Outcome != job.Succeeded {
			t.Fatalf("status %d, outcome %s: %s", resp.StatusCode, rec.Outcome, body)
		}
	})

	t.Run("a batch", func(t *testing.T) {
		key := uniq(t)
		batches := len(stack.model.Batches())
		resp, body := post(t, `{"batch": [{"prompt": "a lantern"}, {"prompt": "a lantern", "aspectRatio": "7:5"}]}`, map[string]string{"Idempotency-Key": key})
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var ans pipeline.BatchAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, bj := range ans.Jobs {
			got = append(got, bj.JobID+" "+bj.Status)
		}
		first, bad := job.DeriveID("batch", key, "0"), job.DeriveID("batch", key, "1")
		if diff := cmp.Diff([]string{first + " queued", bad + " failed"}, got); diff != "" {
			t.Errorf("statuses (-want +got):\n%s", diff)
		}
		if n := len(waitBatches(t, batches+1)) - batches; n != 1 {
			t.Fatalf("%d stand-in batches; want the stack's OnMessage to submit 1", n)
		}
		pollUntilDone(t, []string{first})
		if rec := stack.events.waitJob(t, first).Record; rec.Outcome != job.Succeeded || rec.Batch == nil || rec.Trigger != (job.Trigger{Kind: job.HTTP, Source: "request/" + key}) {
			t.Errorf("batch job's record: outcome %s, batch %+v, trigger %+v", rec.Outcome, rec.Batch, rec.Trigger)
		}
	})

	t.Run("asked to run a job itself", func(t *testing.T) {
		data := []byte(fmt.Sprintf(`{"id": %q, "prompt": "a lantern"}`, uniq(t)))
		// Refused retryably, untouched: a deployment that runs jobs takes it.
		deliver(t, front.path+"/OnMessage", "front-"+uniq(t), data, time.Now(), http.StatusInternalServerError)
	})

	if n := own.Handler.Calls(); n != 0 {
		t.Errorf("the front door's model got %d calls; want none", n)
	}
}
