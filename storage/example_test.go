package storage_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	gstorage "github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

// exampleStore starts a fake Cloud Storage with buckets "in" and "out" and
// a Store on it.
func exampleStore() (*gstorage.Store, *storage.Client, func()) {
	fake, err := storagetest.Start(0)
	if err != nil {
		panic(err)
	}
	fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "in"})
	fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "out"})
	client, _, err := storagetest.NewClient(context.Background(), fake.URL())
	if err != nil {
		panic(err)
	}
	cfg := config.Storage{OutputBucket: "out", OutputPrefix: "images/", InputBuckets: []string{"in"}, Lease: 10 * time.Minute}
	limits := config.Limits{MaxImageBytes: 7 << 20, MaxImagePixels: 40_000_000}
	s := gstorage.New(client, cfg, limits, job.GeminiAPI, gstorage.WithOwner("example"))
	return s, client, func() { client.Close(); fake.Stop() }
}

// The pipeline's path through the Store: claim, write the images and the
// draft, commit. A redelivery then finds the record.
func ExampleStore_Claim() {
	s, _, stop := exampleStore()
	defer stop()
	ctx := context.Background()
	trig := job.Trigger{Kind: job.PubSub, Source: "msg-1"}
	j := job.Job{Prompt: "a red square", Model: job.DefaultModel}

	c, _, err := s.Claim(ctx, "job-1", j.Fingerprint(), trig)
	if err != nil {
		panic(err)
	}
	// ... the model call answers with images ...
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde")
	outs, err := s.WriteImages(ctx, c, &j, []job.Image{{Data: png}}, gstorage.ImageMeta{Model: j.Model, PromptSHA256: job.PromptHash(j.Prompt)})
	if err != nil {
		panic(err)
	}
	rec := job.Record{Outcome: job.Succeeded, Trigger: trig, Outputs: outs, Attempts: c.PriorCalls + 1}
	if err := s.WriteDraft(ctx, c, rec); err != nil {
		panic(err)
	}
	stored, _, err := s.Commit(ctx, c, rec)
	if err != nil {
		panic(err)
	}
	fmt.Println(stored.Outcome, stored.Outputs[0].URI, stored.Outputs[0].Width, stored.Outputs[0].Height)

	_, again, err := s.Claim(ctx, "job-1", j.Fingerprint(), trig)
	fmt.Println("redelivery finds the record:", again != nil, err)
	// Output:
	// succeeded gs://out/images/job-1/a1-0.png 1 1
	// redelivery finds the record: true <nil>
}

// Resolve refuses inputs outside the allow-list with a permanent error.
func ExampleStore_ResolveImages() {
	s, _, stop := exampleStore()
	defer stop()
	j := job.Job{Prompt: "p", Model: job.DefaultModel, Images: []job.Image{{URI: "gs://elsewhere/cat.png"}}}
	err := s.ResolveImages(context.Background(), &j)
	fmt.Println(errors.Is(err, job.ErrInvalid), job.Retryable(err))
	// Output: true false
}

// Status answers GET ?id=.
func ExampleStore_Status() {
	s, _, stop := exampleStore()
	defer stop()
	_, err := s.Status(context.Background(), "never-seen")
	fmt.Println(errors.Is(err, gstorage.ErrNotFound))
	// Output: true
}

// StageInputs moves inline images to the output bucket so that the job
// fits a Pub/Sub message.
func ExampleStore_StageInputs() {
	s, _, stop := exampleStore()
	defer stop()
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde")
	j := job.Job{Prompt: "p", Images: []job.Image{{Data: png}}}
	if err := s.StageInputs(context.Background(), "job-2", &j); err != nil {
		panic(err)
	}
	fmt.Println(j.Images[0].URI[:len("gs://out/jobs/job-2/inputs/")], len(j.Images[0].Data))
	// Output: gs://out/jobs/job-2/inputs/ 0
}

// IsGenerated is the upload loop guard.
func ExampleIsGenerated() {
	fmt.Println(gstorage.IsGenerated(map[string]string{gstorage.MetaGeneratedBy: gstorage.GeneratedBy}))
	fmt.Println(gstorage.IsGenerated(map[string]string{"prompt": "a cat"}))
	// Output:
	// true
	// false
}
