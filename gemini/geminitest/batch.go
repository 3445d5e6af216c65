package geminitest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Batch states as the Gemini API spells them (the SDK maps them to
// JOB_STATE_*).
const (
	BatchPending   = "BATCH_STATE_PENDING"
	BatchRunning   = "BATCH_STATE_RUNNING"
	BatchSucceeded = "BATCH_STATE_SUCCEEDED"
	BatchFailed    = "BATCH_STATE_FAILED"
	BatchCancelled = "BATCH_STATE_CANCELLED"
	BatchExpired   = "BATCH_STATE_EXPIRED"
)

// batch is one batch (batches/ID).
type batch struct {
	Name, Model, DisplayName, State string
	Created, Updated                time.Time
	pollsLeft                       int
	finishing                       bool
	// requests are inline requests (request and metadata); file is the
	// input file's name otherwise.
	requests []inlineRequest
	file     string
	output   map[string]any
}

type inlineRequest struct {
	Request  json.RawMessage   `json:"request"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// A BatchInfo describes a batch the stand-in holds, for tests.
type BatchInfo struct {
	Name, Model, DisplayName, State string
	// Requests is the number of inline requests; InputFile the input
	// file's name when the batch came as a JSONL file.
	Requests  int
	InputFile string
}

func open(state string) bool { return state == BatchPending || state == BatchRunning }

// SetBatchPolls makes batches created from now on stay running for n GETs
// of their state before they finish (default 0: a batch finishes at its
// first GET).
func (h *Handler) SetBatchPolls(n int) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	h.res.polls = n
}

// SetBatchState forces a batch's state, e.g. BatchExpired or BatchFailed.
func (h *Handler) SetBatchState(name, state string) { h.setBatchState(name, state) }

func (h *Handler) setBatchState(name, state string) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	if b, ok := h.res.batches[name]; ok {
		b.State, b.Updated = state, h.res.now()
	}
}

// Batches describes every batch, in creation order.
func (h *Handler) Batches() []BatchInfo {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	var out []BatchInfo
	for _, name := range h.res.order {
		b := h.res.batches[name]
		out = append(out, BatchInfo{Name: b.Name, Model: b.Model, DisplayName: b.DisplayName, State: b.State, Requests: len(b.requests), InputFile: b.file})
	}
	return out
}

// FailBatchCreates makes the next n batch creations (on either backend)
// answer status, e.g. 503 (transient) or 400 (refused for good), creating
// nothing.
func (h *Handler) FailBatchCreates(status, n int) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	h.res.createStatus, h.res.createFails = status, n
}

// createFault is the scripted answer of a batch creation, if any; callers
// hold mu.
func (r *resources) createFault() *APIError {
	if r.createFails <= 0 {
		return nil
	}
	r.createFails--
	return newAPIError(r.createStatus, "")
}

// listBatches answers GET batches: every batch, oldest first, pageSize
// (default 50) at a time, as operations.
func (h *Handler) listBatches(w http.ResponseWriter, r *http.Request) {
	size, _ := strconv.Atoi(r.URL.Query().Get("pageSize"))
	if size <= 0 || size > 1000 {
		size = 50
	}
	from, _ := strconv.Atoi(r.URL.Query().Get("pageToken"))
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.listCalls++
	ops := []any{}
	end := min(from+size, len(h.res.order))
	for _, name := range h.res.order[min(from, end):end] {
		ops = append(ops, h.res.batches[name].operation())
	}
	out := map[string]any{"operations": ops}
	if end < len(h.res.order) {
		out["nextPageToken"] = strconv.Itoa(end)
	}
	writeJSON(w, out)
}

// BatchLists is how many times batches were listed (either backend).
func (h *Handler) BatchLists() int {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	return h.res.listCalls
}

func (h *Handler) createBatch(w http.ResponseWriter, model string, body []byte) {
	var req struct {
		Batch struct {
			DisplayName string `json:"displayName"`
			InputConfig struct {
				Requests *struct {
					Requests []inlineRequest `json:"requests"`
				} `json:"requests"`
				FileName string `json:"fileName"`
			} `json:"inputConfig"`
		} `json:"batch"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		badRequest("Invalid JSON payload received. " + err.Error()).write(w)
		return
	}
	if apiErr := h.checkModel(Request{Backend: "gemini-api", Model: model}); apiErr != nil {
		apiErr.write(w)
		return
	}
	in := req.Batch.InputConfig
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	if apiErr := h.res.createFault(); apiErr != nil {
		apiErr.write(w)
		return
	}
	b := &batch{Model: model, DisplayName: req.Batch.DisplayName, State: BatchPending, pollsLeft: h.res.polls}
	switch {
	case in.FileName != "" && in.Requests != nil:
		badRequest("Only one of input_config.file_name and input_config.requests may be set.").write(w)
		return
	case in.FileName != "":
		if _, ok := h.res.files[in.FileName]; !ok {
			newAPIError(404, "File "+in.FileName+" not found.").write(w)
			return
		}
		b.file = in.FileName
	case in.Requests != nil && len(in.Requests.Requests) > 0:
		b.requests = in.Requests.Requests
	default:
		badRequest("* BatchGenerateContentRequest.batch.input_config: input_config is empty\n").write(w)
		return
	}
	b.Name = "batches/" + h.res.id("batch")
	b.Created = h.res.now()
	b.Updated = b.Created
	h.res.batches[b.Name] = b
	h.res.order = append(h.res.order, b.Name)
	writeJSON(w, b.operation())
}

// operation is a batch as the service answers it: a long-running operation
// whose metadata is the batch.
func (b *batch) operation() map[string]any {
	md := map[string]any{
		"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
		"name":  b.Name, "model": "models/" + b.Model, "displayName": b.DisplayName, "state": b.State,
		"createTime": b.Created.UTC().Format(time.RFC3339Nano), "updateTime": b.Updated.UTC().Format(time.RFC3339Nano),
	}
	op := map[string]any{"name": b.Name, "metadata": md}
	if !open(b.State) {
		md["endTime"] = b.Updated.UTC().Format(time.RFC3339Nano)
		op["done"] = true
		if b.output != nil {
			md["output"] = b.output
			op["response"] = map[string]any{"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"}
		}
	}
	return op
}

func (h *Handler) getBatch(w http.ResponseWriter, name string) {
	h.res.mu.Lock()
	b, ok := h.res.batches[name]
	if !ok {
		h.res.mu.Unlock()
		newAPIError(404, fmt.Sprintf("Batch %s not found.", name)).write(w)
		return
	}
	finish := false
	if open(b.State) && !b.finishing {
		if b.pollsLeft > 0 {
			b.pollsLeft--
			b.State, b.Updated = BatchRunning, h.res.now()
		} else {
			b.finishing, finish = true, true
		}
	}
	h.res.mu.Unlock()
	if finish {
		// Answered outside the lock: answering reads the caches.
		h.finishBatch(b)
	}
	h.res.mu.Lock()
	op := b.operation()
	h.res.mu.Unlock()
	writeJSON(w, op)
}

// finishBatch answers every request of b and marks it succeeded: a batch
// whose requests failed one by one still succeeds, with an error in each
// failed request's place (a batch that finishes partly failed).
func (h *Handler) finishBatch(b *batch) {
	entry := func(resp *response, apiErr *APIError) map[string]any {
		if apiErr != nil {
			return map[string]any{"error": map[string]any{"code": apiErr.Code, "message": apiErr.Message, "status": apiErr.Status}}
		}
		return map[string]any{"response": resp}
	}
	var output map[string]any
	if b.file == "" {
		var answers []any
		for _, r := range b.requests {
			resp, beh, apiErr := h.generateOne(b.Model, r.Request)
			e := entry(resp, apiErr)
			if len(r.Metadata) > 0 {
				e["metadata"] = r.Metadata
			}
			answers = append(answers, e)
			if beh.Twice {
				answers = append(answers, e)
			}
		}
		output = map[string]any{"inlinedResponses": map[string]any{"inlinedResponses": answers}}
	} else {
		h.res.mu.Lock()
		in := h.res.files[b.file].Data
		h.res.mu.Unlock()
		var out bytes.Buffer
		sc := bufio.NewScanner(bytes.NewReader(in))
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var r struct {
				Key     string          `json:"key"`
				Request json.RawMessage `json:"request"`
			}
			var e map[string]any
			var beh Behavior
			if err := json.Unmarshal(line, &r); err != nil || len(r.Request) == 0 {
				e = entry(nil, badRequest("Invalid JSONL line: expected {\"key\", \"request\"}."))
			} else {
				var resp *response
				var apiErr *APIError
				resp, beh, apiErr = h.generateOne(b.Model, r.Request)
				e = entry(resp, apiErr)
			}
			e["key"] = r.Key
			line, _ = json.Marshal(e)
			out.Write(line)
			out.WriteByte('\n')
			if beh.Twice {
				out.Write(line)
				out.WriteByte('\n')
			}
		}
		h.res.mu.Lock()
		f := &file{Name: "files/" + h.res.id("responses"), DisplayName: b.Name + " responses", MIMEType: "application/jsonl", Data: out.Bytes(), Created: h.res.now()}
		h.res.files[f.Name] = f
		h.res.mu.Unlock()
		output = map[string]any{"responsesFile": f.Name}
	}
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	b.finishing = false
	if open(b.State) { // not expired or cancelled meanwhile
		b.State, b.Updated, b.output = BatchSucceeded, h.res.now(), output
	}
}
