package gemini

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genai"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// answer is one canned HTTP answer of the model.
type answer struct {
	name   string
	status int
	body   string
	// images are the bytes the answer's kept (non-thought) images decode
	// to, in order.
	images [][]byte
	// finishMessage is candidates[0].finishMessage, which the SDK drops on
	// the Gemini API backend.
	finishMessage string
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// answers covers every outcome, text+image, several candidates, thoughts,
// safety ratings, usage by modality, escapes and errors with details.
func answers() []answer {
	png := append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(1_700_000, 1)...)
	small := append([]byte("\x89PNG\r\n\x1a\n"), randomBytes(3000, 2)...)
	jpeg := append([]byte("\xff\xd8\xff\xe0"), randomBytes(70_001, 3)...)
	b64 := base64.StdEncoding.EncodeToString
	// Every '/' escaped, as some JSON encoders write it, and one \u escape.
	escaped := strings.ReplaceAll(b64(small), "/", `\/`)
	escaped = strings.Replace(escaped, "A", `\u0041`, 1)
	usage := `"usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":1290,"totalTokenCount":1297,"thoughtsTokenCount":3,"cachedContentTokenCount":2,
		"promptTokensDetails":[{"modality":"TEXT","tokenCount":7}],"candidatesTokensDetails":[{"modality":"IMAGE","tokenCount":1290}]}`
	ratings := `"safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"NEGLIGIBLE","probabilityScore":0.01,"severity":"HARM_SEVERITY_LOW","severityScore":0.2},{"category":"HARM_CATEGORY_SEXUALLY_EXPLICIT","probability":"HIGH","blocked":true}]`
	return []answer{
		{name: "text and image", status: 200, images: [][]byte{png},
			body: `{"candidates":[{"content":{"role":"model","parts":[{"text":"Here it is"},{"inlineData":{"mimeType":"image/png","data":"` + b64(png) + `"}}]},"finishReason":"STOP","index":0,` + ratings + `}],` +
				usage + `,"modelVersion":"gemini-2.5-flash-image","responseId":"r-1"}`},
		{name: "data before mimeType, pretty-printed", status: 200, images: [][]byte{small},
			body: "{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n          {\n            \"inlineData\": {\n              \"data\": \"" + b64(small) + "\",\n              \"mimeType\": \"image/png\"\n            }\n          }\n        ],\n        \"role\": \"model\"\n      },\n      \"finishReason\": \"STOP\"\n    }\n  ],\n  " + usage + ",\n  \"modelVersion\": \"m\",\n  \"responseId\": \"r-2\"\n}\n"},
		{name: "several candidates", status: 200, images: [][]byte{small, jpeg, png},
			body: `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + b64(small) + `"}},{"inlineData":{"mimeType":"image/jpeg","data":"` + b64(jpeg) + `"}}]},"finishReason":"STOP","index":0},` +
				`{"content":{"parts":[{"text":"second"},{"inlineData":{"mimeType":"image/png","data":"` + b64(png) + `"}}]},"finishReason":"STOP","index":1}],` + usage + `}`},
		{name: "thoughts before and after the image", status: 200, images: [][]byte{png},
			body: `{"candidates":[{"content":{"parts":[{"thought":true,"inlineData":{"mimeType":"image/png","data":"` + b64(small) + `"}},` +
				`{"inlineData":{"mimeType":"image/jpeg","data":"` + b64(jpeg) + `"},"thought":true},{"text":"thinking","thought":true},` +
				`{"inlineData":{"mimeType":"image/png","data":"` + b64(png) + `"},"thought":false,"thoughtSignature":"c2ln"}]},"finishReason":"STOP"}]}`},
		{name: "escaped base64", status: 200, images: [][]byte{small},
			body: `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image\/png","data":"` + escaped + `"}}]},"finishReason":"STOP"}],"responseId":"r-\"q\"\\"}`},
		{name: "empty data", status: 200,
			body:          `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":""}},{"text":"no image"}]},"finishReason":"NO_IMAGE","finishMessage":"The model did not generate an image."}]}`,
			finishMessage: "The model did not generate an image."},
		{name: "image safety with a message", status: 200, finishMessage: "Unable to show the generated image.",
			body: `{"candidates":[{"content":{"role":"model"},"finishReason":"IMAGE_SAFETY","finishMessage":"Unable to show the generated image.","index":0,` + ratings + `}],` + usage + `,"modelVersion":"m","responseId":"r-3"}`},
		{name: "prompt blocked", status: 200,
			body: `{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","blockReasonMessage":"no",` + ratings + `},` + usage + `,"modelVersion":"m","responseId":"r-4"}`},
		{name: "text only, unknown finish reason", status: 200,
			body: `{"candidates":[{"content":{"parts":[{"text":"I can't draw that"},{"text":"sorry"}]},"finishReason":"SOMETHING_NEW","avgLogprobs":-0.5e-3,"citationMetadata":{"citations":[{"startIndex":1,"uri":"https://x"}]}}],"modelStatus":{"modelStage":"STABLE"}}`},
		{name: "429 with retry info and quota", status: 429,
			body: `{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"},{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"m","quotaId":"GenerateRequestsPerDayPerProjectPerModel"}]}]}}`},
		{name: "400 bad key", status: 400,
			body: `{"error":{"code":400,"message":"API key not valid","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}`},
		{name: "503 plain text", status: 503, body: "upstream unavailable"},
		{name: "truncated answer", status: 200, body: `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` + b64(small)[:999]},
		{name: "bad base64", status: 200, body: `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AAAA!AAA"}}]}}]}`},
		{name: "data after padding", status: 200, body: `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA==AAAA"}}]}}]}`},
	}
}

// bytesEqual compares byte slices whole: cmp's element-wise walk of
// megabyte images takes seconds.
var bytesEqual = cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })

func serveAnswer(t *testing.T, a answer) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(a.status)
		io.WriteString(w, a.body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sdkClient(t *testing.T, url string, backend job.Backend, hc *http.Client) *genai.Client {
	cc := &genai.ClientConfig{HTTPClient: hc, HTTPOptions: genai.HTTPOptions{BaseURL: url}}
	if backend == job.VertexAI {
		cc.Backend, cc.Project, cc.Location = genai.BackendVertexAI, "p", "us-central1"
	} else {
		cc.Backend, cc.APIKey = genai.BackendGeminiAPI, "k"
	}
	c, err := genai.NewClient(t.Context(), cc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFirstPassMatchesSDK sends each answer to the SDK as it is, and to the
// SDK behind the first pass (decode.go): the responses must be equal once
// the streamed images are put back, the images must be the answer's
// bytes, errors must be the same genai.APIError, and the first pass must
// keep finishMessage.
func TestFirstPassMatchesSDK(t *testing.T) {
	contents := genai.Text("draw")
	for _, backend := range []job.Backend{job.GeminiAPI, job.VertexAI} {
		for _, a := range answers() {
			t.Run(string(backend)+"/"+a.name, func(t *testing.T) {
				srv := serveAnswer(t, a)
				plain := sdkClient(t, srv.URL, backend, srv.Client())
				ours := sdkClient(t, srv.URL, backend, withAnswerTransport(srv.Client()))

				want, wantErr := plain.Models.GenerateContent(t.Context(), job.DefaultModel, contents, nil)
				st := newCallState(nil)
				got, gotErr := ours.Models.GenerateContent(st.context(t.Context()), job.DefaultModel, contents, nil)

				if (wantErr != nil) != (gotErr != nil) {
					t.Fatalf("errors: SDK %v, first pass %v", wantErr, gotErr)
				}
				if wantErr != nil {
					var wantAPI, gotAPI genai.APIError
					if errors.As(wantErr, &wantAPI) != errors.As(gotErr, &gotAPI) {
						t.Fatalf("APIError: SDK %v, first pass %v", wantErr, gotErr)
					}
					if diff := cmp.Diff(wantAPI, gotAPI); diff != "" {
						t.Errorf("APIError (-SDK +first pass):\n%s", diff)
					}
					if diff := cmp.Diff(classify(wantErr, "").Error(), classify(gotErr, "").Error()); errors.As(wantErr, &wantAPI) && diff != "" {
						t.Errorf("classified (-SDK +first pass):\n%s", diff)
					}
					// A malformed answer fails both; the SDK's mapToStruct
					// error would classify as permanent by accident, the
					// first pass's as transient, like a JSON syntax error:
					// the service or the wire glitched.
					if errors.As(wantErr, &wantAPI) {
						if errors.Is(classify(wantErr, ""), job.ErrTransient) != errors.Is(classify(gotErr, ""), job.ErrTransient) {
							t.Errorf("retryable: SDK %v, first pass %v", classify(wantErr, ""), classify(gotErr, ""))
						}
					} else if !errors.Is(classify(gotErr, ""), job.ErrTransient) {
						t.Errorf("malformed answer classified %v, want transient", classify(gotErr, ""))
					}
					return
				}
				var images [][]byte
				for _, c := range got.Candidates {
					if c.Content == nil {
						continue
					}
					for _, p := range c.Content.Parts {
						if p.InlineData == nil {
							continue
						}
						if bytes.HasPrefix(p.InlineData.Data, []byte(markerPrefix)) {
							i, ok := streamedIndex(p.InlineData.Data)
							if !ok || !st.kept[i] {
								// A thought's image, dropped unread: the SDK's
								// bytes are not compared.
								p.InlineData.Data = nil
								continue
							}
							p.InlineData.Data = st.mem.images[i].Bytes()
							images = append(images, p.InlineData.Data)
						}
					}
				}
				for _, c := range want.Candidates {
					for _, p := range partsOf(c) {
						if p.Thought && p.InlineData != nil {
							p.InlineData.Data = nil
						}
					}
				}
				want.SDKHTTPResponse, got.SDKHTTPResponse = nil, nil
				if diff := cmp.Diff(want, got, bytesEqual); diff != "" {
					t.Errorf("response (-SDK +first pass):\n%s", diff)
				}
				if diff := cmp.Diff(a.images, images, bytesEqual); diff != "" {
					t.Errorf("images (-want +got):\n%.2000s", diff)
				}
				var fm string
				if len(st.finishMessages) > 0 {
					fm = st.finishMessages[0]
				}
				if fm != a.finishMessage {
					t.Errorf("finishMessage = %q, want %q", fm, a.finishMessage)
				}
			})
		}
	}
}

func partsOf(c *genai.Candidate) []*genai.Part {
	if c == nil || c.Content == nil {
		return nil
	}
	return c.Content.Parts
}

// recordingSink keeps what GenerateTo streams, and can fail on demand.
type recordingSink struct {
	opened  []string // "index mime"
	kept    map[int][]byte
	dropped int
	failAt  int // fail the write that would pass this many bytes; 0: never
}

type recordingWriter struct {
	s     *recordingSink
	index int
	buf   bytes.Buffer
}

func (s *recordingSink) OpenImage(index int, mime string) (io.WriteCloser, error) {
	s.opened = append(s.opened, fmt.Sprint(index, " ", mime))
	return &recordingWriter{s: s, index: index}, nil
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if w.s.failAt > 0 && w.buf.Len()+len(p) > w.s.failAt {
		return 0, fmt.Errorf("%w: storage is down", job.ErrTransient)
	}
	return w.buf.Write(p)
}

func (w *recordingWriter) Close() error {
	if w.s.kept == nil {
		w.s.kept = map[int][]byte{}
	}
	w.s.kept[w.index] = w.buf.Bytes()
	return nil
}

func (w *recordingWriter) CloseWithError(error) error { w.s.dropped++; return nil }

// TestGenerateToMatchesGenerate checks that the streamed path and the
// in-memory path give the same Result and bytes for every answer, that a
// broken stream or a failing sink ends the call without a retry, and that
// thoughts are dropped.
func TestGenerateToMatchesGenerate(t *testing.T) {
	for _, a := range answers() {
		t.Run(a.name, func(t *testing.T) {
			srv := serveAnswer(t, a)
			mc := modelConfigURL(srv.URL, job.GeminiAPI)
			mc.MaxAttempts = 2
			noWait := WithSleep(func(ctx context.Context, d time.Duration) error { return nil })
			c, err := New(t.Context(), mc, config.DefaultPrices(), WithHTTPClient(srv.Client()), noWait)
			if err != nil {
				t.Fatal(err)
			}
			j := job.Job{Model: job.DefaultModel, Prompt: "draw"}
			mem, memErr := c.Generate(t.Context(), j)
			sink := &recordingSink{}
			str, strErr := c.GenerateTo(t.Context(), j, sink)
			if (memErr != nil) != (strErr != nil) {
				t.Fatalf("errors: Generate %v, GenerateTo %v", memErr, strErr)
			}
			if memErr != nil {
				if errors.Is(memErr, job.ErrTransient) != errors.Is(strErr, job.ErrTransient) {
					t.Errorf("retryable: Generate %v, GenerateTo %v", memErr, strErr)
				}
				if len(sink.kept) != 0 {
					t.Errorf("failed GenerateTo kept %d images", len(sink.kept))
				}
				if a.status == 200 && len(sink.opened) > 0 && str.Attempts != 1 {
					t.Errorf("GenerateTo made %d attempts after its stream broke, want 1", str.Attempts)
				}
				return
			}
			var streamed [][]byte
			for i := range len(sink.opened) {
				if b, ok := sink.kept[i]; ok {
					streamed = append(streamed, b)
				}
			}
			var inMemory [][]byte
			for _, img := range mem.Images {
				inMemory = append(inMemory, img.Data)
			}
			if diff := cmp.Diff(a.images, inMemory, bytesEqual); diff != "" {
				t.Errorf("Generate images (-want +got):\n%.2000s", diff)
			}
			if diff := cmp.Diff(a.images, streamed, bytesEqual); diff != "" {
				t.Errorf("GenerateTo images (-want +got):\n%.2000s", diff)
			}
			mem.Images, mem.ModelTime, str.ModelTime = nil, 0, 0
			mem.StreamedImages = len(a.images)
			// An image's index is its place among the kept images in
			// memory, the sink's index when streamed: each path's own.
			for _, r := range []*Result{mem, str} {
				for _, p := range r.ModelTurn {
					if p.Image != nil {
						p.Image.Index = 0
					}
				}
			}
			if diff := cmp.Diff(mem, str, bytesEqual); diff != "" {
				t.Errorf("Result (-Generate +GenerateTo):\n%s", diff)
			}
			if mem.FinishMessage != a.finishMessage {
				t.Errorf("FinishMessage = %q, want %q", mem.FinishMessage, a.finishMessage)
			}
		})
	}
}

// TestGenerateToSinkFailure: storage failing mid-image ends the call with
// storage's category, drops the image, and does not call the model again.
func TestGenerateToSinkFailure(t *testing.T) {
	a := answers()[0]
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, a.body)
	}))
	t.Cleanup(srv.Close)
	c, err := New(t.Context(), modelConfigURL(srv.URL, job.GeminiAPI), config.DefaultPrices(), WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordingSink{failAt: 100_000}
	res, err := c.GenerateTo(t.Context(), job.Job{Model: job.DefaultModel, Prompt: "draw"}, sink)
	got := []any{errors.Is(err, job.ErrTransient), err != nil && strings.Contains(err.Error(), "storage is down"), int(calls.Load()), res.Attempts, len(sink.kept), sink.dropped}
	want := []any{true, true, 1, 1, 0, 1}
	if diff := cmp.Diff(want, got, bytesEqual); diff != "" {
		t.Errorf("transient, message, model calls, attempts, kept, dropped (-want +got):\n%s\nerror: %v", diff, err)
	}
}
