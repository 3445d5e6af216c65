package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime/multipart"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// An edit with three input images — one uploaded as a form file, one by
// gs:// URI, one inline in the JSON — with safetySettings and a
// systemInstruction: all of it reaches the request, the images byte for
// byte and in order.
func TestEditWithThreeImages(t *testing.T) {
	marker := uniq(t)
	requests := watchRequests(t, marker)
	ref := "refs/" + marker + ".png"
	byURI, inline, uploaded := testPNG(t, 300, 200), testPNG(t, 200, 300), testPNG(t, 256, 256)
	upload(t, refBucket, ref, byURI, "image/png", nil)

	jobJSON := fmt.Sprintf(`{"prompt": "combine these into one postcard %s", "aspectRatio": "3:2",
		"systemInstruction": "Keep the colours of the first image.",
		"safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}, {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_LOW_AND_ABOVE"}],
		"images": [{"uri": "gs://%s/%s"}, {"data": %q}]}`, marker, refBucket, ref, base64.StdEncoding.EncodeToString(inline))
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	w.WriteField("job", jobJSON)
	f, _ := w.CreateFormFile("image", "uploaded.png")
	f.Write(uploaded)
	w.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate", &b)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if rec := decodeRecord(t, body); rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 || rec.Outputs[0].Width != 1248 {
		t.Fatalf("outcome %s, outputs %+v, error %+v", rec.Outcome, rec.Outputs, rec.Error)
	}

	reqs := requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests for the job, want 1", len(reqs))
	}
	d := reqs[0].Decoded
	type sent struct {
		Images      []string
		Instruction string
		Safety      []geminitest.SafetySetting
	}
	got := sent{}
	for _, c := range d.Contents {
		for _, p := range c.Parts {
			if p.InlineData != nil {
				data, _ := base64.StdEncoding.DecodeString(p.InlineData.Data)
				got.Images = append(got.Images, p.InlineData.MIMEType+" "+sha(data))
			}
		}
	}
	if d.SystemInstruction != nil && len(d.SystemInstruction.Parts) == 1 {
		got.Instruction = d.SystemInstruction.Parts[0].Text
	}
	got.Safety = d.SafetySettings
	want := sent{
		Images:      []string{"image/png " + sha(byURI), "image/png " + sha(inline), "image/png " + sha(uploaded)},
		Instruction: "Keep the colours of the first image.",
		Safety: []geminitest.SafetySetting{{Category: "HARM_CATEGORY_HARASSMENT", Threshold: "BLOCK_ONLY_HIGH"},
			{Category: "HARM_CATEGORY_DANGEROUS_CONTENT", Threshold: "BLOCK_LOW_AND_ABOVE"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

// The model's safety ratings of a candidate stopped for safety are in the
// record.
func TestSafetyRatingsInRecord(t *testing.T) {
	resp, b := postJSON(t, `{"prompt": "a harmless fox [[standin:finish=IMAGE_SAFETY]]", "safetySettings": [{"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "threshold": "BLOCK_LOW_AND_ABOVE"}]}`, nil)
	rec := decodeRecord(t, b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	want := []job.SafetyRating{{Category: "HARM_CATEGORY_SEXUALLY_EXPLICIT", Probability: "MEDIUM", Blocked: true}}
	if diff := cmp.Diff(want, rec.SafetyRatings); diff != "" || rec.Outcome != job.Blocked || rec.FinishReason != "IMAGE_SAFETY" {
		t.Errorf("outcome %s, finish %s, safetyRatings (-want +got):\n%s", rec.Outcome, rec.FinishReason, diff)
	}
}
