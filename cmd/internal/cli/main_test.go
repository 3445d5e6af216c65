package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/internal/localstack"
)

// The tests run the subcommands' entry point against one local stack in
// this process, on free ports, with names other than the defaults; the
// command finds it through the environment its functions run with (the
// emulators, the buckets and topics), plus GENIMG_URL.
var stack *localstack.Stack

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := localstack.Start(ctx, localstack.Options{
		Project: "genimg-clitest", InputBucket: "cli-in", OutputBucket: "cli-out",
		RequestsTopic: "cli-requests", CompletionTopic: "cli-completions", DeadLetterTopic: "cli-dead",
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 5,
		Env: map[string]string{"GENIMG_LOG_LEVEL": "ERROR", "GENIMG_RETRY_BUDGET": "5s",
			// A bucket of objects there before its rule (no notifications):
			// what backfill --run hands to the functions.
			"GENIMG_UPLOAD_BUCKETS": "cli-in," + backfillBucket, "GENIMG_INPUT_BUCKETS": "cli-in," + backfillBucket,
			"GENIMG_RULES": backfillRules},
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	if err := s.Storage.Bucket(backfillBucket).Create(ctx, s.Project, nil); err != nil {
		panic(err)
	}
	stack = s
	for k, v := range s.Env {
		os.Setenv(k, v)
	}
	os.Setenv("GENIMG_URL", s.FunctionsURL+"/Generate")
	return m.Run()
}

// The functions' upload rule over backfillBucket, which sends no upload
// events: backfill --run is what runs it.
const (
	backfillBucket = "cli-old"
	backfillPrefix = "old/"
	backfillRules  = `[{"bucket": "cli-old", "prefix": "old/", "name": "old-photos", "prompt": "restore this photo", "aspectRatio": "1:1"}]`
)

// startTestStack is the load's local stack: the tests' own, left running.
func startTestStack(context.Context, int) (*Local, error) {
	l := &Local{
		URL: stack.FunctionsURL + "/Generate", Project: stack.Project,
		InputBucket: stack.InputBucket, OutputBucket: stack.OutputBucket,
		RequestsTopic: stack.RequestsTopic, CompletionTopic: stack.CompletionTopic,
		StorageEmulatorHost: stack.StorageURL, PubSubEmulatorHost: stack.PubSubAddr,
		Close: func() {},
	}
	if stack.Model != nil {
		l.ModelCalls = stack.Model.Calls
	}
	return l, nil
}

// syncBuffer is a bytes.Buffer safe for a command running in a goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// genimg runs the command and returns its stdout and stderr.
func genimg(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr syncBuffer
	err := Run(t.Context(), args, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// testPNG writes a w×h PNG into dir and returns its path.
func testPNG(t *testing.T, dir string, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "in.png")
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// pngSizes decodes every PNG in dir.
func pngSizes(t *testing.T, dir string) [][2]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.png"))
	if err != nil {
		t.Fatal(err)
	}
	var sizes [][2]int
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sizes = append(sizes, [2]int{cfg.Width, cfg.Height})
	}
	return sizes
}

// field returns the value of a "name   value" line of printRecord.
func field(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// cliSubscriptions lists the temporary subscriptions left on the stack.
func cliSubscriptions(t *testing.T) []string {
	t.Helper()
	it := stack.PubSub.SubscriptionAdminClient.ListSubscriptions(t.Context(), &pb.ListSubscriptionsRequest{Project: "projects/" + stack.Project})
	var names []string
	for {
		s, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s.Name, "/genimg-cli-") {
			names = append(names, s.Name)
		}
	}
}

// saved reads the job.json generate leaves beside the images.
func saved(t *testing.T, dir string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "job.json"))
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	return j
}
