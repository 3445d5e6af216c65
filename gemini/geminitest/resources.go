package geminitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/genimg/genimg/job"
)

// resources are the stand-in's long-lived objects on the Gemini API paths:
// batches (batch.go), files (files.go) and context caches (caches.go).
type resources struct {
	mu      sync.Mutex
	now     func() time.Time
	seq     int
	batches map[string]*batch
	order   []string // batch names in creation order
	polls   int      // GETs a new batch stays running for
	files   map[string]*file
	uploads map[string]*file // open upload sessions by upload id
	caches  map[string]*cache
	deleted map[string]bool // deleted caches' names
	creates int             // caches created
	vertex  map[string]*vertexBatch
	vorder  []string // Vertex AI batch names in creation order
	// createStatus answers the next createFails batch creations
	// (FailBatchCreates); listCalls counts batch lists.
	createStatus, createFails int
	listCalls                 int
}

// init makes the maps; callers hold mu.
func (r *resources) init() {
	if r.batches == nil {
		r.batches, r.files, r.uploads, r.caches = map[string]*batch{}, map[string]*file{}, map[string]*file{}, map[string]*cache{}
		r.deleted = map[string]bool{}
		r.vertex = map[string]*vertexBatch{}
	}
	if r.now == nil {
		r.now = time.Now
	}
}

// id makes a resource id: lowercase letters and digits, as the service's.
func (r *resources) id(kind string) string {
	r.seq++
	return fmt.Sprintf("%s%04d", kind, r.seq)
}

// SetClock replaces the clock that cache expiry and batch times are read
// from.
func (h *Handler) SetClock(now func() time.Time) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	h.res.now = now
}

var (
	batchCreatePath = regexp.MustCompile(`^/v1beta/models/([^/:]+):batchGenerateContent$`)
	batchPath       = regexp.MustCompile(`^/v1beta/batches/([a-z0-9-]+)(:cancel)?$`)
	batchesPath     = regexp.MustCompile(`^/v1beta/batches$`)
	uploadPath      = regexp.MustCompile(`^/upload/v1beta/files$`)
	filePath        = regexp.MustCompile(`^/v1beta/files/([a-z0-9-]+)(:download)?$`)
	cachesPath      = regexp.MustCompile(`^/v1beta/cachedContents$`)
	cachePath       = regexp.MustCompile(`^/v1beta/cachedContents/([a-z0-9-]+)$`)
)

// serveResource answers the batch, file and cache endpoints, and checks a
// generateContent request's cachedContent before it is answered. It reports
// whether it wrote the answer.
func (h *Handler) serveResource(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	if vertexBatchPath.MatchString(p) { // batch_vertex.go
		h.serveVertexBatch(w, r)
		return true
	}
	var m []string
	switch {
	case geminiPath.MatchString(p):
		return h.checkCachedContent(w, r)
	case batchCreatePath.MatchString(p), batchPath.MatchString(p), batchesPath.MatchString(p), uploadPath.MatchString(p),
		filePath.MatchString(p), cachesPath.MatchString(p), cachePath.MatchString(p):
	default:
		return false
	}
	if apiErr := h.authenticate(r, job.GeminiAPI); apiErr != nil {
		apiErr.write(w)
		return true
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		newAPIError(413, "").write(w)
		return true
	}
	h.res.mu.Lock()
	h.res.init()
	h.res.mu.Unlock()
	switch {
	case r.Method == http.MethodPost && batchCreatePath.MatchString(p):
		m = batchCreatePath.FindStringSubmatch(p)
		h.createBatch(w, m[1], body)
	case r.Method == http.MethodGet && batchesPath.MatchString(p):
		h.listBatches(w, r)
	case batchPath.MatchString(p):
		m = batchPath.FindStringSubmatch(p)
		switch {
		case r.Method == http.MethodGet && m[2] == "":
			h.getBatch(w, "batches/"+m[1])
		case r.Method == http.MethodPost && m[2] == ":cancel":
			h.setBatchState("batches/"+m[1], "BATCH_STATE_CANCELLED")
			writeJSON(w, map[string]any{})
		default:
			newAPIError(404, "").write(w)
		}
	case r.Method == http.MethodPost && uploadPath.MatchString(p):
		h.upload(w, r, body)
	case r.Method == http.MethodGet && filePath.MatchString(p):
		m = filePath.FindStringSubmatch(p)
		h.getFile(w, "files/"+m[1], m[2] == ":download")
	case r.Method == http.MethodPost && cachesPath.MatchString(p):
		h.createCache(w, body)
	case cachePath.MatchString(p):
		m = cachePath.FindStringSubmatch(p)
		switch r.Method {
		case http.MethodGet:
			h.getCache(w, "cachedContents/"+m[1])
		case http.MethodDelete:
			h.deleteCache(w, "cachedContents/"+m[1])
		default:
			newAPIError(404, "").write(w)
		}
	default:
		newAPIError(404, fmt.Sprintf("The requested method %s is not allowed for %s.", r.Method, p)).write(w)
	}
	return true
}

// extend lays batch, caching and structured output over a generateContent answer:
// JSON text for structured output, and cached tokens counted from the
// cache's content.
func (h *Handler) extend(resp *response, req *GenerateContentRequest, b Behavior) {
	if req == nil || resp == nil {
		return
	}
	if req.CachedContent != "" {
		if tokens, ok := h.cacheTokens(req.CachedContent); ok {
			u := &resp.UsageMetadata
			delta := tokens - u.CachedContentTokenCount
			u.CachedContentTokenCount = tokens
			u.PromptTokenCount += delta
			u.TotalTokenCount += delta
			if len(u.PromptTokensDetails) > 0 {
				u.PromptTokensDetails[0].TokenCount += delta
			}
			u.CacheTokensDetails = []modalityCount{{"TEXT", tokens}}
		}
	}
	if g := req.GenerationConfig; g != nil && g.ResponseMIMEType == "application/json" {
		text := answerJSON(g.ResponseSchema, b.BadJSON)
		for i := range resp.Candidates {
			c := resp.Candidates[i].Content
			if c == nil {
				continue
			}
			for k := range c.Parts {
				if c.Parts[k].InlineData == nil {
					c.Parts[k].Text = text
				}
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	json.NewEncoder(w).Encode(v)
}

// generateOne answers one request of a batch as generateContent would,
// without latency, hanging or scripted failures: an answer, or the error a
// lone call would have got.
func (h *Handler) generateOne(model string, raw json.RawMessage) (*response, Behavior, *APIError) {
	return h.generateOneOn(Request{Backend: job.GeminiAPI}, model, raw)
}

// generateOneOn is generateOne on the backend (and Vertex AI project and
// location) of at.
func (h *Handler) generateOneOn(at Request, model string, raw json.RawMessage) (*response, Behavior, *APIError) {
	// A batch request may name its model; generateContent's body may not.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, Behavior{}, badRequest("Invalid JSON payload received in a batch request.")
	}
	if m, ok := fields["model"]; ok {
		var name string
		json.Unmarshal(m, &name)
		model = strings.TrimPrefix(name, "models/")
		delete(fields, "model")
	}
	body, _ := json.Marshal(fields)
	decoded, apiErr := decodeRequest(body)
	if apiErr != nil {
		return nil, Behavior{}, apiErr
	}
	req := Request{Backend: at.Backend, Project: at.Project, Location: at.Location, Model: model, Body: body, Decoded: decoded}
	if apiErr := h.checkModel(req); apiErr != nil {
		return nil, Behavior{}, apiErr
	}
	v, apiErr := validate(decoded, at.Backend, model)
	if apiErr != nil {
		return nil, Behavior{}, apiErr
	}
	if decoded.CachedContent != "" {
		if _, ok := h.cacheTokens(decoded.CachedContent); !ok && h.cacheKnown(decoded.CachedContent) {
			return nil, Behavior{}, cacheNotFound()
		}
	}
	b, err := ParseDirectives(v.text)
	if err != nil {
		return nil, Behavior{}, badRequest(err.Error())
	}
	switch {
	case b.QuotaDay:
		return nil, b, h.quotaError(true, b)
	case b.Status == 429:
		return nil, b, h.quotaError(false, b)
	case b.Status != 0:
		return nil, b, newAPIError(b.Status, "")
	}
	h.calls.Add(1)
	resp := h.answer(decoded, v, b, req)
	h.extend(resp, decoded, b)
	return resp, b, nil
}

// bodyOf reads a request body and puts it back for the next reader.
func bodyOf(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	return b, err
}
