package trigger

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
)

// TestStreamJobMatchesDecode checks the one-pass reader against
// job.Decode of the whole body: the same job, or an error both times,
// however the body arrives (whole, or a byte at a time).
func TestStreamJobMatchesDecode(t *testing.T) {
	img := bytes.Repeat([]byte("\x89PNG\r\n\x1a\n0123456789abcdef"), 5000)
	b64 := base64.StdEncoding.EncodeToString(img)
	small := base64.StdEncoding.EncodeToString([]byte("ab")) // "YWI=": padded
	tests := []struct {
		name string
		body string
	}{
		{"text", `{"prompt": "a fox", "aspectRatio": "1:1"}`},
		{"inline image", `{"prompt": "p", "images": [{"data": "` + b64 + `", "mimeType": "image/png"}]}`},
		{"data after other fields", `{"images": [{"mimeType": "image/png", "data": "` + b64 + `"}], "prompt": "p", "id": "x-1"}`},
		{"two images and a uri", `{"prompt": "p", "images": [{"data": "` + small + `"}, {"uri": "gs://b/o", "generation": 3}, {"data": "` + b64 + `"}]}`},
		{"escaped slash and newline", `{"prompt": "p", "images": [{"data": "` + strings.ReplaceAll(b64[:400], "/", `\/`) + `\n` + b64[400:800] + `\u0041AAA"}]}`},
		{"case-insensitive names", `{"PROMPT": "p", "Images": [{"DATA": "` + small + `"}]}`},
		{"data null", `{"prompt": "p", "images": [{"data": null, "uri": "gs://b/o"}]}`},
		{"images null", `{"prompt": "p", "images": null}`},
		{"empty data", `{"prompt": "p", "images": [{"data": ""}]}`},
		{"duplicate images", `{"images": [{"data": "` + b64 + `"}], "images": [{"data": "` + small + `"}], "prompt": "p"}`},
		{"nested objects", `{"prompt": "p", "labels": {"a": "b,}]"}, "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}], "images": [{"data": "` + small + `"}]}`},
		{"unknown field", `{"prompt": "p", "size": 3}`},
		{"unknown image field", `{"prompt": "p", "images": [{"data": "` + small + `", "url": "x"}]}`},
		{"image not an object", `{"prompt": "p", "images": ["` + small + `"]}`},
		{"data not a string", `{"prompt": "p", "images": [{"data": 3}]}`},
		{"bad base64", `{"prompt": "p", "images": [{"data": "!!!!"}]}`},
		{"short base64", `{"prompt": "p", "images": [{"data": "YWJ"}]}`},
		{"data after padding", `{"prompt": "p", "images": [{"data": "YQ==YWJj"}]}`},
		{"unicode escape", `{"prompt": "p", "images": [{"data": "\u00e9AAA"}]}`},
		{"cut off in data", `{"prompt": "p", "images": [{"data": "` + b64[:100]},
		{"cut off", `{"prompt": "p"`},
		{"trailing data", `{"prompt": "p"} {}`},
		{"trailing comma", `{"prompt": "p",}`},
		{"not an object", `["prompt"]`},
		{"empty", ``},
		{"empty object", `{}`},
		{"raw newline in data", "{\"prompt\": \"p\", \"images\": [{\"data\": \"YWJj\nYWJj\"}]}"},
	}
	for _, tt := range tests {
		want, wantErr := job.Decode([]byte(tt.body))
		for _, oneByte := range []bool{false, true} {
			r := iotestReader(strings.NewReader(tt.body), oneByte)
			got, batch, err := streamJob(r, int64(len(tt.body)), 1<<30, false)
			if batch != nil {
				t.Fatalf("%s: taken for a batch", tt.name)
			}
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("%s (one byte %v): err = %v, job.Decode's %v", tt.name, oneByte, err, wantErr)
			}
			if err != nil {
				if !errors.Is(err, job.ErrInvalid) {
					t.Errorf("%s: err = %v, want job.ErrInvalid", tt.name, err)
				}
				continue
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s (one byte %v): job (-job.Decode +streamJob):\n%s", tt.name, oneByte, diff)
			}
		}
	}
}

func iotestReader(r *strings.Reader, oneByte bool) interface{ Read([]byte) (int, error) } {
	if oneByte {
		return iotest.OneByteReader(r)
	}
	return r
}

func TestStreamJobErrors(t *testing.T) {
	tests := []struct {
		name, body string
		max        int64
		form       bool
		want       error
		text       string
	}{
		{name: "unknown image field located", body: `{"prompt": "p", "images": [{"data": "YWI=", "url": "x"}]}`, want: job.ErrInvalid, text: `images[0]: unknown field "url"`},
		{name: "bad base64 names the image", body: `{"prompt": "p", "images": [{"uri": "gs://b/o"}, {"data": "YWJj!!!!"}]}`, want: job.ErrInvalid, text: "images[1].data: not standard base64 (error at byte 4)"},
		// Long enough for the vector decoder, which hands the rest to encoding/base64 at the bad byte.
		{name: "bad base64 far into an image", body: `{"prompt": "p", "images": [{"data": "` + strings.Repeat("QUJD", 100) + `QU!DQUJD"}]}`, want: job.ErrInvalid, text: "images[0].data: not standard base64 (error at byte 402)"},
		{name: "too large", body: `{"prompt": "p", "images": [{"data": "` + strings.Repeat("A", 4000) + `"}]}`, max: 1000, want: job.ErrTooLarge, text: "1000 bytes"},
		{name: "form that is not JSON", body: `prompt=a+fox`, form: true, want: job.ErrInvalid, text: "application/json"},
	}
	for _, tt := range tests {
		max := tt.max
		if max == 0 {
			max = 1 << 20
		}
		_, _, err := streamJob(strings.NewReader(tt.body), -1, max, tt.form)
		body := strings.NewReader(tt.body)
		if tt.max > 0 {
			// as FromHTTP bounds it
			_, _, err = streamJob(limitErr(body, tt.max), -1, max, tt.form)
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: err = %v, want %v mentioning %q", tt.name, err, tt.want, tt.text)
		}
	}
}

func TestStreamJobBatch(t *testing.T) {
	body := ` {"batch": [{"prompt": "a"}, {"prompt": "b"}]}`
	_, batch, err := streamJob(iotest.OneByteReader(strings.NewReader(body)), -1, 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(body, string(batch)); diff != "" {
		t.Errorf("batch body (-want +got):\n%s", diff)
	}
}

// limitErr fails reads past max bytes as http.MaxBytesReader does.
func limitErr(r *strings.Reader, max int64) *maxReader { return &maxReader{r: r, left: max} }

type maxReader struct {
	r    *strings.Reader
	left int64
}

func (m *maxReader) Read(p []byte) (int, error) {
	if m.left <= 0 {
		return 0, &http.MaxBytesError{Limit: 1000}
	}
	if int64(len(p)) > m.left {
		p = p[:m.left]
	}
	n, err := m.r.Read(p)
	m.left -= int64(n)
	return n, err
}

// FuzzStreamJob: whatever the body, the one-pass reader agrees with
// job.Decode of the whole body — the same job, or an error both times.
func FuzzStreamJob(f *testing.F) {
	for _, s := range []string{
		`{"prompt": "p", "images": [{"data": "YWJj", "mimeType": "image/png"}]}`,
		`{"images": [{"data": "YQ=="}, {"uri": "gs://b/o"}], "id": "a"}`,
		`{"prompt": "p", "images": [{"data": "YW\/j\n"}]}`,
		`{"batch": []}`, `{}`, `[]`, `{"prompt": 1}`,
		`{"prompt": "p", "images": [{"data": "` + strings.Repeat("QUJD", 30) + `QU\/D` + strings.Repeat("QUJD", 30) + `"}]}`,
		`{"prompt": "p", "images": [{"data": "` + strings.Repeat("QUJD", 30) + `QU=D` + strings.Repeat("QUJD", 30) + `"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		want, wantErr := job.Decode(body)
		got, batch, err := streamJob(bytes.NewReader(body), int64(len(body)), 1<<20, false)
		if batch != nil {
			return // a batch: DecodeBatch's to judge
		}
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("body %q: streamJob err = %v, job.Decode err = %v", body, err, wantErr)
		}
		if err == nil {
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("body %q: job (-job.Decode +streamJob):\n%s", body, diff)
			}
		}
	})
}
