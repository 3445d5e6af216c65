package geminitest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/genimg/genimg/job"
)

// Vertex AI batch prediction jobs (POST, GET, list and :cancel
// projects/{p}/locations/{l}/batchPredictionJobs): the input is one JSONL
// object in Cloud Storage, read through Options.ReadGCS, each line
// {"request": GenerateContentRequest}; the predictions are written through
// Options.WriteGCS to OUTPUT_PREFIX/prediction-model-<time>/predictions.jsonl,
// one line per request: {"status", "processed_time", "request" (echoed,
// labels included), "response"}, status "" on success and the error's text
// otherwise. A batch finishes at its first GET unless SetBatchPolls.

// Vertex AI job states.
const (
	VertexPending   = "JOB_STATE_PENDING"
	VertexRunning   = "JOB_STATE_RUNNING"
	VertexSucceeded = "JOB_STATE_SUCCEEDED"
	VertexFailed    = "JOB_STATE_FAILED"
	VertexCancelled = "JOB_STATE_CANCELLED"
	VertexExpired   = "JOB_STATE_EXPIRED"
)

var vertexBatchPath = regexp.MustCompile(`^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/batchPredictionJobs(?:/([0-9]+)(:cancel)?)?$`)

// vertexBatch is one batch prediction job.
type vertexBatch struct {
	Name, Model, DisplayName, State string
	Project, Location               string
	Input, OutputPrefix, OutputDir  string
	Created, Updated                time.Time
	pollsLeft                       int
	finishing                       bool
	lines, ok, failed               int
	err                             *APIError
}

func vertexOpen(state string) bool { return state == VertexPending || state == VertexRunning }

// VertexBatches describes every Vertex AI batch, in creation order;
// InputFile is the gs:// input, Requests the lines read once it finished.
func (h *Handler) VertexBatches() []BatchInfo {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	var out []BatchInfo
	for _, name := range h.res.vorder {
		b := h.res.vertex[name]
		out = append(out, BatchInfo{Name: b.Name, Model: b.Model, DisplayName: b.DisplayName, State: b.State, Requests: b.lines, InputFile: b.Input})
	}
	return out
}

// SetVertexBatchState forces a Vertex AI batch's state, e.g.
// VertexExpired.
func (h *Handler) SetVertexBatchState(name, state string) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	if b, ok := h.res.vertex[name]; ok {
		b.State, b.Updated = state, h.res.now()
	}
}

func (h *Handler) serveVertexBatch(w http.ResponseWriter, r *http.Request) {
	if apiErr := h.authenticate(r, job.VertexAI); apiErr != nil {
		apiErr.write(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		newAPIError(413, "").write(w)
		return
	}
	h.res.mu.Lock()
	h.res.init()
	h.res.mu.Unlock()
	m := vertexBatchPath.FindStringSubmatch(r.URL.Path)
	project, location, id, cancel := m[2], m[3], m[4], m[5] != ""
	name := fmt.Sprintf("projects/%s/locations/%s/batchPredictionJobs/%s", project, location, id)
	switch {
	case id == "" && r.Method == http.MethodPost:
		h.createVertexBatch(w, project, location, body)
	case id == "" && r.Method == http.MethodGet:
		h.listVertexBatches(w, r, project, location)
	case id != "" && cancel && r.Method == http.MethodPost:
		h.res.mu.Lock()
		b, ok := h.res.vertex[name]
		if ok && vertexOpen(b.State) {
			b.State, b.Updated = VertexCancelled, h.res.now()
		}
		h.res.mu.Unlock()
		if !ok {
			newAPIError(404, "BatchPredictionJob "+name+" not found.").write(w)
			return
		}
		writeJSON(w, map[string]any{})
	case id != "" && !cancel && r.Method == http.MethodGet:
		h.getVertexBatch(w, name)
	default:
		newAPIError(404, fmt.Sprintf("The requested method %s is not allowed for %s.", r.Method, r.URL.Path)).write(w)
	}
}

func (h *Handler) createVertexBatch(w http.ResponseWriter, project, location string, body []byte) {
	var req struct {
		DisplayName string `json:"displayName"`
		Model       string `json:"model"`
		InputConfig struct {
			InstancesFormat string `json:"instancesFormat"`
			GCSSource       *struct {
				URIs []string `json:"uris"`
			} `json:"gcsSource"`
		} `json:"inputConfig"`
		OutputConfig struct {
			PredictionsFormat string `json:"predictionsFormat"`
			GCSDestination    *struct {
				OutputURIPrefix string `json:"outputUriPrefix"`
			} `json:"gcsDestination"`
		} `json:"outputConfig"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		badRequest("Invalid JSON payload received. " + err.Error()).write(w)
		return
	}
	model := strings.TrimPrefix(req.Model, "publishers/google/models/")
	if apiErr := h.checkModel(Request{Backend: job.VertexAI, Project: project, Location: location, Model: model}); apiErr != nil {
		apiErr.write(w)
		return
	}
	in, out := req.InputConfig, req.OutputConfig
	switch {
	case in.InstancesFormat != "jsonl" || in.GCSSource == nil || len(in.GCSSource.URIs) != 1 || !strings.HasPrefix(in.GCSSource.URIs[0], "gs://"):
		badRequest("The stand-in takes one gs:// JSONL input: inputConfig {instancesFormat: jsonl, gcsSource.uris: [gs://…]}.").write(w)
		return
	case out.PredictionsFormat != "jsonl" || out.GCSDestination == nil || !strings.HasPrefix(out.GCSDestination.OutputURIPrefix, "gs://"):
		badRequest("The stand-in writes JSONL to Cloud Storage: outputConfig {predictionsFormat: jsonl, gcsDestination.outputUriPrefix: gs://…}.").write(w)
		return
	}
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	if apiErr := h.res.createFault(); apiErr != nil {
		apiErr.write(w)
		return
	}
	h.res.seq++
	b := &vertexBatch{
		Name:  fmt.Sprintf("projects/%s/locations/%s/batchPredictionJobs/%d", project, location, 1000000+h.res.seq),
		Model: model, DisplayName: req.DisplayName, State: VertexPending, Project: project, Location: location,
		Input: in.GCSSource.URIs[0], OutputPrefix: out.GCSDestination.OutputURIPrefix, pollsLeft: h.res.polls,
	}
	b.Created = h.res.now()
	b.Updated = b.Created
	h.res.vertex[b.Name] = b
	h.res.vorder = append(h.res.vorder, b.Name)
	writeJSON(w, b.resource())
}

// displayNameFilter is the one list filter the stand-in takes:
// display_name="…" (AIP-160).
var displayNameFilter = regexp.MustCompile(`^\s*display_name\s*=\s*"((?:[^"\\]|\\.)*)"\s*$`)

// listVertexBatches answers GET batchPredictionJobs: the project and
// location's jobs, oldest first, pageSize (default 100) at a time,
// filtered by display_name="…" when asked.
func (h *Handler) listVertexBatches(w http.ResponseWriter, r *http.Request, project, location string) {
	q := r.URL.Query()
	want, filtered := "", false
	if f := q.Get("filter"); f != "" {
		m := displayNameFilter.FindStringSubmatch(f)
		if m == nil {
			badRequest(fmt.Sprintf("Unsupported filter %q: the stand-in takes display_name=\"…\".", f)).write(w)
			return
		}
		unq, err := strconv.Unquote(`"` + m[1] + `"`)
		if err != nil {
			badRequest(fmt.Sprintf("Invalid filter %q: %v", f, err)).write(w)
			return
		}
		want, filtered = unq, true
	}
	size, _ := strconv.Atoi(q.Get("pageSize"))
	if size <= 0 || size > 1000 {
		size = 100
	}
	from, _ := strconv.Atoi(q.Get("pageToken"))
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.listCalls++
	var match []*vertexBatch
	for _, name := range h.res.vorder {
		b := h.res.vertex[name]
		if b.Project == project && b.Location == location && (!filtered || b.DisplayName == want) {
			match = append(match, b)
		}
	}
	jobs := []any{}
	end := min(from+size, len(match))
	for _, b := range match[min(from, end):end] {
		jobs = append(jobs, b.resource())
	}
	out := map[string]any{"batchPredictionJobs": jobs}
	if end < len(match) {
		out["nextPageToken"] = strconv.Itoa(end)
	}
	writeJSON(w, out)
}

// resource is the BatchPredictionJob as Vertex AI answers it.
func (b *vertexBatch) resource() map[string]any {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	res := map[string]any{
		"name": b.Name, "displayName": b.DisplayName, "model": "publishers/google/models/" + b.Model, "state": b.State,
		"inputConfig":  map[string]any{"instancesFormat": "jsonl", "gcsSource": map[string]any{"uris": []string{b.Input}}},
		"outputConfig": map[string]any{"predictionsFormat": "jsonl", "gcsDestination": map[string]any{"outputUriPrefix": b.OutputPrefix}},
		"createTime":   ts(b.Created), "updateTime": ts(b.Updated),
	}
	if b.State != VertexPending {
		res["startTime"] = ts(b.Created)
	}
	if !vertexOpen(b.State) {
		res["endTime"] = ts(b.Updated)
	}
	if b.OutputDir != "" {
		res["outputInfo"] = map[string]any{"gcsOutputDirectory": b.OutputDir}
		res["completionStats"] = map[string]any{"successfulCount": strconv.Itoa(b.ok), "failedCount": strconv.Itoa(b.failed)}
	}
	if b.err != nil {
		res["error"] = map[string]any{"code": b.err.Code, "message": b.err.Message}
	}
	return res
}

func (h *Handler) getVertexBatch(w http.ResponseWriter, name string) {
	h.res.mu.Lock()
	b, ok := h.res.vertex[name]
	if !ok {
		h.res.mu.Unlock()
		newAPIError(404, "BatchPredictionJob "+name+" not found.").write(w)
		return
	}
	finish := false
	if vertexOpen(b.State) && !b.finishing {
		if b.pollsLeft > 0 {
			b.pollsLeft--
			b.State, b.Updated = VertexRunning, h.res.now()
		} else {
			b.finishing, finish = true, true
		}
	}
	h.res.mu.Unlock()
	if finish {
		h.finishVertexBatch(b)
	}
	h.res.mu.Lock()
	res := b.resource()
	h.res.mu.Unlock()
	writeJSON(w, res)
}

// labelKey and labelVal are a valid label key and value on Vertex AI, at
// most 63 bytes each (checked apart: a bounded repetition compiles into that
// many copies of its class).
var (
	labelKey = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
	labelVal = regexp.MustCompile(`^[a-z0-9_-]*$`)
)

// finishVertexBatch reads the input, answers every line and writes the
// predictions; a batch whose input cannot be read or whose predictions
// cannot be written fails as a whole.
func (h *Handler) finishVertexBatch(b *vertexBatch) {
	h.res.mu.Lock()
	at := Request{Backend: job.VertexAI, Project: b.Project, Location: b.Location}
	dir := strings.TrimSuffix(b.OutputPrefix, "/") + "/prediction-model-" + h.res.now().UTC().Format("2006-01-02T15:04:05.000000Z")
	h.res.mu.Unlock()
	var out bytes.Buffer
	lines, ok, failed := 0, 0, 0
	var fail *APIError
	in, err := h.readGCS(b.Input)
	if err != nil {
		fail = newAPIError(400, fmt.Sprintf("Failed to read the input %s: %v", b.Input, err))
	}
	sc := bufio.NewScanner(bytes.NewReader(in))
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for fail == nil && sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		lines++
		var r struct {
			Request json.RawMessage `json:"request"`
		}
		var resp *response
		var beh Behavior
		var apiErr *APIError
		if err := json.Unmarshal(line, &r); err != nil || len(r.Request) == 0 {
			apiErr = badRequest(`Invalid JSONL line: expected {"request": …}.`)
		} else if apiErr = checkLabels(r.Request); apiErr == nil {
			resp, beh, apiErr = h.generateOneOn(at, b.Model, r.Request)
		}
		e := map[string]any{"processed_time": time.Now().UTC().Format(time.RFC3339Nano), "status": ""}
		if len(r.Request) > 0 {
			e["request"] = r.Request
		}
		if apiErr != nil {
			e["status"] = fmt.Sprintf("Error %d: %s (%s)", apiErr.Code, apiErr.Message, apiErr.Status)
			failed++
		} else {
			e["response"] = resp
			ok++
		}
		enc, _ := json.Marshal(e)
		out.Write(enc)
		out.WriteByte('\n')
		if beh.Twice {
			out.Write(enc)
			out.WriteByte('\n')
		}
	}
	if fail == nil {
		if err := h.writeGCS(dir+"/predictions.jsonl", out.Bytes()); err != nil {
			fail = newAPIError(500, fmt.Sprintf("Failed to write the predictions to %s: %v", dir, err))
		}
	}
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	b.finishing = false
	if !vertexOpen(b.State) { // cancelled or expired meanwhile
		return
	}
	b.Updated, b.lines = h.res.now(), lines
	if fail != nil {
		b.State, b.err = VertexFailed, fail
		return
	}
	b.State, b.OutputDir, b.ok, b.failed = VertexSucceeded, dir, ok, failed
}

// checkLabels checks a request's labels as Vertex AI does.
func checkLabels(raw json.RawMessage) *APIError {
	var r struct {
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return badRequest("Invalid JSON payload received. " + err.Error())
	}
	for k, v := range r.Labels {
		if len(k) > 63 || len(v) > 63 || !labelKey.MatchString(k) || !labelVal.MatchString(v) {
			return badRequest(fmt.Sprintf("Label %q: %q is invalid: keys and values are at most 63 lowercase letters, digits, '_' and '-', keys starting with a letter.", k, v))
		}
	}
	return nil
}

func (h *Handler) readGCS(uri string) ([]byte, error) {
	if h.opts.ReadGCS == nil {
		return nil, fmt.Errorf("the stand-in has no Options.ReadGCS")
	}
	return h.opts.ReadGCS(uri)
}

func (h *Handler) writeGCS(uri string, data []byte) error {
	if h.opts.WriteGCS == nil {
		return fmt.Errorf("the stand-in has no Options.WriteGCS")
	}
	return h.opts.WriteGCS(uri, data)
}
