package geminitest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Thought signatures. A thinking model (job.Capability.Thinking) signs the
// first text part and every image part of its answer; a conversation must
// send each model turn back with its parts' signatures, byte for byte.
// Models with RequiresSignatures answer 400 when one is missing or altered,
// as Gemini 3.1 Flash Image is reported to (third-party reports:
// https://blog.laozhang.ai/es/posts/nano-banana-2-thought-signature-error;
// Google documents the rule in
// https://docs.cloud.google.com/vertex-ai/generative-ai/docs/thought-signatures).
//
// A signature is 16 random bytes and their HMAC under the handler's key,
// so the stand-in checks one without remembering it, and a signature
// altered by one bit fails.

var signatureKey = func() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}()

func newSignature() []byte {
	sig := make([]byte, 16, 48)
	rand.Read(sig)
	m := hmac.New(sha256.New, signatureKey)
	m.Write(sig)
	return m.Sum(sig)
}

func validSignature(b64 string) bool {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 48 {
		return false
	}
	m := hmac.New(sha256.New, signatureKey)
	m.Write(b[:16])
	return hmac.Equal(m.Sum(nil), b[16:])
}

// checkSignatures checks the model turns of a request as a model that
// requires signatures does: the first part of each model turn and each of
// its image parts carry a signature this model issued.
func checkSignatures(req *GenerateContentRequest) *APIError {
	for i, c := range req.Contents {
		if c.Role != "model" {
			continue
		}
		for j, p := range c.Parts {
			if j != 0 && p.InlineData == nil {
				continue
			}
			switch {
			case p.ThoughtSignature == "" && p.InlineData != nil:
				return badRequest(fmt.Sprintf("Image part is missing a thought_signature in content position %d, part position %d.", i+1, j+1))
			case p.ThoughtSignature == "":
				return badRequest(fmt.Sprintf("Part is missing a thought_signature in content position %d, part position %d.", i+1, j+1))
			case !validSignature(p.ThoughtSignature):
				return badRequest(fmt.Sprintf("Unable to submit request because it has an invalid thought signature for content at index %d.", i))
			}
		}
	}
	return nil
}
