package storage

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

func TestResolveRejects(t *testing.T) {
	srv := newServer(t)
	good := pngBytes(t, 64, 48)
	put(t, srv.Client, inBucket, "ok.png", good, "image/png")
	put(t, srv.Client, inBucket, "big.png", make([]byte, testLimits.MaxImageBytes+1), "image/png")
	put(t, srv.Client, inBucket, "gif.png", gifBytes(t), "image/png")
	put(t, srv.Client, inBucket, "bomb.png", bombPNG(50000, 50000), "image/png")
	put(t, srv.Client, inBucket, "cut.png", good[:len(good)/2], "image/png")
	put(t, srv.Client, inBucket, "stub.png", good[:20], "image/png")
	put(t, srv.Client, "other", "x.png", good, "image/png")
	put(t, srv.Client, outBucket, "images/job1/a1-0.png", good, "image/png")

	tests := []struct {
		name    string
		img     job.Image
		fault   *storagetest.Fault
		want    []error // the categories the error must wrap
		mention []string
	}{
		{name: "bucket not allow-listed", img: job.Image{URI: "gs://other/x.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://other/x.png", "GENIMG_INPUT_BUCKETS"}},
		{name: "output bucket outside staging", img: job.Image{URI: "gs://out/images/job1/a1-0.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://out/images/job1/a1-0.png"}},
		{name: "too big by attributes", img: job.Image{URI: "gs://in/big.png"}, want: []error{job.ErrInvalid, job.ErrTooLarge}, mention: []string{"gs://in/big.png", "1048576", "GENIMG_MAX_IMAGE_BYTES"}},
		{name: "GIF named .png", img: job.Image{URI: "gs://in/gif.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://in/gif.png", "image/gif", "image/png, image/jpeg, image/webp"}},
		{name: "50000x50000 header", img: job.Image{URI: "gs://in/bomb.png"}, want: []error{job.ErrInvalid, job.ErrTooLarge}, mention: []string{"gs://in/bomb.png", "50000×50000", "4000000", "GENIMG_MAX_IMAGE_PIXELS"}},
		{name: "truncated PNG", img: job.Image{URI: "gs://in/cut.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://in/cut.png", "truncated"}},
		{name: "PNG cut inside its header", img: job.Image{URI: "gs://in/stub.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://in/stub.png", "truncated"}},
		{name: "missing object", img: job.Image{URI: "gs://in/nope.png"}, want: []error{job.ErrInvalid}, mention: []string{"gs://in/nope.png", "does not exist"}},
		{name: "inline bomb", img: job.Image{Data: bombPNG(50000, 50000), MIMEType: "image/png"}, want: []error{job.ErrTooLarge}, mention: []string{"inline", "GENIMG_MAX_IMAGE_PIXELS"}},
		{name: "inline truncated", img: job.Image{Data: good[:len(good)-5], MIMEType: "image/png"}, want: []error{job.ErrInvalid}, mention: []string{"truncated"}},
		{name: "storage 503 is transient", img: job.Image{URI: "gs://in/ok.png"}, fault: &storagetest.Fault{Status: 503}, want: []error{job.ErrTransient}, mention: []string{"gs://in/ok.png"}},
		{name: "storage 429 is transient", img: job.Image{URI: "gs://in/ok.png"}, fault: &storagetest.Fault{Status: 429}, want: []error{job.ErrTransient}},
	}
	for _, backend := range []job.Backend{job.GeminiAPI, job.VertexAI} {
		for _, tt := range tests {
			t.Run(string(backend)+"/"+tt.name, func(t *testing.T) {
				client, tr := srv.NewClient(t)
				if tt.fault != nil {
					tr.Inject(*tt.fault)
				}
				s := newStore(client, newClock(), "o", backend)
				j := job.Job{Prompt: "p", Model: job.DefaultModel, Images: []job.Image{tt.img}}
				err := s.ResolveImages(t.Context(), &j)
				if err == nil {
					t.Fatalf("Resolve accepted %s", tt.name)
				}
				for _, w := range tt.want {
					if !errors.Is(err, w) {
						t.Errorf("error %q does not wrap %v", err, w)
					}
				}
				if job.Retryable(err) != (tt.want[0] == job.ErrTransient) {
					t.Errorf("Retryable(%q) = %v", err, job.Retryable(err))
				}
				for _, m := range tt.mention {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q does not mention %q", err, m)
					}
				}
			})
		}
	}
}

func TestResolveAccepts(t *testing.T) {
	srv := newServer(t)
	good := pngBytes(t, 64, 48)
	put(t, srv.Client, inBucket, "ok.png", good, "application/octet-stream") // declared type is only a hint
	staged := "jobs/j1/inputs/" + strings.Repeat("ab", 32) + ".png"
	put(t, srv.Client, outBucket, staged, good, "image/png")
	_, attrs := get(t, srv.Client, inBucket, "ok.png")

	tests := []struct {
		backend job.Backend
		in      job.Image
		want    job.Image
		input   Input
	}{
		{job.GeminiAPI, job.Image{URI: "gs://in/ok.png"}, job.Image{Data: good, MIMEType: "image/png"},
			Input{URI: "gs://in/ok.png", Generation: attrs.Generation, MIMEType: "image/png", Bytes: int64(len(good)), Width: 64, Height: 48}},
		{job.VertexAI, job.Image{URI: "gs://in/ok.png"}, job.Image{URI: "gs://in/ok.png", MIMEType: "image/png"},
			Input{URI: "gs://in/ok.png", Generation: attrs.Generation, MIMEType: "image/png", Bytes: int64(len(good)), Width: 64, Height: 48}},
		{job.VertexAI, job.Image{URI: "gs://out/" + staged}, job.Image{URI: "gs://out/" + staged, MIMEType: "image/png"}, Input{}},
		{job.GeminiAPI, job.Image{Data: good, MIMEType: "image/jpeg"}, job.Image{Data: good, MIMEType: "image/png"},
			Input{MIMEType: "image/png", Bytes: int64(len(good)), Width: 64, Height: 48}},
	}
	for _, tt := range tests {
		t.Run(string(tt.backend)+"/"+tt.in.URI, func(t *testing.T) {
			s := newStore(srv.Client, newClock(), "o", tt.backend)
			j := job.Job{Prompt: "p", Model: job.DefaultModel, Images: []job.Image{tt.in}}
			got, err := s.ResolveInputs(t.Context(), &j)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, j.Images[0]); diff != "" {
				t.Errorf("resolved image (-want +got):\n%s", diff)
			}
			if tt.input.URI != "" || tt.input.Bytes != 0 {
				if diff := cmp.Diff(tt.input, got[0]); diff != "" {
					t.Errorf("input (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestStageInputs(t *testing.T) {
	srv := newServer(t)
	s := newStore(srv.Client, newClock(), "o", job.GeminiAPI)
	good := pngBytes(t, 8, 8)
	for range 2 { // the second run finds the content address taken: same URI, no error
		j := job.Job{Prompt: "p", Model: job.DefaultModel, Images: []job.Image{{Data: good}, {URI: "gs://in/x.png"}}}
		if err := s.StageInputs(t.Context(), "job-1", &j); err != nil {
			t.Fatal(err)
		}
		uri := j.Images[0].URI
		if !strings.HasPrefix(uri, "gs://out/jobs/job-1/inputs/") || !strings.HasSuffix(uri, ".png") || j.Images[0].Data != nil {
			t.Fatalf("staged image = %+v", j.Images[0])
		}
		if j.Images[1].URI != "gs://in/x.png" {
			t.Errorf("URI image changed: %+v", j.Images[1])
		}
		_, name, _ := job.ParseGCS(uri)
		data, attrs := get(t, srv.Client, outBucket, name)
		if !bytes.Equal(data, good) || attrs.ContentType != "image/png" || !IsGenerated(attrs.Metadata) || attrs.Metadata[MetaJob] != "job-1" {
			t.Errorf("staged object: %d bytes, type %q, metadata %v", len(data), attrs.ContentType, attrs.Metadata)
		}
		// And the staged input resolves.
		j.Images = j.Images[:1]
		if err := s.ResolveImages(t.Context(), &j); err != nil {
			t.Errorf("Resolve of staged input: %v", err)
		}
	}
	if err := s.StageInputs(t.Context(), "../x", &job.Job{Images: []job.Image{{Data: good}}}); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("StageInputs with id ../x: %v, want ErrInvalid", err)
	}
}

// TestStagedInputTakenFromMemory: an input Generate staged on this instance
// is resolved from memory by a run on the same Store — no read back, even
// with Cloud Storage failing every request — once; a second run reads the
// object, and another Store (another instance) always does.
func TestStagedInputTakenFromMemory(t *testing.T) {
	srv := newServer(t)
	img := pngBytes(t, 64, 48)
	client, tr := srv.NewClient(t)
	s := newStore(client, newClock(), "o", job.GeminiAPI)
	other := newStore(client, newClock(), "o2", job.GeminiAPI)
	staged := job.Job{Prompt: "p", Model: job.DefaultModel, Images: []job.Image{{Data: bytes.Clone(img)}}}
	if err := s.StageInputs(t.Context(), "job-mem", &staged); err != nil {
		t.Fatal(err)
	}

	resolve := func(s *Store) (job.Job, error) {
		j := staged
		j.Images = append([]job.Image(nil), staged.Images...)
		_, err := s.ResolveInputs(t.Context(), &j)
		return j, err
	}
	want := []job.Image{{Data: img, MIMEType: "image/png"}}
	tr.Inject(storagetest.Fault{Status: 503})
	if _, err := resolve(other); !errors.Is(err, job.ErrTransient) {
		t.Fatalf("another instance: err = %v, want a transient read error", err)
	}
	got, err := resolve(s)
	if err != nil {
		t.Fatalf("same instance, storage down: %v", err)
	}
	if diff := cmp.Diff(want, got.Images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
	if _, err := resolve(s); !errors.Is(err, job.ErrTransient) {
		t.Fatalf("second run: err = %v, want a read (failing)", err)
	}
	tr.Clear()
	if got, err = resolve(s); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Images); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

// TestStageInputsRetries: staging is one streamed request that the client
// does not retry, so StageInputs does — after a 503, and after an answer
// lost once the object was stored (the retry's 412 means it is there).
func TestStageInputsRetries(t *testing.T) {
	srv := newServer(t)
	img := pngBytes(t, 32, 32)
	for _, tt := range []struct {
		name  string
		fault storagetest.Fault
	}{
		{"503 once", storagetest.Fault{Status: 503, Times: 1}},
		{"answer lost once", storagetest.Fault{DropResponse: true, Times: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, tr := srv.NewClient(t)
			tr.Inject(tt.fault)
			s := newStore(client, newClock(), "o", job.GeminiAPI)
			j := job.Job{Prompt: "p", Images: []job.Image{{Data: bytes.Clone(img)}}}
			if err := s.StageInputs(t.Context(), "job-retry-"+strings.ReplaceAll(tt.name, " ", "-"), &j); err != nil {
				t.Fatal(err)
			}
			if _, injected := tr.Counts(); injected != 1 {
				t.Errorf("%d faults injected, want 1", injected)
			}
			bucket, object, err := job.ParseGCS(j.Images[0].URI)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := get(t, srv.Client, bucket, object)
			if !bytes.Equal(got, img) {
				t.Errorf("staged %d bytes, want the image's %d", len(got), len(img))
			}
		})
	}
}
