package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

func TestGenerate(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		image     bool
		size      [2]int
		trigger   string
		savedJob  bool   // a job.json for replay is left beside the images
		wantImage string // the saved job's first image: "gs" or "data"
	}{
		{name: "http text", args: []string{"a red fox in the snow", "--via", "http", "--aspect", "16:9"}, size: [2]int{1344, 768}, trigger: "http", savedJob: true},
		{name: "http multipart image", args: []string{"make it a watercolor", "--via", "http", "--aspect", "4:3"}, image: true, size: [2]int{1184, 864}, trigger: "http", savedJob: true, wantImage: "data"},
		{name: "pubsub text with id", args: []string{"a lighthouse at dusk", "--via", "pubsub", "--aspect", "3:2", "--id", "gen-pubsub-1"}, size: [2]int{1248, 832}, trigger: "pubsub", savedJob: true},
		{name: "pubsub image staged by uri", args: []string{"make it snow", "--via", "pubsub", "--aspect", "1:1"}, image: true, size: [2]int{1024, 1024}, trigger: "pubsub", savedJob: true, wantImage: "gs"},
		{name: "upload image with prompt metadata", args: []string{"make it autumn", "--via", "upload", "--aspect", "9:16"}, image: true, size: [2]int{768, 1344}, trigger: "upload"},
		{name: "upload job file", args: []string{"a tiny robot", "--via", "upload", "--aspect", "21:9"}, size: [2]int{1536, 672}, trigger: "upload", savedJob: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			args := append([]string{"generate"}, tt.args...)
			args = append(args, "--out", out, "--wait", "30s")
			if tt.image {
				args = append(args, "--image", testPNG(t, dir, 96, 64))
			}
			stdout, stderr, err := genimg(t, args...)
			if err != nil {
				t.Fatalf("generate: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
			}
			if got := field(stdout, "outcome"); got != "succeeded" {
				t.Errorf("outcome %q, want succeeded\n%s", got, stdout)
			}
			if got, _, _ := strings.Cut(field(stdout, "trigger"), " "); got != tt.trigger {
				t.Errorf("trigger %q, want %s", got, tt.trigger)
			}
			for _, want := range []string{"usage", "cost", "finish"} {
				if field(stdout, want) == "" {
					t.Errorf("no %s line in\n%s", want, stdout)
				}
			}
			if diff := cmp.Diff([][2]int{tt.size}, pngSizes(t, out)); diff != "" {
				t.Errorf("downloaded images (-want +got):\n%s", diff)
			}
			_, err = os.Stat(filepath.Join(out, "job.json"))
			if got := err == nil; got != tt.savedJob {
				t.Fatalf("job.json saved: %t, want %t", got, tt.savedJob)
			}
			if tt.wantImage != "" {
				imgs, _ := saved(t, out)["images"].([]any)
				img, _ := imgs[0].(map[string]any)
				if _, ok := img[map[string]string{"gs": "uri", "data": "data"}[tt.wantImage]]; len(imgs) != 1 || !ok {
					t.Errorf("saved job images %v, want one with %s", imgs, tt.wantImage)
				}
			}
			if subs := cliSubscriptions(t); len(subs) != 0 {
				t.Errorf("temporary subscriptions left behind: %v", subs)
			}
		})
	}
}

func TestGenerateFailedExitsNonZero(t *testing.T) {
	stdout, _, err := genimg(t, "generate", "a cat [[standin:status=400]]", "--via", "pubsub", "--out", t.TempDir(), "--wait", "30s")
	var exit exitError
	if !errors.As(err, &exit) || exit != 1 {
		t.Fatalf("err %v, want exit status 1", err)
	}
	if got := field(stdout, "outcome"); got != "failed" {
		t.Errorf("outcome %q, want failed", got)
	}
	if !strings.Contains(field(stdout, "error"), "retryable: false") {
		t.Errorf("error line %q does not say it is not retryable", field(stdout, "error"))
	}
}

func TestArgumentErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"generate"}, "one prompt"},
		{[]string{"generate", "x", "--via", "carrier-pigeon"}, "--via"},
		{[]string{"generate", "x", "--id", "no spaces"}, "--id"},
		{[]string{"generate", "x", "--parent", "not/an id"}, "--parent"},
		{[]string{"backfill", "--rules", backfillRules, "--yes"}, "--yes only apply with --run"},
		{[]string{"backfill", "--rules", backfillRules, "--run", "--concurrency", "0"}, "--concurrency 0"},
		{[]string{"backfill", "--rules", backfillRules, "--run", "--max-usd", "-1"}, "--max-usd -1"},
		{[]string{"get"}, "one job id"},
		{[]string{"get", "bad id!"}, "not a job id"},
		{[]string{"load", "-n", "0"}, "at least 1"},
		{[]string{"load", "--latency", "2s"}, "use them with --standin, or run the load on a stack of its own with go run ./cmd/local load"},
		{[]string{"load", "--local", "-n", "2"}, "go run ./cmd/local load"},
		{[]string{"events", "extra"}, "no arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, _, err := genimg(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	tests := []struct {
		name string
		args []string
		id   string
		// check inspects the one line printed.
		check func(t *testing.T, line string)
	}{
		{name: "lines", args: []string{"events", "-n", "1"}, id: "ev-line-1", check: func(t *testing.T, line string) {
			f := strings.Fields(line)
			if len(f) < 7 || f[1] != "ev-line-1" || f[2] != "succeeded" || f[3] != "pubsub" || !strings.HasPrefix(f[4], "$0.03") || f[5] != "1" {
				t.Errorf("line %q: want time, job, outcome, trigger, cost, images", line)
			}
			if _, err := time.Parse(time.TimeOnly, f[0]); err != nil {
				t.Errorf("line %q: no time first: %v", line, err)
			}
		}},
		{name: "json", args: []string{"events", "-n", "1", "--json", "--trigger", "pubsub"}, id: "ev-json-1", check: func(t *testing.T, line string) {
			var rec job.Record
			if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.JobID != "ev-json-1" || rec.Outcome != job.Succeeded {
				t.Errorf("line %q: want the record of ev-json-1 (%v)", line, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			done := make(chan error, 1)
			go func() { done <- Run(t.Context(), tt.args, &stdout, &stderr) }()
			for !strings.Contains(stderr.String(), "listening") {
				select {
				case err := <-done:
					t.Fatalf("events ended early: %v\n%s", err, stderr.String())
				case <-time.After(10 * time.Millisecond):
				}
			}
			if _, _, err := genimg(t, "generate", "an owl", "--via", "pubsub", "--id", tt.id, "--out", t.TempDir()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("events did not end after one event")
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("got %d lines, want 1:\n%s", len(lines), stdout.String())
			}
			tt.check(t, lines[0])
		})
	}
}

func TestGet(t *testing.T) {
	if _, _, err := genimg(t, "generate", "a blue bird", "--via", "pubsub", "--id", "get-1", "--aspect", "5:4", "--out", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
		images  [][2]int
	}{
		{name: "http", args: []string{"get", "get-1"}, images: [][2]int{{1152, 896}}},
		{name: "storage", args: []string{"get", "get-1", "--from", "storage"}, images: [][2]int{{1152, 896}}},
		{name: "no images", args: []string{"get", "get-1", "--no-images"}},
		{name: "unknown over http", args: []string{"get", "nobody-knows"}, wantErr: "no job with id nobody-knows"},
		{name: "unknown in storage", args: []string{"get", "nobody-knows", "--from", "storage"}, wantErr: "no job nobody-knows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "imgs")
			stdout, _, err := genimg(t, append(tt.args, "--out", out)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if field(stdout, "job") != "get-1" || field(stdout, "outcome") != "succeeded" || !strings.HasPrefix(field(stdout, "output"), "gs://cli-out/images/get-1/") {
				t.Errorf("record not shown:\n%s", stdout)
			}
			if diff := cmp.Diff(tt.images, pngSizes(t, out)); diff != "" {
				t.Errorf("images (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := genimg(t, "generate", "a green frog", "--via", "pubsub", "--id", "replay-ok", "--out", dir); err != nil {
		t.Fatal(err)
	}
	genimg(t, "generate", "a frog [[standin:status=400]]", "--via", "pubsub", "--id", "replay-permanent", "--out", dir)

	// A retryable failure: what a delivery over the maximum event age
	// leaves (the pipeline records it; it cannot be produced quickly).
	retryable := job.Job{ID: "replay-retryable", Prompt: "a yellow duck", AspectRatio: "1:1"}
	jobFile := filepath.Join(dir, "retryable.json")
	data, _ := json.Marshal(retryable)
	if err := os.WriteFile(jobFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	norm := retryable
	norm.Normalize(cfg.Policy())
	writeRecord(t, job.Record{
		JobID: retryable.ID, Outcome: job.Failed, Trigger: job.Trigger{Kind: job.PubSub, Source: "old-message"},
		Fingerprint: norm.Fingerprint(), Model: norm.Model,
		Error: &job.Error{Code: "unavailable", Message: "the delivery is 25h old", Retryable: true},
	})
	otherFile := filepath.Join(dir, "other.json")
	if err := os.WriteFile(otherFile, []byte(`{"id": "replay-ok", "prompt": "a yellow duck"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	writeRecord(t, job.Record{
		JobID: "replay-lost", Outcome: job.Failed, Trigger: job.Trigger{Kind: job.HTTP, Source: "request/x"},
		Error: &job.Error{Code: "unavailable", Message: "the delivery is 25h old", Retryable: true},
	})

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "succeeded job", args: []string{"replay", "replay-ok"}, wantErr: "ended succeeded: only a failed job whose error is retryable"},
		{name: "permanent failure", args: []string{"replay", "replay-permanent", "--from", "storage"}, wantErr: "not retryable"},
		{name: "job not found", args: []string{"replay", "replay-lost", "--out", filepath.Join(dir, "none")}, wantErr: "cannot be found"},
		{name: "job file of another job", args: []string{"replay", "replay-retryable", "--job", otherFile}, wantErr: "is job replay-ok"},
		{name: "retryable failure", args: []string{"replay", "replay-retryable", "--job", jobFile, "--out", filepath.Join(dir, "again")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := genimg(t, tt.args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q\n%s", err, tt.wantErr, stderr)
				}
				return
			}
			if err != nil {
				t.Fatalf("replay: %v\n%s\n%s", err, stdout, stderr)
			}
			if field(stdout, "outcome") != "succeeded" || !strings.HasPrefix(field(stdout, "trigger"), "pubsub ") || field(stdout, "trigger") == "pubsub old-message" {
				t.Errorf("replayed record:\n%s", stdout)
			}
			rec, _, err := newTestClients(t).readRecord(t.Context(), "replay-retryable")
			if err != nil || rec.Outcome != job.Succeeded || rec.Attempts != 1 {
				t.Errorf("stored record after replay: %+v, %v", rec, err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "pubsub with injected failures", args: []string{"-n", "20", "-c", "5", "--via", "pubsub", "--error-rate", "0.1", "--latency", "50ms"},
			want: []string{"outcomes     succeeded 20", "model calls  22, want 22  ok", "attempts     22, want 22  ok", "image sets   20, want 20  ok", "event ids    20, want 20  ok", "peak RSS"}},
		{name: "http", args: []string{"-n", "8", "-c", "8", "--via", "http", "--error-rate", "0.25", "--error-status", "429"},
			want: []string{"outcomes     succeeded 8", "model calls  10, want 10  ok", "image sets   8, want 8  ok", "event ids    8, want 8  ok"}},
		{name: "upload", args: []string{"-n", "6", "-c", "3", "--via", "upload"},
			want: []string{"outcomes     succeeded 6", "model calls  6, want 6  ok", "image sets   6, want 6  ok", "images       6, want 6  ok", "event ids    6, want 6  ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut syncBuffer
			err := Load(t.Context(), tt.args, &out, &errOut, startTestStack)
			stdout, stderr := out.String(), errOut.String()
			if err != nil {
				t.Fatalf("load: %v\n%s\n%s", err, stdout, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("report lacks %q:\n%s", w, stdout)
				}
			}
			if strings.Contains(stdout, "MISMATCH") {
				t.Errorf("exactly-once failed:\n%s", stdout)
			}
		})
	}
}

// writeRecord stores a record as the pipeline would leave it.
func writeRecord(t *testing.T, rec job.Record) {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	w := stack.Storage.Bucket(stack.OutputBucket).Object("jobs/" + rec.JobID + "/result.json").NewWriter(t.Context())
	w.ContentType = "application/json"
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func newTestClients(t *testing.T) *clients {
	t.Helper()
	tg := &target{}
	tg.resolve(os.Getenv)
	c, err := tg.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestBackfill(t *testing.T) {
	dir := t.TempDir()
	put := func(name, ctype string, data []byte) {
		w := stack.Storage.Bucket(stack.InputBucket).Object(name).NewWriter(t.Context())
		w.ContentType = ctype
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	png, err := os.ReadFile(testPNG(t, dir, 16, 16))
	if err != nil {
		t.Fatal(err)
	}
	prefix := "backfill-" + strings.ReplaceAll(t.Name(), "/", "-") + "/"
	for i := range 3 {
		put(fmt.Sprintf("%sphoto-%d.png", prefix, i), "image/png", png)
	}
	put(prefix+"notes.txt", "text/plain", []byte("not an image"))

	rules := fmt.Sprintf(`[{"bucket": %q, "prefix": %q, "prompt": "restore"}]`, stack.InputBucket, prefix)
	stdout, _, err := genimg(t, "backfill", "--rules", rules, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Objects int
		CostUSD float64
		Rules   []struct{ Objects, Skipped int }
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	// One job: 1290 image tokens at $30/M, one input image (258 tokens)
	// and "restore" (2 tokens) at $0.30/M.
	perJob := 1290*30e-6 + 258*0.3e-6 + 2*0.3e-6
	if rep.Objects != 3 || len(rep.Rules) != 1 || rep.Rules[0].Skipped != 1 || math.Abs(rep.CostUSD-3*perJob) > 1e-9 {
		t.Errorf("report %+v, want 3 images, 1 skipped, $%.7f", rep, 3*perJob)
	}
	if _, _, err := genimg(t, "backfill", "--rules", `[{"bucket": "x", "prefix": "nope"}]`); err == nil {
		t.Error("a rule without a prompt or a prefix ending in / was accepted")
	}
}

// genimg pause and resume set and clear the kill switch object.
func TestPauseResume(t *testing.T) {
	exists := func() bool {
		_, err := stack.Storage.Bucket(stack.OutputBucket).Object("control/paused").Attrs(t.Context())
		return err == nil
	}
	out, _, err := genimg(t, "pause")
	if err != nil || !exists() || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %q, %v; kill switch set: %v", out, err, exists())
	}
	out, _, err = genimg(t, "resume")
	if err != nil || exists() || !strings.Contains(out, "resumed") {
		t.Fatalf("resume: %q, %v; kill switch set: %v", out, err, exists())
	}
	if _, _, err := genimg(t, "resume"); err != nil {
		t.Errorf("resume with no kill switch: %v, want nothing to do", err)
	}
	if _, _, err := genimg(t, "pause", "now"); err == nil {
		t.Error("pause with an argument: no error")
	}
}
