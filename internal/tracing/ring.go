package tracing

import (
	"context"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultRingSize is how many spans a Ring keeps when nobody says.
const DefaultRingSize = 10000

// A Span is one finished span as a Ring keeps it.
type Span struct {
	TraceID    string            `json:"traceId"`
	SpanID     string            `json:"spanId"`
	ParentID   string            `json:"parentSpanId,omitempty"`
	Name       string            `json:"name"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// A Ring is a span exporter that keeps the last spans in memory: the local
// stack's, for the tests and the console. It is safe for concurrent use,
// and may be shared by several Tracers.
type Ring struct {
	mu    sync.Mutex
	spans []Span
	next  int
	full  bool
}

// NewRing keeps the last n spans.
func NewRing(n int) *Ring { return &Ring{spans: make([]Span, max(n, 1))} }

// ExportSpans keeps spans (sdktrace.SpanExporter).
func (r *Ring) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range spans {
		sp := Span{
			TraceID: s.SpanContext().TraceID().String(), SpanID: s.SpanContext().SpanID().String(),
			Name: s.Name(), Start: s.StartTime(), End: s.EndTime(),
		}
		if p := s.Parent(); p.IsValid() {
			sp.ParentID = p.SpanID().String()
		}
		if as := s.Attributes(); len(as) > 0 {
			sp.Attributes = make(map[string]string, len(as))
			for _, a := range as {
				sp.Attributes[string(a.Key)] = a.Value.Emit()
			}
		}
		if s.Status().Code.String() == "Error" {
			sp.Error = s.Status().Description
		}
		r.spans[r.next] = sp
		r.next = (r.next + 1) % len(r.spans)
		r.full = r.full || r.next == 0
	}
	return nil
}

// Shutdown does nothing: the Ring outlives the Tracers that share it.
func (r *Ring) Shutdown(context.Context) error { return nil }

// Spans returns the spans kept, oldest first.
func (r *Ring) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]Span(nil), r.spans[:r.next]...)
	}
	return append(append([]Span(nil), r.spans[r.next:]...), r.spans[:r.next]...)
}

// Trace returns the spans of one trace (hex id), oldest first.
func (r *Ring) Trace(traceID string) []Span {
	var out []Span
	for _, s := range r.Spans() {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// AttrJob is the span attribute that names the job a trace ran (set on
// the claim step), so that a job's trace can be found by its id.
const AttrJob = "genimg.job"

// JobTraces returns the spans of every trace that ran job id, oldest
// first: each delivery of an event is a trace of its own, and an HTTP job's
// trace continues from Generate into OnMessage.
func (r *Ring) JobTraces(id string) []Span {
	seen := map[string]bool{}
	var out []Span
	for _, sp := range r.Spans() {
		if sp.Attributes[AttrJob] != id || seen[sp.TraceID] {
			continue
		}
		seen[sp.TraceID] = true
		out = append(out, r.Trace(sp.TraceID)...)
	}
	return out
}
