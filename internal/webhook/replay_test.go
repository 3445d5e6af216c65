package webhook_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

func TestMain(m *testing.M) {
	// Nothing may leave this machine: the clients never look for the
	// metadata server.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(m.Run())
}

const bucket = "genimg-output"

// TestReplayAcrossInstances: two guards, two clients, one bucket. A
// request remembered on one instance is seen, with its body, on the other;
// the same id with another body is refused wherever it comes.
func TestReplayAcrossInstances(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	other, _ := srv.NewClient(t)
	a := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), 5*time.Minute)
	b := webhook.NewReplay(storage.NewObjects(other, bucket, 0, 0), 5*time.Minute)
	ctx := t.Context()

	if _, ok, err := b.Seen(ctx, "msg_1"); ok || err != nil {
		t.Fatalf("Seen before any request = %v, %v; want not seen", ok, err)
	}
	first := webhook.Seen{Body: "body-1", JobID: "job-1"}
	if err := a.Remember(ctx, "msg_1", first); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]*webhook.Replay{"same instance (memory)": a, "other instance (Cloud Storage)": b} {
		got, ok, err := g.Seen(ctx, "msg_1")
		if !ok || err != nil || got != first {
			t.Errorf("%s: Seen = %+v, %v, %v; want %+v", name, got, ok, err, first)
		}
	}
	if err := b.Remember(ctx, "msg_1", first); err != nil {
		t.Errorf("remembering the same request again = %v, want nil", err)
	}
	if err := b.Remember(ctx, "msg_1", webhook.Seen{Body: "body-2"}); !errors.Is(err, webhook.ErrReplay) {
		t.Errorf("the same id with another body = %v, want ErrReplay", err)
	}

	// The record is named by the id's hash and marked as genimg's own
	// (never an upload job).
	obj, err := srv.Fake.GetObject(bucket, storage.WebhookObject("msg_1"))
	if err != nil {
		t.Fatalf("record of msg_1: %v", err)
	}
	if !storage.IsGenerated(obj.Metadata) {
		t.Errorf("record metadata %v lacks the loop-guard marker", obj.Metadata)
	}
	if got, want := storage.WebhookObject("msg_1"), "webhooks/"; got[:len(want)] != want || len(got) != len(want)+64 {
		t.Errorf("WebhookObject = %q, want webhooks/<64 hex>", got)
	}
}

// TestReplayConcurrent: requests with one id and different bodies race on
// three instances: exactly one body is remembered, and every other is
// refused.
func TestReplayConcurrent(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	var guards []*webhook.Replay
	for range 3 {
		c, _ := srv.NewClient(t)
		guards = append(guards, webhook.NewReplay(storage.NewObjects(c, bucket, 0, 0), time.Minute))
	}
	for n := range 3 {
		id := fmt.Sprintf("msg_race_%d", n)
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted, replays := 0, 0
		for i := range 12 {
			wg.Go(func() {
				err := guards[i%3].Remember(t.Context(), id, webhook.Seen{Body: fmt.Sprint("body-", i)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					accepted++
				case errors.Is(err, webhook.ErrReplay):
					replays++
				default:
					t.Errorf("Remember: %v", err)
				}
			})
		}
		wg.Wait()
		if accepted != 1 || replays != 11 {
			t.Errorf("%s: accepted %d, replays %d; want 1 and 11", id, accepted, replays)
		}
	}
}

// TestReplayDroppedAnswer: the record's create committed but its answer
// was lost; the client retries, meets its own object (412) and must not
// call its own request a replay.
func TestReplayDroppedAnswer(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute)
	srv.Transport.Inject(storagetest.Fault{Match: storagetest.MatchUpload(storage.WebhookObject("msg_lost")), DropResponse: true, Times: 1})
	if err := g.Remember(t.Context(), "msg_lost", webhook.Seen{Body: "b"}); err != nil {
		t.Fatalf("Remember after a dropped answer = %v, want nil", err)
	}
	if _, injected := srv.Transport.Counts(); injected != 1 {
		t.Fatalf("faults fired = %d, want 1", injected)
	}
	if err := g.Remember(t.Context(), "msg_lost", webhook.Seen{Body: "other"}); !errors.Is(err, webhook.ErrReplay) {
		t.Errorf("another body = %v, want ErrReplay", err)
	}
}

// TestReplayStorageDown: when the record cannot be read or written the
// request is neither taken nor called a replay: transient, the caller
// retries. A refusal (403) is retried too: IAM that is still propagating.
func TestReplayStorageDown(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute, webhook.WithTimeout(300*time.Millisecond))
	srv.Transport.Inject(storagetest.Fault{Status: 503})
	if _, _, err := g.Seen(t.Context(), "msg_down"); !errors.Is(err, job.ErrTransient) {
		t.Errorf("Seen with storage down = %v, want ErrTransient", err)
	}
	err := g.Remember(t.Context(), "msg_down", webhook.Seen{Body: "b"})
	if !errors.Is(err, job.ErrTransient) || errors.Is(err, webhook.ErrReplay) {
		t.Fatalf("Remember with storage down = %v, want ErrTransient and not ErrReplay", err)
	}
	srv.Transport.Clear()
	if _, ok, err := g.Seen(t.Context(), "msg_down"); ok || err != nil {
		t.Errorf("Seen once storage is back = %v, %v; want not seen (the failed try recorded nothing)", ok, err)
	}

	srv.Transport.Inject(storagetest.Fault{Status: 403})
	if err := g.Remember(t.Context(), "msg_forbidden", webhook.Seen{Body: "b"}); !errors.Is(err, job.ErrTransient) || !errors.Is(err, storage.ErrForbidden) {
		t.Errorf("Remember without permission = %v, want ErrTransient and ErrForbidden", err)
	}
}

// TestReplayMemory: the in-memory front answers without Cloud Storage,
// and forgets after twice the tolerance (Cloud Storage still decides).
func TestReplayMemory(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	now := time.Unix(1_800_000_000, 0)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute, webhook.WithReplayClock(func() time.Time { return now }), webhook.WithMemory(2))
	ctx := t.Context()
	if err := g.Remember(ctx, "m1", webhook.Seen{Body: "b1"}); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.Transport.Counts()
	if _, ok, _ := g.Seen(ctx, "m1"); !ok {
		t.Fatal("a remembered id is not seen")
	}
	if after, _ := srv.Transport.Counts(); after != before {
		t.Errorf("a remembered id made %d requests, want 0", after-before)
	}

	now = now.Add(3 * time.Minute) // past 2 × tolerance: memory forgets
	if _, ok, err := g.Seen(ctx, "m1"); !ok || err != nil {
		t.Errorf("Seen after memory expiry = %v, %v; want seen, from Cloud Storage", ok, err)
	}
	if after, _ := srv.Transport.Counts(); after == before {
		t.Errorf("a forgotten id made no request; Cloud Storage must decide")
	}

	// The LRU holds 2: m2 and m3 push m1 out.
	for _, id := range []string{"m2", "m3"} {
		if err := g.Remember(ctx, id, webhook.Seen{Body: id}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ = srv.Transport.Counts()
	if _, ok, _ := g.Seen(ctx, "m1"); !ok {
		t.Errorf("evicted id not seen")
	}
	if after, _ := srv.Transport.Counts(); after == before {
		t.Errorf("an evicted id was answered from memory")
	}
}
