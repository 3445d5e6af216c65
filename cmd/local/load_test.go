package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestLoad runs a load the way `go run ./cmd/local load` does: through a
// stack this process starts, whose model calls and memory it measures.
func TestLoad(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runLoad(t.Context(), []string{"-n", "4", "-c", "4", "--via", "pubsub", "--error-rate", "0.25", "--latency", "20ms"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("load: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"outcomes     succeeded 4", "model calls  5, want 5  ok", "image sets   4, want 4  ok", "event ids    4, want 4  ok", "peak RSS"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
}
