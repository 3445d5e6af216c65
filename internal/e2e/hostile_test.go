package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/genimg/genimg/job"
)

// pngHeader is a PNG that declares w×h pixels and carries none: a valid
// signature and IHDR, then IEND. A decoder that trusted it would allocate
// w×h×3 bytes.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk("IHDR", ihdr)
	chunk("IEND", nil)
	return b.Bytes()
}

// gifBytes is a 1×1 GIF.
var gifBytes = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

func inline(data []byte) string {
	return fmt.Sprintf(`{"data": %q, "mimeType": "image/png"}`, base64.StdEncoding.EncodeToString(data))
}

func repeatJoin(s string, n int) string { return strings.TrimSuffix(strings.Repeat(s+", ", n), ", ") }

// Hostile HTTP requests are refused with a 4xx that says what is wrong,
// before any model call. (TestHTTPRejections covers unknown fields, bad
// ratios, a missing prompt, four images and a bucket not allowed.)
func TestHostileHTTP(t *testing.T) {
	truncated := testPNG(t, 64, 64)[:120]
	tests := []struct {
		name, body string
		header     map[string]string
		status     int
		text       string
	}{
		{"invalid JSON", `{"prompt": "x"`, nil, 400, "job"},
		{"JSON of the wrong shape", `["prompt", "x"]`, nil, 400, "job"},
		{"ten inline images", `{"prompt": "x", "images": [` + repeatJoin(inline(testPNG(t, 8, 8)), 10) + `]}`, nil, 400, "at most 3"},
		{"truncated PNG", `{"prompt": "x", "images": [` + inline(truncated) + `]}`, nil, 400, "truncated"},
		{"50000×50000 PNG header", `{"prompt": "x", "images": [` + inline(pngHeader(50000, 50000)) + `]}`, nil, 413, "pixels"},
		{"GIF named image/png", `{"prompt": "x", "images": [` + inline(gifBytes) + `]}`, nil, 400, "image/gif"},
		{"id with ../", `{"id": "../../etc/passwd", "prompt": "x"}`, nil, 400, "id"},
		{"Idempotency-Key with ../", `{"prompt": "x"}`, map[string]string{"Idempotency-Key": "../jobs/x"}, 400, "id"},
		{"output prefix escaping", `{"prompt": "x", "output": {"prefix": "../../elsewhere/"}}`, nil, 400, "prefix"},
		{"output prefix into job state", `{"prompt": "x", "output": {"prefix": "jobs/someone-else/"}}`, nil, 400, "prefix"},
		{"absolute output prefix", `{"prompt": "x", "output": {"prefix": "/root/"}}`, nil, 400, "prefix"},
		{"input from a bucket not allowed", `{"prompt": "x", "images": [{"uri": "gs://genimg-output/jobs/other/result.json"}]}`, nil, 400, "not one genimg may read"},
	}
	calls := stack.model.Calls()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postJSON(t, tt.body, tt.header)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.text) {
				t.Errorf("status %d, body %s; want %d mentioning %q", resp.StatusCode, body, tt.status, tt.text)
			}
		})
	}
	t.Run("ten image files in a form", func(t *testing.T) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("prompt", "x")
		for i := range 10 {
			w, _ := mw.CreateFormFile("image", fmt.Sprintf("in%d.png", i))
			w.Write(testPNG(t, 8, 8))
		}
		mw.Close()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate", &b)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, body := do(t, req)
		if resp.StatusCode != 400 || !strings.Contains(string(body), "at most 3") {
			t.Errorf("status %d, body %s", resp.StatusCode, body)
		}
	})
	t.Run("GET with ../ in the id", func(t *testing.T) {
		resp, body := getJob(t, "/Generate?id=../../jobs/x")
		if resp.StatusCode != 400 {
			t.Errorf("status %d, body %s", resp.StatusCode, body)
		}
	})
	if got := stack.model.Calls() - calls; got != 0 {
		t.Errorf("hostile requests made %d model calls", got)
	}
}

// countingReader is an endless JSON string, counting what was read of it.
type countingReader struct{ n atomic.Int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n.Load() == 0 && len(p) > 12 {
		copy(p, `{"prompt": "`)
		r.n.Add(12)
		return 12, nil
	}
	for i := range p {
		p[i] = 'x'
	}
	r.n.Add(int64(len(p)))
	return len(p), nil
}

// A 200 MB body is cut off at the request limit (32 MiB) with a 413: the
// function stops reading instead of buffering it all.
func TestHugeHTTPBody(t *testing.T) {
	const size = 200 << 20
	body := &countingReader{}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate", io.LimitReader(body, size))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/json")
	calls := stack.model.Calls()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the function hung up without an answer: %v", err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(answer), "over") {
		t.Errorf("status %d: %s", resp.StatusCode, answer)
	}
	sent := body.n.Load()
	t.Logf("the function read %.1f MiB of a 200 MiB body before answering %d", float64(sent)/(1<<20), resp.StatusCode)
	if sent > 64<<20 { // the 32 MiB limit plus what is in flight in socket buffers
		t.Errorf("the function read %d MiB of a 200 MB body; it should stop near the 32 MiB limit", sent>>20)
	}
	if stack.model.Calls() != calls {
		t.Error("a model call")
	}
}

// Hostile events are acknowledged and end in a failed record that says
// what is wrong (or, for what is not a job, in nothing), with no model
// call. (TestBadDeliveries covers invalid JSON, unknown fields, 512 KB, a
// GIF upload, a bucket not allowed, staleness, genimg's own objects and
// its event type in ce-type.)
func TestHostileEvents(t *testing.T) {
	upload(t, refBucket, "hostile/truncated.png", testPNG(t, 64, 64)[:120], "image/png", nil)
	upload(t, refBucket, "hostile/huge.png", pngHeader(50000, 50000), "image/png", nil)
	ref := func(name string) string { return fmt.Sprintf(`{"uri": "gs://%s/hostile/%s"}`, refBucket, name) }

	// message publishes job JSON straight to OnMessage and returns the id
	// its record will carry.
	message := func(data string) func(t *testing.T) string {
		return func(t *testing.T) string {
			id := "m-" + uniq(t)
			postMessage(t, id, []byte(data), nil, time.Now(), http.StatusOK)
			return derivedMessageID(id)
		}
	}
	// uploaded uploads an object and returns its source, by which its
	// record is found.
	uploaded := func(name string, data []byte, ct string, meta map[string]string) func(t *testing.T) string {
		return func(t *testing.T) string {
			name := strings.ReplaceAll(name, "*", uniq(t))
			a := upload(t, inputBucket, name, data, ct, meta)
			return fmt.Sprintf("source:gs://%s/%s#%d", inputBucket, name, a.Generation)
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T) string // the record's id, or "source:…"; "" for no record
		code string
		text string
	}{
		{"ten images", message(`{"prompt": "x", "images": [` + repeatJoin(ref("truncated.png"), 10) + `]}`), "invalid_argument", "at most 3"},
		{"id with ../", message(`{"id": "../../x", "prompt": "x"}`), "invalid_argument", "id"},
		{"output prefix escaping", message(`{"prompt": "x", "output": {"prefix": "a/../../b/"}}`), "invalid_argument", "prefix"},
		{"output prefix into job state", message(`{"prompt": "x", "output": {"prefix": "jobs/"}}`), "invalid_argument", "prefix"},
		{"truncated PNG by reference", message(`{"prompt": "x", "images": [` + ref("truncated.png") + `]}`), "invalid_argument", "truncated"},
		{"50000×50000 PNG header by reference", message(`{"prompt": "x", "images": [` + ref("huge.png") + `]}`), "too_large", "pixels"},
		{"input from the output bucket's job state", message(`{"prompt": "x", "images": [{"uri": "gs://genimg-output/jobs/x/result.json"}]}`), "invalid_argument", "not one genimg may read"},
		{"truncated PNG upload", uploaded("photos/*.png", testPNG(t, 64, 64)[:120], "image/png", map[string]string{"prompt": "x"}), "invalid_argument", "truncated"},
		{"50000×50000 PNG header upload", uploaded("photos/*.png", pngHeader(50000, 50000), "image/png", map[string]string{"prompt": "x"}), "too_large", "pixels"},
		{"GIF under a rule prefix", uploaded("watercolor/*.png", gifBytes, "image/png", nil), "invalid_argument", "image/gif"},
		{"job file, invalid JSON", uploaded("batch/*.job.json", []byte(`{"prompt": `), "application/json", nil), "invalid_argument", "job"},
		{"job file, unknown field", uploaded("batch/*.job.json", []byte(`{"prompt": "x", "seed": 7}`), "application/json", nil), "invalid_argument", `"seed"`},
		{"job file, id with ../", uploaded("batch/*.job.json", []byte(`{"id": "../../x", "prompt": "x"}`), "application/json", nil), "invalid_argument", "id"},
		{"job file, ten images", uploaded("batch/*.job.json", []byte(`{"prompt": "x", "images": [`+repeatJoin(ref("truncated.png"), 10)+`]}`), "application/json", nil), "invalid_argument", "at most 3"},
		{"genimg's event type in the type attribute", func(t *testing.T) string {
			postMessage(t, "m-"+uniq(t), []byte(`{"jobId": "x", "outcome": "succeeded"}`), map[string]string{"type": job.EventType}, time.Now(), http.StatusOK)
			return ""
		}, "", ""},
		{"genimg's completion event posted to OnMessage", func(t *testing.T) string {
			status := postEvent(t, "OnMessage", "ev-"+uniq(t), job.EventType, "//genimg.dev/projects/"+project, "jobs/x", time.Now(),
				[]byte(`{"jobId": "x", "outcome": "succeeded"}`))
			if status != http.StatusOK {
				t.Errorf("OnMessage answered %d", status)
			}
			return ""
		}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, events := stack.model.Calls(), len(stack.events.all())
			id := tt.run(t)
			switch {
			case id == "":
				settle()
				settle()
				if n := len(stack.events.all()) - events; n != 0 {
					t.Errorf("%d events for what is not a job", n)
				}
			default:
				var e event
				if source, ok := strings.CutPrefix(id, "source:"); ok {
					e = stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source })
				} else {
					e = stack.events.waitJob(t, id)
				}
				rec := e.Record
				if rec.Outcome != job.Failed || rec.Error == nil || rec.Error.Code != tt.code || !strings.Contains(rec.Error.Message, tt.text) {
					t.Errorf("record: outcome %s error %+v; want %s mentioning %q", rec.Outcome, rec.Error, tt.code, tt.text)
				}
				if rec.Error != nil && rec.Error.Retryable {
					t.Errorf("hostile input must not be retryable: %+v", rec.Error)
				}
				if !job.ValidID(rec.JobID) {
					t.Errorf("record under id %q", rec.JobID)
				}
			}
			if got := stack.model.Calls() - calls; got != 0 {
				t.Errorf("%d model calls", got)
			}
		})
	}
}
