package job

import "fmt"

// Edit sessions (contract 9.3). A job with Parent continues the parent's
// conversation: its request's contents are the parent's history, the
// parent's user turn, the parent's model turn as the model returned it, and
// then the new user turn. Each record keeps its own two turns (Turns), so
// that a child rebuilds the history from records genimg wrote, never from
// a copy a caller sends.

// DefaultMaxTurns is GENIMG_MAX_TURNS's default: the most user turns one
// conversation may have, this job's included.
const DefaultMaxTurns = 10

// A Turn is one turn of a conversation as a record keeps it: the user's
// (prompt and input images) or the model's (its answer's parts, as
// returned, with their thought signatures byte for byte).
type Turn struct {
	// Role is "user" or "model".
	Role  string     `json:"role"`
	Parts []TurnPart `json:"parts"`
}

// A TurnPart is text or an image, with what the model attached to it.
type TurnPart struct {
	Text  string     `json:"text,omitempty"`
	Image *TurnImage `json:"image,omitempty"`
	// Thought marks a part of the model's thinking.
	Thought bool `json:"thought,omitempty"`
	// ThoughtSignature is the model's signature on this part, exactly as
	// it returned it (standard base64 in JSON); it goes back unchanged.
	ThoughtSignature []byte `json:"thoughtSignature,omitempty"`
}

// A TurnImage is an image of a turn, by reference: an input by its URI and
// generation, an output by its URI and SHA-256. Data and Index are never
// stored: Data is the bytes read back to rebuild a request, Index the
// image's place among the answer's images while the record is made.
type TurnImage struct {
	URI        string `json:"uri"`
	Generation int64  `json:"generation,omitempty"`
	MIMEType   string `json:"mimeType,omitempty"`
	SHA256     string `json:"sha256,omitempty"`

	Data  []byte `json:"-"`
	Index int    `json:"-"`
}

// validateParent checks the parent's id; whether it exists and may be
// continued is the pipeline's to find out, before any model call.
func (j *Job) validateParent() []error {
	switch {
	case j.Parent == "":
		return nil
	case !ValidID(j.Parent):
		return []error{fmt.Errorf("parent %q: must be a job id, 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", truncate(j.Parent))}
	case j.Parent == j.ID:
		return []error{fmt.Errorf("parent %q is the job itself", truncate(j.Parent))}
	case j.Context != nil || j.CachedContent != "":
		return []error{fmt.Errorf("parent cannot be combined with context or cachedContent: a cached context must come first in the contents, before the history")}
	}
	return nil
}
