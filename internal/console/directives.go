package console

// A Directive steers the stand-in model from a prompt
// (gemini/geminitest: [[standin:…]]), so that failure paths can be seen.
type Directive struct {
	Text string `json:"text"`
	Says string `json:"says"`
}

// Directives are the stand-in's directives the submit form offers.
var Directives = []Directive{
	{"[[standin:block]]", "the prompt is blocked (promptFeedback.blockReason SAFETY, no candidates)"},
	{"[[standin:block=PROHIBITED_CONTENT]]", "the prompt is blocked for prohibited content"},
	{"[[standin:finish=IMAGE_SAFETY]]", "the answer stops for image safety, no image"},
	{"[[standin:finish=RECITATION]]", "the answer stops for recitation, no image"},
	{"[[standin:no-image]]", "the model answers without an image (NO_IMAGE)"},
	{"[[standin:text-only]]", "a text answer, no image, finish reason STOP"},
	{"[[standin:status=429]]", "every call answers 429 (per-minute quota) until the job gives up"},
	{"[[standin:status=503]]", "every call answers 503 (model unavailable)"},
	{"[[standin:quota=day]]", "429 for a per-day quota"},
	{"[[standin:fail=2]]", "the first 2 calls answer 503, then success"},
	{"[[standin:fail=2:429]]", "the first 2 calls answer 429, then success"},
	{"[[standin:latency=3s]]", "the model answers after 3 s"},
	{"[[standin:hang]]", "the model never answers (until the call times out)"},
}
