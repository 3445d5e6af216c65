package gemini

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// The batch lane on Vertex AI: a batch prediction job reads its requests
// from one JSONL object in Cloud Storage and writes its predictions under an
// output prefix there. Vertex AI keeps no key per line, but echoes each
// line's request, labels included, in its prediction; so every request
// carries its job id and its line in request labels (BatchJobLabel,
// BatchLineLabel).

// Labels that carry a request's job id and line through a Vertex AI batch.
const (
	// BatchJobLabel holds the job id when it is a valid label value
	// (lowercase letters, digits, '_' and '-', at most 63 characters).
	BatchJobLabel = "genimg-job"
	// BatchLineLabel holds the request's line in the input (from 0), which
	// maps any id back through the order of the submitted jobs.
	BatchLineLabel = "genimg-line"
)

// BatchFiles reads and writes the Cloud Storage objects of a Vertex AI
// batch. The lane implements it with its own Cloud Storage client.
type BatchFiles interface {
	// Write stores data at uri (gs://bucket/object).
	Write(ctx context.Context, uri string, data []byte) error
	// List names the objects under a gs:// prefix, as gs:// URIs.
	List(ctx context.Context, prefix string) ([]string, error)
	// Read returns the object at uri.
	Read(ctx context.Context, uri string) ([]byte, error)
}

// A BatchOption gives a batch what its backend needs beyond the jobs.
type BatchOption func(*batchOptions)

type batchOptions struct {
	files BatchFiles
	dir   string
}

// InCloudStorage places a Vertex AI batch in Cloud Storage: its input at
// dir/input.jsonl, its predictions under dir/output/, read and written
// through files. dir is a gs:// URI. The Gemini API ignores it.
func InCloudStorage(files BatchFiles, dir string) BatchOption {
	return func(o *batchOptions) { o.files, o.dir = files, strings.TrimSuffix(dir, "/") }
}

func batchOpts(opts []BatchOption) batchOptions {
	var o batchOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// labelValue matches a valid Vertex AI label value.
var labelValue = regexp.MustCompile(`^[a-z0-9_-]{1,63}$`)

// submitVertex writes the jobs' requests as JSONL to Cloud Storage and
// creates a batch prediction job that reads them.
func (c *Client) submitVertex(ctx context.Context, model, displayName string, jobs []job.Job, o batchOptions) (Submitted, error) {
	if o.files == nil || !strings.HasPrefix(o.dir, "gs://") {
		return Submitted{}, fmt.Errorf("%w: gemini: a Vertex AI batch needs a Cloud Storage directory (InCloudStorage)", job.ErrPermanent)
	}
	var lines bytes.Buffer
	for i, j := range jobs {
		if err := checkBatchJob(i, j, model); err != nil {
			return Submitted{}, err
		}
		contents, cfg, err := c.request(j)
		if err != nil {
			return Submitted{}, fmt.Errorf("batch job %s: %w", j.ID, err)
		}
		req := restRequest(contents, cfg)
		labels := map[string]string{}
		for k, v := range cfg.Labels {
			labels[k] = v
		}
		labels[BatchLineLabel] = strconv.Itoa(i)
		if labelValue.MatchString(j.ID) {
			labels[BatchJobLabel] = j.ID
		}
		req["labels"] = labels
		line, err := json.Marshal(map[string]any{"request": req})
		if err != nil {
			return Submitted{}, fmt.Errorf("%w: gemini: encoding batch job %s: %v", job.ErrInvalid, j.ID, err)
		}
		lines.Write(line)
		lines.WriteByte('\n')
	}
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	input := o.dir + "/input.jsonl"
	// Written before the job is created: an overwrite by a retried
	// submission writes the same bytes.
	if err := o.files.Write(callCtx, input, lines.Bytes()); err != nil {
		return Submitted{}, fmt.Errorf("writing the input of batch %s: %w", displayName, err)
	}
	bj, err := c.genai.Batches.Create(callCtx, model, &genai.BatchJobSource{GCSURI: []string{input}, Format: "jsonl"},
		&genai.CreateBatchJobConfig{DisplayName: displayName, Dest: &genai.BatchJobDestination{GCSURI: o.dir + "/output/", Format: "jsonl"}})
	if err != nil {
		return Submitted{}, fmt.Errorf("creating batch %s: %w", displayName, classify(err, c.key))
	}
	return Submitted{Name: bj.Name, InputFile: input, Bytes: lines.Len()}, nil
}

// checkBatchJob checks what a batch needs of a job on either backend.
func checkBatchJob(i int, j job.Job, model string) error {
	switch {
	case j.ID == "":
		return fmt.Errorf("%w: gemini: batch job %d has no id to key its answer by", job.ErrInvalid, i)
	case j.Model != model:
		return fmt.Errorf("%w: gemini: batch job %s runs on %s, not the batch's %s", job.ErrInvalid, j.ID, j.Model, model)
	case j.Context != nil:
		return fmt.Errorf("%w: gemini: batch job %s: resolve its context to a cache first", job.ErrInvalid, j.ID)
	}
	return nil
}

// vertexResults reads a finished Vertex AI batch's predictions: every
// predictions*.jsonl object under the job's output directory.
func (c *Client) vertexResults(ctx context.Context, bj *genai.BatchJob, o batchOptions) ([]BatchResult, error) {
	if o.files == nil {
		return nil, fmt.Errorf("%w: gemini: reading Vertex AI batch %s needs its Cloud Storage (InCloudStorage)", job.ErrPermanent, bj.Name)
	}
	dir := ""
	if bj.OutputInfo != nil {
		dir = bj.OutputInfo.GCSOutputDirectory
	}
	if dir == "" && bj.Dest != nil {
		dir = bj.Dest.GCSURI
	}
	if dir == "" {
		dir = o.dir + "/output/"
	}
	names, err := o.files.List(ctx, strings.TrimSuffix(dir, "/")+"/")
	if err != nil {
		return nil, fmt.Errorf("listing the predictions of batch %s: %w", bj.Name, err)
	}
	var out []BatchResult
	for _, name := range names {
		base := path.Base(name)
		if !strings.HasPrefix(base, "predictions") || !strings.HasSuffix(base, ".jsonl") {
			continue
		}
		data, err := o.files.Read(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		rs, err := c.parsePredictions(data, len(out))
		if err != nil {
			return nil, fmt.Errorf("%w: batch %s: %s: %v", job.ErrTransient, bj.Name, name, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// parsePredictions reads a predictions file: one {"request", "response",
// "status"} per line, the request echoed with its labels; status holds the
// line's error, if any. A result's Index is its request's line when the
// labels say so, else its place in the answers (from first).
func (c *Client) parsePredictions(data []byte, first int) ([]BatchResult, error) {
	var out []BatchResult
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	for n := 0; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l struct {
			Request struct {
				Labels map[string]string `json:"labels"`
			} `json:"request"`
			Response *genai.GenerateContentResponse `json:"response"`
			Status   json.RawMessage                `json:"status"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("predictions line %d: %v", n+1, err)
		}
		var jerr *genai.JobError
		if msg := statusMessage(l.Status); msg != "" {
			jerr = &genai.JobError{Message: msg}
			if code := statusCode(msg); code != 0 {
				jerr.Code = genai.Ptr(int32(code))
			}
		}
		idx := first + len(out)
		if v, err := strconv.Atoi(l.Request.Labels[BatchLineLabel]); err == nil && v >= 0 {
			idx = v
		}
		out = append(out, c.batchResult(idx, l.Request.Labels[BatchJobLabel], l.Response, jerr))
	}
	return out, sc.Err()
}

// statusMessage reads a prediction's status: a string (the error's text,
// empty on success) or an object with a message.
func statusMessage(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var st struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &st) == nil && (st.Message != "" || st.Code != 0) {
		if st.Code != 0 && statusCode(st.Message) == 0 {
			return fmt.Sprintf("Error %d: %s", st.Code, st.Message)
		}
		return st.Message
	}
	return string(raw)
}

// httpCode finds an HTTP status in an error's text, e.g. "Error 400:" or
// "code 400".
var httpCode = regexp.MustCompile(`\b([45]\d\d)\b`)

func statusCode(msg string) int {
	if m := httpCode.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}
