package tracing

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
)

func TestRingKeepsTheLastSpans(t *testing.T) {
	ring := NewRing(3)
	tr, err := New(t.Context(), config.Trace{Sample: 1, Exporter: config.TraceNone}, "p", ring)
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := tr.Start(t.Context(), "root", 0)
	for _, name := range []string{"a", "b", "c"} {
		_, end := tr.Step(ctx, name)
		var err error
		if name == "b" {
			err = errors.New("b failed")
		}
		end(err)
	}
	root.End()
	var got []string
	for _, s := range ring.Spans() {
		got = append(got, s.Name+"|"+s.Error)
	}
	if diff := cmp.Diff([]string{"b|b failed", "c|", "root|"}, got); diff != "" {
		t.Errorf("ring (-want +got):\n%s", diff)
	}
	rootID := ring.Spans()[2].SpanID
	for _, s := range ring.Spans()[:2] {
		if s.ParentID != rootID {
			t.Errorf("span %s has parent %s, want the root %s", s.Name, s.ParentID, rootID)
		}
	}
}

func TestContinueAndSampling(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	tests := []struct {
		name        string
		sample      float64
		traceparent string
		attrs       map[string]string
		wantTrace   string // "" : a new trace
		wantKept    bool
	}{
		{"caller's sampled trace is kept at sample 0", 0, tp, nil, "0af7651916cd43dd8448eb211c80319c", true},
		{"caller's unsampled trace is not kept", 1, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", nil, "0af7651916cd43dd8448eb211c80319c", false},
		{"googclient_traceparent", 0, "", map[string]string{AttrGoogTraceparent: tp}, "0af7651916cd43dd8448eb211c80319c", true},
		{"ce-traceparent", 0, "", map[string]string{AttrCETraceparent: tp}, "0af7651916cd43dd8448eb211c80319c", true},
		{"malformed: a new trace", 1, "00-zz-yy-01", nil, "", true},
		{"none, sample 0: not kept", 0, "", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ring := NewRing(10)
			tr, err := New(t.Context(), config.Trace{Sample: tt.sample}, "p", ring)
			if err != nil {
				t.Fatal(err)
			}
			ctx := FromAttributes(Continue(t.Context(), tt.traceparent), tt.attrs)
			ctx, end := tr.Step(ctx, "job")
			got := Traceparent(ctx)
			end(nil)
			if got == "" {
				t.Fatal("no traceparent: a job's trace propagates even when it is not kept")
			}
			if tid := got[3:35]; tt.wantTrace != "" && tid != tt.wantTrace {
				t.Errorf("trace id %s, want %s", tid, tt.wantTrace)
			}
			if kept := len(ring.Spans()) == 1; kept != tt.wantKept {
				t.Errorf("kept = %v, want %v", kept, tt.wantKept)
			}
		})
	}
}
