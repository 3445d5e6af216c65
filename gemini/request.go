package gemini

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	simd "github.com/segmentio/asm/base64"
	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// request turns a job into the SDK's contents and config. Field placement
// follows the service as checked: aspectRatio in ImageConfig, systemInstruction,
// safetySettings, cachedContent and labels at the request root (the SDK
// moves them there).
func (c *Client) request(j job.Job) ([]*genai.Content, *genai.GenerateContentConfig, error) {
	parts := make([]*genai.Part, 0, 1+len(j.Images))
	parts = append(parts, &genai.Part{Text: j.Prompt})
	for i, img := range j.Images {
		switch {
		case len(img.Data) > 0:
			mime := img.MIMEType
			if mime == "" {
				mime = job.Sniff(img.Data)
			}
			parts = append(parts, &genai.Part{InlineData: &genai.Blob{Data: img.Data, MIMEType: mime}})
		case img.URI != "" && c.backend == job.VertexAI && strings.HasPrefix(img.URI, "gs://"):
			// Vertex AI reads gs:// inputs itself: no bytes through the
			// function.
			if img.MIMEType == "" {
				return nil, nil, fmt.Errorf("%w: gemini: images[%d]: %s has no MIME type", job.ErrInvalid, i, img.URI)
			}
			parts = append(parts, &genai.Part{FileData: &genai.FileData{FileURI: img.URI, MIMEType: img.MIMEType}})
		default:
			// The Gemini API cannot read the caller's buckets: the
			// pipeline must resolve the image to bytes first.
			return nil, nil, fmt.Errorf("%w: gemini: images[%d]: not resolved to bytes (uri %q) for the %s backend", job.ErrInvalid, i, img.URI, c.backend)
		}
	}
	contents, err := history(j, c.backend)
	if err != nil {
		return nil, nil, err
	}
	contents = append(contents, &genai.Content{Role: genai.RoleUser, Parts: parts})

	cfg := &genai.GenerateContentConfig{
		ResponseModalities: j.ResponseModalities,
		CachedContent:      j.CachedContent,
	}
	if j.CandidateCount > 1 {
		cfg.CandidateCount = j.CandidateCount
	}
	if j.AspectRatio != "" || j.ImageSize != "" {
		// imageSize is a plain string on the wire ("512", "1K", "2K",
		// "4K"); genai.ImageSize is another field's enum.
		cfg.ImageConfig = &genai.ImageConfig{AspectRatio: j.AspectRatio, ImageSize: j.ImageSize}
	}
	for _, t := range j.Tools {
		if t.GoogleSearch != nil {
			cfg.Tools = append(cfg.Tools, &genai.Tool{GoogleSearch: &genai.GoogleSearch{}})
		}
	}
	if j.SystemInstruction != "" {
		cfg.SystemInstruction = &genai.Content{Parts: []*genai.Part{{Text: j.SystemInstruction}}}
	}
	for _, s := range j.SafetySettings {
		cfg.SafetySettings = append(cfg.SafetySettings, &genai.SafetySetting{
			Category: genai.HarmCategory(s.Category), Threshold: genai.HarmBlockThreshold(s.Threshold),
		})
	}
	// Request labels reach Vertex AI billing; the Gemini API has no such
	// field (the SDK refuses it there), so they are dropped on that backend.
	if c.backend == job.VertexAI && len(j.BillingLabels) > 0 {
		cfg.Labels = j.BillingLabels
	}
	// Structured output (structured.go).
	if err := structuredConfig(j, cfg); err != nil {
		return nil, nil, err
	}
	return contents, cfg, nil
}

// history is the contents of j's conversation before its own turn: each
// turn's parts as the record kept them, images inline from the bytes the
// pipeline read back, and every thought signature as the model returned it.
//
// On Vertex AI an image without bytes goes by its gs:// URI: Vertex reads
// it (storage.Store.History checked it is the recorded one).
func history(j job.Job, backend job.Backend) ([]*genai.Content, error) {
	if j.Parent != "" && len(j.History) == 0 {
		return nil, fmt.Errorf("%w: gemini: job %s continues %s, but its history was not read", job.ErrInvalid, j.ID, j.Parent)
	}
	contents := make([]*genai.Content, 0, len(j.History)+1)
	for i, t := range j.History {
		c := &genai.Content{Role: t.Role, Parts: make([]*genai.Part, 0, len(t.Parts))}
		for k, p := range t.Parts {
			part := &genai.Part{Text: p.Text, Thought: p.Thought, ThoughtSignature: p.ThoughtSignature}
			switch {
			case p.Image == nil:
			case len(p.Image.Data) > 0:
				part.InlineData = &genai.Blob{Data: p.Image.Data, MIMEType: p.Image.MIMEType}
			case backend == job.VertexAI && strings.HasPrefix(p.Image.URI, "gs://") && p.Image.MIMEType != "":
				part.FileData = &genai.FileData{FileURI: p.Image.URI, MIMEType: p.Image.MIMEType}
			default:
				return nil, fmt.Errorf("%w: gemini: history turn %d part %d: image %s not read", job.ErrInvalid, i, k, p.Image.URI)
			}
			c.Parts = append(c.Parts, part)
		}
		contents = append(contents, c)
	}
	return contents, nil
}

// Inline inputs are base64-encoded once, straight into the request body.
// Left to the SDK, a 1 MiB input is copied and encoded several times over
// (json.Marshal, a round trip through a map, the body): ≈ 3.5 MB allocated
// and several ms of CPU per edit (BENCHMARKS.md "## pipeline"). So generate
// hands the SDK a short marker in place of each input's bytes, and the
// transport (answerTransport) splices the input's base64 in where the
// SDK's encoding of the marker stands. The bytes sent are exactly the
// SDK's (the golden request files pin them); URL, headers and auth stay the
// SDK's. Batch and cache requests keep the SDK's own encoding.

// inlineNonce makes the markers unguessable, so no prompt text can carry
// one.
var inlineNonce = func() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}()

// inlineInput is one input whose bytes go into the body by splicing.
type inlineInput struct {
	data []byte
	// quoted is the SDK's JSON for the marker: base64 in quotes.
	quoted []byte
}

// spliceInline replaces the bytes of each inline input in contents by a
// marker and returns the inputs in the order the SDK writes them.
func spliceInline(contents []*genai.Content) []inlineInput {
	var out []inlineInput
	for _, c := range contents {
		for _, p := range c.Parts {
			if p == nil || p.InlineData == nil || len(p.InlineData.Data) == 0 {
				continue
			}
			marker := []byte("\x00genimg-inline-input:" + inlineNonce + ":" + strconv.Itoa(len(out)))
			quoted := make([]byte, 0, base64.StdEncoding.EncodedLen(len(marker))+2)
			quoted = append(quoted, '"')
			quoted = base64.StdEncoding.AppendEncode(quoted, marker)
			quoted = append(quoted, '"')
			out = append(out, inlineInput{data: p.InlineData.Data, quoted: quoted})
			b := *p.InlineData
			b.Data = marker
			p.InlineData = &b
		}
	}
	return out
}

// spliceRequest returns req with its body rebuilt: the SDK's JSON with each
// marker replaced by its input's base64, streamed from the input's bytes.
func spliceRequest(req *http.Request, inputs []inlineInput) (*http.Request, error) {
	small, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("gemini: reading the request body: %w", err)
	}
	// Each marker, in order, once: the SDK keeps the parts' order.
	cuts := make([]int, 0, 2*len(inputs))
	length := int64(len(small))
	from := 0
	for k, in := range inputs {
		i := bytes.Index(small[from:], in.quoted)
		if i < 0 {
			return nil, fmt.Errorf("gemini: inline input %d missing from the request body", k)
		}
		cuts = append(cuts, from+i+1, from+i+len(in.quoted)-1) // inside the quotes
		from += i + len(in.quoted)
		length += int64(base64.StdEncoding.EncodedLen(len(in.data))) - int64(len(in.quoted)-2)
	}
	body := func() io.ReadCloser {
		rs := make([]io.Reader, 0, 2*len(inputs)+1)
		prev := 0
		for k, in := range inputs {
			rs = append(rs, bytes.NewReader(small[prev:cuts[2*k]]), &base64Reader{src: in.data})
			prev = cuts[2*k+1]
		}
		rs = append(rs, bytes.NewReader(small[prev:]))
		return io.NopCloser(io.MultiReader(rs...))
	}
	r := req.Clone(req.Context())
	r.Body = body()
	r.GetBody = func() (io.ReadCloser, error) { return body(), nil }
	r.ContentLength = length
	r.Header.Del("Content-Length")
	return r, nil
}

// base64Reader reads the standard base64 encoding of src, encoding straight
// into the caller's buffer.
type base64Reader struct {
	src     []byte
	quantum [4]byte
	pending []byte
}

func (r *base64Reader) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	if len(r.src) == 0 {
		return 0, io.EOF
	}
	if len(p) < 4 {
		k := min(3, len(r.src))
		base64.StdEncoding.Encode(r.quantum[:], r.src[:k])
		r.src = r.src[k:]
		r.pending = r.quantum[:base64.StdEncoding.EncodedLen(k)]
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	// Whole quanta only, unless this is the end (where padding belongs).
	k := min(len(p)/4*3, len(r.src))
	simd.StdEncoding.Encode(p, r.src[:k])
	r.src = r.src[k:]
	return base64.StdEncoding.EncodedLen(k), nil
}
