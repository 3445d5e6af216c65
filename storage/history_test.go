package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
)

// putRecord writes a succeeded record for id with its two turns: the
// prompt and input, and the model's text and output image.
func putRecord(t *testing.T, s *Store, id, parent string, input job.TurnImage, output []byte, outcome job.Outcome) job.Record {
	t.Helper()
	name := "images/" + id + "/a1-0.png"
	put(t, s.client, outBucket, name, output, "image/png")
	sum := sha256.Sum256(output)
	out := job.StoredImage{URI: "gs://out/" + name, MIMEType: "image/png", SHA256: hex.EncodeToString(sum[:])}
	rec := job.Record{JobID: id, Outcome: outcome, Parent: parent, Outputs: []job.StoredImage{out}, Turns: []job.Turn{
		{Role: "user", Parts: []job.TurnPart{{Text: "prompt of " + id}, {Image: &input}}},
		{Role: "model", Parts: []job.TurnPart{{Text: "answer of " + id, ThoughtSignature: []byte("sig-" + id)},
			{Image: &job.TurnImage{URI: out.URI, MIMEType: "image/png", SHA256: out.SHA256}, ThoughtSignature: []byte{0, 1, 2, 255}}}},
	}}
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	put(t, s.client, outBucket, "jobs/"+id+"/result.json", data, "application/json")
	return rec
}

func TestHistory(t *testing.T) {
	srv := newServer(t)
	gem := newStore(srv.Client, newClock(), "o", job.GeminiAPI)
	vtx := newStore(srv.Client, newClock(), "o", job.VertexAI)
	in1, in2, out1, out2 := pngBytes(t, 8, 8), pngBytes(t, 9, 9), pngBytes(t, 10, 10), pngBytes(t, 11, 11)
	put(t, srv.Client, inBucket, "a.png", in1, "image/png")
	_, a1 := get(t, srv.Client, inBucket, "a.png")
	put(t, srv.Client, inBucket, "b.png", in2, "image/png")
	_, a2 := get(t, srv.Client, inBucket, "b.png")
	putRecord(t, gem, "h1", "", job.TurnImage{URI: "gs://in/a.png", Generation: a1.Generation, MIMEType: "image/png"}, out1, job.Succeeded)
	putRecord(t, gem, "h2", "h1", job.TurnImage{URI: "gs://in/b.png", Generation: a2.Generation, MIMEType: "image/png"}, out2, job.Succeeded)

	// describe renders a history: role, text, image bytes (or URI) and
	// signature per part.
	describe := func(turns []job.Turn) []string {
		var out []string
		for _, turn := range turns {
			for _, p := range turn.Parts {
				s := turn.Role + " " + p.Text
				if p.Image != nil {
					if p.Image.Data != nil {
						s += " bytes " + map[bool]string{true: "in1", false: ""}[bytes.Equal(p.Image.Data, in1)] +
							map[bool]string{true: "in2", false: ""}[bytes.Equal(p.Image.Data, in2)] +
							map[bool]string{true: "out1", false: ""}[bytes.Equal(p.Image.Data, out1)] +
							map[bool]string{true: "out2", false: ""}[bytes.Equal(p.Image.Data, out2)]
					} else {
						s += " uri " + p.Image.URI
					}
				}
				s += " sig " + hex.EncodeToString(p.ThoughtSignature)
				out = append(out, s)
			}
		}
		return out
	}
	sig := func(s string) string { return hex.EncodeToString([]byte(s)) }
	for _, tt := range []struct {
		name  string
		store *Store
		want  []string
	}{
		{"gemini-api reads the images", gem, []string{
			"user prompt of h1 sig ", "user  bytes in1 sig ", "model answer of h1 sig " + sig("sig-h1"), "model  bytes out1 sig 000102ff",
			"user prompt of h2 sig ", "user  bytes in2 sig ", "model answer of h2 sig " + sig("sig-h2"), "model  bytes out2 sig 000102ff"}},
		{"vertex names them", vtx, []string{
			"user prompt of h1 sig ", "user  uri gs://in/a.png sig ", "model answer of h1 sig " + sig("sig-h1"), "model  uri gs://out/images/h1/a1-0.png sig 000102ff",
			"user prompt of h2 sig ", "user  uri gs://in/b.png sig ", "model answer of h2 sig " + sig("sig-h2"), "model  uri gs://out/images/h2/a1-0.png sig 000102ff"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := job.Job{ID: "h3", Parent: "h2", Prompt: "p"}
			if err := tt.store.History(t.Context(), &j); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, describe(j.History)); diff != "" {
				t.Errorf("history (-want +got):\n%s", diff)
			}
		})
	}

	// Refusals, each before any model call, each saying which.
	putRecord(t, gem, "blocked", "", job.TurnImage{URI: "gs://in/a.png", MIMEType: "image/png"}, out1, job.Blocked)
	put(t, srv.Client, inBucket, "b.png", in1, "image/png") // b.png replaced: h2's input is another generation now
	for _, tt := range []struct {
		name  string
		store *Store
		job   job.Job
		want  string
	}{
		{"unknown", gem, job.Job{ID: "x", Parent: "nope"}, "parent nope: no such job has finished"},
		{"not succeeded", gem, job.Job{ID: "x", Parent: "blocked"}, "parent blocked ended blocked, not succeeded"},
		{"other prefix", gem, job.Job{ID: "x", Parent: "h1", Output: &job.OutputOptions{Prefix: "tenant-b"}}, `outside this job's output prefix "tenant-b/"`},
		{"input replaced, vertex", vtx, job.Job{ID: "x", Parent: "h2"}, "was replaced since it was recorded"},
		{"output changed", gem, job.Job{ID: "x", Parent: "h1"}, "has changed since it was recorded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "output changed" {
				put(t, srv.Client, outBucket, "images/h1/a1-0.png", out2, "image/png")
			}
			err := tt.store.History(t.Context(), &tt.job)
			if err == nil || job.Retryable(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("History: %v, want a permanent error saying %q", err, tt.want)
			}
		})
	}
	deep := newStore(srv.Client, newClock(), "o", job.GeminiAPI)
	deep.limits.MaxTurns = 2
	if err := deep.History(t.Context(), &job.Job{ID: "x", Parent: "h2"}); err == nil || !strings.Contains(err.Error(), "more than 2 turns (GENIMG_MAX_TURNS)") {
		t.Errorf("too deep: %v", err)
	}
}
