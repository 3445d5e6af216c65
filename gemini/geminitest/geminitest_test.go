package geminitest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const geminiPathFlash = "/v1beta/models/gemini-2.5-flash-image:generateContent"
const vertexPathFlash = "/v1beta1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash-image:generateContent"

type errorBody struct {
	Error APIError `json:"error"`
}

// post sends a raw request the way any REST client would.
func post(t *testing.T, srv *Server, path, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("x-goog-api-key", key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestValidation(t *testing.T) {
	ok := `{"contents":[{"role":"user","parts":[{"text":"a cat"}]}]}`
	tests := []struct {
		name, path, key, body string
		wantCode              int
		wantStatus, wantMsg   string
	}{
		{"unknown field", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"aspect_ratio":"1:1"}`,
			400, "INVALID_ARGUMENT", `Unknown name "aspect_ratio"`},
		{"unknown nested field", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"aspectRatio":"1:1"}}`,
			400, "INVALID_ARGUMENT", `Unknown name "aspectRatio"`},
		{"bad aspect ratio", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"imageConfig":{"aspectRatio":"7:3"}}}`,
			400, "INVALID_ARGUMENT", "Unsupported aspect ratio: 7:3. Supported aspect ratios are: 9:16,"},
		{"bad modality", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"responseModalities":["PICTURE"]}}`,
			400, "INVALID_ARGUMENT", `Invalid value at 'generation_config.response_modalities[0]'`},
		{"unsupported modality", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"responseModalities":["AUDIO"]}}`,
			400, "INVALID_ARGUMENT", "Model does not support the requested response modalities: audio"},
		{"missing key", geminiPathFlash, "", ok, 403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"},
		{"bad key", geminiPathFlash, "invalid", ok, 400, "INVALID_ARGUMENT", "API key not valid"},
		{"unknown model", "/v1beta/models/gemini-0:generateContent", "k", ok, 404, "NOT_FOUND", "models/gemini-0 is not found for API version v1beta"},
		{"unknown model on Vertex", "/v1beta1/projects/p/locations/l/publishers/google/models/gemini-0:generateContent", "", ok,
			404, "NOT_FOUND", "Publisher Model `projects/p/locations/l/publishers/google/models/gemini-0` was not found"},
		{"bad base64", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"},{"inlineData":{"mimeType":"image/png","data":"%%%"}}]}]}`,
			400, "INVALID_ARGUMENT", "Base64 decoding failed"},
		{"bad image type", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"},{"inlineData":{"mimeType":"image/gif","data":"R0lG"}}]}]}`,
			400, "INVALID_ARGUMENT", "Unsupported MIME type: image/gif"},
		{"no contents", geminiPathFlash, "k", `{}`, 400, "INVALID_ARGUMENT", "contents is not specified"},
		{"empty parts", geminiPathFlash, "k", `{"contents":[{"parts":[]}]}`, 400, "INVALID_ARGUMENT", "contents.parts must not be empty"},
		{"cachedContent with systemInstruction", geminiPathFlash, "k",
			`{"contents":[{"parts":[{"text":"a"}]}],"cachedContent":"cachedContents/x","systemInstruction":{"parts":[{"text":"s"}]}}`,
			400, "INVALID_ARGUMENT", "CachedContent can not be used with GenerateContent request setting system_instruction"},
		{"labels on the Gemini API", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"labels":{"a":"b"}}`,
			400, "INVALID_ARGUMENT", `Unknown name "labels"`},
		{"bad safety category", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"safetySettings":[{"category":"HARM_CATEGORY_IMAGE_HATE","threshold":"OFF"}]}`,
			400, "INVALID_ARGUMENT", `Invalid value at 'safety_settings[0].category'`},
		{"candidate count", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"a"}]}],"generationConfig":{"candidateCount":9}}`,
			400, "INVALID_ARGUMENT", "candidate_count: must be between 1 and 8"},
		{"Vertex fileData must be gs://", vertexPathFlash, "", `{"contents":[{"parts":[{"text":"a"},{"fileData":{"mimeType":"image/png","fileUri":"https://x/y.png"}}]}]}`,
			400, "INVALID_ARGUMENT", "expected a gs:// URI"},
		{"unknown directive", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"[[standin:explode]]"}]}]}`,
			400, "INVALID_ARGUMENT", `unknown stand-in directive "[[standin:explode]]"`},
		{"unknown path", "/v1beta/files", "k", ok, 404, "NOT_FOUND", "was not found on this server"},
		{"injected 503", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"[[standin:status=503]]"}]}]}`,
			503, "UNAVAILABLE", "The model is overloaded"},
		{"injected 500", geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"[[standin:status=500]]"}]}]}`,
			500, "INTERNAL", "An internal error has occurred"},
	}
	srv := NewServer()
	t.Cleanup(srv.Close)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, srv, tt.path, tt.key, tt.body)
			var e errorBody
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %q is not the error shape: %v", body, err)
			}
			got := []any{code, e.Error.Code, e.Error.Status, strings.Contains(e.Error.Message, tt.wantMsg)}
			want := []any{tt.wantCode, tt.wantCode, tt.wantStatus, true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("HTTP status, code, status, message contains %q (-want +got):\n%s\nmessage: %s", tt.wantMsg, diff, e.Error.Message)
			}
		})
	}
}

func TestQuotaErrors(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	tests := []struct {
		prompt, wantQuota, wantDelay string
	}{
		{"[[standin:status=429]] [[standin:retry-delay=1.5s]]", "GenerateRequestsPerMinutePerProjectPerModel", "1.5s"},
		{"[[standin:quota=day]]", "GenerateRequestsPerDayPerProjectPerModel", "1s"},
	}
	for _, tt := range tests {
		code, body := post(t, srv, geminiPathFlash, "k", fmt.Sprintf(`{"contents":[{"parts":[{"text":%q}]}]}`, tt.prompt))
		var e errorBody
		json.Unmarshal(body, &e)
		var quota, delay string
		for _, d := range e.Error.Details {
			switch d["@type"] {
			case "type.googleapis.com/google.rpc.QuotaFailure":
				quota = d["violations"].([]any)[0].(map[string]any)["quotaId"].(string)
			case "type.googleapis.com/google.rpc.RetryInfo":
				delay = d["retryDelay"].(string)
			}
		}
		if diff := cmp.Diff([]any{429, "RESOURCE_EXHAUSTED", tt.wantQuota, tt.wantDelay}, []any{code, e.Error.Status, quota, delay}); diff != "" {
			t.Errorf("%s: status, quota, retryDelay (-want +got):\n%s", tt.prompt, diff)
		}
	}
}

func TestParseDirectives(t *testing.T) {
	tests := []struct {
		text    string
		want    Behavior
		wantErr bool
	}{
		{"a plain prompt", Behavior{}, false},
		{"[[standin:block]] x", Behavior{Block: "SAFETY"}, false},
		{"[[standin:block=other]]", Behavior{Block: "OTHER"}, false},
		{"[[standin:finish=IMAGE_SAFETY]]", Behavior{Finish: "IMAGE_SAFETY"}, false},
		{"[[standin:no-image]]", Behavior{Finish: "NO_IMAGE"}, false},
		{"[[standin:text-only]]", Behavior{TextOnly: true}, false},
		{"[[standin:status=429]][[standin:retry-delay=20ms]]", Behavior{Status: 429, RetryDelay: 20 * time.Millisecond}, false},
		{"[[standin:quota=day]]", Behavior{QuotaDay: true}, false},
		{"[[standin:fail=2]]", Behavior{FailFirst: 2, FailStatus: 503}, false},
		{"[[standin:fail=1:500]]", Behavior{FailFirst: 1, FailStatus: 500}, false},
		{"[[standin:latency=500ms]] [[standin:hang]]", Behavior{Latency: 500 * time.Millisecond, Hang: true}, false},
		{"[[standin:status=200]]", Behavior{}, true},
		{"[[standin:fail=0]]", Behavior{}, true},
		{"[[standin:latency=soon]]", Behavior{}, true},
		{"[[standin:blockk]]", Behavior{}, true},
	}
	for _, tt := range tests {
		got, err := ParseDirectives(tt.text)
		if (err != nil) != tt.wantErr || !cmp.Equal(tt.want, got) {
			t.Errorf("ParseDirectives(%q) = %+v, %v; want %+v, error %v", tt.text, got, err, tt.want, tt.wantErr)
		}
	}
}

// answerOf decodes a 200 answer loosely.
type answerOf struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text       string
				InlineData *struct{ MIMEType, Data string }
			}
		}
		FinishReason string
	}
	UsageMetadata struct {
		PromptTokenCount, CandidatesTokenCount, TotalTokenCount int32
		PromptTokensDetails, CandidatesTokensDetails            []modalityCount
	}
	ModelVersion, ResponseID string
}

func (a answerOf) image(t *testing.T) []byte {
	t.Helper()
	for _, c := range a.Candidates {
		for _, p := range c.Content.Parts {
			if p.InlineData != nil {
				b, err := base64.StdEncoding.DecodeString(p.InlineData.Data)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
	}
	t.Fatal("no image in the answer")
	return nil
}

func TestImagesBySizeAndWeight(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	for ratio, size := range map[string][2]int{"1:1": {1024, 1024}, "2:3": {832, 1248}, "3:2": {1248, 832}, "3:4": {864, 1184},
		"4:3": {1184, 864}, "4:5": {896, 1152}, "5:4": {1152, 896}, "9:16": {768, 1344}, "16:9": {1344, 768}, "21:9": {1536, 672}} {
		t.Run(ratio, func(t *testing.T) {
			body := fmt.Sprintf(`{"contents":[{"parts":[{"text":"a harbour at night, ratio %s"}]}],"generationConfig":{"responseModalities":["IMAGE"],"imageConfig":{"aspectRatio":%q}}}`, ratio, ratio)
			code, raw := post(t, srv, geminiPathFlash, "k", body)
			if code != 200 {
				t.Fatalf("status %d: %s", code, raw)
			}
			var a answerOf
			if err := json.Unmarshal(raw, &a); err != nil {
				t.Fatal(err)
			}
			img := a.image(t)
			decoded, err := png.Decode(bytes.NewReader(img))
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			b := decoded.Bounds()
			if got := [2]int{b.Dx(), b.Dy()}; got != size {
				t.Errorf("size = %v, want %v", got, size)
			}
			// Weight like a photograph: 1.2–2 MB at 1024×1024, the same
			// bytes per pixel at other sizes.
			perMP := float64(len(img)) / float64(size[0]*size[1]) * 1024 * 1024
			if perMP < 1.2e6 || perMP > 2e6 {
				t.Errorf("%d bytes, %.0f per 1024×1024: want 1.2–2 MB", len(img), perMP)
			}
		})
	}
}

func TestUsageAndStream(t *testing.T) {
	srv := NewServer()
	t.Cleanup(srv.Close)
	in := drawPNG(1, 64, 48, nil)
	body := fmt.Sprintf(`{"contents":[{"parts":[{"text":"abcdefgh"},{"inlineData":{"mimeType":"image/png","data":%q}}]}],"generationConfig":{"responseModalities":["IMAGE"]}}`,
		base64.StdEncoding.EncodeToString(in))
	code, raw := post(t, srv, geminiPathFlash, "k", body)
	if code != 200 {
		t.Fatalf("status %d: %s", code, raw)
	}
	var a answerOf
	json.Unmarshal(raw, &a)
	u := a.UsageMetadata
	got := []any{u.PromptTokenCount, u.CandidatesTokenCount, u.TotalTokenCount, u.PromptTokensDetails, u.CandidatesTokensDetails, a.ModelVersion, a.ResponseID != ""}
	want := []any{int32(2 + 258), int32(1290), int32(2 + 258 + 1290),
		[]modalityCount{{"TEXT", 2}, {"IMAGE", 258}}, []modalityCount{{"IMAGE", 1290}}, "gemini-2.5-flash-image", true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage, modelVersion, responseId (-want +got):\n%s", diff)
	}
	// 64×48 is 4:3: the edit keeps the shape.
	cfg, err := png.DecodeConfig(bytes.NewReader(a.image(t)))
	if err != nil || cfg.Width != 1184 || cfg.Height != 864 {
		t.Errorf("edit size = %dx%d (%v), want 1184x864", cfg.Width, cfg.Height, err)
	}

	code, raw = post(t, srv, strings.Replace(geminiPathFlash, ":generateContent", ":streamGenerateContent?alt=sse", 1), "k", body)
	data, ok := strings.CutPrefix(string(raw), "data: ")
	var s answerOf
	if code != 200 || !ok || json.Unmarshal([]byte(strings.TrimSpace(data)), &s) != nil || len(s.Candidates) != 1 {
		t.Errorf("stream: status %d, body %.80q: want one SSE event with a candidate", code, raw)
	}
}

func TestLatencyHangAndScripts(t *testing.T) {
	srv := NewServer(Options{Latency: 30 * time.Millisecond})
	t.Cleanup(srv.Close)
	text := `{"contents":[{"parts":[{"text":"[[standin:text-only]] [[standin:latency=20ms]]"}]}]}`
	start := time.Now()
	if code, _ := post(t, srv, geminiPathFlash, "k", text); code != 200 {
		t.Fatalf("status %d", code)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("answered in %v, want at least the 30 ms default + 20 ms directive", d)
	}
	srv.Enqueue(Behavior{Status: 502}, Behavior{Block: "OTHER"})
	c1, _ := post(t, srv, geminiPathFlash, "k", text)
	c2, raw := post(t, srv, geminiPathFlash, "k", text)
	c3, _ := post(t, srv, geminiPathFlash, "k", text)
	if diff := cmp.Diff([]int{502, 200, 200}, []int{c1, c2, c3}); diff != "" || !strings.Contains(string(raw), `"blockReason":"OTHER"`) {
		t.Errorf("scripted statuses (-want +got):\n%s\nsecond body: %.200s", diff, raw)
	}
	if n := len(srv.Requests()); n != 4 {
		t.Errorf("recorded %d requests, want 4", n)
	}

	// A hanging request returns when the server is released.
	done := make(chan int)
	go func() {
		code, _ := post(t, srv, geminiPathFlash, "k", `{"contents":[{"parts":[{"text":"[[standin:hang]]"}]}]}`)
		done <- code
	}()
	select {
	case <-done:
		t.Fatal("a hanging request answered")
	case <-time.After(100 * time.Millisecond):
	}
	srv.Release()
	select {
	case code := <-done:
		if code != 503 {
			t.Errorf("a released hanging request answered %d, want 503", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a hanging request outlived Release")
	}
}

// TestGoldenRequestsAccepted feeds the stand-in every request the real SDK
// sent in gemini's golden files: what the client sends, the stand-in takes.
func TestGoldenRequestsAccepted(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "*.json"))
	if err != nil || len(files) < 5 {
		t.Fatalf("golden files: %v, %d found; want at least 5", err, len(files))
	}
	srv := NewServer()
	t.Cleanup(srv.Close)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			path, key := geminiPathFlash, "k"
			if strings.HasPrefix(filepath.Base(f), "vertex-") {
				path, key = vertexPathFlash, ""
			}
			code, raw := post(t, srv, path, key, string(body))
			var a answerOf
			if code != 200 || json.Unmarshal(raw, &a) != nil || len(a.Candidates) == 0 {
				t.Errorf("status %d, body %.300s; want 200 with candidates", code, raw)
			}
		})
	}
}

func BenchmarkDrawPNG(b *testing.B) {
	b.ReportAllocs()
	var n int
	for i := 0; b.Loop(); i++ {
		n = len(drawPNG(uint64(i), 1024, 1024, nil))
	}
	b.ReportMetric(float64(n), "png-bytes")
}

func TestKeyInQuery(t *testing.T) {
	srv := NewServer(Options{APIKey: "right"})
	t.Cleanup(srv.Close)
	body := `{"contents":[{"parts":[{"text":"[[standin:text-only]] x"}]}]}`
	c1, _ := post(t, srv, geminiPathFlash+"?key=right", "", body)
	c2, _ := post(t, srv, geminiPathFlash+"?key=wrong", "", body)
	c3, _ := post(t, srv, geminiPathFlash, "right", body)
	if diff := cmp.Diff([]int{200, 400, 200}, []int{c1, c2, c3}); diff != "" {
		t.Errorf("key in query (right, wrong), key in header (-want +got):\n%s", diff)
	}
}
