package trigger

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// FinalizedType is the CloudEvent type of a finished upload.
const FinalizedType = "google.cloud.storage.object.v1.finalized"

// JobFileSuffix marks an uploaded object whose content is a job.
const JobFileSuffix = ".job.json"

// Upload metadata keys that turn an uploaded image into an edit job.
const (
	MetaPrompt            = "prompt"
	MetaAspectRatio       = "aspect-ratio"
	MetaSystemInstruction = "system-instruction"
	// MetaParent continues a succeeded job's conversation (contract 9.3):
	// the uploaded image is the new turn's input.
	MetaParent = "parent"
)

// FromUpload decodes a google.cloud.storage.object.v1.finalized event (or
// the legacy form the framework converts) into a delivery.
func FromUpload(e cloudevents.Event, u config.Uploads) Delivery {
	var o Object
	if err := json.Unmarshal(e.Data(), &o); err != nil {
		return Delivery{
			ID:      job.DeriveID("up", e.Source(), e.ID()),
			Trigger: job.Trigger{Kind: job.Upload, Source: e.Subject()},
			Time:    e.Time(),
			Err:     fmt.Errorf("%w: storage event data is not an object resource: %v", job.ErrInvalid, err),
		}
	}
	if o.Bucket == "" {
		o.Bucket = bucketFromSource(e.Source())
	}
	if o.Name == "" {
		o.Name = strings.TrimPrefix(e.Subject(), "objects/")
	}
	o.MetadataKnown = true
	when := e.Time()
	if when.IsZero() {
		when = o.TimeCreated
	}
	return FromObject(o, when, u)
}

// bucketFromSource reads B from //storage.googleapis.com/projects/_/buckets/B
// (Eventarc), accepting the conformance samples' …/buckets/B/objects/NAME.
func bucketFromSource(source string) string {
	_, rest, ok := strings.Cut(source, "/buckets/")
	if !ok {
		return ""
	}
	b, _, _ := strings.Cut(rest, "/")
	return b
}

// FromObject decides what an uploaded object is (README, "Upload"), in
// order: a job file; an image with a prompt in its metadata; an image under
// an upload rule's prefix. Anything else, and anything genimg wrote, is
// ignored.
func FromObject(o Object, when time.Time, u config.Uploads) Delivery {
	d := Delivery{
		Trigger: job.Trigger{Kind: job.Upload, Source: o.Source()},
		Time:    when,
		Object:  &o,
	}
	switch {
	case o.Bucket == "" || o.Name == "":
		d.Ignore = "the event names no object"
		return d
	case !slices.Contains(u.Buckets, o.Bucket):
		d.Ignore = fmt.Sprintf("bucket %s is not an upload bucket (GENIMG_UPLOAD_BUCKETS)", o.Bucket)
		return d
	case o.Metadata[job.MetaGeneratedBy] != "":
		// The loop guard: genimg's own outputs never become jobs.
		d.Ignore = "the object was written by genimg"
		return d
	case !o.MetadataKnown:
		// Decided once the caller has read the object's attributes.
		return d
	case strings.HasSuffix(o.Name, JobsFileSuffix):
		// A batch: the caller reads the content and hands it to JobFile.
		o.JobFile = true
		d.ID = job.DeriveID("up", o.Source(), "jobs-file")
		return d
	case strings.HasSuffix(o.Name, JobFileSuffix):
		o.JobFile = true
		d.ID = job.DeriveID("up", o.Source(), "job-file")
		return d
	}

	image := job.Image{URI: o.URI(), Generation: int64(o.Generation)}
	if prompt := o.Metadata[MetaPrompt]; prompt != "" {
		if !looksLikeImage(o) {
			d.Ignore = fmt.Sprintf("the object has a prompt but is %s, not an image", describeContentType(o.ContentType))
			return d
		}
		d.ID = job.DeriveID("up", o.Source(), "metadata")
		d.Job = job.Job{
			Prompt:            prompt,
			Images:            []job.Image{image},
			AspectRatio:       o.Metadata[MetaAspectRatio],
			SystemInstruction: o.Metadata[MetaSystemInstruction],
			Parent:            o.Metadata[MetaParent],
		}
		d.Job.ID = d.ID
		return d
	}
	for _, rule := range u.Rules {
		if !rule.Matches(o.Bucket, o.Name) {
			continue
		}
		if !looksLikeImage(o) {
			d.Ignore = fmt.Sprintf("the object matches rule %q but is %s, not an image", rule.Name, describeContentType(o.ContentType))
			return d
		}
		d.ID = job.DeriveID("up", o.Source(), "rule", rule.Name)
		d.Job = rule.Job(image)
		d.Job.ID = d.ID
		d.CacheControl = rule.CacheControl
		if rule.DryRun {
			d.DryRun = &rule
		}
		return d
	}
	d.Ignore = "not a job file, no prompt metadata and no upload rule matches"
	return d
}

// JobFile decodes a *.job.json upload's content. Its id, when it has one,
// is the job's; else the delivery's derived id stands. A *.jobs.jsonl
// upload's content becomes the delivery's Batch, one job per line.
func JobFile(d Delivery, content []byte) Delivery {
	if strings.HasSuffix(d.Object.Name, JobsFileSuffix) {
		return jobsFile(d, content)
	}
	j, err := job.Decode(content)
	if err != nil {
		if id := looseID(content); id != "" {
			d.ID = id
		}
		d.Err = fmt.Errorf("%s: %w", d.Object.URI(), err)
		return d
	}
	if j.ID != "" {
		if !job.ValidID(j.ID) {
			// Record the failure under the upload's own id: an id that
			// cannot name a job cannot hold its record either.
			d.Err = fmt.Errorf("%w: %s: id %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, d.Object.URI(), truncate(j.ID))
			return d
		}
		d.ID = j.ID
	}
	j.ID = d.ID
	d.Job = j
	return d
}

// looksLikeImage decides from the declared type or, failing that, the name:
// the bytes are sniffed before any model call, so this only keeps obvious
// non-images (a README dropped under a rule prefix) from becoming failed
// jobs.
func looksLikeImage(o Object) bool {
	if strings.HasPrefix(o.ContentType, "image/") {
		return true
	}
	if o.ContentType != "" && o.ContentType != "application/octet-stream" {
		return false
	}
	switch strings.ToLower(path.Ext(o.Name)) {
	case ".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".heif":
		return true
	}
	return false
}

func describeContentType(ct string) string {
	if ct == "" {
		return "of unknown type"
	}
	return ct
}
