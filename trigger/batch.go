package trigger

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/genimg/genimg/job"
)

// Batch submissions (the batch lane): an HTTP body or a Pub/Sub message of
// the form {"batch": [job, …]}, or an uploaded *.jobs.jsonl file with one
// job per line. Each job is decoded on its own, so that one bad job is
// recorded failed without sinking the others; a job without an id gets one
// derived from the submission and its position, so that a redelivery of the
// same submission maps to the same ids (and the lane submits nothing twice).

// JobsFileSuffix marks an uploaded object whose content is a batch: one
// JSON job per line.
const JobsFileSuffix = ".jobs.jsonl"

// MaxBatchJobs bounds one batch submission. The request and message size
// limits bound it too; this keeps one submission's bookkeeping (a Cloud
// Storage read per job) well inside a function's timeout.
const MaxBatchJobs = 5000

// A Batch is a batch submission, decoded.
type Batch struct {
	// Source names the submission: the request's Idempotency-Key or a
	// new id (HTTP), the message's delivery id (Pub/Sub), the object with
	// its generation (upload). Derived job ids hash it with the position.
	Source string
	Items  []BatchItem
}

// A BatchItem is one job of a batch submission.
type BatchItem struct {
	// ID is the job's id: its own, or one derived from the submission's
	// Source and the job's position. It is set even when Err is, so that
	// the failure can be recorded.
	ID  string
	Job job.Job
	// Where is the job's place in the submission, for messages: "batch[3]"
	// or "line 4".
	Where string
	// Err is why the job cannot be taken (undecodable, bad id): it is
	// recorded failed under ID.
	Err error
}

// batchEnvelope is the body of a batch submission: only "batch", so that
// a typo beside it is an error rather than a silently different request.
type batchEnvelope struct {
	Batch []json.RawMessage `json:"batch"`
}

// IsBatch reports whether a JSON body is a batch submission: an object
// with a "batch" member. A job has no such field, so the two never mix.
func IsBatch(data []byte) bool {
	var probe struct {
		Batch json.RawMessage `json:"batch"`
	}
	return json.Unmarshal(data, &probe) == nil && probe.Batch != nil
}

// DecodeBatch reads {"batch": [jobs…]}. source names the submission (see
// Batch.Source). An error (wrapping job.ErrInvalid or job.ErrTooLarge) means
// the submission as a whole is unreadable; a bad job is an item's Err.
func DecodeBatch(data []byte, source string) (Batch, error) {
	var env batchEnvelope
	if err := job.DecodeStrict(data, &env); err != nil {
		return Batch{}, fmt.Errorf("%w: batch: %v; expected {\"batch\": [job, …]}", job.ErrInvalid, err)
	}
	if err := checkCount(len(env.Batch)); err != nil {
		return Batch{}, err
	}
	b := Batch{Source: source}
	for i, raw := range env.Batch {
		b.Items = append(b.Items, decodeItem(raw, fmt.Sprintf("batch[%d]", i), source, strconv.Itoa(i)))
	}
	return b, nil
}

func checkCount(n int) error {
	switch {
	case n == 0:
		return fmt.Errorf("%w: the batch holds no jobs", job.ErrInvalid)
	case n > MaxBatchJobs:
		return fmt.Errorf("%w: the batch holds %d jobs; at most %d in one submission", job.ErrTooLarge, n, MaxBatchJobs)
	}
	return nil
}

// decodeItem decodes one job of a batch; position keys its derived id.
func decodeItem(raw []byte, where, source string, position ...string) BatchItem {
	it := BatchItem{ID: job.DeriveID("batch", append([]string{source}, position...)...), Where: where}
	j, err := job.Decode(raw)
	if err != nil {
		// Record the failure under the caller's id when one can be read,
		// so that the caller finds it.
		if id := looseID(raw); id != "" {
			it.ID = id
		}
		it.Err = fmt.Errorf("%s: %w", where, err)
		return it
	}
	if j.ID != "" {
		if !job.ValidID(j.ID) {
			it.Err = fmt.Errorf("%w: %s: id %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, where, truncate(j.ID))
			return it
		}
		it.ID = j.ID
	}
	j.ID = it.ID
	it.Job = j
	return it
}

// BatchFromHTTP reads a POST body and, when it is a JSON batch submission,
// decodes it (ok is true). Otherwise the body is put back for FromHTTP. The
// body is limited to maxBytes. An Idempotency-Key names the submission, so
// that a retried POST derives the same job ids; without one, the
// submission gets a new id.
func BatchFromHTTP(r *http.Request, maxBytes int64) (b Batch, ok bool, err error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || (mt != "application/json" && mt != formURLEncoded) {
			return Batch{}, false, nil // FromHTTP says what is wrong with it
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBytes))
	r.Body.Close()
	if err != nil {
		return Batch{}, false, bodyError(err, maxBytes)
	}
	r.Body = io.NopCloser(bytes.NewReader(data))
	if !IsBatch(data) {
		return Batch{}, false, nil
	}
	source := r.Header.Get(IdempotencyKeyHeader)
	switch {
	case source == "":
		source = NewID()
	case !job.ValidID(source):
		return Batch{}, true, fmt.Errorf("%w: Idempotency-Key %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, truncate(source))
	}
	b, err = DecodeBatch(data, source)
	return b, true, err
}

// jobsFile decodes a *.jobs.jsonl upload: one job per non-blank line, ids
// derived from the object (with its generation) and the line number.
func jobsFile(d Delivery, content []byte) Delivery {
	source := d.Object.Source()
	b := Batch{Source: source}
	sc := bufio.NewScanner(bytes.NewReader(content))
	// A line holds one job, inline images included: as long as the file.
	sc.Buffer(make([]byte, 0, 64<<10), len(content)+1)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if len(b.Items) == MaxBatchJobs {
			d.Err = fmt.Errorf("%s: %w", d.Object.URI(), checkCount(MaxBatchJobs+1))
			return d
		}
		b.Items = append(b.Items, decodeItem(bytes.Clone(line), "line "+strconv.Itoa(n), source, "line", strconv.Itoa(n)))
	}
	if err := sc.Err(); err != nil {
		d.Err = fmt.Errorf("%w: %s: %v", job.ErrInvalid, d.Object.URI(), err)
		return d
	}
	if len(b.Items) == 0 {
		d.Err = fmt.Errorf("%w: %s holds no jobs (one JSON job per line)", job.ErrInvalid, d.Object.URI())
		return d
	}
	d.Batch = &b
	return d
}
