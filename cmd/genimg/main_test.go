package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientOnly keeps the command a client: it talks to genimg through
// its triggers, buckets and topics, and links none of the functions, the
// model, the stand-in or the emulators (go run ./cmd/local load is the
// load that runs a stack in its own process).
func TestClientOnly(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command:", err)
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/genimg/genimg/gemini",              // the model and its stand-in
		"github.com/genimg/genimg/internal/localstack", // the local stack
		"github.com/genimg/genimg/internal/pipeline",
		"github.com/genimg/genimg/internal/httpapi",
		"github.com/genimg/genimg/internal/instance",
		"github.com/fsouza/fake-gcs-server",
		"cloud.google.com/go/pubsub/v2/pstest",
		"github.com/GoogleCloudPlatform/functions-framework-go",
		"google.golang.org/genai",
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/genimg/genimg" {
			t.Errorf("cmd/genimg links the functions (%s)", pkg)
		}
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("cmd/genimg links %s", pkg)
			}
		}
	}
}
