package console

import (
	"context"
	"encoding/json"
	"io"
	"time"
)

// The console reads the pipeline through these small sources; the local
// stack provides real ones (internal/localstack), tests may provide their
// own. A source that is nil turns its panels into "not available".

// Jobs reads the jobs the output bucket holds.
type Jobs interface {
	// Index lists every job folder under jobs/: names and times only, no
	// object read, so that it stays cheap with thousands of jobs.
	Index(ctx context.Context) ([]Entry, error)
	// Read returns a job's state object (File*), or nil, nil when it
	// does not exist.
	Read(ctx context.Context, id, file string) (json.RawMessage, error)
	// Open streams an object the pipeline wrote or read (gs://BUCKET/NAME
	// of the stack's buckets only) with its content type.
	Open(ctx context.Context, uri string) (io.ReadCloser, string, error)
}

// The state files of a job the console reads (storage/layout.go).
const (
	FileRecord = "result.json"
	FileClaim  = "claim.json"
	FileBatch  = "batch.json"
)

// An Entry is one job folder as listed.
type Entry struct {
	ID string
	// Created is the oldest object's creation time: when the job arrived.
	Created time.Time
	// Record, Claim and Batch are the generations of result.json,
	// claim.json and batch.json, 0 when absent.
	Record, Claim, Batch int64
}

// Events carries the completion topic and the dead-letter topic.
type Events interface {
	// Watch calls fn with every message published on either topic from now
	// on, until ctx ends.
	Watch(ctx context.Context, fn func(Message)) error
	// Redeliver publishes a dead-lettered request to the requests topic
	// again.
	Redeliver(ctx context.Context, m Message) error
}

// Topics a Message comes from.
const (
	TopicCompletion = "completion"
	TopicDeadLetter = "dead-letter"
)

// A Message is one Pub/Sub message as the console shows it.
type Message struct {
	Topic      string            `json:"topic"`
	ID         string            `json:"id"`
	Published  time.Time         `json:"published"`
	Attributes map[string]string `json:"attributes"`
	Data       json.RawMessage   `json:"data,omitempty"`
	// Text is the data when it is not JSON.
	Text string `json:"text,omitempty"`
}

// Spend reads the spend ledgers and works the kill switch.
type Spend interface {
	Totals(ctx context.Context, now time.Time) (Totals, error)
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

// Totals are this hour's and today's spend (UTC) against the budgets (0:
// unlimited), and whether the kill switch is on.
type Totals struct {
	Hour         string  `json:"hour"`
	HourUSD      float64 `json:"hourUsd"`
	DayUSD       float64 `json:"dayUsd"`
	HourlyBudget float64 `json:"hourlyBudgetUsd"`
	DailyBudget  float64 `json:"dailyBudgetUsd"`
	Paused       bool    `json:"paused"`
}

// Traces finds a job's trace; nil until the pipeline exports traces
// locally.
type Traces interface {
	// Trace returns the job's spans, none when it has no trace.
	Trace(ctx context.Context, jobID string) ([]Span, error)
}

// A Span is one step of a job's trace.
type Span struct {
	Name   string            `json:"name"`
	Start  time.Time         `json:"start"`
	End    time.Time         `json:"end"`
	Parent string            `json:"parent,omitempty"`
	ID     string            `json:"id"`
	Attrs  map[string]string `json:"attrs,omitempty"`
	Error  string            `json:"error,omitempty"`
}

// Submitter submits a job through one of the three triggers.
type Submitter interface {
	Submit(ctx context.Context, s Submission) (Submitted, error)
}

// Triggers a Submission may go through.
const (
	ViaHTTP   = "http"
	ViaPubSub = "pubsub"
	ViaUpload = "upload"
)

// A Submission is a job to submit.
type Submission struct {
	Via string
	// Job is the job as JSON (the HTTP body / Pub/Sub message), with its
	// image inline; for an upload, only its prompt and aspectRatio travel
	// (as the uploaded image's metadata).
	Job json.RawMessage
	// Prompt, AspectRatio and Image are the upload's metadata and object.
	Prompt, AspectRatio string
	Image               []byte
	ImageType           string
	ImageName           string
}

// Submitted says where a submission went.
type Submitted struct {
	// JobID is the job's id, when known before it runs.
	JobID string `json:"jobId,omitempty"`
	// Status and Body are the front door's answer (HTTP), or a note.
	Status int    `json:"status,omitempty"`
	Note   string `json:"note,omitempty"`
}
