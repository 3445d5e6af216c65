package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// BenchmarkPipeline measures one job through process() — claim, resolve
// inputs, the model call's client side, images to Cloud Storage, draft,
// record, completion event — against the local stack's fake-gcs-server and
// pstest, with a model stand-in that replays one fixed answer (a 1024×1024
// PNG drawn once by geminitest), so the stand-in's drawing is not counted.
//
// Besides ns/op, B/op and allocs/op it reports cpu-ms/op: user+sys CPU of
// the whole process (getrusage) over the loop, divided by b.N. The
// emulators and the replaying server run in this process, so that figure
// includes their share; BENCHMARKS.md "## pipeline" separates it with
// pprof.
func BenchmarkPipeline(b *testing.B) {
	answer := fixedAnswer(b)
	model := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.Write(answer)
	}))
	b.Cleanup(model.Close)

	cfg, err := stack.Config()
	if err != nil {
		b.Fatal(err)
	}
	cfg.Model.BaseURL = model.URL
	// Tracing's cost: every span kept in memory, against no span exported
	// (GENIMG_TRACE_EXPORTER=none, GENIMG_TRACE_SAMPLE=0).
	services := map[string]*pipeline.Service{}
	for mode, tc := range map[string]config.Trace{"untraced": {Sample: 0, Exporter: config.TraceNone}, "traced": {Sample: 1, Exporter: config.TraceMemory}} {
		c := cfg
		c.Trace = tc
		s, err := pipeline.New(b.Context(), c)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		services[mode] = s
	}

	input := noisePNG(b, 592, 592) // about 1 MiB as PNG
	inName := "bench/input-" + strconv.Itoa(len(input)) + ".png"
	w := stack.gcs.Bucket(inputBucket).Object(inName).NewWriter(b.Context())
	w.ContentType = "image/png"
	if _, err := w.Write(input); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}

	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, bc := range []struct {
		name string
		job  job.Job
	}{
		{"text-to-image", job.Job{Prompt: "a lighthouse at dawn", AspectRatio: "1:1"}},
		{"edit-1MiB-input", job.Job{Prompt: "make it a watercolor", AspectRatio: "1:1",
			Images: []job.Image{{URI: "gs://" + inputBucket + "/" + inName}}}},
	} {
		for _, mode := range []string{"untraced", "traced"} {
			s := services[mode]
			b.Run(bc.name+"/"+mode, func(b *testing.B) {
				n := 0
				var outBytes int64
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					n++
					id := "bench-" + run + "-" + bc.name + "-" + mode + "-" + strconv.Itoa(n)
					rec, err := s.Run(b.Context(), trigger.Delivery{ID: id, Job: bc.job,
						Trigger: job.Trigger{Kind: "pubsub", Source: id}})
					if err != nil || rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
						b.Fatalf("process: %v, outcome %q, %d outputs", err, rec.Outcome, len(rec.Outputs))
					}
					outBytes = rec.Outputs[0].Bytes
				}
				cpu := cpuTime() - cpu0
				b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(n), "cpu-ms/op")
				b.ReportMetric(float64(outBytes), "out-bytes")
				if len(bc.job.Images) > 0 {
					b.ReportMetric(float64(len(input)), "in-bytes")
				}
			})
		}
	}
}

// fixedAnswer is the stand-in's answer to a 1:1 text→image request: a
// 1024×1024 PNG of about 1.7 MB, base64 in JSON.
var fixedAnswer = func() func(testing.TB) []byte {
	var once sync.Once
	var body []byte
	return func(tb testing.TB) []byte {
		once.Do(func() {
			h := geminitest.NewHandler(geminitest.Options{})
			req := httptest.NewRequest(http.MethodPost, "/v1beta/models/"+job.DefaultModel+":generateContent",
				bytes.NewReader([]byte(`{"contents":[{"role":"user","parts":[{"text":"a lighthouse at dawn"}]}],"generationConfig":{"imageConfig":{"aspectRatio":"1:1"}}}`)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("x-goog-api-key", "bench")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				tb.Fatalf("stand-in answered %d: %s", rec.Code, rec.Body.String())
			}
			body = rec.Body.Bytes()
		})
		return body
	}
}()

// noisePNG is a w×h PNG of random pixels: it hardly compresses, so 592×592
// is about 1 MiB.
func noisePNG(tb testing.TB, w, h int) []byte {
	tb.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	r := rand.New(rand.NewPCG(uint64(w), uint64(h)))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(r.Uint32()), uint8(r.Uint32()), uint8(r.Uint32()), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// cpuTime is the process's user+sys CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startupChild marks the child process of BenchmarkStartup.
const startupChild = "GENIMG_STARTUP_CHILD"

// BenchmarkStartup measures process start to first answered job, the way
// `go run ./cmd/local` starts (after the build): a fresh process of this
// test binary whose TestMain starts the local stack in process
// (fake-gcs-server, pstest, the stand-in, the functions framework, delivery),
// then one text→image job POSTed to /Generate, answered with its record.
// The child reports the phases (ms/op metrics): "stack" is process start to
// the stack being ready (the emulators' start plus the functions
// framework's listener), "first-job" is the HTTP job, which builds the
// functions' Service on first use and includes the stand-in's drawing
// (model-ms, reported apart); "service-new" is genimg.New alone, built again
// in the child, the functions' own start.
func BenchmarkStartup(b *testing.B) {
	if os.Getenv(startupChild) != "" {
		b.Skip("in the child")
	}
	var total, stackMs, jobMs, modelMs, newMs float64
	for b.Loop() {
		start := time.Now()
		cmd := exec.CommandContext(b.Context(), os.Args[0], "-test.run=^TestStartupChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), startupChild+"="+strconv.FormatInt(start.UnixNano(), 10))
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		var s, j, m, n float64
		var answered int64
		if _, err := fmt.Sscanf(string(out[bytes.Index(out, []byte("startup:")):]), "startup: stack=%f job=%f model=%f new=%f answered=%d", &s, &j, &m, &n, &answered); err != nil {
			b.Fatalf("child output: %v\n%s", err, out)
		}
		total += float64(time.Unix(0, answered).Sub(start).Microseconds()) / 1e3
		stackMs, jobMs, modelMs, newMs = stackMs+s, jobMs+j, modelMs+m, newMs+n
	}
	n := float64(b.N)
	b.ReportMetric(total/n, "to-first-job-ms/op")
	b.ReportMetric(stackMs/n, "stack-ms/op")
	b.ReportMetric(jobMs/n, "first-job-ms/op")
	b.ReportMetric(modelMs/n, "model-ms/op")
	b.ReportMetric(newMs/n, "service-new-ms/op")
}

// TestStartupChild is BenchmarkStartup's child; it does nothing elsewhere.
func TestStartupChild(t *testing.T) {
	startNs, err := strconv.ParseInt(os.Getenv(startupChild), 10, 64)
	if err != nil {
		t.Skip("only as BenchmarkStartup's child")
	}
	ready := time.Now()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, stack.functions+"/Generate",
		strings.NewReader(`{"prompt": "a lighthouse at dawn", "aspectRatio": "1:1"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "wait=20")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rec job.Record
	if err := json.NewDecoder(resp.Body).Decode(&rec); err != nil || resp.StatusCode != http.StatusOK || rec.Outcome != job.Succeeded {
		t.Fatalf("first job: %d %v %q", resp.StatusCode, err, rec.Outcome)
	}
	answered := time.Now()
	cfg, err := stack.Config()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	s, err := pipeline.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	newMs := float64(time.Since(t0).Microseconds()) / 1e3
	s.Close()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
	fmt.Printf("startup: stack=%.1f job=%.1f model=%d new=%.2f answered=%d\n",
		ms(ready.Sub(time.Unix(0, startNs))), ms(answered.Sub(ready)), rec.Timings.ModelMs, newMs, answered.UnixNano())
}
