package geminitest

import (
	"encoding/json"
	"net/http"
)

// The request, as the REST reference spells it (generateContent, v1beta and
// Vertex v1beta1). Decoding is strict: a field that is not here is answered
// the way the service answers an unknown name, 400 INVALID_ARGUMENT. The
// golden files of what the real SDK sends (gemini/testdata) pin these shapes.

// GenerateContentRequest is a generateContent request body.
type GenerateContentRequest struct {
	Contents          []Content         `json:"contents"`
	SystemInstruction *Content          `json:"systemInstruction,omitempty"`
	GenerationConfig  *GenerationConfig `json:"generationConfig,omitempty"`
	SafetySettings    []SafetySetting   `json:"safetySettings,omitempty"`
	CachedContent     string            `json:"cachedContent,omitempty"`
	// Labels exist on Vertex AI only; the Gemini API rejects the field.
	Labels map[string]string `json:"labels,omitempty"`
	Tools  []Tool            `json:"tools,omitempty"`
}

// Tool is one tool; the image models take Google Search grounding.
type Tool struct {
	GoogleSearch *struct{} `json:"googleSearch,omitempty"`
}

// Content is one turn.
type Content struct {
	Role  string `json:"role,omitempty"`
	Parts []Part `json:"parts"`
}

// Part is text, inline bytes or a file reference.
type Part struct {
	Text       string    `json:"text,omitempty"`
	InlineData *Blob     `json:"inlineData,omitempty"`
	FileData   *FileData `json:"fileData,omitempty"`
	Thought    bool      `json:"thought,omitempty"`
	// ThoughtSignature is base64, as the model returned it in a model turn.
	ThoughtSignature string `json:"thoughtSignature,omitempty"`
}

// Blob is inline data; Data is base64 as sent (decoded during validation).
type Blob struct {
	MIMEType string `json:"mimeType"`
	Data     string `json:"data"`
}

// FileData references a file by URI (gs:// on Vertex AI).
type FileData struct {
	MIMEType string `json:"mimeType,omitempty"`
	FileURI  string `json:"fileUri"`
}

// GenerationConfig is the subset of generationConfig an image model takes.
type GenerationConfig struct {
	ResponseModalities []string     `json:"responseModalities,omitempty"`
	CandidateCount     *int32       `json:"candidateCount,omitempty"`
	ImageConfig        *ImageConfig `json:"imageConfig,omitempty"`
	Temperature        *float64     `json:"temperature,omitempty"`
	TopP               *float64     `json:"topP,omitempty"`
	TopK               *float64     `json:"topK,omitempty"`
	Seed               *int32       `json:"seed,omitempty"`
	MaxOutputTokens    *int32       `json:"maxOutputTokens,omitempty"`
	// ResponseMIMEType and ResponseSchema ask for structured output
	// (structured.go answers JSON built from the schema).
	ResponseMIMEType string          `json:"responseMimeType,omitempty"`
	ResponseSchema   json.RawMessage `json:"responseSchema,omitempty"`
}

// ImageConfig carries the aspect ratio.
type ImageConfig struct {
	AspectRatio string `json:"aspectRatio,omitempty"`
	ImageSize   string `json:"imageSize,omitempty"`
}

// SafetySetting is one category's threshold.
type SafetySetting struct {
	Category  string `json:"category"`
	Threshold string `json:"threshold"`
	Method    string `json:"method,omitempty"`
}

// The answer, as the REST reference spells it.

type response struct {
	Candidates     []candidate     `json:"candidates,omitempty"`
	PromptFeedback *promptFeedback `json:"promptFeedback,omitempty"`
	UsageMetadata  usageMetadata   `json:"usageMetadata"`
	ModelVersion   string          `json:"modelVersion"`
	ResponseID     string          `json:"responseId"`
	CreateTime     string          `json:"createTime,omitempty"`
}

type candidate struct {
	Content       *answerContent `json:"content,omitempty"`
	FinishReason  string         `json:"finishReason,omitempty"`
	FinishMessage string         `json:"finishMessage,omitempty"`
	SafetyRatings []safetyRating `json:"safetyRatings,omitempty"`
	// GroundingMetadata answers a request with the googleSearch tool.
	GroundingMetadata *groundingMetadata `json:"groundingMetadata,omitempty"`
	Index             int                `json:"index"`
}

type groundingMetadata struct {
	WebSearchQueries []string          `json:"webSearchQueries"`
	SearchEntryPoint map[string]string `json:"searchEntryPoint"`
	GroundingChunks  []map[string]any  `json:"groundingChunks"`
}

type answerContent struct {
	Role  string       `json:"role"`
	Parts []answerPart `json:"parts"`
}

type answerPart struct {
	Text             string      `json:"text,omitempty"`
	InlineData       *answerBlob `json:"inlineData,omitempty"`
	ThoughtSignature []byte      `json:"thoughtSignature,omitempty"` // standard base64
}

type answerBlob struct {
	MIMEType string `json:"mimeType"`
	Data     []byte `json:"data"` // encoding/json writes standard base64
}

type safetyRating struct {
	Category    string `json:"category"`
	Probability string `json:"probability"`
	Blocked     bool   `json:"blocked,omitempty"`
}

type promptFeedback struct {
	BlockReason        string         `json:"blockReason,omitempty"`
	BlockReasonMessage string         `json:"blockReasonMessage,omitempty"`
	SafetyRatings      []safetyRating `json:"safetyRatings,omitempty"`
}

type usageMetadata struct {
	PromptTokenCount        int32           `json:"promptTokenCount"`
	CandidatesTokenCount    int32           `json:"candidatesTokenCount,omitempty"`
	TotalTokenCount         int32           `json:"totalTokenCount"`
	CachedContentTokenCount int32           `json:"cachedContentTokenCount,omitempty"`
	ThoughtsTokenCount      int32           `json:"thoughtsTokenCount,omitempty"`
	PromptTokensDetails     []modalityCount `json:"promptTokensDetails,omitempty"`
	CandidatesTokensDetails []modalityCount `json:"candidatesTokensDetails,omitempty"`
	CacheTokensDetails      []modalityCount `json:"cacheTokensDetails,omitempty"`
}

type modalityCount struct {
	Modality   string `json:"modality"`
	TokenCount int32  `json:"tokenCount"`
}

// APIError is the service's error body, {"error": {...}}, as google.rpc.Status
// maps to JSON. Details hold google.rpc detail messages (RetryInfo,
// QuotaFailure, ErrorInfo, BadRequest), each with its "@type".
type APIError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

func (e *APIError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(e.Code)
	json.NewEncoder(w).Encode(map[string]*APIError{"error": e})
}

// statusNames are the canonical google.rpc.Code names for HTTP statuses.
var statusNames = map[int]string{
	400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
	409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
	500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}

// statusMessages are the service's usual messages for injected errors.
var statusMessages = map[int]string{
	400: "Request contains an invalid argument.",
	401: "Request had invalid authentication credentials.",
	403: "The caller does not have permission",
	404: "Requested entity was not found.",
	413: "Request payload size exceeds the limit.",
	429: "Resource has been exhausted (e.g. check quota).",
	500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
	502: "Bad Gateway",
	503: "The model is overloaded. Please try again later.",
	504: "The request timed out. Please try again.",
}

func newAPIError(code int, msg string, details ...map[string]any) *APIError {
	status := statusNames[code]
	if status == "" {
		status = "UNKNOWN"
	}
	if msg == "" {
		msg = statusMessages[code]
	}
	return &APIError{Code: code, Message: msg, Status: status, Details: details}
}

func badRequest(msg string) *APIError {
	return newAPIError(400, msg, map[string]any{
		"@type":           "type.googleapis.com/google.rpc.BadRequest",
		"fieldViolations": []any{map[string]any{"description": msg}},
	})
}
