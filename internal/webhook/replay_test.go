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

// TestReplayAcrossInstances: two guards, two clients, one bucket. The
// first Check of an id wins wherever it runs; every later one, on either
// instance, is a replay.
func TestReplayAcrossInstances(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	other, _ := srv.NewClient(t)
	a := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), 5*time.Minute)
	b := webhook.NewReplay(storage.NewObjects(other, bucket, 0, 0), 5*time.Minute)
	ctx := t.Context()

	steps := []struct {
		guard   *webhook.Replay
		id      string
		replay  bool
		comment string
	}{
		{a, "msg_1", false, "first sight"},
		{a, "msg_1", true, "same instance (memory)"},
		{b, "msg_1", true, "other instance (Cloud Storage)"},
		{b, "msg_2", false, "another id"},
		{a, "msg_2", true, "seen by b"},
		{b, "msg_2", true, "b again"},
	}
	for i, s := range steps {
		err := s.guard.Check(ctx, s.id)
		if got := errors.Is(err, webhook.ErrReplay); got != s.replay {
			t.Errorf("step %d (%s): Check(%s) = %v, want replay %v", i, s.comment, s.id, err, s.replay)
		}
		if !s.replay && err != nil {
			t.Errorf("step %d: Check(%s) = %v, want nil", i, s.id, err)
		}
	}

	// The record is create-only, named by the id's hash, marked as
	// genimg's own (never an upload job).
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

// TestReplayConcurrent: the same id checked at once by many goroutines on
// three instances is accepted exactly once.
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
				err := guards[i%3].Check(t.Context(), id)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					accepted++
				case errors.Is(err, webhook.ErrReplay):
					replays++
				default:
					t.Errorf("Check: %v", err)
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
// call its own first delivery a replay.
func TestReplayDroppedAnswer(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute)
	srv.Transport.Inject(storagetest.Fault{Match: storagetest.MatchUpload(storage.WebhookObject("msg_lost")), DropResponse: true, Times: 1})
	if err := g.Check(t.Context(), "msg_lost"); err != nil {
		t.Fatalf("Check after a dropped answer = %v, want nil", err)
	}
	if _, injected := srv.Transport.Counts(); injected != 1 {
		t.Fatalf("faults fired = %d, want 1", injected)
	}
	if err := g.Check(t.Context(), "msg_lost"); !errors.Is(err, webhook.ErrReplay) {
		t.Errorf("second Check = %v, want ErrReplay", err)
	}
}

// TestReplayStorageDown: when the record cannot be written the request is
// neither accepted nor called a replay: transient, the caller retries.
func TestReplayStorageDown(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute, webhook.WithTimeout(300*time.Millisecond))
	srv.Transport.Inject(storagetest.Fault{Status: 503})
	err := g.Check(t.Context(), "msg_down")
	if !errors.Is(err, job.ErrTransient) || errors.Is(err, webhook.ErrReplay) {
		t.Fatalf("Check with storage down = %v, want ErrTransient and not ErrReplay", err)
	}
	srv.Transport.Clear()
	if err := g.Check(t.Context(), "msg_down"); err != nil {
		t.Errorf("Check once storage is back = %v, want nil (the failed try recorded nothing)", err)
	}

	srv.Transport.Inject(storagetest.Fault{Status: 403})
	if err := g.Check(t.Context(), "msg_forbidden"); !errors.Is(err, job.ErrPermanent) {
		t.Errorf("Check without permission = %v, want ErrPermanent", err)
	}
}

// TestReplayMemory: the in-memory front answers without Cloud Storage,
// and forgets after twice the tolerance (Cloud Storage still decides).
func TestReplayMemory(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	now := time.Unix(1_800_000_000, 0)
	g := webhook.NewReplay(storage.NewObjects(srv.Client, bucket, 0, 0), time.Minute, webhook.WithReplayClock(func() time.Time { return now }), webhook.WithMemory(2))
	ctx := t.Context()
	if err := g.Check(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	before, _ := srv.Transport.Counts()
	if err := g.Check(ctx, "m1"); !errors.Is(err, webhook.ErrReplay) {
		t.Fatalf("repeat = %v, want ErrReplay", err)
	}
	if after, _ := srv.Transport.Counts(); after != before {
		t.Errorf("a remembered repeat made %d requests, want 0", after-before)
	}

	now = now.Add(3 * time.Minute) // past 2 × tolerance: memory forgets
	if err := g.Check(ctx, "m1"); !errors.Is(err, webhook.ErrReplay) {
		t.Errorf("repeat after memory expiry = %v, want ErrReplay from Cloud Storage", err)
	}
	if after, _ := srv.Transport.Counts(); after == before {
		t.Errorf("a forgotten repeat made no request; Cloud Storage must decide")
	}

	// The LRU holds 2: m2 and m3 push m1 out.
	for _, id := range []string{"m2", "m3"} {
		if err := g.Check(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	before, _ = srv.Transport.Counts()
	if err := g.Check(ctx, "m1"); !errors.Is(err, webhook.ErrReplay) {
		t.Errorf("evicted repeat = %v, want ErrReplay", err)
	}
	if after, _ := srv.Transport.Counts(); after == before {
		t.Errorf("an evicted id was answered from memory")
	}
}
