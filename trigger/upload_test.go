package trigger

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

func TestFromUploadSamples(t *testing.T) {
	uploads := config.Uploads{Buckets: []string{"some-bucket"}}
	for _, name := range []string{"storage-cloudevent.json"} {
		d := FromUpload(sampleEvent(t, name), uploads)
		if d.Object == nil {
			t.Fatalf("%s: no object decoded", name)
		}
		want := Object{
			Bucket: "some-bucket", Name: "folder/Test.cs", Generation: 1587627537231057,
			ContentType: "text/plain", Size: 352, MetadataKnown: true,
			TimeCreated: time.Date(2020, 4, 23, 7, 38, 57, 230e6, time.UTC),
		}
		if diff := cmp.Diff(want, *d.Object); diff != "" {
			t.Errorf("%s: object (-want +got):\n%s", name, diff)
		}
		if d.Ignore == "" {
			t.Errorf("%s: a text file with no prompt and no rule must be ignored", name)
		}
	}
}

func TestFromUploadComplexSampleNumbers(t *testing.T) {
	e := sampleEvent(t, "storage-cloudevent.json")
	b := readSample(t, "storage-object-data-complex.json")
	if err := e.SetData("application/json", b); err != nil {
		t.Fatal(err)
	}
	d := FromUpload(e, config.Uploads{})
	if d.Object == nil || d.Object.Generation != 96883251 || d.Object.Bucket != "sample-bucket" {
		t.Fatalf("int64 fields given as numbers must decode: %+v", d.Object)
	}
}

func TestFromObject(t *testing.T) {
	when := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	uploads := config.Uploads{
		Buckets: []string{"in"},
		Rules: []config.Rule{{
			Bucket: "in", Prefix: "watercolor/", Name: "watercolor/",
			Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1",
		}},
	}
	img := func(name string, meta map[string]string) Object {
		return Object{Bucket: "in", Name: name, Generation: 7, ContentType: "image/png", Metadata: meta, MetadataKnown: true}
	}
	tests := []struct {
		name       string
		obj        Object
		wantIgnore string // substring
		wantJob    *job.Job
		wantFile   bool
	}{
		{
			name: "image with prompt metadata",
			obj:  img("photos/cat.png", map[string]string{"prompt": "make it snow", "aspect-ratio": "16:9"}),
			wantJob: &job.Job{Prompt: "make it snow", AspectRatio: "16:9",
				Images: []job.Image{{URI: "gs://in/photos/cat.png", Generation: 7}}},
		},
		{
			name: "image under a rule prefix",
			obj:  img("watercolor/cat.png", nil),
			wantJob: &job.Job{Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1",
				Images: []job.Image{{URI: "gs://in/watercolor/cat.png", Generation: 7}}},
		},
		{
			name: "metadata prompt wins over a rule",
			obj:  img("watercolor/cat.png", map[string]string{"prompt": "mine"}),
			wantJob: &job.Job{Prompt: "mine",
				Images: []job.Image{{URI: "gs://in/watercolor/cat.png", Generation: 7}}},
		},
		{name: "job file", obj: img("batch/a.job.json", nil), wantFile: true},
		{name: "genimg's own output", obj: img("watercolor/x.png", map[string]string{job.MetaGeneratedBy: job.Generator}), wantIgnore: "written by genimg"},
		{name: "not an upload bucket", obj: Object{Bucket: "other", Name: "watercolor/a.png", MetadataKnown: true}, wantIgnore: "not an upload bucket"},
		{name: "no rule, no prompt", obj: img("elsewhere/a.png", nil), wantIgnore: "no upload rule"},
		{name: "text under a rule prefix", obj: Object{Bucket: "in", Name: "watercolor/README.txt", ContentType: "text/plain", MetadataKnown: true}, wantIgnore: "not an image"},
		{name: "octet-stream named .jpg", obj: Object{Bucket: "in", Name: "watercolor/a.jpg", ContentType: "application/octet-stream", MetadataKnown: true},
			wantJob: &job.Job{Prompt: "Turn this photo into a watercolor painting", AspectRatio: "1:1",
				Images: []job.Image{{URI: "gs://in/watercolor/a.jpg"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := FromObject(tt.obj, when, uploads)
			if tt.wantIgnore != "" {
				if !strings.Contains(d.Ignore, tt.wantIgnore) {
					t.Fatalf("Ignore = %q, want it to mention %q", d.Ignore, tt.wantIgnore)
				}
				return
			}
			if d.Ignore != "" || d.Err != nil {
				t.Fatalf("unexpected ignore %q / err %v", d.Ignore, d.Err)
			}
			if !strings.HasPrefix(d.ID, "up-") || !job.ValidID(d.ID) {
				t.Errorf("ID = %q, want a valid derived up- id", d.ID)
			}
			if d.Trigger != (job.Trigger{Kind: job.Upload, Source: tt.obj.Source()}) {
				t.Errorf("Trigger = %+v", d.Trigger)
			}
			if tt.wantFile {
				if !d.Object.JobFile {
					t.Error("want a job file")
				}
				return
			}
			got := d.Job
			got.ID = ""
			if diff := cmp.Diff(*tt.wantJob, got); diff != "" {
				t.Errorf("job (-want +got):\n%s", diff)
			}
			// A redelivery maps to the same id; a new generation does not.
			if again := FromObject(tt.obj, when, uploads); again.ID != d.ID {
				t.Errorf("redelivery id %q != %q", again.ID, d.ID)
			}
			newer := tt.obj
			newer.Generation++
			if other := FromObject(newer, when, uploads); other.ID == d.ID {
				t.Errorf("a new generation kept id %q", d.ID)
			}
		})
	}
}

func TestJobFile(t *testing.T) {
	o := Object{Bucket: "in", Name: "a.job.json", Generation: 3, MetadataKnown: true}
	d := FromObject(o, time.Now(), config.Uploads{Buckets: []string{"in"}})
	derived := d.ID

	got := JobFile(d, []byte(`{"prompt": "a fox"}`))
	if got.Err != nil || got.ID != derived || got.Job.Prompt != "a fox" || got.Job.ID != derived {
		t.Errorf("job file without id: id %q (want %q), job %+v, err %v", got.ID, derived, got.Job, got.Err)
	}
	got = JobFile(d, []byte(`{"id": "mine-1", "prompt": "a fox"}`))
	if got.ID != "mine-1" || got.Job.ID != "mine-1" {
		t.Errorf("job file with id: got %q", got.ID)
	}
	got = JobFile(d, []byte(`{"prompt": "a fox", "aspect_ratio": "1:1"}`))
	if !errors.Is(got.Err, job.ErrInvalid) || !strings.Contains(got.Err.Error(), "aspect_ratio") || got.ID != derived {
		t.Errorf("unknown field: err %v, id %q", got.Err, got.ID)
	}
	// A job that fails strict decoding is still recorded under its own id.
	got = JobFile(d, []byte(`{"id": "mine-2", "prompt": "a fox", "aspect_ratio": "1:1"}`))
	if got.Err == nil || got.ID != "mine-2" {
		t.Errorf("unknown field with id: err %v, id %q", got.Err, got.ID)
	}
}

func TestDryRunRule(t *testing.T) {
	u := config.Uploads{Buckets: []string{"in"}, Rules: []config.Rule{
		{Bucket: "in", Prefix: "backfill/", Name: "backfill/", Prompt: "p", DryRun: true},
		{Bucket: "in", Prefix: "live/", Name: "live/", Prompt: "p"},
	}}
	o := Object{Bucket: "in", Name: "backfill/a.png", ContentType: "image/png", Generation: 1, MetadataKnown: true}
	if d := FromObject(o, time.Now(), u); d.DryRun == nil || d.DryRun.Name != "backfill/" || d.Ignore != "" {
		t.Errorf("dry-run rule: %+v", d)
	}
	o.Name = "live/a.png"
	if d := FromObject(o, time.Now(), u); d.DryRun != nil {
		t.Errorf("a live rule was taken for a dry run")
	}
}
