package e2e

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/tracing"
)

// traceIDOf is the trace id of a W3C traceparent.
func traceIDOf(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[1]
}

// A traceparent sent to Generate comes back, same trace id, on the
// completion event and on the callback; and the job's spans, on both sides
// of the queue and of the completion topic, form one tree under the
// caller's span.
func TestTraceFromGenerateToCallback(t *testing.T) {
	rv := newReceiver(t, http.StatusNoContent)
	traceID, parent := randomHex(t, 16), randomHex(t, 8)
	id := uniq(t)
	resp, body := postJSON(t, fmt.Sprintf(`{"prompt": "a traced comet", "callback": {"url": %q}}`, rv.URL),
		map[string]string{"Idempotency-Key": id, "traceparent": "00-" + traceID + "-" + parent + "-01"})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	ev := stack.events.waitJob(t, id)
	if got := traceIDOf(ev.Attributes["ce-traceparent"]); got != traceID {
		t.Errorf("the event's ce-traceparent %q: trace id %q, want %q", ev.Attributes["ce-traceparent"], got, traceID)
	}
	waitFor(t, "the callback", func() bool { return len(rv.deliveries()) > 0 })
	h := rv.deliveries()[0].header
	if got := traceIDOf(h.Get("ce-traceparent")); got != traceID {
		t.Errorf("the callback's ce-traceparent %q: trace id %q, want %q", h.Get("ce-traceparent"), got, traceID)
	}
	if got := traceIDOf(h.Get("traceparent")); got != traceID {
		t.Errorf("the callback's traceparent %q: trace id %q, want %q", h.Get("traceparent"), got, traceID)
	}

	// The callback span ends once the receiver has answered.
	var spans []tracing.Span
	waitFor(t, "the callback span", func() bool {
		spans = stack.Traces.Trace(traceID)
		return slices.ContainsFunc(spans, func(s tracing.Span) bool { return s.Name == "callback" })
	})
	byID := map[string]tracing.Span{}
	var names []string
	for _, s := range spans {
		byID[s.SpanID] = s
		names = append(names, s.Name)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	want := []string{"Generate", "OnMessage", "admit", "callback", "claim", "decode", "inputs", "model", "publish", "record", "write"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("span names (-want +got):\n%s", diff)
	}
	// One tree: the caller's span is the only parent outside the trace, of
	// Generate alone; every other span hangs off a span of the job.
	parentName := func(s tracing.Span) string {
		if p, ok := byID[s.ParentID]; ok {
			return p.Name
		}
		if s.ParentID == parent {
			return "(caller)"
		}
		return "(missing " + s.ParentID + ")"
	}
	edges := map[string]string{}
	for _, s := range spans {
		edges[s.Name] = parentName(s)
	}
	wantEdges := map[string]string{
		"Generate": "(caller)", "OnMessage": "Generate", "decode": "OnMessage",
		"claim": "OnMessage", "inputs": "OnMessage", "admit": "OnMessage", "model": "OnMessage", "write": "model",
		"record": "OnMessage", "publish": "OnMessage", "callback": "publish",
	}
	if diff := cmp.Diff(wantEdges, edges); diff != "" {
		t.Errorf("span parents (-want +got):\n%s", diff)
	}
	for _, s := range spans {
		if s.Name == "model" {
			for _, k := range []string{"genimg.model", "genimg.tokens.total", "genimg.cost_usd"} {
				if s.Attributes[k] == "" {
					t.Errorf("model span lacks %s: %v", k, s.Attributes)
				}
			}
		}
	}
}

// A Pub/Sub job carrying googclient_traceparent continues that trace; one
// with none starts its own.
func TestTraceFromPubSub(t *testing.T) {
	traceID := randomHex(t, 16)
	id := uniq(t)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "a traced moth"}`, id)),
		map[string]string{"googclient_traceparent": "00-" + traceID + "-" + randomHex(t, 8) + "-01"})
	ev := stack.events.waitJob(t, id)
	if got := traceIDOf(ev.Attributes["ce-traceparent"]); got != traceID {
		t.Errorf("ce-traceparent trace id %q, want %q", got, traceID)
	}
	untraced := uniq(t)
	publish(t, []byte(fmt.Sprintf(`{"id": %q, "prompt": "an untraced moth"}`, untraced)), nil)
	ev = stack.events.waitJob(t, untraced)
	if got := traceIDOf(ev.Attributes["ce-traceparent"]); got == "" || got == traceID {
		t.Errorf("a job without a trace: ce-traceparent %q, want a new trace", ev.Attributes["ce-traceparent"])
	}
}
