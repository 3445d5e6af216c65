package gemini

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// TestBase64Reader checks the spliced encoding against encoding/base64 for
// every tail length and for reads smaller than a quantum.
func TestBase64Reader(t *testing.T) {
	for _, size := range []int{1, 2, 3, 4, 5, 6, 7, 1000, 1001, 1002} {
		src := make([]byte, size)
		for i := range src {
			src[i] = byte(i*7 + size)
		}
		for _, chunk := range []int{1, 2, 3, 4, 5, 7, 8, 4096} {
			r := &base64Reader{src: src}
			var got []byte
			buf := make([]byte, chunk)
			for {
				n, err := r.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("size %d chunk %d: %v", size, chunk, err)
				}
			}
			if diff := cmp.Diff(base64.StdEncoding.EncodeToString(src), string(got)); diff != "" {
				t.Errorf("size %d chunk %d (-want +got):\n%s", size, chunk, diff)
			}
		}
	}
}

// TestInlineInputsSpliced sends edits whose inputs are spliced into the
// body by the transport and checks what the service received: each input's
// bytes, in order, in its part; the job's own bytes untouched.
func TestInlineInputsSpliced(t *testing.T) {
	a := testPNG(t, 300, 200, true)
	b := testPNG(t, 31, 17, true)
	tests := []struct {
		name    string
		backend job.Backend
		inputs  [][]byte
	}{
		{"one large", job.GeminiAPI, [][]byte{a}},
		{"two", job.GeminiAPI, [][]byte{b, a}},
		{"same twice", job.GeminiAPI, [][]byte{b, b}},
		{"vertex two", job.VertexAI, [][]byte{a, b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := geminitest.NewServer()
			t.Cleanup(srv.Close)
			c, _ := newClient(t, srv, tt.backend, nil)
			j := job.Job{Model: job.DefaultModel, Prompt: "edit \"" + base64.StdEncoding.EncodeToString([]byte("\x00genimg-inline-input:")) + "\""}
			for _, in := range tt.inputs {
				j.Images = append(j.Images, job.Image{Data: in, MIMEType: "image/png"})
			}
			// What the SDK is handed: markers, not the bytes.
			contents, _, err := c.request(j)
			if err != nil {
				t.Fatal(err)
			}
			spliced := spliceInline(contents)
			var handed, kept [][]byte
			for k, p := range contents[0].Parts[1:] {
				handed = append(handed, p.InlineData.Data)
				kept = append(kept, spliced[k].data)
			}
			if diff := cmp.Diff(tt.inputs, kept); diff != "" {
				t.Errorf("spliced inputs (-want +got):\n%s", diff)
			}
			for k, h := range handed {
				if len(h) > 100 || !bytes.HasPrefix(h, []byte("\x00genimg-inline-input:")) {
					t.Errorf("part %d handed to the SDK is %d bytes, not a marker", k, len(h))
				}
			}
			if _, err := c.Generate(t.Context(), j); err != nil {
				t.Fatalf("Generate: %v", err)
			}
			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("got %d requests, want 1", len(reqs))
			}
			var body struct {
				Contents []struct {
					Parts []struct {
						Text       string `json:"text"`
						InlineData *struct {
							Data     []byte `json:"data"`
							MIMEType string `json:"mimeType"`
						} `json:"inlineData"`
					} `json:"parts"`
				} `json:"contents"`
			}
			if err := json.Unmarshal(reqs[0].Body, &body); err != nil {
				t.Fatalf("request body: %v", err)
			}
			var got [][]byte
			for _, p := range body.Contents[0].Parts {
				if p.InlineData != nil {
					got = append(got, p.InlineData.Data)
				}
			}
			if diff := cmp.Diff(tt.inputs, got); diff != "" {
				t.Errorf("inputs received (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(j.Prompt, body.Contents[0].Parts[0].Text); diff != "" {
				t.Errorf("prompt (-want +got):\n%s", diff)
			}
			for k, in := range j.Images {
				if diff := cmp.Diff(tt.inputs[k], in.Data); diff != "" {
					t.Errorf("job image %d changed (-want +got):\n%s", k, diff)
				}
			}
		})
	}
}
