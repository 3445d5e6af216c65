package job_test

import (
	"fmt"

	"github.com/genimg/genimg/job"
)

// A job is decoded strictly, normalised and validated against what the
// model accepts; every problem is reported with what is accepted instead.
func Example() {
	policy := job.Policy{Backend: job.GeminiAPI, Models: []string{job.DefaultModel}}
	j, err := job.Decode([]byte(`{"prompt": "a red fox in the snow", "aspectRatio": "7:5"}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	j.Normalize(policy)
	fmt.Println(j.Model, j.CandidateCount)
	fmt.Println(j.Validate(policy))

	_, err = job.Decode([]byte(`{"prompt": "a fox", "aspect_ratio": "1:1"}`))
	fmt.Println(err)
	// Output:
	// gemini-2.5-flash-image 1
	// invalid job: aspectRatio "7:5" is not supported by gemini-2.5-flash-image; accepted: 9:16, 2:3, 3:4, 4:5, 1:1, 5:4, 4:3, 3:2, 16:9, 21:9
	// invalid job: job: unknown field "aspect_ratio"; accepted fields: id, prompt, images, aspectRatio, responseModalities, candidateCount, systemInstruction, safetySettings, cachedContent, model, output, labels, billingLabels, responseMimeType, responseSchema, context, callback, renditions, imageSize, tools, parent
}

// The same work always has the same fingerprint, whatever its id.
func ExampleJob_Fingerprint() {
	a := job.Job{ID: "a", Prompt: "a fox", Model: job.DefaultModel}
	b := job.Job{ID: "b", Prompt: "a fox", Model: job.DefaultModel}
	c := job.Job{ID: "a", Prompt: "a cat", Model: job.DefaultModel}
	fmt.Println(a.Fingerprint() == b.Fingerprint(), a.Fingerprint() == c.Fingerprint())
	// Output: true false
}
