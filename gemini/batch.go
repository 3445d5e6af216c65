package gemini

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// The batch lane: a chunk of jobs is one Gemini Batch API batch
// (Batches.Create), each job a request keyed by its id. Answers come back
// priced at the batch rate (config.Prices.BatchDiscount).

// BatchKey is the request metadata key (and JSONL "key") holding a job's id.
const BatchKey = "key"

// DefaultInlineLimit is the largest batch sent inline: the Gemini API takes
// inline batch requests under 20 MB in total; larger chunks go as a JSONL
// file through the Files API.
const DefaultInlineLimit = 19_000_000

// A Submitted batch: its resource name, and how its requests were sent.
type Submitted struct {
	// Name is the batch's resource name, batches/ID.
	Name string
	// InputFile is the uploaded JSONL input (files/ID), when the chunk was
	// too large to send inline.
	InputFile string
	// Bytes is the size of the requests as sent.
	Bytes int
}

// Batch states, as the SDK names them (genai.JobState).
const (
	BatchSucceeded = string(genai.JobStateSucceeded)
	BatchFailed    = string(genai.JobStateFailed)
	BatchCancelled = string(genai.JobStateCancelled)
	BatchExpired   = string(genai.JobStateExpired)
)

// A BatchStatus is a batch's state and, once it succeeded, its answers.
type BatchStatus struct {
	Name string
	// State is the SDK's JobState (JOB_STATE_PENDING, JOB_STATE_RUNNING,
	// JOB_STATE_SUCCEEDED, JOB_STATE_FAILED, JOB_STATE_CANCELLED,
	// JOB_STATE_EXPIRED).
	State string
	// Done is true in every final state.
	Done bool
	// Error is the batch's own error, when it failed as a whole.
	Error string
	// Results are the answers of a succeeded batch, in answer order. A key
	// may appear twice (the service answered twice); the caller decides.
	Results []BatchResult
}

// A BatchResult is one request's answer.
type BatchResult struct {
	// Key is the job id the request carried; Index its place in the
	// answers (for a key the service dropped).
	Key   string
	Index int
	// Result is the answer, priced at the batch rate; nil when Err is set.
	Result *Result
	// Err is the request's own failure, classified like a lone call's.
	Err error
}

// SubmitBatch submits jobs as one batch of model. Each job must be
// validated and normalised, have an id, run on model, and have its images
// resolved (bytes on the Gemini API); a job naming a shared context must
// have been resolved to its cache first (ContextCaches.UseCache). Requests go
// inline while their total stays under inlineLimit bytes (0:
// DefaultInlineLimit), else as a JSONL file uploaded with the Files API.
// displayName names the batch (genimg uses its chunk id).
//
// On Vertex AI the requests always go as JSONL through Cloud Storage
// (InCloudStorage, required there; batch_vertex.go): inlineLimit is unused
// and Submitted.InputFile is the input's gs:// URI.
func (c *Client) SubmitBatch(ctx context.Context, model, displayName string, jobs []job.Job, inlineLimit int, opts ...BatchOption) (Submitted, error) {
	if len(jobs) == 0 {
		return Submitted{}, fmt.Errorf("%w: gemini: an empty batch", job.ErrInvalid)
	}
	if c.backend == job.VertexAI {
		return c.submitVertex(ctx, model, displayName, jobs, batchOpts(opts))
	}
	if inlineLimit <= 0 {
		inlineLimit = DefaultInlineLimit
	}
	inlined := make([]*genai.InlinedRequest, 0, len(jobs))
	var lines bytes.Buffer
	for i, j := range jobs {
		if err := checkBatchJob(i, j, model); err != nil {
			return Submitted{}, err
		}
		contents, cfg, err := c.request(j)
		if err != nil {
			return Submitted{}, fmt.Errorf("batch job %s: %w", j.ID, err)
		}
		inlined = append(inlined, &genai.InlinedRequest{Contents: contents, Config: cfg, Metadata: map[string]string{BatchKey: j.ID}})
		line, err := json.Marshal(map[string]any{BatchKey: j.ID, "request": restRequest(contents, cfg)})
		if err != nil {
			return Submitted{}, fmt.Errorf("%w: gemini: encoding batch job %s: %v", job.ErrInvalid, j.ID, err)
		}
		lines.Write(line)
		lines.WriteByte('\n')
	}

	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	sub := Submitted{Bytes: lines.Len()}
	src := &genai.BatchJobSource{InlinedRequests: inlined}
	if lines.Len() >= inlineLimit {
		f, err := c.genai.Files.Upload(callCtx, bytes.NewReader(lines.Bytes()), &genai.UploadFileConfig{
			MIMEType: "application/jsonl", DisplayName: displayName + " requests",
		})
		if err != nil {
			return Submitted{}, fmt.Errorf("uploading batch %s: %w", displayName, classify(err, c.key))
		}
		src = &genai.BatchJobSource{FileName: f.Name}
		sub.InputFile = f.Name
	}
	bj, err := c.genai.Batches.Create(callCtx, model, src, &genai.CreateBatchJobConfig{DisplayName: displayName})
	if err != nil {
		return Submitted{}, fmt.Errorf("creating batch %s: %w", displayName, classify(err, c.key))
	}
	sub.Name = bj.Name
	return sub, nil
}

// restRequest is a generateContent body as the REST API spells it, for a
// JSONL line (the SDK's own converter is internal): the config's root
// fields at the root, the rest in generationConfig.
func restRequest(contents []*genai.Content, cfg *genai.GenerateContentConfig) map[string]any {
	req := map[string]any{"contents": contents}
	gen := map[string]any{}
	if len(cfg.ResponseModalities) > 0 {
		gen["responseModalities"] = cfg.ResponseModalities
	}
	if cfg.CandidateCount > 0 {
		gen["candidateCount"] = cfg.CandidateCount
	}
	if cfg.ImageConfig != nil {
		gen["imageConfig"] = cfg.ImageConfig
	}
	if cfg.ResponseMIMEType != "" {
		gen["responseMimeType"] = cfg.ResponseMIMEType
	}
	if cfg.ResponseSchema != nil {
		gen["responseSchema"] = cfg.ResponseSchema
	}
	if len(gen) > 0 {
		req["generationConfig"] = gen
	}
	if cfg.SystemInstruction != nil {
		req["systemInstruction"] = cfg.SystemInstruction
	}
	if len(cfg.SafetySettings) > 0 {
		req["safetySettings"] = cfg.SafetySettings
	}
	if cfg.CachedContent != "" {
		req["cachedContent"] = cfg.CachedContent
	}
	return req
}

// GetBatch reads a batch's state and, when it succeeded, its answers:
// inline, or downloaded from its responses file; on Vertex AI, read from
// its predictions in Cloud Storage (InCloudStorage, the same as at
// submission).
func (c *Client) GetBatch(ctx context.Context, name string, opts ...BatchOption) (BatchStatus, error) {
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	bj, err := c.genai.Batches.Get(callCtx, name, nil)
	if err != nil {
		return BatchStatus{}, fmt.Errorf("reading batch %s: %w", name, classify(err, c.key))
	}
	st := BatchStatus{Name: bj.Name, State: string(bj.State)}
	switch bj.State {
	case genai.JobStateSucceeded, genai.JobStateFailed, genai.JobStateCancelled, genai.JobStateExpired, genai.JobStatePartiallySucceeded:
		st.Done = true
	}
	if bj.Error != nil {
		st.Error = bj.Error.Message
	}
	if c.backend == job.VertexAI {
		// A Vertex AI batch that ended partly done still wrote the
		// predictions it has.
		if !st.Done {
			return st, nil
		}
		results, err := c.vertexResults(callCtx, bj, batchOpts(opts))
		if err != nil {
			return st, err
		}
		st.Results = results
		return st, nil
	}
	if !st.Done || bj.Dest == nil {
		return st, nil
	}
	for i, r := range bj.Dest.InlinedResponses {
		if r == nil {
			continue
		}
		st.Results = append(st.Results, c.batchResult(i, r.Metadata[BatchKey], r.Response, r.Error))
	}
	if bj.Dest.FileName != "" {
		data, err := c.genai.Files.Download(callCtx, &genai.File{DownloadURI: bj.Dest.FileName}, nil)
		if err != nil {
			return st, fmt.Errorf("downloading the answers of batch %s: %w", name, classify(err, c.key))
		}
		results, err := c.parseResponses(data)
		if err != nil {
			return st, fmt.Errorf("%w: batch %s: %v", job.ErrTransient, name, err)
		}
		st.Results = append(st.Results, results...)
	}
	return st, nil
}

// FindBatch looks a batch up by its display name, for a submitter that
// cannot tell whether an earlier SubmitBatch created it (a crash, or an
// answer lost on the way back): the resource name of the newest batch so
// named, or "" when there is none. On Vertex AI the list is filtered on
// display_name; the Gemini API cannot filter, so its batches are paged
// through (it keeps them for days, not for ever).
func (c *Client) FindBatch(ctx context.Context, displayName string) (string, error) {
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	cfg := &genai.ListBatchJobsConfig{PageSize: 100}
	if c.backend == job.VertexAI {
		cfg.Filter = fmt.Sprintf("display_name=%q", displayName)
	}
	var (
		found  string
		newest time.Time
	)
	page, err := c.genai.Batches.List(callCtx, cfg)
	for ; err == nil; page, err = page.Next(callCtx) {
		for _, b := range page.Items {
			if b != nil && b.DisplayName == displayName && (found == "" || !b.CreateTime.Before(newest)) {
				found, newest = b.Name, b.CreateTime
			}
		}
	}
	if !errors.Is(err, genai.ErrPageDone) {
		return "", fmt.Errorf("listing batches to find %q: %w", displayName, classify(err, c.key))
	}
	return found, nil
}

// CancelBatch cancels a batch (its finished requests are still billed).
func (c *Client) CancelBatch(ctx context.Context, name string) error {
	callCtx, cancel := c.callDeadline(ctx)
	defer cancel()
	if err := c.genai.Batches.Cancel(callCtx, name, nil); err != nil {
		return fmt.Errorf("cancelling batch %s: %w", name, classify(err, c.key))
	}
	return nil
}

// parseResponses reads a responses file: one {"key", "response" | "error"}
// per line.
func (c *Client) parseResponses(data []byte) ([]BatchResult, error) {
	var out []BatchResult
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	for i := 0; sc.Scan(); {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var l struct {
			Key      string                         `json:"key"`
			Response *genai.GenerateContentResponse `json:"response"`
			Error    *genai.JobError                `json:"error"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("responses line %d: %v", i+1, err)
		}
		out = append(out, c.batchResult(i, l.Key, l.Response, l.Error))
		i++
	}
	return out, sc.Err()
}

// batchResult turns one answer into a Result priced at the batch rate, or
// its error into one classified like a lone call's.
func (c *Client) batchResult(i int, key string, resp *genai.GenerateContentResponse, jerr *genai.JobError) BatchResult {
	br := BatchResult{Key: key, Index: i}
	if jerr != nil || resp == nil {
		code := 500
		msg := "the batch answered neither a response nor an error"
		if jerr != nil {
			msg = jerr.Message
			if jerr.Code != nil {
				code = int(*jerr.Code)
			}
		}
		br.Err = classify(genai.APIError{Code: code, Message: msg, Status: statusOf(code)}, c.key)
		return br
	}
	res := &Result{Attempts: 1}
	// The same reading as an online answer's, with the images in memory:
	// batch answers arrive whole, in the batch's results.
	fillResult(res, resp, &callState{mem: &memorySink{}})
	// Priced by the model that answered: a batch holds one model's jobs.
	res.CostUSD = c.Cost(resp.ModelVersion, res.Usage, true)
	br.Result = res
	return br
}

func statusOf(code int) string {
	switch {
	case code == 429:
		return "RESOURCE_EXHAUSTED"
	case code >= 500:
		return "UNAVAILABLE"
	case code == 400:
		return "INVALID_ARGUMENT"
	case code == 403:
		return "PERMISSION_DENIED"
	case code == 404:
		return "NOT_FOUND"
	}
	return "UNKNOWN"
}
