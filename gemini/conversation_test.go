package gemini

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// A thinking model's answer keeps its thought signatures through the
// streaming decoder, on both the memory and the streaming path; sent back
// unchanged in the history the next call succeeds, and with one byte of
// one signature changed the model refuses it (as Gemini 3.1 Flash Image
// does).
func TestThoughtSignaturesRoundTrip(t *testing.T) {
	srv := geminitest.NewServer()
	defer srv.Close()
	c, _ := newClient(t, srv, job.GeminiAPI, nil)
	const model = "gemini-3.1-flash-image"
	first := job.Job{ID: "turn-1", Prompt: "a snowy village", Model: model, ResponseModalities: []string{"TEXT", "IMAGE"}}

	res, err := c.Generate(t.Context(), first)
	if err != nil {
		t.Fatal(err)
	}
	sink := &memorySink{images: map[int]*bytes.Buffer{}}
	streamed, err := c.GenerateTo(t.Context(), first, sink)
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*Result{"Generate": res, "GenerateTo": streamed} {
		var shape []string
		for _, p := range r.ModelTurn {
			s := "text"
			if p.Image != nil {
				s = "image"
			}
			if len(p.ThoughtSignature) == 48 {
				s += " signed"
			}
			shape = append(shape, s)
		}
		if diff := cmp.Diff([]string{"text signed", "image signed"}, shape); diff != "" {
			t.Errorf("%s: model turn (-want +got):\n%s", name, diff)
		}
	}

	history := func(sig func([]byte) []byte) []job.Turn {
		model := job.Turn{Role: "model"}
		for _, p := range res.ModelTurn {
			if p.Image != nil {
				p.Image = &job.TurnImage{MIMEType: "image/png", Data: res.Images[p.Image.Index].Data}
			}
			p.ThoughtSignature = sig(bytes.Clone(p.ThoughtSignature))
			model.Parts = append(model.Parts, p)
		}
		return []job.Turn{{Role: "user", Parts: []job.TurnPart{{Text: first.Prompt}}}, model}
	}
	next := job.Job{ID: "turn-2", Parent: "turn-1", Prompt: "now add a dog", Model: model}

	next.History = history(func(b []byte) []byte { return b })
	if r, err := c.Generate(t.Context(), next); err != nil || r.Outcome != job.Succeeded {
		t.Fatalf("signatures intact: %v", err)
	}
	next.History = history(func(b []byte) []byte { b[20] ^= 1; return b })
	if _, err := c.Generate(t.Context(), next); err == nil || job.Retryable(err) || !strings.Contains(err.Error(), "invalid thought signature") {
		t.Errorf("a changed signature: err %v, want the model's 400", err)
	}
	next.History = history(func([]byte) []byte { return nil })
	if _, err := c.Generate(t.Context(), next); err == nil || job.Retryable(err) || !strings.Contains(err.Error(), "missing a thought_signature") {
		t.Errorf("no signatures: err %v, want the model's 400", err)
	}
	next.History = nil
	if _, err := c.Generate(t.Context(), next); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("a parent without its history read: err %v, want ErrInvalid", err)
	}
}

// On Vertex AI a history image without bytes goes by its gs:// URI
// (fileData); on the Gemini API it is refused, never sent empty.
func TestHistoryImagesByURIOnVertex(t *testing.T) {
	srv := geminitest.NewServer()
	defer srv.Close()
	turns := []job.Turn{
		{Role: "user", Parts: []job.TurnPart{{Text: "a harbour"}}},
		{Role: "model", Parts: []job.TurnPart{{Image: &job.TurnImage{URI: "gs://out/images/h1/a1-0.png", MIMEType: "image/png"}}}},
	}
	j := job.Job{ID: "h2", Parent: "h1", Prompt: "add a boat", Model: job.DefaultModel, History: turns}

	v, _ := newClient(t, srv, job.VertexAI, nil)
	if _, err := v.Generate(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	reqs := srv.Requests()
	got := reqs[len(reqs)-1].Decoded.Contents[1].Parts[0].FileData
	if diff := cmp.Diff(&geminitest.FileData{MIMEType: "image/png", FileURI: "gs://out/images/h1/a1-0.png"}, got); diff != "" {
		t.Errorf("history image on Vertex (-want +got):\n%s", diff)
	}

	g, _ := newClient(t, srv, job.GeminiAPI, nil)
	if _, err := g.Generate(t.Context(), j); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("Gemini API, image not read: %v, want ErrInvalid", err)
	}
}
