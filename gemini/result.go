package gemini

import (
	"encoding/json"
	"strings"
	"time"

	"google.golang.org/genai"

	"github.com/genimg/genimg/job"
)

// A Result is what one job's model call(s) produced, fully read: every
// field of the answer the completion record carries.
type Result struct {
	// Images are the output images (bytes and MIME type), in answer order
	// across candidates, when Generate made the call.
	Images []job.Image
	// StreamedImages counts the images GenerateTo streamed into its sink
	// and the sink kept.
	StreamedImages int
	// Text is the answer's text parts, joined with "\n" (thoughts left out).
	Text string
	// FinishReason and FinishMessage are the first candidate's. The
	// Gemini API backend of the SDK drops finishMessage; Vertex AI keeps it.
	FinishReason  string
	FinishMessage string
	SafetyRatings []job.SafetyRating
	// PromptFeedback is set when the answer carried one (a blocked prompt).
	PromptFeedback *job.PromptFeedback
	Usage          job.Usage
	ModelVersion   string
	ResponseID     string
	// Outcome is the job's outcome (README, "The job"), from OutcomeOf. It is empty when
	// Generate returns an error.
	Outcome job.Outcome
	// Attempts is the HTTP calls made to the model for this Generate.
	Attempts int
	// Refused counts the calls the service answered with an error status
	// (429, 503, 400, …): made, but not paid.
	Refused int
	// CostUSD prices the answer's usage (failed calls are not billed).
	CostUSD float64
	// ModelTime is the time spent in model calls, retries included, waits
	// between them excluded.
	ModelTime time.Duration
	// JSON is the answer's text parsed as JSON, when the job asked for
	// application/json and the text conforms to its schema; JSONError says
	// why JSON is absent otherwise (structured.go).
	JSON      json.RawMessage
	JSONError string
	// GroundingMetadata is the first candidate's, when it has one.
	GroundingMetadata json.RawMessage
	// ModelTurn is the first candidate's answer as the model returned it,
	// for a conversation's next turn: text and thought parts, and kept
	// images by their index among the answer's images (TurnImage.Index),
	// each with its thought signature. Image parts that were thoughts
	// were not kept and are left out.
	ModelTurn []job.TurnPart
}

// finishOutcomes maps every genai.FinishReason constant of the SDK to an
// outcome for an answer without an image. TestFinishReasonsComplete keeps it
// complete against the SDK's source. Safety, prohibited content, blocklist,
// SPII and recitation stops are "blocked" (README, "The job"); everything
// else that ends without an image is "no_image".
var finishOutcomes = map[genai.FinishReason]job.Outcome{
	genai.FinishReasonUnspecified:            job.NoImage,
	genai.FinishReasonStop:                   job.NoImage,
	genai.FinishReasonMaxTokens:              job.NoImage,
	genai.FinishReasonSafety:                 job.Blocked,
	genai.FinishReasonRecitation:             job.Blocked,
	genai.FinishReasonLanguage:               job.NoImage,
	genai.FinishReasonOther:                  job.NoImage,
	genai.FinishReasonBlocklist:              job.Blocked,
	genai.FinishReasonProhibitedContent:      job.Blocked,
	genai.FinishReasonSPII:                   job.Blocked,
	genai.FinishReasonMalformedFunctionCall:  job.NoImage,
	genai.FinishReasonImageSafety:            job.Blocked,
	genai.FinishReasonUnexpectedToolCall:     job.NoImage,
	genai.FinishReasonTooManyToolCalls:       job.NoImage,
	genai.FinishReasonImageProhibitedContent: job.Blocked,
	genai.FinishReasonNoImage:                job.NoImage,
	genai.FinishReasonImageRecitation:        job.Blocked,
	genai.FinishReasonImageOther:             job.NoImage,
	genai.FinishReasonContinuation:           job.NoImage,
}

// blockOutcomes maps every genai.BlockedReason constant. Any block reason,
// even an unspecified or unknown one, means the prompt was refused with no
// candidates: blocked.
var blockOutcomes = map[genai.BlockedReason]job.Outcome{
	genai.BlockedReasonUnspecified:       job.Blocked,
	genai.BlockedReasonSafety:            job.Blocked,
	genai.BlockedReasonOther:             job.Blocked,
	genai.BlockedReasonBlocklist:         job.Blocked,
	genai.BlockedReasonProhibitedContent: job.Blocked,
	genai.BlockedReasonImageSafety:       job.Blocked,
	genai.BlockedReasonModelArmor:        job.Blocked,
	genai.BlockedReasonJailbreak:         job.Blocked,
}

// OutcomeOf maps an answer to its outcome: succeeded with at least one
// image; otherwise blocked for any prompt block reason or a safety-like
// finish reason; otherwise no_image. An unknown finish reason (a newer
// service than this SDK) is no_image: the answer is kept, not dropped, and
// the reason is recorded as text by the caller.
func OutcomeOf(finishReason, blockReason string, images int) job.Outcome {
	if images > 0 {
		return job.Succeeded
	}
	if blockReason != "" {
		if o, ok := blockOutcomes[genai.BlockedReason(blockReason)]; ok {
			return o
		}
		return job.Blocked
	}
	if o, ok := finishOutcomes[genai.FinishReason(finishReason)]; ok {
		return o
	}
	return job.NoImage
}

// fillResult reads an answer into res. It walks the parts itself:
// resp.Text() logs a warning when the answer holds images. Images the first
// pass streamed (decode.go) are taken from st; any other image bytes (which
// the first pass did not recognise) go to st's sink now.
func fillResult(res *Result, resp *genai.GenerateContentResponse, st *callState) error {
	res.ModelVersion = resp.ModelVersion
	res.ResponseID = resp.ResponseID
	res.ModelTurn = nil // a retried call's answer replaces the last one's
	var texts []string
	for i, cand := range resp.Candidates {
		if cand == nil {
			continue
		}
		if i == 0 {
			res.FinishReason = string(cand.FinishReason)
			res.FinishMessage = cand.FinishMessage
			if res.FinishMessage == "" && len(st.finishMessages) > 0 {
				res.FinishMessage = st.finishMessages[0] // the SDK drops it on the Gemini API
			}
			res.SafetyRatings = ratings(cand.SafetyRatings)
			if cand.GroundingMetadata != nil {
				if b, err := json.Marshal(cand.GroundingMetadata); err == nil {
					res.GroundingMetadata = b
				}
			}
		}
		if cand.Content == nil {
			continue
		}
		for _, p := range cand.Content.Parts {
			if p == nil {
				continue
			}
			turn := job.TurnPart{Text: p.Text, Thought: p.Thought, ThoughtSignature: p.ThoughtSignature}
			switch {
			case p.Thought && p.InlineData != nil:
				continue // a thought image: dropped by the first pass, never stored
			case p.Thought:
			case p.InlineData != nil && len(p.InlineData.Data) > 0:
				index, kept, err := st.take(res, p.InlineData)
				if err != nil {
					return err
				}
				if !kept {
					continue
				}
				turn.Image = &job.TurnImage{MIMEType: p.InlineData.MIMEType, Index: index}
			case p.Text != "":
				texts = append(texts, p.Text)
			}
			if i == 0 && (turn.Text != "" || turn.Image != nil) {
				res.ModelTurn = append(res.ModelTurn, turn)
			}
		}
	}
	res.Text = strings.Join(texts, "\n")
	var block string
	if pf := resp.PromptFeedback; pf != nil {
		res.PromptFeedback = &job.PromptFeedback{
			BlockReason:        string(pf.BlockReason),
			BlockReasonMessage: pf.BlockReasonMessage,
			SafetyRatings:      ratings(pf.SafetyRatings),
		}
		block = string(pf.BlockReason)
	}
	if u := resp.UsageMetadata; u != nil {
		res.Usage = job.Usage{
			PromptTokens:               u.PromptTokenCount,
			CandidatesTokens:           u.CandidatesTokenCount,
			TotalTokens:                u.TotalTokenCount,
			ThoughtsTokens:             u.ThoughtsTokenCount,
			CachedTokens:               u.CachedContentTokenCount,
			PromptTokensByModality:     byModality(u.PromptTokensDetails),
			CandidatesTokensByModality: byModality(u.CandidatesTokensDetails),
		}
	}
	res.Outcome = OutcomeOf(res.FinishReason, block, len(res.Images)+res.StreamedImages)
	return nil
}

// take adds one answer image to res: from memory (Generate) or as counted
// in the sink (GenerateTo). It answers the image's index: its place in
// res.Images, or the sink's index; kept is false for an image the first
// pass dropped (a thought).
func (st *callState) take(res *Result, b *genai.Blob) (index int, kept bool, err error) {
	if i, ok := streamedIndex(b.Data); ok {
		if !st.kept[i] {
			return 0, false, nil // dropped by the first pass (a thought)
		}
		if st.mem != nil {
			res.Images = append(res.Images, job.Image{Data: st.mem.images[i].Bytes(), MIMEType: b.MIMEType})
			return len(res.Images) - 1, true, nil
		}
		res.StreamedImages++
		return i, true, nil
	}
	if st.mem != nil {
		res.Images = append(res.Images, job.Image{Data: b.Data, MIMEType: b.MIMEType})
		return len(res.Images) - 1, true, nil
	}
	index = st.opened
	w, err := st.sink.OpenImage(index, b.MIMEType)
	if err != nil {
		st.sinkErr = err
		return 0, false, err
	}
	st.opened++
	if _, err := w.Write(b.Data); err != nil {
		abort(w, err)
		st.sinkErr = err
		return 0, false, err
	}
	if err := w.Close(); err != nil {
		st.sinkErr = err
		return 0, false, err
	}
	res.StreamedImages++
	return index, true, nil
}

func ratings(in []*genai.SafetyRating) []job.SafetyRating {
	if len(in) == 0 {
		return nil
	}
	out := make([]job.SafetyRating, 0, len(in))
	for _, r := range in {
		if r == nil {
			continue
		}
		out = append(out, job.SafetyRating{
			Category: string(r.Category), Probability: string(r.Probability), ProbabilityScore: r.ProbabilityScore,
			Severity: string(r.Severity), SeverityScore: r.SeverityScore, Blocked: r.Blocked,
		})
	}
	return out
}

func byModality(in []*genai.ModalityTokenCount) map[string]int32 {
	if len(in) == 0 {
		return nil
	}
	out := make(map[string]int32, len(in))
	for _, m := range in {
		if m != nil {
			out[string(m.Modality)] += m.TokenCount
		}
	}
	return out
}
