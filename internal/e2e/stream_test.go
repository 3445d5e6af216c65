package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
)

type sse struct {
	name string
	data string
}

// readEvents reads a server-sent event stream to its end.
func readEvents(t *testing.T, resp *http.Response) []sse {
	t.Helper()
	var out []sse
	var cur sse
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 10<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		case line == "":
			out = append(out, cur)
			cur = sse{}
		}
	}
	return out
}

func TestStreamedJob(t *testing.T) {
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate",
		strings.NewReader(`{"prompt": "a harbour at dawn [[standin:latency=600ms]]", "aspectRatio": "21:9"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
	}
	all := readEvents(t, resp)
	// State events report each change of the job's state; the others tell
	// the job's story.
	var names, states []string
	var events []sse
	for _, e := range all {
		if e.name == "state" {
			var p struct{ State string }
			json.Unmarshal([]byte(e.data), &p)
			states = append(states, p.State)
			continue
		}
		events = append(events, e)
		names = append(names, e.name)
	}
	if len(states) == 0 || states[len(states)-1] != string(job.Running) {
		t.Errorf("states %v, want them to end running", states)
	}
	if got := strings.Join(names, ","); got != "accepted,running,image,record" {
		t.Fatalf("events %s, want accepted,running,image,record", got)
	}
	var rec job.Record
	if err := json.Unmarshal([]byte(events[3].data), &rec); err != nil {
		t.Fatal(err)
	}
	var img struct{ URI string }
	json.Unmarshal([]byte(events[2].data), &img)
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 || rec.Outputs[0].URI != img.URI || rec.Outputs[0].Width != 1536 {
		t.Errorf("record %+v, image event %s", rec, events[2].data)
	}
}
