package job

import (
	"encoding/json"
	"errors"
	"time"
)

// Outcome is how a job ended (README, "The job").
type Outcome string

// The outcomes.
const (
	// Succeeded: at least one image was written.
	Succeeded Outcome = "succeeded"
	// Blocked: the prompt was blocked, or output stopped for safety,
	// prohibited content or recitation.
	Blocked Outcome = "blocked"
	// NoImage: the model answered without an image for another reason.
	NoImage Outcome = "no_image"
	// Failed: invalid job or input, permanent API error, retries
	// exhausted, or the delivery was too old.
	Failed Outcome = "failed"
)

// TriggerKind names the entry point a job came through.
type TriggerKind string

// The trigger kinds.
const (
	HTTP   TriggerKind = "http"
	PubSub TriggerKind = "pubsub"
	Upload TriggerKind = "upload"
)

// Trigger says where a job came from. Source is the uploaded object with its
// generation (gs://bucket/name#generation) or the Pub/Sub message id.
type Trigger struct {
	Kind   TriggerKind `json:"kind"`
	Source string      `json:"source,omitempty"`
}

// A Record is the completion record: result.json, the HTTP answer and the
// completion event's data.
type Record struct {
	JobID          string            `json:"jobId"`
	Outcome        Outcome           `json:"outcome"`
	Trigger        Trigger           `json:"trigger"`
	Outputs        []StoredImage     `json:"outputs"`
	Text           string            `json:"text,omitempty"`
	FinishReason   string            `json:"finishReason,omitempty"`
	FinishMessage  string            `json:"finishMessage,omitempty"`
	SafetyRatings  []SafetyRating    `json:"safetyRatings,omitempty"`
	PromptFeedback *PromptFeedback   `json:"promptFeedback,omitempty"`
	Usage          Usage             `json:"usage"`
	CostUSD        float64           `json:"costUsd"`
	Model          string            `json:"model,omitempty"`
	ModelVersion   string            `json:"modelVersion,omitempty"`
	ResponseID     string            `json:"responseId,omitempty"`
	Attempts       int               `json:"attempts"`
	Timings        Timings           `json:"timings"`
	Labels         map[string]string `json:"labels,omitempty"`
	Error          *Error            `json:"error,omitempty"`
	// Fingerprint identifies the work (Job.Fingerprint), so that a record
	// found for an id can be told apart from a different job's.
	Fingerprint string `json:"fingerprint,omitempty"`
	// JSON is the structured answer (the text parsed as JSON) when the job
	// asked for responseMimeType application/json and the answer conforms
	// to its responseSchema; JSONError says why it is absent otherwise.
	// The outcome still follows the images.
	JSON      json.RawMessage `json:"json,omitempty"`
	JSONError string          `json:"jsonError,omitempty"`
	// Callback is the job's callback, which OnCompletion delivers the
	// completion event to; absent when the job named none (or an invalid
	// one, which is never called).
	Callback *Callback `json:"callback,omitempty"`
	// GroundingMetadata is the first candidate's grounding with Google
	// Search (queries, sources, the search entry point), as the model
	// returned it, when the job asked for the googleSearch tool.
	GroundingMetadata json.RawMessage `json:"groundingMetadata,omitempty"`
	// Parent is the job whose conversation this one continued.
	Parent string `json:"parent,omitempty"`
	// Turns are this job's user turn and the model's answer turn, as a
	// child job rebuilds them (conversation.go); set on succeeded jobs.
	Turns []Turn `json:"turns,omitempty"`
	// Batch is set when the job ran in the batch lane.
	Batch *BatchInfo `json:"batch,omitempty"`
}

// BatchInfo says which model batch answered a job of the batch lane.
type BatchInfo struct {
	// Name is the batch's resource name (batches/ID).
	Name string `json:"name"`
	// ID is genimg's id of the chunk (gs://OUTPUT/batches/<id>.json).
	ID string `json:"id"`
}

// A StoredImage is one output image as written to Cloud Storage.
type StoredImage struct {
	URI      string `json:"uri"`
	MIMEType string `json:"mimeType"`
	Bytes    int64  `json:"bytes"`
	Width    int    `json:"width"`
	Height   int    `json:"height"`
	SHA256   string `json:"sha256"`
	// Renditions are the image's renditions, in the order the job asked
	// for them (contract 9.4); RenditionError says why they are missing
	// when the image could not be rendered.
	Renditions     []StoredImage `json:"renditions,omitempty"`
	RenditionError string        `json:"renditionError,omitempty"`
}

// A SafetyRating is one category's rating, as the model reports it.
type SafetyRating struct {
	Category         string  `json:"category"`
	Probability      string  `json:"probability,omitempty"`
	ProbabilityScore float32 `json:"probabilityScore,omitempty"`
	Severity         string  `json:"severity,omitempty"`
	SeverityScore    float32 `json:"severityScore,omitempty"`
	Blocked          bool    `json:"blocked,omitempty"`
}

// PromptFeedback says why a prompt was blocked, when it was.
type PromptFeedback struct {
	BlockReason        string         `json:"blockReason,omitempty"`
	BlockReasonMessage string         `json:"blockReasonMessage,omitempty"`
	SafetyRatings      []SafetyRating `json:"safetyRatings,omitempty"`
}

// Usage is the token accounting of a job, summed over its model calls.
type Usage struct {
	PromptTokens               int32            `json:"promptTokens"`
	CandidatesTokens           int32            `json:"candidatesTokens"`
	TotalTokens                int32            `json:"totalTokens"`
	ThoughtsTokens             int32            `json:"thoughtsTokens"`
	CachedTokens               int32            `json:"cachedTokens"`
	PromptTokensByModality     map[string]int32 `json:"promptTokensByModality,omitempty"`
	CandidatesTokensByModality map[string]int32 `json:"candidatesTokensByModality,omitempty"`
}

// Add sums o into u.
func (u *Usage) Add(o Usage) {
	u.PromptTokens += o.PromptTokens
	u.CandidatesTokens += o.CandidatesTokens
	u.TotalTokens += o.TotalTokens
	u.ThoughtsTokens += o.ThoughtsTokens
	u.CachedTokens += o.CachedTokens
	u.PromptTokensByModality = addModalities(u.PromptTokensByModality, o.PromptTokensByModality)
	u.CandidatesTokensByModality = addModalities(u.CandidatesTokensByModality, o.CandidatesTokensByModality)
}

func addModalities(dst, src map[string]int32) map[string]int32 {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]int32, len(src))
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// Timings are when a job started and ended, and where the time went.
type Timings struct {
	CreatedAt   time.Time `json:"createdAt"`
	CompletedAt time.Time `json:"completedAt"`
	ModelMs     int64     `json:"modelMs"`
	TotalMs     int64     `json:"totalMs"`
}

// Error is a failed job's reason.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
}

// ErrorOf describes err for a record.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: Code(err), Message: err.Error(), Retryable: Retryable(err)}
}

// Err turns a failed record's error back into a Go error of the same
// category, so a stored failure maps to the same answer as a fresh one.
func (e *Error) Err() error {
	if e == nil {
		return nil
	}
	kind := map[string]error{
		"invalid_argument": ErrInvalid, "too_large": ErrTooLarge, "conflict": ErrConflict,
		"permanent": ErrPermanent, "unavailable": ErrTransient,
	}[e.Code]
	if kind == nil {
		return errors.New(e.Message)
	}
	return &recordedError{kind: kind, msg: e.Message}
}

type recordedError struct {
	kind error
	msg  string
}

func (e *recordedError) Error() string { return e.msg }
func (e *recordedError) Unwrap() error { return e.kind }
