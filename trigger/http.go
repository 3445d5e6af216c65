package trigger

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/genimg/genimg/job"
)

// formURLEncoded is what curl -d labels a body with by default.
const formURLEncoded = "application/x-www-form-urlencoded"

// IdempotencyKeyHeader carries an HTTP caller's job id.
const IdempotencyKeyHeader = "Idempotency-Key"

// FromHTTP reads a job from a POST body: JSON, or multipart/form-data with
// a "job" part (JSON) and/or the fields prompt, aspectRatio, model, id and
// systemInstruction, plus image files (any file part), so that a person can
// `curl -F image=@in.png -F prompt=…`. The body is limited to maxBytes; the
// job's id is reconciled with the Idempotency-Key header.
func FromHTTP(r *http.Request, maxBytes int64) (job.Job, error) {
	j, b, err := readHTTP(r, maxBytes)
	if err == nil && b != nil {
		// Not here: a batch is read by ReadHTTP.
		_, err = job.Decode(b)
	}
	return j, err
}

// ReadHTTP reads a POST body once: a batch submission ({"batch": [...]},
// b set) or one job, as FromHTTP takes it. A JSON job is read in one
// streaming pass (see streamJob), its inline images decoded as they come.
// An Idempotency-Key names a batch submission, so that a retried POST
// derives the same job ids; without one, the submission gets a new id.
func ReadHTTP(r *http.Request, maxBytes int64) (job.Job, *Batch, error) {
	j, data, err := readHTTP(r, maxBytes)
	if err != nil || data == nil {
		return j, nil, err
	}
	source := r.Header.Get(IdempotencyKeyHeader)
	switch {
	case source == "":
		source = NewID()
	case !job.ValidID(source):
		return job.Job{}, nil, fmt.Errorf("%w: Idempotency-Key %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, truncate(source))
	}
	b, err := DecodeBatch(data, source)
	if err != nil {
		return job.Job{}, nil, err
	}
	return job.Job{}, &b, nil
}

var errFormBody = fmt.Errorf("%w: a form body is not a job: send JSON (Content-Type: application/json) or multipart/form-data", job.ErrInvalid)

// readHTTP reads a job, or a batch submission's JSON (batch set),
// and reconciles the job's id with the Idempotency-Key.
func readHTTP(r *http.Request, maxBytes int64) (j job.Job, batch []byte, err error) {
	body := http.MaxBytesReader(nil, r.Body, maxBytes)
	defer body.Close()

	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil && r.Header.Get("Content-Type") != "" {
		return job.Job{}, nil, fmt.Errorf("%w: Content-Type %q: %v", job.ErrInvalid, r.Header.Get("Content-Type"), err)
	}
	switch mediaType {
	case "", "application/json", formURLEncoded:
		// curl -d sends a JSON body labelled as a form: take it as the
		// JSON it is, but nothing else under that label.
		if j, batch, err = streamJob(body, r.ContentLength, maxBytes, mediaType == formURLEncoded); err != nil || batch != nil {
			return job.Job{}, batch, err
		}
	case "multipart/form-data":
		if j, err = fromMultipart(multipart.NewReader(body, params["boundary"]), maxBytes); err != nil {
			return job.Job{}, nil, err
		}
	default:
		return job.Job{}, nil, fmt.Errorf("%w: Content-Type %s: send application/json or multipart/form-data", job.ErrInvalid, mediaType)
	}

	key := r.Header.Get(IdempotencyKeyHeader)
	switch {
	case key != "" && j.ID != "" && key != j.ID:
		return job.Job{}, nil, fmt.Errorf("%w: the Idempotency-Key header %q and the job's id %q disagree", job.ErrInvalid, truncate(key), truncate(j.ID))
	case key != "":
		j.ID = key
	}
	if j.ID != "" && !job.ValidID(j.ID) {
		return job.Job{}, nil, fmt.Errorf("%w: id %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, truncate(j.ID))
	}
	return j, nil, nil
}

func bodyError(err error, maxBytes int64) error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return fmt.Errorf("%w: the request body is over %d bytes; send images by gs:// URI or make them smaller", job.ErrTooLarge, maxBytes)
	}
	return fmt.Errorf("%w: reading the request body: %v", job.ErrInvalid, err)
}

// multipart form fields that set a job field directly.
var formFields = map[string]func(*job.Job, string){
	"prompt":            func(j *job.Job, v string) { j.Prompt = v },
	"aspectRatio":       func(j *job.Job, v string) { j.AspectRatio = v },
	"model":             func(j *job.Job, v string) { j.Model = v },
	"id":                func(j *job.Job, v string) { j.ID = v },
	"systemInstruction": func(j *job.Job, v string) { j.SystemInstruction = v },
}

func fromMultipart(mr *multipart.Reader, maxBytes int64) (job.Job, error) {
	var (
		j      job.Job
		fields = map[string]string{}
		files  []job.Image
		sawJob bool
	)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return job.Job{}, bodyError(err, maxBytes)
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return job.Job{}, bodyError(err, maxBytes)
		}
		name := part.FormName()
		switch {
		case part.FileName() != "":
			files = append(files, job.Image{Data: data, MIMEType: part.Header.Get("Content-Type")})
		case name == "job":
			if sawJob {
				return job.Job{}, fmt.Errorf("%w: more than one job part", job.ErrInvalid)
			}
			sawJob = true
			if j, err = job.Decode(data); err != nil {
				return job.Job{}, err
			}
		case formFields[name] != nil:
			if _, dup := fields[name]; dup {
				return job.Job{}, fmt.Errorf("%w: form field %q given twice", job.ErrInvalid, name)
			}
			fields[name] = string(data)
		default:
			return job.Job{}, fmt.Errorf("%w: unknown form field %q; accepted: job, prompt, aspectRatio, model, id, systemInstruction, and image files", job.ErrInvalid, truncate(name))
		}
	}
	for name, v := range fields {
		formFields[name](&j, v)
	}
	j.Images = append(j.Images, files...)
	if !sawJob && len(fields) == 0 && len(files) == 0 {
		return job.Job{}, fmt.Errorf("%w: empty form: send a job part or a prompt field", job.ErrInvalid)
	}
	return j, nil
}

// Prefer reads RFC 7240 Prefer preferences genimg honours: wait=N (seconds)
// and respond-async. wait is zero when not given.
func Prefer(h http.Header) (wait time.Duration, async bool) {
	for _, v := range h.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			pref = strings.TrimSpace(strings.ToLower(pref))
			if pref == "respond-async" {
				async = true
			}
			if s, ok := strings.CutPrefix(pref, "wait="); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 {
					wait = time.Duration(n) * time.Second
				}
			}
		}
	}
	return wait, async
}

// NewID makes a fresh id for an HTTP job whose caller gave none.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	return "http-" + hex.EncodeToString(b[:])
}
