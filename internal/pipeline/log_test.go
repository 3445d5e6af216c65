package pipeline

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/tracing"
)

// Log lines carry the job's trace and span, in Cloud Logging's keys, so
// that they sit under the span in Cloud Trace.
func TestLogHandlerTrace(t *testing.T) {
	tr, err := tracing.New(t.Context(), config.Trace{Sample: 1, Exporter: config.TraceNone}, "proj", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := tracing.Continue(t.Context(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ctx, end := tr.Step(WithJobID(ctx, "job-1"), "claim")
	defer end(nil)
	tp := tracing.Traceparent(ctx)

	var buf bytes.Buffer
	slog.New(NewLogHandler(&buf, "proj", slog.LevelInfo)).InfoContext(ctx, "claimed")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	delete(got, "time")
	want := map[string]any{
		"severity": "INFO", "message": "claimed", "jobId": "job-1",
		"logging.googleapis.com/trace":         "projects/proj/traces/0af7651916cd43dd8448eb211c80319c",
		"logging.googleapis.com/spanId":        tp[36:52],
		"logging.googleapis.com/trace_sampled": true,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
}
