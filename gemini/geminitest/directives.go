package geminitest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// A Behavior says how the stand-in answers one request. The zero Behavior
// answers normally: images of the requested size. Tests enqueue Behaviors
// with Server.Enqueue; people and end-to-end tests write them into the
// prompt as directives (see the package documentation).
type Behavior struct {
	// Status, when non-zero, answers with this HTTP error status and the
	// service's error body. 429 carries a per-minute QuotaFailure and a
	// RetryInfo detail with RetryDelay.
	Status int
	// RetryDelay is the RetryInfo.retryDelay of a 429 (default
	// Options.RetryDelay).
	RetryDelay time.Duration
	// QuotaDay answers 429 for a per-day quota: the QuotaFailure names
	// GenerateRequestsPerDayPerProjectPerModel (and, like the service, a
	// RetryInfo is still attached).
	QuotaDay bool
	// FailFirst fails the first FailFirst calls with the same prompt with
	// FailStatus (default 503), then answers normally.
	FailFirst  int
	FailStatus int
	// Block blocks the prompt: no candidates, promptFeedback.blockReason
	// set to this value (SAFETY, OTHER, PROHIBITED_CONTENT, …).
	Block string
	// Finish stops the candidate with this finishReason and no image
	// (IMAGE_SAFETY, NO_IMAGE, IMAGE_OTHER, …). STOP answers normally.
	Finish string
	// TextOnly answers with a text part and no image, finishReason STOP.
	TextOnly bool
	// Latency is added before answering (on top of Options.Latency).
	Latency time.Duration
	// Hang never answers: the request waits until the client gives up or
	// the server closes.
	Hang bool
	// BadJSON answers a request for JSON with text that does not match
	// its schema (structured.go).
	BadJSON bool
	// Twice answers a batch request twice, under the same key (batch.go).
	Twice bool
}

// merge lays o's set fields over b's.
func (b Behavior) merge(o Behavior) Behavior {
	if o.Status != 0 {
		b.Status = o.Status
	}
	if o.RetryDelay != 0 {
		b.RetryDelay = o.RetryDelay
	}
	b.QuotaDay = b.QuotaDay || o.QuotaDay
	if o.FailFirst != 0 {
		b.FailFirst, b.FailStatus = o.FailFirst, o.FailStatus
	}
	if o.Block != "" {
		b.Block = o.Block
	}
	if o.Finish != "" {
		b.Finish = o.Finish
	}
	b.TextOnly = b.TextOnly || o.TextOnly
	b.Latency += o.Latency
	b.Hang = b.Hang || o.Hang
	b.BadJSON = b.BadJSON || o.BadJSON
	b.Twice = b.Twice || o.Twice
	return b
}

var directivePattern = regexp.MustCompile(`\[\[standin:([^\]]*)\]\]`)

// ParseDirectives reads every [[standin:…]] directive in text. A directive
// it does not understand is an error, so a typo in a test prompt never
// silently becomes a normal answer; the stand-in answers it with 400.
func ParseDirectives(text string) (Behavior, error) {
	var b Behavior
	for _, m := range directivePattern.FindAllStringSubmatch(text, -1) {
		name, value, hasValue := strings.Cut(strings.TrimSpace(m[1]), "=")
		var err error
		switch {
		case name == "block":
			b.Block = "SAFETY"
			if hasValue {
				b.Block = strings.ToUpper(value)
			}
		case name == "finish" && hasValue:
			b.Finish = strings.ToUpper(value)
		case name == "no-image" && !hasValue:
			b.Finish = "NO_IMAGE"
		case name == "text-only" && !hasValue:
			b.TextOnly = true
		case name == "status" && hasValue:
			b.Status, err = parseStatus(value)
		case name == "quota" && value == "day":
			b.QuotaDay = true
		case name == "quota" && value == "minute":
			b.Status = 429
		case name == "retry-delay" && hasValue:
			b.RetryDelay, err = time.ParseDuration(value)
		case name == "fail" && hasValue:
			count, status, _ := strings.Cut(value, ":")
			if b.FailFirst, err = strconv.Atoi(count); err == nil && b.FailFirst < 1 {
				err = fmt.Errorf("count must be at least 1")
			}
			b.FailStatus = 503
			if err == nil && status != "" {
				b.FailStatus, err = parseStatus(status)
			}
		case name == "latency" && hasValue:
			b.Latency, err = time.ParseDuration(value)
		case name == "hang" && !hasValue:
			b.Hang = true
		case name == "json" && value == "bad":
			b.BadJSON = true
		case name == "twice" && !hasValue:
			b.Twice = true
		default:
			return Behavior{}, fmt.Errorf("unknown stand-in directive %q; known: block[=REASON], finish=REASON, no-image, text-only, status=CODE, quota=day|minute, retry-delay=DURATION, fail=N[:CODE], latency=DURATION, hang, json=bad, twice", m[0])
		}
		if err != nil {
			return Behavior{}, fmt.Errorf("stand-in directive %q: %v", m[0], err)
		}
	}
	return b, nil
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 400 || n > 599 {
		return 0, fmt.Errorf("expected an HTTP error status from 400 to 599")
	}
	return n, nil
}
