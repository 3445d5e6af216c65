package pipeline

import (
	"context"
	"io"
	"log/slog"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/job"
)

type jobIDKey struct{}

// WithJobID puts the job id in ctx, so every log line of the job carries it.
func WithJobID(ctx context.Context, id string) context.Context {
	if id == "" {
		return ctx
	}
	return context.WithValue(ctx, jobIDKey{}, id)
}

// NewLogHandler writes JSON lines with Cloud Logging's keys: severity,
// message, logging.googleapis.com/trace and spanId from the job's span (or
// the request's trace header), and the job id from the context.
func NewLogHandler(w io.Writer, project string, level slog.Leveler) slog.Handler {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.MessageKey:
				a.Key = "message"
			case slog.LevelKey:
				a.Key = "severity"
				if l, ok := a.Value.Any().(slog.Level); ok {
					a.Value = slog.StringValue(severity(l))
				}
			}
			return a
		},
	})
	return contextHandler{Handler: h, project: project}
}

func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

// contextHandler adds what the context knows to every record.
type contextHandler struct {
	slog.Handler
	project string
}

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(jobIDKey{}).(string); ok && !hasAttr(r, "jobId") {
		r.AddAttrs(slog.String("jobId", id))
	}
	// The job's span when there is one (logs then sit under it in Cloud
	// Trace), else the request's trace header.
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() && h.project != "" {
		r.AddAttrs(slog.String("logging.googleapis.com/trace", "projects/"+h.project+"/traces/"+sc.TraceID().String()),
			slog.String("logging.googleapis.com/spanId", sc.SpanID().String()),
			slog.Bool("logging.googleapis.com/trace_sampled", sc.IsSampled()))
	} else if id := funcframework.TraceIDFromContext(ctx); id != "" && h.project != "" {
		r.AddAttrs(slog.String("logging.googleapis.com/trace", "projects/"+h.project+"/traces/"+id))
	}
	return h.Handler.Handle(ctx, r)
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{Handler: h.Handler.WithAttrs(as), project: h.project}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{Handler: h.Handler.WithGroup(name), project: h.project}
}

// logCompleted is the one line per finished job that the log-based metrics
// (jobs by outcome, cost, model latency) are built on.
func logCompleted(ctx context.Context, rec job.Record) {
	level := slog.LevelInfo
	if rec.Outcome == job.Failed {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("outcome", string(rec.Outcome)),
		slog.String("trigger", string(rec.Trigger.Kind)),
		slog.String("model", rec.Model),
		slog.Float64("costUsd", rec.CostUSD),
		slog.Int64("modelMs", rec.Timings.ModelMs),
		slog.Int64("totalMs", rec.Timings.TotalMs),
		slog.Int("attempts", rec.Attempts),
		slog.Int("images", len(rec.Outputs)),
	}
	if rec.Error != nil {
		attrs = append(attrs, slog.String("error", rec.Error.Message), slog.Bool("retryable", rec.Error.Retryable))
	}
	if rec.FinishReason != "" {
		attrs = append(attrs, slog.String("finishReason", rec.FinishReason))
	}
	if rec.PromptFeedback != nil && rec.PromptFeedback.BlockReason != "" {
		attrs = append(attrs, slog.String("blockReason", rec.PromptFeedback.BlockReason))
	}
	slog.LogAttrs(ctx, level, "job completed", attrs...)
}
