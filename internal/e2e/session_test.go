package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// watchRequests collects the stack stand-in's requests whose body holds
// marker, until the test ends.
func watchRequests(t *testing.T, marker string) func() []geminitest.Request {
	var mu sync.Mutex
	var got []geminitest.Request
	stop := stack.model.Watch(func(r geminitest.Request) {
		if r.Decoded != nil && bytes.Contains(r.Body, []byte(marker)) {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		}
	})
	t.Cleanup(stop)
	return func() []geminitest.Request {
		mu.Lock()
		defer mu.Unlock()
		return append([]geminitest.Request(nil), got...)
	}
}

// A three-turn edit session on a model that requires thought signatures,
// through three triggers: HTTP, Pub/Sub, and an uploaded job file with
// parent. Each request the stand-in receives holds the whole history —
// every earlier user turn and model turn — with each model turn's parts and
// thought signatures exactly as the records kept them from the answers, and
// the earlier images byte for byte.
func TestEditSession(t *testing.T) {
	marker := uniq(t)
	requests := watchRequests(t, marker)
	const model = "gemini-3.1-flash-image"
	ids := []string{marker + "-1", marker + "-2", marker + "-3"}
	prompts := []string{"a snowy village " + marker, "now add a dog " + marker, "warmer light " + marker}

	// Turn 1, over HTTP.
	resp, b := postJSON(t, fmt.Sprintf(`{"id": %q, "prompt": %q, "model": %q, "aspectRatio": "4:3", "responseModalities": ["TEXT", "IMAGE"]}`,
		ids[0], prompts[0], model), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("turn 1: status %d: %s", resp.StatusCode, b)
	}
	// Turn 2, over Pub/Sub.
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": %q, "model": %q, "responseModalities": ["TEXT", "IMAGE"]}`,
		ids[1], ids[0], prompts[1], model)), nil)
	stack.events.waitJob(t, ids[1])
	// Turn 3, as an uploaded job file.
	upload(t, inputBucket, "batch/"+ids[2]+".job.json", []byte(fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": %q, "model": %q}`,
		ids[2], ids[1], prompts[2], model)), "application/json", nil)
	stack.events.waitJob(t, ids[2])

	var recs []job.Record
	for i, id := range ids {
		rec := storedRecord(t, id)
		if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 || len(rec.Turns) != 2 {
			t.Fatalf("turn %d: outcome %s, %d outputs, %d turns, error %+v", i+1, rec.Outcome, len(rec.Outputs), len(rec.Turns), rec.Error)
		}
		if want := []string{"", ids[0], ids[1]}[i]; rec.Parent != want {
			t.Errorf("turn %d: parent %q, want %q", i+1, rec.Parent, want)
		}
		if want := []job.TriggerKind{job.HTTP, job.PubSub, job.Upload}[i]; rec.Trigger.Kind != want {
			t.Errorf("turn %d: trigger %s, want %s", i+1, rec.Trigger.Kind, want)
		}
		recs = append(recs, rec)
	}

	reqs := requests()
	if len(reqs) != 3 {
		t.Fatalf("the stand-in got %d requests of the session, want 3", len(reqs))
	}
	for k, req := range reqs {
		// The request of turn k+1: the k earlier records' turns, then
		// its own user turn.
		var want, got []string
		for _, rec := range recs[:k] {
			for _, turn := range rec.Turns {
				want = append(want, describeTurn(turn))
			}
		}
		want = append(want, "user: text "+prompts[k])
		for _, c := range req.Decoded.Contents {
			got = append(got, describeContent(t, c))
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("request of turn %d: contents (-want +got):\n%s", k+1, diff)
		}
	}
	// The history is paid as input: each turn's prompt counts the earlier
	// turns' text and images.
	for i := 1; i < len(recs); i++ {
		prev, cur := recs[i-1].Usage, recs[i].Usage
		if cur.PromptTokens <= prev.PromptTokens || cur.PromptTokensByModality["IMAGE"] <= prev.PromptTokensByModality["IMAGE"] {
			t.Errorf("turn %d: prompt tokens %d (image %d) not above turn %d's %d (image %d)", i+1,
				cur.PromptTokens, cur.PromptTokensByModality["IMAGE"], i, prev.PromptTokens, prev.PromptTokensByModality["IMAGE"])
		}
	}
	// The model turns carried signatures at all (the stand-in signs the
	// first part and the image of a thinking model's answer).
	for i, rec := range recs {
		signed := 0
		for _, p := range rec.Turns[1].Parts {
			if len(p.ThoughtSignature) > 0 {
				signed++
			}
		}
		if signed != 2 {
			t.Errorf("turn %d: %d signed parts in the model turn, want 2: %+v", i+1, signed, rec.Turns[1])
		}
		if img := rec.Turns[1].Parts[len(rec.Turns[1].Parts)-1].Image; img == nil || img.URI != rec.Outputs[0].URI || img.SHA256 != rec.Outputs[0].SHA256 {
			t.Errorf("turn %d: the model turn's image %+v is not the output %s", i+1, img, rec.Outputs[0].URI)
		}
	}
}

// An uploaded image with prompt and parent metadata continues the parent's
// conversation: the request holds the parent's turns, then the new prompt
// with the uploaded image.
func TestUploadContinuesSession(t *testing.T) {
	marker := uniq(t)
	requests := watchRequests(t, marker)
	parent := marker + "-1"
	resp, b := postJSON(t, fmt.Sprintf(`{"id": %q, "prompt": "a harbour at noon %s"}`, parent, marker), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("parent: status %d: %s", resp.StatusCode, b)
	}
	photo := testPNG(t, 320, 240)
	name := "photos/" + marker + ".png"
	attrs := upload(t, inputBucket, name, photo, "image/png", map[string]string{"prompt": "add this boat to it " + marker, "parent": parent})
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	rec := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source }).Record
	if rec.Outcome != job.Succeeded || rec.Parent != parent {
		t.Fatalf("outcome %s, parent %q, error %+v", rec.Outcome, rec.Parent, rec.Error)
	}
	reqs := requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	var got []string
	for _, c := range reqs[1].Decoded.Contents {
		got = append(got, describeContent(t, c))
	}
	first := storedRecord(t, parent)
	want := []string{describeTurn(first.Turns[0]), describeTurn(first.Turns[1]), "user: text add this boat to it " + marker + " | image " + sha(photo)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("request contents (-want +got):\n%s", diff)
	}
	if img := rec.Turns[0].Parts[1].Image; img == nil || img.URI != "gs://"+inputBucket+"/"+name || img.Generation != attrs.Generation {
		t.Errorf("the user turn's image %+v, want %s#%d", img, name, attrs.Generation)
	}
}

// describeTurn and describeContent render a recorded turn and a request's
// content alike: role, then each part's text, image hash and signature.
func describeTurn(t job.Turn) string {
	var parts []string
	for _, p := range t.Parts {
		s := ""
		if p.Text != "" {
			s += "text " + p.Text
		}
		if p.Image != nil {
			s += "image " + p.Image.SHA256
		}
		if len(p.ThoughtSignature) > 0 {
			s += " signed " + base64.StdEncoding.EncodeToString(p.ThoughtSignature)
		}
		parts = append(parts, s)
	}
	return t.Role + ": " + strings.Join(parts, " | ")
}

func describeContent(t *testing.T, c geminitest.Content) string {
	t.Helper()
	var parts []string
	for _, p := range c.Parts {
		s := ""
		if p.Text != "" {
			s += "text " + p.Text
		}
		if p.InlineData != nil {
			data, err := base64.StdEncoding.DecodeString(p.InlineData.Data)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			s += "image " + hex.EncodeToString(sum[:])
		}
		if p.ThoughtSignature != "" {
			s += " signed " + p.ThoughtSignature
		}
		parts = append(parts, s)
	}
	return c.Role + ": " + strings.Join(parts, " | ")
}

// A parent that cannot be continued fails the job before any model call,
// saying which: unknown, not succeeded, too deep, another prefix.
func TestEditSessionRefusals(t *testing.T) {
	const model = "gemini-3.1-flash-image"
	base := uniq(t)
	post := func(body string) (int, job.Record) {
		resp, b := postJSON(t, body, nil)
		if resp.StatusCode == http.StatusBadRequest && errorMessage(b) != "" {
			// Refused by validation, before the job was queued.
			return resp.StatusCode, job.Record{Outcome: job.Failed, Error: &job.Error{Message: errorMessage(b)}}
		}
		return resp.StatusCode, decodeRecord(t, b)
	}
	first := base + "-first"
	if status, rec := post(fmt.Sprintf(`{"id": %q, "prompt": "a boat", "model": %q}`, first, model)); status != http.StatusOK || rec.Outcome != job.Succeeded {
		t.Fatalf("first job: %d %+v", status, rec.Error)
	}
	blocked := base + "-blocked"
	if _, rec := post(fmt.Sprintf(`{"id": %q, "prompt": "a boat [[standin:block]]", "model": %q}`, blocked, model)); rec.Outcome != job.Blocked {
		t.Fatalf("blocked job: %s", rec.Outcome)
	}
	second := base + "-second"
	if _, rec := post(fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": "add a gull", "model": %q}`, second, first, model)); rec.Outcome != job.Succeeded {
		t.Fatalf("second job: %s %+v", rec.Outcome, rec.Error)
	}

	cfg := baseConfig(t, newModel(t))
	cfg.Limits.MaxTurns = 2
	shallow := newInstance(t, cfg, "shallow")

	calls := stack.model.Calls()
	for _, tt := range []struct {
		name, body, want string
		in               *testInstance
	}{
		{"unknown", fmt.Sprintf(`{"id": %q, "parent": "no-such-job", "prompt": "x", "model": %q}`, base+"-r1", model),
			"parent no-such-job: no such job has finished", nil},
		{"not succeeded", fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": "x", "model": %q}`, base+"-r2", blocked, model),
			"parent " + blocked + " ended blocked, not succeeded", nil},
		{"another prefix", fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": "x", "model": %q, "output": {"prefix": "tenant-b"}}`, base+"-r3", first, model),
			"wrote its images outside this job's output prefix \"tenant-b/\"", nil},
		{"itself", fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": "x", "model": %q}`, base+"-r4", base+"-r4", model),
			"is the job itself", nil},
		{"too deep", fmt.Sprintf(`{"id": %q, "parent": %q, "prompt": "x", "model": %q}`, base+"-r5", second, model),
			"would have more than 2 turns (GENIMG_MAX_TURNS)", shallow},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rec job.Record
			if tt.in != nil {
				rec = runOn(t, tt.in, base+"-r5", tt.body)
			} else {
				_, rec = post(tt.body)
			}
			if rec.Outcome != job.Failed || rec.Error == nil || !strings.Contains(rec.Error.Message, tt.want) || rec.Attempts != 0 {
				t.Errorf("outcome %s, attempts %d, error %+v; want failed before any call, saying %q", rec.Outcome, rec.Attempts, rec.Error, tt.want)
			}
		})
	}
	if got := stack.model.Calls() - calls; got != 0 {
		t.Errorf("%d model calls for refused continuations", got)
	}
}
