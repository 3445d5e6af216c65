package gemini

import (
	"fmt"
	"strings"

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
	contents := []*genai.Content{{Role: genai.RoleUser, Parts: parts}}

	cfg := &genai.GenerateContentConfig{
		ResponseModalities: j.ResponseModalities,
		CachedContent:      j.CachedContent,
	}
	if j.CandidateCount > 1 {
		cfg.CandidateCount = j.CandidateCount
	}
	if j.AspectRatio != "" {
		cfg.ImageConfig = &genai.ImageConfig{AspectRatio: j.AspectRatio}
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
