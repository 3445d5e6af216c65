package job

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
)

// stagedInput matches an inline image that genimg staged to its output
// bucket under its own SHA-256 (storage.Store.StageInputs).
// (The id's and the hash's lengths are checked apart; see idPattern.)
var stagedInput = regexp.MustCompile(`^gs://[^/]+/jobs/([A-Za-z0-9._-]+)/inputs/([0-9a-f]+)\.[a-z]{3,4}$`)

// Fingerprint identifies the work a normalised job asks for, apart from its
// id and the labels that are only echoed: two jobs with the same
// fingerprint pay for the same model call. Inline images count by their
// SHA-256, and so do the same images once staged (their object is named by
// it), so a job keeps its fingerprint whether it travels inline or staged —
// as a held job does when it is parked and requeued.
func (j Job) Fingerprint() string {
	work := j
	work.ID = ""
	work.Labels = nil
	work.Images = make([]Image, len(j.Images))
	for i, img := range j.Images {
		if len(img.Data) > 0 {
			sum := sha256.Sum256(img.Data)
			work.Images[i] = Image{URI: "sha256:" + hex.EncodeToString(sum[:])}
			continue
		}
		if m := stagedInput.FindStringSubmatch(img.URI); m != nil && len(m[1]) <= 128 && len(m[2]) == 64 {
			work.Images[i] = Image{URI: "sha256:" + m[2]}
			continue
		}
		// A pinned generation is different input bytes, so different
		// work; zero (the live object) encodes as before.
		work.Images[i] = Image{URI: img.URI, Generation: img.Generation}
	}
	// encoding/json sorts map keys, so the encoding is canonical.
	b, err := json.Marshal(work)
	if err != nil {
		panic("job: fingerprint: " + err.Error()) // a Job always marshals
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// PromptHash is the SHA-256 of the prompt, hex: what logs and object
// metadata carry instead of the prompt itself.
func PromptHash(prompt string) string {
	sum := sha256.Sum256([]byte(prompt))
	return hex.EncodeToString(sum[:])
}

// DeriveID makes a job id from the parts that identify a delivery, for
// triggers whose caller gave none: the same parts always give the same id.
// kind is a short readable prefix ("up", "msg").
func DeriveID(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return kind + "-" + strings.ToLower(hex.EncodeToString(h.Sum(nil)[:16]))
}
