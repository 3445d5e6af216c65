// Package tracing is genimg's OpenTelemetry tracing (contract 9.5): one
// trace per job, continued from a W3C traceparent on a Generate request or
// on a Pub/Sub message (googclient_traceparent, as Google's client
// libraries set it, or traceparent), across the queue hop into OnMessage,
// and on into the completion event (ce-traceparent) and its callback.
//
// Spans go to Cloud Trace in production, sampled by GENIMG_TRACE_SAMPLE
// (a sampled incoming trace is always kept); on the local stack they go to
// a Ring in memory, never off the machine.
package tracing

import (
	"context"
	"fmt"
	"time"

	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/internal/config"
)

// Attributes that carry a trace on Pub/Sub messages: Google's client
// libraries write googclient_traceparent; other publishers traceparent.
const (
	AttrGoogTraceparent = "googclient_traceparent"
	AttrTraceparent     = "traceparent"
	// AttrCETraceparent is the CloudEvents distributed-tracing extension,
	// as a Pub/Sub attribute or an HTTP header.
	AttrCETraceparent = "ce-traceparent"
)

// A Tracer starts genimg's spans. The zero value is not usable; New
// builds one.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	ring     *Ring
}

// New builds a Tracer for cfg. exporter, when not nil, receives every
// span as it ends (the local stack's Ring); otherwise cfg.Exporter says
// where spans go: "cloudtrace" (batched to Cloud Trace in project),
// "memory" (a Ring of this Tracer's own) or "none".
func New(ctx context.Context, cfg config.Trace, project string, exporter sdktrace.SpanExporter) (*Tracer, error) {
	opts := []sdktrace.TracerProviderOption{
		// A caller's sampled trace is always kept; a new one by the setting.
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Sample))),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName("genimg"))),
	}
	t := &Tracer{}
	switch {
	case exporter != nil:
		if r, ok := exporter.(*Ring); ok {
			t.ring = r
		}
		opts = append(opts, sdktrace.WithSyncer(exporter))
	case cfg.Exporter == config.TraceMemory:
		t.ring = NewRing(DefaultRingSize)
		opts = append(opts, sdktrace.WithSyncer(t.ring))
	case cfg.Exporter == config.TraceCloudTrace:
		exp, err := texporter.New(texporter.WithProjectID(project), texporter.WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("cloud trace exporter (GENIMG_TRACE_EXPORTER=cloudtrace): %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	t.provider = sdktrace.NewTracerProvider(opts...)
	t.tracer = t.provider.Tracer("github.com/genimg/genimg")
	return t, nil
}

// Ring is the Tracer's in-memory spans, nil unless it keeps them.
func (t *Tracer) Ring() *Ring { return t.ring }

// Continue makes the trace of a W3C traceparent the parent of ctx's next
// span; an empty or malformed one leaves ctx alone (a new trace starts).
func Continue(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// FromAttributes continues the trace a Pub/Sub message carries.
func FromAttributes(ctx context.Context, attrs map[string]string) context.Context {
	for _, k := range []string{AttrGoogTraceparent, AttrTraceparent, AttrCETraceparent} {
		if v := attrs[k]; v != "" {
			return Continue(ctx, v)
		}
	}
	return ctx
}

// Traceparent is the W3C traceparent of ctx's span, "" when there is none.
func Traceparent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// Start starts a span. The caller ends it.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Step starts a span for one step of a job; end ends it, recording err.
func (t *Tracer) Step(ctx context.Context, name string) (_ context.Context, end func(error)) {
	ctx, span := t.tracer.Start(ctx, name)
	return ctx, func(err error) { finish(span, err) }
}

// StepSince records a step that started at start, before its trace was
// known (decoding the delivery that carries the trace).
func (t *Tracer) StepSince(ctx context.Context, name string, start time.Time, err error) {
	_, span := t.tracer.Start(ctx, name, trace.WithTimestamp(start))
	finish(span, err)
}

func finish(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Flush exports what is buffered, within a few seconds: on Cloud Run the
// CPU is throttled once a request is answered.
func (t *Tracer) Flush(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	t.provider.ForceFlush(ctx)
}

// Shutdown flushes and stops the Tracer.
func (t *Tracer) Shutdown(ctx context.Context) error { return t.provider.Shutdown(ctx) }
