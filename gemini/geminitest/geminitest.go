// Package geminitest is a stand-in for the Gemini API and Vertex AI
// generateContent endpoints of image models: an http.Handler that speaks the
// real REST protocol, for tests and for the local stack.
//
// It serves
//
//	POST /{version}/models/{model}:generateContent                                     (Gemini API)
//	POST /{version}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent (Vertex AI)
//
// and the same paths with :streamGenerateContent (?alt=sse answers one
// server-sent event). On the Gemini API path the key is taken from the
// x-goog-api-key header or the key query parameter.
//
// Like the service, it validates what it is sent — unknown JSON fields, bad
// aspect ratios, modalities and safety settings, bad or missing API key,
// unknown model, bad base64, cachedContent with systemInstruction, labels on
// the Gemini API — answering with the service's error body
// {"error": {"code", "message", "status", "details"}} and status. It answers
// with real PNG images of the exact size for the aspect ratio (an edit with
// no ratio keeps its input's shape, else 1:1), 1.2–2 MB at 1024×1024 with
// photographic grain, deterministic for the same request and visibly
// derived from the prompt and the input image. usageMetadata is plausible:
// text ≈ characters/4 tokens, 258 per input image, 1290 per output image,
// by modality.
//
// # Directives
//
// A prompt (any text part of the request) can steer the answer with
// directives of the form [[standin:NAME]] or [[standin:NAME=VALUE]]; several
// may be combined. An unknown directive is answered with 400.
//
//	[[standin:block]]              prompt blocked: promptFeedback.blockReason SAFETY, no candidates
//	[[standin:block=OTHER]]        … with that blockReason (PROHIBITED_CONTENT, IMAGE_SAFETY, …)
//	[[standin:finish=IMAGE_SAFETY]] candidate stopped with that finishReason, no image
//	                               (IMAGE_OTHER, IMAGE_PROHIBITED_CONTENT, RECITATION, …)
//	[[standin:no-image]]           same as finish=NO_IMAGE
//	[[standin:text-only]]          a text answer, no image, finishReason STOP
//	[[standin:status=503]]         every call answers that HTTP error (429 carries a per-minute
//	                               QuotaFailure and RetryInfo)
//	[[standin:retry-delay=20ms]]   the RetryInfo.retryDelay of a 429 (default Options.RetryDelay)
//	[[standin:quota=day]]          429 for a per-day quota (QuotaFailure GenerateRequestsPerDay…)
//	[[standin:fail=2]]             the first 2 calls with this prompt answer 503, then success;
//	[[standin:fail=2:429]]         … with another status
//	[[standin:latency=500ms]]      answer after that long
//	[[standin:hang]]               never answer (until the client gives up or the server closes)
//	[[standin:json=bad]]           a JSON answer (responseMimeType application/json) that breaks its schema
//	[[standin:twice]]              in a batch, answer this request twice under the same key
//
// It also serves the Gemini API's batches (POST models/{model}:batchGenerateContent,
// GET batches (the list, paged), GET and :cancel batches/{id}; inline requests or a JSONL input file; answers
// inline or as a responses file; finished at the first GET unless SetBatchPolls,
// or forced with SetBatchState), files (the resumable upload under
// /upload/v1beta/files, GET files/{id} and :download) and context caches
// (POST, GET, DELETE cachedContents; expiry by TTL on the SetClock clock;
// generateContent naming an expired cache answers 403) — see resources.go —
// and Vertex AI batch prediction jobs (POST, GET and :cancel
// projects/{p}/locations/{l}/batchPredictionJobs, and their list, filtered
// by display_name="…"; FailBatchCreates scripts refusals; JSONL input read and
// predictions written through Options.ReadGCS and WriteGCS) — see
// batch_vertex.go.
//
// Go tests can script the next answers instead with Server.Enqueue, and read
// what was sent with Server.Requests.
package geminitest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/genimg/genimg/job"
)

// Options configure a Handler.
type Options struct {
	// APIKey, when set, is the only Gemini API key accepted; otherwise any
	// non-empty key is, except "invalid". Vertex AI requests are not
	// authenticated unless VertexToken is set.
	APIKey string
	// VertexToken, when set, is the bearer token Vertex AI requests must
	// carry.
	VertexToken string
	// Models are the known models (default: every model in job's
	// capability table).
	Models []string
	// Latency is added to every answer (the load test uses 2 s).
	Latency time.Duration
	// RetryDelay is a 429's RetryInfo.retryDelay unless a directive or
	// Behavior says otherwise (default 1 s).
	RetryDelay time.Duration
	// Record keeps every request for Requests. NewServer turns it on; the
	// local stack leaves it off, so memory does not grow with traffic.
	Record bool
	// MaxBodyBytes bounds a request body (default 100 MiB, the Gemini
	// API's inline limit); larger ones are answered 413.
	MaxBodyBytes int64
	// CacheImages is how many encoded PNGs to keep (default 16, about
	// 30 MB); negative disables the cache.
	CacheImages int
	// ReadGCS and WriteGCS reach Cloud Storage for Vertex AI batch
	// prediction jobs (batch_vertex.go): their JSONL input is read, and
	// their predictions written, through them. Tests wire them to
	// fake-gcs-server; without them a Vertex AI batch fails.
	ReadGCS  func(uri string) ([]byte, error)
	WriteGCS func(uri string, data []byte) error
}

// A Request is one request the stand-in received.
type Request struct {
	Method string
	// Path is the URL path; Query its query string.
	Path   string
	Query  url.Values
	Header http.Header
	// Backend is job.GeminiAPI or job.VertexAI, by path.
	Backend job.Backend
	// Model is the model named in the path; Project and Location are set
	// on Vertex AI paths.
	Model, Project, Location string
	// Stream is true for :streamGenerateContent.
	Stream bool
	// Body is the raw body; Decoded is Body decoded, when it decoded.
	Body    []byte
	Decoded *GenerateContentRequest
}

// Handler is the stand-in model as an http.Handler.
type Handler struct {
	opts  Options
	cache *pngCache

	mu       sync.Mutex
	requests []Request
	queue    []Behavior
	fails    map[string]int // calls seen per prompt, for fail=N

	inFlight, maxInFlight atomic.Int64
	calls                 atomic.Int64
	closed                chan struct{}
	closeOnce             sync.Once

	res resources // batches, files and caches (resources.go)

	watchers sync.Map // *func(Request) → struct{}: Watch
}

// Watch calls fn with every generateContent request the handler receives,
// decoded, until stop is called: a way to see requests without recording
// them all (Options.Record). fn runs on the request's goroutine.
func (h *Handler) Watch(fn func(Request)) (stop func()) {
	key := &fn
	h.watchers.Store(key, struct{}{})
	return func() { h.watchers.Delete(key) }
}

// NewHandler returns the stand-in model as an http.Handler.
func NewHandler(opts Options) *Handler {
	if len(opts.Models) == 0 {
		opts.Models = job.KnownModels()
	}
	if opts.RetryDelay == 0 {
		opts.RetryDelay = time.Second
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 100 << 20
	}
	if opts.CacheImages == 0 {
		opts.CacheImages = 16
	}
	return &Handler{opts: opts, cache: newPNGCache(opts.CacheImages), fails: map[string]int{}, closed: make(chan struct{})}
}

// Enqueue scripts the next answers: each request takes the first queued
// Behavior (laid over any directives in its prompt) until the queue is
// empty.
func (h *Handler) Enqueue(bs ...Behavior) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.queue = append(h.queue, bs...)
}

// Requests returns the requests received so far (with Options.Record).
func (h *Handler) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.requests)
}

// Calls is how many generateContent requests arrived, recorded or not.
func (h *Handler) Calls() int { return int(h.calls.Load()) }

// MaxInFlight is the most requests that were being answered at once.
func (h *Handler) MaxInFlight() int { return int(h.maxInFlight.Load()) }

// Release makes every hanging or waiting request return at once; the
// handler answers later requests without waiting. Server.Close calls it.
func (h *Handler) Release() { h.closeOnce.Do(func() { close(h.closed) }) }

// A Server is the Handler on a loopback httptest server.
type Server struct {
	*Handler
	// URL is the base URL, for GOOGLE_GEMINI_BASE_URL or
	// GOOGLE_VERTEX_BASE_URL.
	URL string
	srv *httptest.Server
}

// NewServer starts a stand-in on 127.0.0.1 with requests recorded. Options
// are optional; at most the first is used.
func NewServer(opts ...Options) *Server {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.Record = true
	h := NewHandler(o)
	srv := httptest.NewServer(h)
	return &Server{Handler: h, URL: srv.URL, srv: srv}
}

// Warm draws and encodes an answer's image once, ahead of traffic, so that
// a fresh stand-in's first answer does not also pay for growing its heap
// (about 40 ms against 20–25 ms for the next ones on two cores). It is
// not a call: nothing is counted, recorded or cached.
func (h *Handler) Warm() {
	b := drawPNG(0, 1024, 1024, nil)
	_, _ = json.Marshal(answerPart{InlineData: &answerBlob{MIMEType: "image/png", Data: b}})
}

// Close releases hanging requests and shuts the server down.
func (s *Server) Close() {
	s.Release()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Client is an http.Client for the server (plain HTTP on loopback).
func (s *Server) Client() *http.Client { return s.srv.Client() }

var (
	geminiPath = regexp.MustCompile(`^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$`)
	vertexPath = regexp.MustCompile(`^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):(generateContent|streamGenerateContent)$`)
)

// ServeHTTP answers one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.serveResource(w, r) { // batches, files, caches (resources.go)
		return
	}
	req := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone()}
	var method string
	if m := geminiPath.FindStringSubmatch(r.URL.Path); m != nil {
		req.Backend, req.Model, method = job.GeminiAPI, m[2], m[3]
	} else if m := vertexPath.FindStringSubmatch(r.URL.Path); m != nil {
		req.Backend, req.Project, req.Location, req.Model, method = job.VertexAI, m[2], m[3], m[4], m[5]
	} else {
		newAPIError(404, fmt.Sprintf("The requested URL %s was not found on this server.", r.URL.Path)).write(w)
		return
	}
	req.Stream = method == "streamGenerateContent"
	h.calls.Add(1)
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for {
		max := h.maxInFlight.Load()
		if n <= max || h.maxInFlight.CompareAndSwap(max, n) {
			break
		}
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	req.Body = body
	var decoded *GenerateContentRequest
	var apiErr *APIError
	switch {
	case errors.As(err, new(*http.MaxBytesError)):
		apiErr = newAPIError(413, fmt.Sprintf("Request payload size exceeds the limit: %d bytes.", h.opts.MaxBodyBytes))
	case err != nil:
		apiErr = newAPIError(400, "Could not read the request body.")
	case r.Method != http.MethodPost:
		apiErr = newAPIError(404, fmt.Sprintf("The requested method %s is not allowed for %s.", r.Method, r.URL.Path))
	default:
		apiErr = h.authenticate(r, req.Backend)
		if apiErr == nil {
			decoded, apiErr = decodeRequest(body)
			req.Decoded = decoded
		}
	}
	if h.opts.Record {
		h.mu.Lock()
		h.requests = append(h.requests, req)
		h.mu.Unlock()
	}
	h.watchers.Range(func(k, _ any) bool {
		(*k.(*func(Request)))(req)
		return true
	})
	if apiErr != nil {
		apiErr.write(w)
		return
	}
	if apiErr := h.checkModel(req); apiErr != nil {
		apiErr.write(w)
		return
	}
	v, apiErr := validate(decoded, req.Backend, req.Model)
	if apiErr != nil {
		apiErr.write(w)
		return
	}

	b, err := ParseDirectives(v.text)
	if err != nil {
		badRequest(err.Error()).write(w)
		return
	}
	h.mu.Lock()
	if len(h.queue) > 0 {
		b = b.merge(h.queue[0])
		h.queue = h.queue[1:]
	}
	calls := 0
	if b.FailFirst > 0 {
		h.fails[v.prompt]++
		calls = h.fails[v.prompt]
	}
	h.mu.Unlock()

	if !h.wait(r.Context(), h.opts.Latency+b.Latency) {
		return
	}
	if b.Hang {
		if r.Context().Err() == nil && !h.wait(r.Context(), -1) && r.Context().Err() == nil {
			// Released while hanging (the server is closing): an
			// honest 503, never an empty 200 the client would take
			// for an answer without images.
			newAPIError(503, "The stand-in is shutting down.").write(w)
		}
		return
	}
	switch {
	case b.QuotaDay:
		h.quotaError(true, b).write(w)
		return
	case b.Status == 429:
		h.quotaError(false, b).write(w)
		return
	case b.Status != 0:
		newAPIError(b.Status, "").write(w)
		return
	case calls > 0 && calls <= b.FailFirst:
		if b.FailStatus == 429 {
			h.quotaError(false, b).write(w)
			return
		}
		newAPIError(b.FailStatus, "").write(w)
		return
	}

	resp := h.answer(decoded, v, b, req)
	h.extend(resp, decoded, b) // structured output and cached tokens (resources.go)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	if req.Stream && r.URL.Query().Get("alt") == "sse" {
		w.Header().Set("Content-Type", "text/event-stream")
		var buf bytes.Buffer
		json.NewEncoder(&buf).Encode(resp)
		fmt.Fprintf(w, "data: %s\r\n\r\n", bytes.TrimSpace(buf.Bytes()))
		return
	}
	if req.Stream {
		json.NewEncoder(w).Encode([]*response{resp})
		return
	}
	json.NewEncoder(w).Encode(resp)
}

// wait sleeps for d (forever if d < 0), returning false if the client left
// or the handler was released first.
func (h *Handler) wait(ctx context.Context, d time.Duration) bool {
	if d == 0 {
		return true
	}
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-ctx.Done():
		return false
	case <-h.closed:
		return d > 0
	}
}

func (h *Handler) authenticate(r *http.Request, backend job.Backend) *APIError {
	if backend == job.VertexAI {
		if h.opts.VertexToken != "" && r.Header.Get("Authorization") != "Bearer "+h.opts.VertexToken {
			return newAPIError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
				map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "ACCESS_TOKEN_TYPE_UNSUPPORTED", "domain": "googleapis.com"})
		}
		return nil
	}
	key := r.Header.Get("x-goog-api-key")
	if key == "" {
		key = r.URL.Query().Get("key")
	}
	switch {
	case key == "":
		return newAPIError(403, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.")
	case key == "invalid" || h.opts.APIKey != "" && key != h.opts.APIKey:
		// The service answers a wrong key with 400, not 401: the
		// ErrorInfo reason is what tells it apart from a bad request.
		return newAPIError(400, "API key not valid. Please pass a valid API key.",
			map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com",
				"metadata": map[string]any{"service": "generativelanguage.googleapis.com"}})
	}
	return nil
}

func (h *Handler) checkModel(req Request) *APIError {
	if slices.Contains(h.opts.Models, req.Model) {
		return nil
	}
	if req.Backend == job.VertexAI {
		return newAPIError(404, fmt.Sprintf("Publisher Model `projects/%s/locations/%s/publishers/google/models/%s` was not found or your project does not have access to it. Please ensure you are using a valid model version.", req.Project, req.Location, req.Model))
	}
	return newAPIError(404, fmt.Sprintf("models/%s is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods.", req.Model))
}

func (h *Handler) quotaError(day bool, b Behavior) *APIError {
	quota, metric := "GenerateRequestsPerMinutePerProjectPerModel", "generativelanguage.googleapis.com/generate_content_requests"
	if day {
		quota = "GenerateRequestsPerDayPerProjectPerModel"
	}
	delay := b.RetryDelay
	if delay == 0 {
		delay = h.opts.RetryDelay
	}
	return newAPIError(429, "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
		map[string]any{
			"@type": "type.googleapis.com/google.rpc.QuotaFailure",
			"violations": []any{map[string]any{
				"quotaMetric": metric, "quotaId": quota,
				"quotaDimensions": map[string]any{"location": "global", "model": "gemini-2.5-flash-image"},
				"quotaValue":      "10",
			}},
		},
		map[string]any{"@type": "type.googleapis.com/google.rpc.Help", "links": []any{map[string]any{
			"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}}},
		// Durations are JSON strings of seconds with up to 9 decimals.
		map[string]any{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": fmt.Sprintf("%gs", delay.Seconds())},
	)
}

// Token accounting: text ≈ characters/4, 258 tokens per
// input image, 1290 per output image.
const (
	tokensPerInputImage  = 258
	tokensPerOutputImage = 1290
	cachedTokens         = 1024 // what a cache is taken to hold
)

func textTokens(s string) int32 { return int32((len([]rune(s)) + 3) / 4) }

// answer builds a 200 answer.
func (h *Handler) answer(req *GenerateContentRequest, v validated, b Behavior, r Request) *response {
	resp := &response{ModelVersion: r.Model, ResponseID: h.responseID(r.Body)}
	if r.Backend == job.VertexAI {
		resp.CreateTime = time.Now().UTC().Format(time.RFC3339Nano)
	}
	u := &resp.UsageMetadata
	promptText := textTokens(v.text)
	u.PromptTokenCount = promptText + int32(len(v.images))*tokensPerInputImage
	u.PromptTokensDetails = []modalityCount{{"TEXT", promptText}}
	if len(v.images) > 0 {
		u.PromptTokensDetails = append(u.PromptTokensDetails, modalityCount{"IMAGE", int32(len(v.images)) * tokensPerInputImage})
	}
	if req.CachedContent != "" {
		u.CachedContentTokenCount = cachedTokens
		u.PromptTokenCount += cachedTokens
		u.PromptTokensDetails[0].TokenCount += cachedTokens
		u.CacheTokensDetails = []modalityCount{{"TEXT", cachedTokens}}
	}
	defer func() { u.TotalTokenCount = u.PromptTokenCount + u.CandidatesTokenCount + u.ThoughtsTokenCount }()

	if b.Block != "" {
		resp.PromptFeedback = &promptFeedback{
			BlockReason: b.Block,
			SafetyRatings: []safetyRating{
				{Category: "HARM_CATEGORY_SEXUALLY_EXPLICIT", Probability: "NEGLIGIBLE"},
				{Category: "HARM_CATEGORY_HATE_SPEECH", Probability: "NEGLIGIBLE"},
				{Category: "HARM_CATEGORY_HARASSMENT", Probability: "NEGLIGIBLE"},
				{Category: "HARM_CATEGORY_DANGEROUS_CONTENT", Probability: "HIGH", Blocked: true},
			},
		}
		return resp
	}

	wantImage := len(v.modalities) == 0 || slices.Contains(v.modalities, "IMAGE")
	wantText := len(v.modalities) == 0 || slices.Contains(v.modalities, "TEXT")
	var textOut, imagesOut int32
	for i := range v.candidates {
		c := candidate{Index: i}
		switch {
		case b.Finish != "" && b.Finish != "STOP":
			c.FinishReason = b.Finish
			c.FinishMessage = finishMessages[b.Finish]
			if c.FinishMessage == "" {
				c.FinishMessage = "Unable to show the generated image."
			}
			if strings.Contains(b.Finish, "SAFETY") {
				c.SafetyRatings = []safetyRating{{Category: "HARM_CATEGORY_SEXUALLY_EXPLICIT", Probability: "MEDIUM", Blocked: true}}
			}
			if b.Finish == "NO_IMAGE" {
				text := "I can describe the scene, but I could not draw it."
				c.Content = &answerContent{Role: "model", Parts: []answerPart{{Text: text}}}
				textOut += textTokens(text)
			}
		case b.TextOnly || !wantImage:
			text := "Here is a description instead of an image: " + summary(v.prompt)
			c.Content = &answerContent{Role: "model", Parts: []answerPart{{Text: text}}}
			c.FinishReason = "STOP"
			textOut += textTokens(text)
		default:
			c.FinishReason = "STOP"
			c.Content = &answerContent{Role: "model"}
			if wantText {
				text := "Here is the image: " + summary(v.prompt)
				c.Content.Parts = append(c.Content.Parts, answerPart{Text: text})
				textOut += textTokens(text)
			}
			c.Content.Parts = append(c.Content.Parts, answerPart{InlineData: &answerBlob{MIMEType: "image/png", Data: h.image(v, i)}})
			imagesOut++
			if v.capability.Thinking {
				// The first part and every image part are signed
				// (signatures.go).
				c.Content.Parts[0].ThoughtSignature = newSignature()
				if len(c.Content.Parts) > 1 {
					c.Content.Parts[len(c.Content.Parts)-1].ThoughtSignature = newSignature()
				}
			}
			if v.grounding {
				q := summary(v.prompt)
				c.GroundingMetadata = &groundingMetadata{
					WebSearchQueries: []string{q},
					SearchEntryPoint: map[string]string{"renderedContent": "<div class=\"container\">" + html.EscapeString(q) + "</div>"},
					GroundingChunks:  []map[string]any{{"web": map[string]string{"uri": "https://example.com/standin/" + url.PathEscape(q), "title": "example.com"}}},
				}
			}
		}
		resp.Candidates = append(resp.Candidates, c)
	}
	perImage := int32(tokensPerOutputImage)
	if t := v.capability.ImageTokens(v.imageSize); t > 0 {
		perImage = t
	}
	u.CandidatesTokenCount = textOut + imagesOut*perImage
	if imagesOut > 0 {
		u.CandidatesTokensDetails = append(u.CandidatesTokensDetails, modalityCount{"IMAGE", imagesOut * perImage})
	}
	if textOut > 0 {
		u.CandidatesTokensDetails = append(u.CandidatesTokensDetails, modalityCount{"TEXT", textOut})
	}
	return resp
}

var finishMessages = map[string]string{
	"IMAGE_SAFETY":             "Unable to show the generated image. The image was filtered out because it violated Google's Generative AI Prohibited Use policy.",
	"IMAGE_PROHIBITED_CONTENT": "Unable to show the generated image: it may contain prohibited content.",
	"IMAGE_RECITATION":         "Unable to show the generated image: it may be a recitation of existing work.",
	"IMAGE_OTHER":              "Unable to show the generated image.",
	"NO_IMAGE":                 "The model did not generate an image.",
}

func summary(prompt string) string {
	prompt = directivePattern.ReplaceAllString(prompt, "")
	if r := []rune(strings.TrimSpace(prompt)); len(r) > 60 {
		return string(r[:60]) + "…"
	}
	return strings.TrimSpace(prompt)
}

// image draws (or takes from the cache) candidate i's image.
func (h *Handler) image(v validated, i int) []byte {
	parts := [][]byte{[]byte(v.prompt), {byte(i)}}
	for _, img := range v.images {
		parts = append(parts, img.hash[:])
	}
	w, ht := v.size()
	k := imageKey{seed: seedOf(parts...), width: w, height: ht}
	if b, ok := h.cache.get(k); ok {
		return b
	}
	var src *source
	if len(v.images) > 0 && v.images[0].data != nil {
		src = decodeSource(v.images[0].data)
	}
	b := drawPNG(k.seed, w, ht, src)
	h.cache.put(k, b)
	return b
}

func (h *Handler) responseID(body []byte) string {
	sum := sha256.Sum256(append(fmt.Appendf(nil, "%d:", h.calls.Load()), body...))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}
