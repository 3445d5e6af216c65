package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"path"

	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// A Local is a stack that a load started in its own process (cmd/local
// load): where it runs, and what only this process can see of it.
type Local struct {
	// URL is the Generate function's; the names are the stack's.
	URL, Project                   string
	InputBucket, OutputBucket      string
	RequestsTopic, CompletionTopic string
	// StorageEmulatorHost and PubSubEmulatorHost are the emulators, as
	// STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST name them.
	StorageEmulatorHost, PubSubEmulatorHost string
	// ModelCalls counts the stand-in model's calls; nil when the real
	// model answers.
	ModelCalls func() int
	// Close stops the stack.
	Close func()
}

// StartLocal starts a stack for a load of concurrency jobs in flight.
type StartLocal func(ctx context.Context, concurrency int) (*Local, error)

// loadOptions are load's flags.
type loadOptions struct {
	n, c         int
	via          string
	standin      bool
	latency      time.Duration
	errorRate    float64
	errorStatus  int
	aspect       string
	outputPrefix string
	timeout      time.Duration
	heapProfile  string
}

// runLoad is genimg load: against a running stack or deployment.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return Load(ctx, args, stdout, stderr, nil)
}

// Load drives N jobs at concurrency C through one trigger, reports
// latency and throughput, and checks that each job ran exactly once. With
// start nil it runs against the target of the flags and the environment
// (genimg load); otherwise against the stack start brings up in this
// process, whose model calls, peak RSS and CPU time it then measures too
// (go run ./cmd/local load).
func Load(ctx context.Context, args []string, stdout, stderr io.Writer, start StartLocal) error {
	name := "load"
	if start != nil {
		name = "local load"
	}
	fs := newFlagSet(name, "-n N -c C --via http|pubsub|upload [flags]", stderr)
	var o loadOptions
	var t *target
	var moved bool
	if start == nil {
		t = addTargetFlags(fs)
		fs.BoolVar(&o.standin, "standin", false, "the target runs the stand-in model: steer it with [[standin:…]] directives in the prompts")
		fs.BoolVar(&moved, "local", false, "moved: go run ./cmd/local load runs the load on a stack in its own process")
	} else {
		o.standin = true // the stack in this process runs the stand-in
		fs.StringVar(&o.heapProfile, "heap", "", "write a heap profile taken at peak RSS to this file")
	}
	fs.IntVar(&o.n, "n", 20, "number of jobs")
	fs.IntVar(&o.c, "c", 5, "concurrency: jobs in flight at once")
	fs.StringVar(&o.via, "via", "pubsub", "trigger: http, pubsub or upload")
	fs.DurationVar(&o.latency, "latency", 0, "stand-in model latency per call, e.g. 2s (the real model's order)")
	fs.Float64Var(&o.errorRate, "error-rate", 0, "fraction of jobs whose first model call fails (stand-in directive fail=1), e.g. 0.05")
	fs.IntVar(&o.errorStatus, "error-status", 503, "HTTP status of the injected failures (429 or 5xx)")
	fs.StringVar(&o.aspect, "aspect", "1:1", "aspect ratio of every job (1:1 draws 1024×1024 outputs)")
	fs.StringVar(&o.outputPrefix, "output-prefix", "images/", "the deployment's GENIMG_OUTPUT_PREFIX, to count image sets")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on jobs not done by then")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case moved:
		return errors.New("load --local is now go run ./cmd/local load, with the same flags but --local")
	case len(pos) != 0:
		fs.Usage()
		return errors.New("load takes no arguments")
	case o.n < 1 || o.c < 1:
		return errors.New("-n and -c must be at least 1")
	case o.via != "http" && o.via != "pubsub" && o.via != "upload":
		return fmt.Errorf("--via %q: use http, pubsub or upload", o.via)
	case o.errorRate < 0 || o.errorRate > 1:
		return fmt.Errorf("--error-rate %v: a fraction from 0 to 1", o.errorRate)
	case (o.latency > 0 || o.errorRate > 0) && !o.standin:
		// Directives sent to the real model would be paid-for prompt text.
		return errors.New("--latency and --error-rate steer the stand-in model: use them with --standin, or run the load on a stack of its own with go run ./cmd/local load")
	}

	var local *Local
	if start != nil {
		if local, err = start(ctx, o.c); err != nil {
			return fmt.Errorf("starting the local stack: %w", err)
		}
		defer local.Close()
		// The client libraries find emulators through the environment.
		os.Setenv("STORAGE_EMULATOR_HOST", local.StorageEmulatorHost)
		os.Setenv("PUBSUB_EMULATOR_HOST", local.PubSubEmulatorHost)
		t = &target{
			url: local.URL, project: local.Project,
			inputBucket: local.InputBucket, outputBucket: local.OutputBucket,
			requestsTopic: local.RequestsTopic, completionTopic: local.CompletionTopic, emulated: true,
		}
	} else {
		t.resolve(os.Getenv)
	}
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	l := &loader{c: c, o: o, local: local, stdout: stdout, stderr: stderr}
	return l.run(ctx)
}

// A loader runs one load test.
type loader struct {
	c              *clients
	o              loadOptions
	local          *Local // nil: the target runs elsewhere
	stdout, stderr io.Writer

	runID    string
	jobs     []*loadJob
	byID     map[string]*loadJob
	mu       sync.Mutex
	bySource map[string]*loadJob
	early    map[string][]event // upload events that came before their source was known
	events   atomic.Int64
	done     atomic.Int64
	failed   atomic.Int64
	input    []byte // the upload trigger's input image
	calls0   int    // the stand-in's call count before the load
}

// A loadJob is one job of the load and what became of it.
type loadJob struct {
	i        int
	id       string // the job id (derived ids of uploads: from the record)
	source   string // upload: gs://bucket/name#generation
	fail     bool   // carries an injected failure
	start    time.Time
	latency  time.Duration
	err      error
	rec      *job.Record
	ceIDs    map[string]int
	finished chan struct{}
	once     sync.Once
}

func (l *loader) run(ctx context.Context) error {
	o := l.o
	l.runID = newID("")[:8]
	l.byID, l.bySource, l.early = map[string]*loadJob{}, map[string]*loadJob{}, map[string][]event{}
	injected := 0
	for i := range o.n {
		j := &loadJob{i: i, ceIDs: map[string]int{}, finished: make(chan struct{})}
		// Spread floor(n × rate) failures evenly.
		j.fail = math.Floor(float64(i+1)*o.errorRate) > math.Floor(float64(i)*o.errorRate)
		if j.fail {
			injected++
		}
		if o.via != "upload" {
			j.id = fmt.Sprintf("load-%s-%04d", l.runID, i)
			l.byID[j.id] = j
		}
		l.jobs = append(l.jobs, j)
	}
	if o.via == "upload" {
		l.input = loadImage()
	}

	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	sub, err := l.c.subscribe(ctx, "")
	if err != nil {
		return err
	}
	defer sub.delete(ctx)
	recvCtx, stopRecv := context.WithCancel(ctx)
	defer stopRecv()
	go sub.receive(recvCtx, func(e event) bool { l.onEvent(e); return false })

	var pub *pubsub.Publisher
	if o.via == "pubsub" {
		pub = l.c.pubsub.Publisher(l.c.t.topicName(l.c.t.requestsTopic))
		pub.PublishSettings.DelayThreshold = time.Millisecond
		defer pub.Stop()
	}

	if o.standin {
		// One job first, outside the figures: the stand-in draws each
		// distinct image once and caches it, and the load's jobs all ask for
		// the same image; without this, 200 concurrent first calls would all
		// draw it, and the figures would measure the stand-in's PNG encoder.
		w := &loadJob{i: -1, ceIDs: map[string]int{}, finished: make(chan struct{})}
		if o.via != "upload" {
			w.id = fmt.Sprintf("load-%s-warmup", l.runID)
			l.byID[w.id] = w
		}
		l.one(ctx, w, pub)
		if w.err != nil {
			return fmt.Errorf("warm-up job: %w", w.err)
		}
		l.events.Store(0)
		l.done.Store(0)
		l.failed.Store(0)
		// Start the peak RSS (VmHWM) afresh from here (Linux: clear_refs 5).
		os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	}
	if l.local != nil && l.local.ModelCalls != nil {
		l.calls0 = l.local.ModelCalls()
	}
	sampler := startSampler(l.local != nil, o.heapProfile)
	cpu0 := cpuTime()
	fmt.Fprintf(l.stderr, "load %s: %d jobs, %d at once, via %s, model latency %s, injected failures %d (status %d)%s\n",
		l.runID, o.n, o.c, o.via, o.latency, injected, o.errorStatus, map[bool]string{true: ", local stack in process"}[l.local != nil])
	prog := l.startProgress(ctx)
	start := time.Now()
	next := make(chan *loadJob)
	var wg sync.WaitGroup
	for range o.c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				l.one(ctx, j, pub)
			}
		}()
	}
	for _, j := range l.jobs {
		next <- j
	}
	close(next)
	wg.Wait()
	wall := time.Since(start)
	// Let any duplicate delivery of an event arrive before counting.
	time.Sleep(time.Second)
	stopRecv()
	prog()
	cpu := cpuTime() - cpu0
	peak := sampler.stop()

	return l.report(ctx, wall, cpu, peak, injected)
}

// one submits one job and waits for its completion event.
func (l *loader) one(ctx context.Context, j *loadJob, pub *pubsub.Publisher) {
	prompt := "genimg load test: a lighthouse at dusk"
	if l.o.latency > 0 {
		prompt += " [[standin:latency=" + l.o.latency.String() + "]]"
	}
	if j.fail {
		// fail=N counts calls per prompt: make this prompt its own.
		prompt += fmt.Sprintf(" [[standin:fail=1:%d]] #%s-%d", l.o.errorStatus, l.runID, j.i)
	}
	jb := job.Job{ID: j.id, Prompt: prompt, AspectRatio: l.o.aspect}
	j.start = time.Now()
	var err error
	switch l.o.via {
	case "http":
		var s submitted
		if s, err = l.c.submitHTTP(ctx, jb, nil); err == nil && s.answer != nil {
			l.finish(j, event{Record: *s.answer, Received: time.Now()})
		}
	case "pubsub":
		var data []byte
		if data, err = json.Marshal(jb); err == nil {
			_, err = pub.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx)
		}
	case "upload":
		var src string
		src, err = l.c.uploadImage(ctx, job.Job{Prompt: prompt, AspectRatio: l.o.aspect},
			imageFile{name: fmt.Sprintf("load-%s-%04d.png", l.runID, j.i+1), data: l.input})
		if err == nil {
			l.mu.Lock()
			j.source = src
			l.bySource[src] = j
			early := l.early[src]
			delete(l.early, src)
			l.mu.Unlock()
			for _, e := range early {
				l.onEvent(e)
			}
		}
	}
	if err != nil {
		j.err = err
		l.failed.Add(1)
		return
	}
	select {
	case <-j.finished:
		j.latency = j.rec.Timings.CompletedAt.Sub(j.start)
		if lat := time.Since(j.start); j.latency <= 0 || lat < j.latency {
			j.latency = lat
		}
	case <-ctx.Done():
		j.err = fmt.Errorf("no completion event: %w", ctx.Err())
		l.failed.Add(1)
	}
}

// onEvent matches a completion event to its job.
func (l *loader) onEvent(e event) {
	l.events.Add(1)
	l.mu.Lock()
	j := l.byID[e.Record.JobID]
	if j == nil && e.Record.Trigger.Kind == job.Upload {
		if j = l.bySource[e.Record.Trigger.Source]; j == nil && strings.Contains(e.Record.Trigger.Source, "/load-"+l.runID+"-") {
			l.early[e.Record.Trigger.Source] = append(l.early[e.Record.Trigger.Source], e)
			l.mu.Unlock()
			return
		}
	}
	if j == nil {
		l.mu.Unlock()
		return // someone else's job
	}
	j.ceIDs[e.Attributes["ce-id"]]++
	l.mu.Unlock()
	l.finish(j, e)
}

func (l *loader) finish(j *loadJob, e event) {
	j.once.Do(func() {
		rec := e.Record
		j.rec = &rec
		if j.id == "" {
			j.id = rec.JobID
		}
		l.done.Add(1)
		if rec.Outcome != job.Succeeded {
			l.failed.Add(1)
		}
		close(j.finished)
	})
}

// startProgress shows done/in-flight counts: live on a terminal, a line
// every 5 s elsewhere. It returns the function that stops it.
func (l *loader) startProgress(ctx context.Context) func() {
	term := isTerminal(l.stderr)
	every := 5 * time.Second
	if term {
		every = 200 * time.Millisecond
	}
	start := time.Now()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				if term {
					fmt.Fprint(l.stderr, "\r\033[K")
				}
				return
			case <-t.C:
				line := fmt.Sprintf("%6.1fs  done %d/%d  errors %d  events %d", time.Since(start).Seconds(),
					l.done.Load(), l.o.n, l.failed.Load(), l.events.Load())
				if term {
					fmt.Fprint(l.stderr, "\r\033[K"+line)
				} else {
					fmt.Fprintln(l.stderr, line)
				}
			}
		}
	}()
	return func() { close(stop); <-done }
}

// report prints the figures and checks exactly-once. It fails when a job
// did not succeed or a check does not hold.
func (l *loader) report(ctx context.Context, wall, cpu time.Duration, peak samples, injected int) error {
	o, w := l.o, l.stdout
	var lat, over, model []time.Duration
	var attempts, succeeded int
	outcomes := map[string]int{}
	var problems []string
	for _, j := range l.jobs {
		switch {
		case j.err != nil:
			outcomes["error"]++
			if len(problems) < 5 {
				problems = append(problems, fmt.Sprintf("job %d: %v", j.i, j.err))
			}
			continue
		case j.rec == nil:
			outcomes["lost"]++
			continue
		}
		r := j.rec
		outcomes[string(r.Outcome)]++
		attempts += r.Attempts
		if r.Outcome == job.Succeeded {
			succeeded++
		} else if len(problems) < 5 && r.Error != nil {
			problems = append(problems, fmt.Sprintf("job %s: %s", r.JobID, r.Error.Message))
		}
		lat = append(lat, j.latency)
		over = append(over, time.Duration(r.Timings.TotalMs-r.Timings.ModelMs)*time.Millisecond)
		model = append(model, time.Duration(r.Timings.ModelMs)*time.Millisecond)
	}

	fmt.Fprintf(w, "genimg load %s\n", l.runID)
	fmt.Fprintf(w, "  jobs         %d via %s, concurrency %d, model latency %s, injected failures %d (HTTP %d)\n", o.n, o.via, o.c, o.latency, injected, o.errorStatus)
	fmt.Fprintf(w, "  outcomes     %s\n", counts(outcomes))
	fmt.Fprintf(w, "  wall time    %s\n", wall.Round(time.Millisecond))
	fmt.Fprintf(w, "  throughput   %.1f jobs/s\n", float64(succeeded)/wall.Seconds())
	fmt.Fprintf(w, "  latency      %s   (submit → completion event)\n", percentiles(lat))
	fmt.Fprintf(w, "  overhead     %s   (record: total − model)\n", percentiles(over))
	fmt.Fprintf(w, "  model time   %s\n", percentiles(model))
	for _, p := range problems {
		fmt.Fprintf(w, "  problem      %s\n", p)
	}

	// Exactly once: every job has one record (one distinct event id), one
	// image set, and the model was called once per job plus once per
	// injected failure.
	ok := true
	check := func(name string, got, want int) {
		mark := "ok"
		if got != want {
			mark, ok = "MISMATCH", false
		}
		fmt.Fprintf(w, "  %-12s %d, want %d  %s\n", name, got, want, mark)
	}
	distinct, extra := 0, 0
	for _, j := range l.jobs {
		distinct += len(j.ceIDs)
		if len(j.ceIDs) > 1 {
			extra++
		}
	}
	if l.local != nil && l.local.ModelCalls != nil {
		check("model calls", l.local.ModelCalls()-l.calls0, o.n+injected)
	}
	check("attempts", attempts, o.n+injected)
	sets, images, err := l.imageSets(ctx)
	if err != nil {
		fmt.Fprintf(w, "  image sets   cannot list: %v\n", err)
		ok = false
	} else {
		check("image sets", sets, o.n)
		check("images", images, o.n)
	}
	check("event ids", distinct, o.n)
	fmt.Fprintf(w, "  events       %d received (duplicates are redeliveries of the same id); jobs with more than one record: %d\n", l.events.Load(), extra)

	if l.local != nil {
		fmt.Fprintf(w, "  peak RSS     %.1f MiB (VmHWM of this process: functions, emulators, stand-in model and load driver)\n", mib(peak.hwm))
		fmt.Fprintf(w, "  RSS at start %.1f MiB; peak Go heap objects %.1f MiB; peak Go memory %.1f MiB\n", mib(peak.startRSS), mib(peak.heap), mib(peak.goTotal))
		fmt.Fprintf(w, "  CPU time     %s user+sys, %.1f ms per job (whole process)\n", cpu.Round(time.Millisecond), float64(cpu.Microseconds())/1000/float64(o.n))
		if o.heapProfile != "" && peak.profile != nil {
			if err := os.WriteFile(o.heapProfile, peak.profile, 0o644); err != nil {
				fmt.Fprintf(w, "  heap profile %v\n", err)
			} else {
				fmt.Fprintf(w, "  heap profile %s (at %.1f MiB RSS; go tool pprof -top -sample_index=inuse_space %s)\n", o.heapProfile, mib(peak.profileRSS), o.heapProfile)
			}
		}
	}
	if !ok || succeeded != o.n {
		return fmt.Errorf("load %s: %d of %d jobs succeeded; exactly-once holds: %t", l.runID, succeeded, o.n, ok)
	}
	return nil
}

// imageSets counts, among this load's jobs, those with images under the
// output prefix, and the images.
func (l *loader) imageSets(ctx context.Context) (sets, images int, err error) {
	ids := map[string]bool{}
	for _, j := range l.jobs {
		if j.id != "" {
			ids[j.id] = true
		}
	}
	perJob := map[string]int{}
	err = l.c.output.List(ctx, l.o.outputPrefix, "", func(a storage.Attrs) error {
		if id := path.Base(path.Dir(a.Name)); ids[id] {
			perJob[id]++
			images++
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return len(perJob), images, nil
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// percentiles formats p50/p90/p99/max of ds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	p := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s", r(p(0.50)), r(p(0.90)), r(p(0.99)), r(s[len(s)-1]))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// loadImage is the upload trigger's input: a small PNG; with aspect ratio
// 1:1 the output is 1024×1024 whatever the input's size.
func loadImage() []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 4), 128, 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// samples are the memory figures a sampler saw.
type samples struct {
	startRSS, hwm, heap, goTotal int64
	profile                      []byte
	profileRSS                   int64
}

type sampler struct {
	stopc chan struct{}
	done  chan samples
}

// startSampler watches this process's memory every 50 ms: RSS, the Go
// heap, and with heap set, a heap profile each time RSS reaches a new peak
// (by 8 MiB or more), so that the profile shows where the peak went.
func startSampler(on bool, heap string) *sampler {
	s := &sampler{stopc: make(chan struct{}), done: make(chan samples, 1)}
	if !on {
		close(s.done)
		return s
	}
	go func() {
		var out samples
		out.startRSS = procStatus("VmRSS")
		ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/total:bytes"}}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(ms)
			out.heap = max(out.heap, int64(ms[0].Value.Uint64()))
			out.goTotal = max(out.goTotal, int64(ms[1].Value.Uint64()))
			if rss := procStatus("VmRSS"); heap != "" && rss > out.profileRSS+8<<20 {
				var b bytes.Buffer
				if pprof.Lookup("heap").WriteTo(&b, 0) == nil {
					out.profile, out.profileRSS = b.Bytes(), rss
				}
			}
			select {
			case <-s.stopc:
				out.hwm = procStatus("VmHWM")
				s.done <- out
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() samples {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	return <-s.done
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
