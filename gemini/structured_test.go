package gemini_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// TestStructuredOutput: a job asking for JSON sends responseMimeType and
// responseSchema through the SDK; a conforming answer lands in Result.JSON,
// a non-conforming one leaves JSON empty with a JSONError, images either way.
func TestStructuredOutput(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","properties":{"title":{"type":"string"},"colours":{"type":"array","items":{"type":"string"}},"mood":{"type":"string","enum":["calm","busy"]}},"required":["title","mood"]}`)
	tests := []struct {
		name      string
		prompt    string
		wantJSON  string
		wantError string
	}{
		{name: "conforming", prompt: "a harbour at dawn",
			wantJSON: `{"colours":["example colours"],"mood":"calm","title":"example title"}`},
		{name: "non-conforming", prompt: "a harbour at dawn [[standin:json=bad]]",
			wantError: "the answer does not match responseSchema: $ is array, want object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := geminitest.NewServer()
			t.Cleanup(srv.Close)
			x := gemini.NewContextCaches(featureClient(t, srv), nil, nil)
			j := job.Job{ID: "s", Model: job.DefaultModel, Prompt: tt.prompt, ResponseModalities: []string{"TEXT", "IMAGE"},
				CandidateCount: 1, ResponseMIMEType: "application/json", ResponseSchema: schema}
			res, err := x.Generate(t.Context(), j)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantJSON, string(res.JSON)); diff != "" {
				t.Errorf("JSON (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantError, res.JSONError); diff != "" {
				t.Errorf("JSONError (-want +got):\n%s", diff)
			}
			if res.Outcome != job.Succeeded || len(res.Images) != 1 {
				t.Errorf("outcome %s with %d images; want succeeded with 1", res.Outcome, len(res.Images))
			}
			reqs := srv.Requests()
			g := reqs[len(reqs)-1].Decoded.GenerationConfig
			if g == nil || g.ResponseMIMEType != "application/json" || !strings.Contains(string(g.ResponseSchema), `"type":"OBJECT"`) {
				t.Errorf("request generationConfig = %+v; want responseMimeType and the schema with upper-case types", g)
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"},"tags":{"type":"array","items":{"type":"string"}},"x":{"type":"number","nullable":true}},"required":["n"]}`)
	tests := []struct {
		text, want, err string
	}{
		{text: `{"n": 3, "tags": ["a"]}`, want: `{"n":3,"tags":["a"]}`},
		{text: "```json\n{\"n\": 1, \"x\": null}\n```", want: `{"n":1,"x":null}`},
		{text: `{"n": 1.5}`, err: "the answer does not match responseSchema: $.n is number, want integer"},
		{text: `{"tags": []}`, err: `the answer does not match responseSchema: $ lacks required property "n"`},
		{text: `{"n": 1, "tags": [2]}`, err: "the answer does not match responseSchema: $.tags[0] is integer, want string"},
		{text: `here you go: {"n": 1}`, err: "the answer's text is not JSON: invalid character 'h' looking for beginning of value"},
		{text: `{"n": 1} {"n": 2}`, err: "the answer's text holds more than one JSON value"},
		{text: "", err: "the answer has no text to parse as JSON"},
	}
	for _, tt := range tests {
		got, err := gemini.CheckJSON(schema, tt.text)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if tt.want != string(got) || tt.err != gotErr {
			t.Errorf("CheckJSON(%q) = %s, %q; want %s, %q", tt.text, got, gotErr, tt.want, tt.err)
		}
	}
	if _, err := gemini.SchemaOf(json.RawMessage(`{"type":"object","additionalProperties":false}`)); err == nil {
		t.Error("SchemaOf took a keyword the API does not know")
	}
}
