// Command local runs the whole genimg pipeline on this machine: Cloud
// Storage and Pub/Sub emulators, the three functions under the functions
// framework, delivery between them the way Google Cloud does it, and an
// offline stand-in model (or the real Gemini API when credentials are set).
//
//	go run ./cmd/local
//
// Every port and name has a flag; Ctrl-C stops it.
//
// With load first, it instead starts a stack on free ports and drives a
// load through it in this process (genimg load, plus the model calls,
// peak RSS and CPU time of the functions), then stops:
//
//	go run ./cmd/local load -n 200 -c 200 --latency 2s --via pubsub [--heap heap.pb.gz]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/genimg/genimg/cmd/internal/cli"
	"github.com/genimg/genimg/internal/localstack"
	"github.com/genimg/genimg/internal/pipeline"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "load" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := runLoad(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
		os.Exit(cli.ExitCode("genimg local load", err, os.Stderr))
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "genimg local:", err)
		os.Exit(1)
	}
}

func run() error {
	o := localstack.Defaults()
	flag.StringVar(&o.Host, "host", o.Host, "address every server listens on (loopback by default)")
	flag.IntVar(&o.FunctionsPort, "port", o.FunctionsPort, "functions port (/Generate, /OnMessage, /OnUpload)")
	flag.IntVar(&o.StoragePort, "storage-port", o.StoragePort, "Cloud Storage emulator port")
	flag.IntVar(&o.PubSubPort, "pubsub-port", o.PubSubPort, "Pub/Sub emulator port")
	flag.IntVar(&o.ModelPort, "model-port", o.ModelPort, "stand-in model port")
	flag.StringVar(&o.Project, "project", o.Project, "project id")
	flag.StringVar(&o.InputBucket, "input-bucket", o.InputBucket, "upload bucket (uploads trigger OnUpload)")
	flag.StringVar(&o.OutputBucket, "output-bucket", o.OutputBucket, "output bucket (images and job state)")
	flag.StringVar(&o.RequestsTopic, "requests-topic", o.RequestsTopic, "requests topic (delivered to OnMessage)")
	flag.StringVar(&o.CompletionTopic, "completion-topic", o.CompletionTopic, "completion events topic")
	flag.StringVar(&o.DeadLetterTopic, "dead-letter-topic", o.DeadLetterTopic, "dead-letter topic of the requests push subscription")
	flag.DurationVar(&o.ModelLatency, "model-latency", 0, "stand-in model answer time (e.g. 2s, like the real model)")
	flag.DurationVar(&o.MinBackoff, "min-backoff", o.MinBackoff, "first retry delay of a failed delivery")
	flag.DurationVar(&o.MaxBackoff, "max-backoff", o.MaxBackoff, "longest retry delay of a failed delivery")
	flag.IntVar(&o.MaxAttempts, "max-attempts", o.MaxAttempts, "push attempts before a request goes to the dead-letter topic")
	real := flag.Bool("real-model", os.Getenv("GEMINI_API_KEY") != "" || os.Getenv("GOOGLE_API_KEY") != "" || os.Getenv("GOOGLE_GENAI_USE_VERTEXAI") == "true",
		"call the real Gemini API (default when GEMINI_API_KEY, GOOGLE_API_KEY or GOOGLE_GENAI_USE_VERTEXAI=true is set)")
	verbose := flag.Bool("v", false, "log every job step (INFO), not only warnings")
	flag.StringVar(&o.ExternalFunctions, "functions-url", "", "deliver to functions served by another process (see -functions-only) instead of starting them here")
	consolePort := flag.Int("console-port", 4000, "web console port (0: no console)")
	functionsOnly := flag.Bool("functions-only", false, "serve only the functions on -port, for a stack started elsewhere with -functions-url (to measure them alone)")
	cpus := flag.Int("cpus", 1, "with -functions-only: the vCPUs of the deployed instance these functions stand for (Terraform's cpu, default 1), as GOMAXPROCS unless the environment sets it; 0 leaves Go's default")
	pprofAddr := flag.String("pprof", "", "serve Go's profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060, to see where this process's CPU and memory go")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `Usage:
  go run ./cmd/local [flags]        the whole pipeline on this machine, until Ctrl-C
  go run ./cmd/local load -h        a load through a stack of its own, in this process

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	o.UseRealModel = *real

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
		o.Env = map[string]string{"GENIMG_LOG_LEVEL": "INFO"}
	} else {
		o.Env = map[string]string{"GENIMG_LOG_LEVEL": "WARN"}
	}
	slog.SetDefault(slog.New(pipeline.NewLogHandler(os.Stderr, o.Project, level)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *pprofAddr != "" {
		if err := serveProfiles(ctx, *pprofAddr); err != nil {
			return err
		}
	}
	if *functionsOnly {
		procs := instanceProcs(*cpus)
		fmt.Printf("genimg functions on %s:%d (GOMAXPROCS %d), using the stack's emulators on ports %d (storage), %d (pub/sub), %d (model)\n",
			o.Host, o.FunctionsPort, procs, o.StoragePort, o.PubSubPort, o.ModelPort)
		// Quiet while the framework registers the slots (a line each).
		restore := quietStdout()
		return localstack.ServeFunctions(ctx, o, restore)
	}

	start := time.Now()
	restore := quietStdout()
	s, err := localstack.Start(ctx, o) // the functions are listening when it returns
	restore()
	if err != nil {
		return err
	}
	defer s.Close()
	consoleURL := ""
	if *consolePort != 0 {
		if consoleURL, err = serveConsole(ctx, s, *consolePort); err != nil {
			return err
		}
	}
	banner(s, time.Since(start), consoleURL)
	<-ctx.Done()
	fmt.Println("\nstopping genimg local")
	return nil
}

// instanceProcs gives this process the scheduler threads of a deployed
// instance of cpus vCPUs, as Terraform does (GOMAXPROCS from its cpu),
// unless the environment sets GOMAXPROCS or cpus is 0, and returns
// GOMAXPROCS. Measured alone, the functions then spend what they would
// deployed, not what a second thread costs that hands work back and forth
// on a machine with more cores.
func instanceProcs(cpus int) int {
	if cpus > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(cpus)
	}
	return runtime.GOMAXPROCS(0)
}

// serveConsole serves the stack's web console on port until ctx ends.
func serveConsole(ctx context.Context, s *localstack.Stack, port int) (string, error) {
	c, err := s.Console(ctx)
	if err != nil {
		return "", err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.Host, strconv.Itoa(port)))
	if err != nil {
		return "", fmt.Errorf("console: %w (choose another -console-port, or 0 for none)", err)
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	context.AfterFunc(ctx, func() { srv.Close() })
	return "http://" + l.Addr().String() + "/", nil
}

// serveProfiles serves net/http/pprof's handlers on addr until ctx ends, on
// a mux of their own: the functions' server never exposes them.
func serveProfiles(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	context.AfterFunc(ctx, func() { srv.Close() })
	return nil
}

func banner(s *localstack.Stack, took time.Duration, consoleURL string) {
	if consoleURL != "" {
		fmt.Printf("genimg console at %s\n", consoleURL)
	}
	model := "stand-in model (offline) at " + s.ModelURL + "  — steer it with [[standin:…]] in a prompt"
	if s.UseRealModel {
		model = "the real Gemini API (credentials from the environment)"
	}
	fmt.Printf(`genimg local is ready (%s)

  functions       %[2]s/Generate  %[2]s/OnMessage  %[2]s/OnUpload  %[2]s/OnCompletion
  Cloud Storage   STORAGE_EMULATOR_HOST=%[3]s   buckets %[4]s (uploads trigger OnUpload), %[5]s
  Pub/Sub         PUBSUB_EMULATOR_HOST=%[6]s   project %[7]s
                  topics %[8]s (→ OnMessage), %[9]s (events → OnCompletion: callbacks), %[10]s
  model           %[11]s

Try a job through each trigger (in another terminal):

  curl -s %[2]s/Generate -H 'Content-Type: application/json' -d '{"prompt": "a red fox in the snow", "aspectRatio": "16:9"}'
  curl -s %[2]s/Generate -F image=@photo.png -F prompt='Turn this photo into a watercolor painting'
  go run ./cmd/genimg generate "a lighthouse at dusk" --via pubsub
  go run ./cmd/genimg generate "make it snow" --image photo.png --via upload
  go run ./cmd/genimg events
  go run ./cmd/genimg listen &   # then: generate "…" --callback http://127.0.0.1:9000/

Ctrl-C stops everything.
`, took.Round(time.Millisecond), s.FunctionsURL, s.StorageURL, s.InputBucket, s.OutputBucket, s.PubSubAddr, s.Project,
		s.RequestsTopic, s.CompletionTopic, s.DeadLetterTopic, model)
}

// quietStdout sends standard output nowhere until restore: the functions
// framework prints a line for each path it registers as it starts, and the
// stack registers dozens of slots (localstack.Mount) — noise, not news, for
// whoever reads the banner. The framework is done printing once it listens,
// which Start waits for.
func quietStdout() (restore func()) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return func() {}
	}
	stdout := os.Stdout
	os.Stdout = devnull
	return func() {
		os.Stdout = stdout
		devnull.Close()
	}
}
