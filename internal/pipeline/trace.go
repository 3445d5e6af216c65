package pipeline

import (
	"context"
	"io"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/internal/tracing"
)

// The span code of a job's run, kept here so that run.go only names its
// steps.

// startDelivery starts the span of one event delivery, continuing the
// trace it carries (an upload has none, and starts one), and records the
// decoding before it, which ran before the trace was known. end ends the
// span and flushes: the CPU may be throttled once the platform has its
// answer.
func (s *Service) startDelivery(ctx context.Context, name, traceparent string, decodeStart time.Time, decodeErr error) (_ context.Context, end func()) {
	ctx, span := s.traces.Start(tracing.Continue(ctx, traceparent), name, trace.SpanKindConsumer)
	s.traces.StepSince(ctx, "decode", decodeStart, decodeErr)
	return ctx, func() {
		span.End()
		s.traces.Flush(ctx)
	}
}

// modelDone notes the model's answer on the model span and ends it.
func modelDone(ctx context.Context, end func(error), model string, res *gemini.Result, err error) {
	if res != nil {
		trace.SpanFromContext(ctx).SetAttributes(
			attribute.String("genimg.model", model),
			attribute.String("genimg.model_version", res.ModelVersion),
			attribute.Int("genimg.tokens.prompt", int(res.Usage.PromptTokens)),
			attribute.Int("genimg.tokens.candidates", int(res.Usage.CandidatesTokens)),
			attribute.Int("genimg.tokens.total", int(res.Usage.TotalTokens)),
			attribute.Float64("genimg.cost_usd", res.CostUSD),
			attribute.Int("genimg.attempts", res.Attempts),
		)
	}
	end(err)
}

// tracedSink gives each image the model streams into the job's outputs a
// "write" span, from its first byte to its object being kept.
type tracedSink struct {
	gemini.ImageSink
	ctx    context.Context
	traces *tracing.Tracer
}

func (t tracedSink) OpenImage(index int, mimeType string) (io.WriteCloser, error) {
	ctx, end := t.traces.Step(t.ctx, "write")
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("genimg.image", strconv.Itoa(index)))
	w, err := t.ImageSink.OpenImage(index, mimeType)
	if err != nil {
		end(err)
		return nil, err
	}
	tw := &tracedWriter{WriteCloser: w, end: end}
	if _, ok := w.(interface{ CloseWithError(error) error }); ok {
		return &tracedAborter{tw}, nil
	}
	return tw, nil
}

type tracedWriter struct {
	io.WriteCloser
	end func(error)
}

func (w *tracedWriter) Close() error {
	err := w.WriteCloser.Close()
	w.end(err)
	return err
}

// tracedAborter keeps CloseWithError where the writer has it: the decoder
// drops an image with it.
type tracedAborter struct{ *tracedWriter }

func (w *tracedAborter) CloseWithError(cause error) error {
	err := w.WriteCloser.(interface{ CloseWithError(error) error }).CloseWithError(cause)
	w.end(cause)
	return err
}
