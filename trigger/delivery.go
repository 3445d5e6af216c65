// Package trigger turns what the platform delivers — HTTP requests, Pub/Sub
// messages, Cloud Storage events — into genimg jobs. It is pure decoding: no
// clients, no I/O beyond the request body it is handed, so every rule about
// what becomes a job, and under which id, lives here and is tested here.
package trigger

import (
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// A Delivery is one platform delivery, decoded: the job it carries under
// its id, or the reason it carries none.
type Delivery struct {
	// ID is the job's id: the caller's, or one derived from the delivery so
	// that a redelivery maps to the same id. Set whenever Err is set too, so
	// that a bad delivery can still be recorded failed.
	ID      string
	Job     job.Job
	Trigger job.Trigger
	// Time is when the event happened (publish or finalize time); a
	// delivery older than the maximum event age is recorded failed.
	Time time.Time
	// Object is the uploaded object an upload job edits, if any. When
	// Object.JobFile is set, the job is the object's content, which the
	// caller reads and hands to JobFile.
	Object *Object
	// Err is why the delivery is not a valid job: recorded as failed.
	Err error
	// Ignore is why the delivery is not a job at all: logged and
	// acknowledged, no record, no event.
	Ignore string
	// DryRun is the upload rule that matched, when that rule only counts
	// what a backfill would cost: the job is logged with its estimate and
	// never sent to the model.
	DryRun *config.Rule
	// Traceparent is the W3C trace context the delivery carries (a Pub/Sub
	// message's googclient_traceparent or traceparent attribute): the
	// job's spans continue that trace.
	Traceparent string
	// CacheControl is the matching upload rule's Cache-Control for the
	// job's output objects; empty: the deployment's (GENIMG_CACHE_CONTROL).
	CacheControl string
	// Batch, when set, is a batch submission ({"batch": [...]} or a
	// *.jobs.jsonl upload) for the batch lane; Job is then empty.
	Batch *Batch
}

// An Object is a Cloud Storage object, as events describe it. Int64 fields
// arrive as JSON strings in real events and as numbers in some samples;
// both decode.
type Object struct {
	Bucket      string            `json:"bucket"`
	Name        string            `json:"name"`
	Generation  Int64             `json:"generation"`
	ContentType string            `json:"contentType"`
	Size        Int64             `json:"size"`
	Metadata    map[string]string `json:"metadata"`
	TimeCreated time.Time         `json:"timeCreated"`
	// JobFile marks an object whose content is a job (*.job.json).
	JobFile bool `json:"-"`
	// MetadataKnown is false when the event carried no object resource
	// (a notification with payloadFormat NONE): the caller must read the
	// object's attributes before deciding.
	MetadataKnown bool `json:"-"`
}

// URI is the object's gs:// address.
func (o Object) URI() string { return "gs://" + o.Bucket + "/" + o.Name }

// Source names the object with its generation, as records do.
func (o Object) Source() string {
	return o.URI() + "#" + o.Generation.String()
}
