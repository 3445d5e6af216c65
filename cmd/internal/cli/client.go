package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	_ "image/jpeg" // decode the sizes of downloaded images
	_ "image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"golang.org/x/oauth2"
	"google.golang.org/api/impersonate"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// The local stack's endpoints and names (README, "The two commands"): what genimg
// talks to when nothing else is configured.
const (
	localURL          = "http://127.0.0.1:8080/Generate"
	localStorage      = "http://127.0.0.1:4443"
	localPubSub       = "127.0.0.1:8085"
	localProject      = "genimg-local"
	localInput        = "genimg-input"
	localOutput       = "genimg-output"
	localRequests     = "genimg-requests"
	localCompletions  = "genimg-completions"
	cliPrefix         = "genimg-cli/" // where the command stages its own uploads
	defaultOutDirRoot = "genimg-out"
)

// target says where genimg runs: the Generate function's URL, the project,
// the buckets and the topics, and how to authenticate to the function.
// Flags win over the environment; the local stack's defaults fill the rest.
type target struct {
	url, project                   string
	inputBucket, outputBucket      string
	requestsTopic, completionTopic string
	token, impersonate             string
	emulated                       bool
}

// addTargetFlags registers the flags every subcommand shares.
func addTargetFlags(fs *flag.FlagSet) *target {
	t := &target{}
	fs.StringVar(&t.url, "url", "", "the Generate function's URL (env GENIMG_URL; local: "+localURL+")")
	fs.StringVar(&t.project, "project", "", "Google Cloud project (env GOOGLE_CLOUD_PROJECT; local: "+localProject+")")
	fs.StringVar(&t.inputBucket, "input-bucket", "", "upload bucket (env: first of GENIMG_UPLOAD_BUCKETS; local: "+localInput+")")
	fs.StringVar(&t.outputBucket, "output-bucket", "", "output bucket (env GENIMG_OUTPUT_BUCKET; local: "+localOutput+")")
	fs.StringVar(&t.requestsTopic, "requests-topic", "", "requests topic id (env GENIMG_REQUESTS_TOPIC; local: "+localRequests+")")
	fs.StringVar(&t.completionTopic, "completion-topic", "", "completion events topic id (env GENIMG_COMPLETION_TOPIC; local: "+localCompletions+")")
	fs.StringVar(&t.token, "token", "", "ID token for an IAM-protected function (env GENIMG_ID_TOKEN), e.g. from\n`gcloud auth print-identity-token --impersonate-service-account=SA --audiences=URL`;\nnever printed")
	fs.StringVar(&t.impersonate, "impersonate", "", "service account whose ID token calls the function (needs roles/iam.serviceAccountTokenCreator on it);\na person's own credentials cannot mint ID tokens")
	return t
}

// resolve fills what the flags left empty from the environment, and from
// the local stack's defaults when nothing points elsewhere. In that case it
// sets STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST itself, as the Cloud
// client libraries read them.
func (t *target) resolve(getenv func(string) string) {
	pick := func(v *string, env string, local string) {
		if *v == "" {
			*v = getenv(env)
		}
		if *v == "" {
			*v = local
		}
	}
	nothingSet := t.url == "" && t.project == "" && getenv("GENIMG_URL") == "" && getenv("GOOGLE_CLOUD_PROJECT") == "" &&
		getenv("STORAGE_EMULATOR_HOST") == "" && getenv("PUBSUB_EMULATOR_HOST") == ""
	if nothingSet {
		os.Setenv("STORAGE_EMULATOR_HOST", localStorage)
		os.Setenv("PUBSUB_EMULATOR_HOST", localPubSub)
	}
	t.emulated = os.Getenv("STORAGE_EMULATOR_HOST") != "" && os.Getenv("PUBSUB_EMULATOR_HOST") != ""
	if t.emulated && os.Getenv("GCE_METADATA_HOST") == "" {
		// Against emulators nothing may leave the machine: the client
		// libraries must never probe the metadata server.
		os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	}
	pick(&t.url, "GENIMG_URL", localURL)
	pick(&t.project, "GOOGLE_CLOUD_PROJECT", localProject)
	if t.inputBucket == "" {
		t.inputBucket, _, _ = strings.Cut(getenv("GENIMG_UPLOAD_BUCKETS"), ",")
		t.inputBucket = strings.TrimSpace(t.inputBucket)
	}
	pick(&t.inputBucket, "", localInput)
	pick(&t.outputBucket, "GENIMG_OUTPUT_BUCKET", localOutput)
	pick(&t.requestsTopic, "GENIMG_REQUESTS_TOPIC", localRequests)
	pick(&t.completionTopic, "GENIMG_COMPLETION_TOPIC", localCompletions)
	if t.token == "" {
		t.token = getenv("GENIMG_ID_TOKEN")
	}
}

// topicName is a topic's full name; an id or a full name is accepted.
func (t *target) topicName(id string) string {
	if strings.HasPrefix(id, "projects/") {
		return id
	}
	return "projects/" + t.project + "/topics/" + id
}

func (t *target) subscriptionName(id string) string {
	return "projects/" + t.project + "/subscriptions/" + id
}

// clients are the connections a subcommand uses, built once.
type clients struct {
	t *target
	// output is the output bucket; In reaches any other bucket.
	output       *storage.Objects
	closeStorage func() error
	pubsub       *pubsub.Client
	http         *http.Client
}

// connect builds the clients. Against emulators the client libraries need
// no credentials; against Google Cloud they use Application Default
// Credentials, and calls to the function carry an ID token when one is
// given (--token) or minted (--impersonate).
func (t *target) connect(ctx context.Context) (*clients, error) {
	output, closeStorage, err := storage.DialObjects(ctx, t.outputBucket)
	if err != nil {
		return nil, err
	}
	ps, err := pubsub.NewClient(ctx, t.project)
	if err != nil {
		closeStorage()
		return nil, fmt.Errorf("pub/sub client: %w", err)
	}
	c := &clients{t: t, output: output, closeStorage: closeStorage, pubsub: ps, http: &http.Client{Timeout: 10 * time.Minute}}
	switch {
	case t.token != "":
		c.http.Transport = &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: t.token, TokenType: "Bearer"})}
	case t.impersonate != "":
		u, err := url.Parse(t.url)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("--url %q: %v", t.url, err)
		}
		// Cloud Run checks the audience against the service URL.
		ts, err := impersonate.IDTokenSource(ctx, impersonate.IDTokenConfig{
			Audience: u.Scheme + "://" + u.Host, TargetPrincipal: t.impersonate, IncludeEmail: true,
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("minting an ID token as %s: %w", t.impersonate, err)
		}
		c.http.Transport = &oauth2.Transport{Source: ts}
	}
	return c, nil
}

// Close closes the clients.
func (c *clients) Close() {
	c.pubsub.Close()
	c.closeStorage()
}

// input is the input bucket.
func (c *clients) input() *storage.Objects { return c.output.In(c.t.inputBucket) }

// newID is a fresh job or subscription suffix.
func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// An event is one completion event as a consumer sees it.
type event struct {
	Attributes map[string]string
	Data       []byte
	Record     job.Record
	Received   time.Time
}

// key identifies an event for deduplication (README, "The completion event").
func (e event) key() string { return e.Attributes["ce-source"] + " " + e.Attributes["ce-id"] }

// A subscription is a temporary subscription to the completion topic,
// created before anything is submitted so that no event is missed, and
// deleted on exit. It also expires by itself after a day unused, should the
// command be killed.
type subscription struct {
	c    *clients
	name string
}

// subscribe creates a temporary subscription to the completion topic with
// an optional Pub/Sub filter (on the event's attributes).
func (c *clients) subscribe(ctx context.Context, filter string) (*subscription, error) {
	name := c.t.subscriptionName(newID("genimg-cli-"))
	_, err := c.pubsub.SubscriptionAdminClient.CreateSubscription(ctx, &pb.Subscription{
		Name: name, Topic: c.t.topicName(c.t.completionTopic), Filter: filter, AckDeadlineSeconds: 60,
		ExpirationPolicy: &pb.ExpirationPolicy{Ttl: durationpb.New(24 * time.Hour)},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribing to %s: %w", c.t.topicName(c.t.completionTopic), err)
	}
	return &subscription{c: c, name: name}, nil
}

// receive calls fn for each completion event until fn returns true or ctx
// ends. fn may be called concurrently.
func (s *subscription) receive(ctx context.Context, fn func(event) (stop bool)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := s.c.pubsub.Subscriber(s.name)
	sub.ReceiveSettings.MaxOutstandingMessages = 10000
	err := sub.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		e := event{Attributes: m.Attributes, Data: m.Data, Received: time.Now()}
		if json.Unmarshal(m.Data, &e.Record) != nil {
			return // not a record: not genimg's event
		}
		if fn(e) {
			cancel()
		}
	})
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// delete removes the subscription, even when ctx is already cancelled.
func (s *subscription) delete(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s.c.pubsub.SubscriptionAdminClient.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Subscription: s.name})
}

// readRecord reads gs://OUTPUT/jobs/<id>/result.json. running is true when
// only a claim exists.
func (c *clients) readRecord(ctx context.Context, id string) (rec *job.Record, running bool, err error) {
	if !job.ValidID(id) {
		return nil, false, fmt.Errorf("%q is not a job id", id)
	}
	name := storage.RecordObject(id)
	data, _, err := c.output.Get(ctx, name, 4<<20)
	if errors.Is(err, storage.ErrNotFound) {
		if _, err := c.output.Stat(ctx, storage.ClaimObject(id)); err == nil {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("no job %s in gs://%s/%s", id, c.output.Bucket(), storage.JobsPrefix)
	}
	if err != nil {
		return nil, false, err
	}
	var r job.Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, false, fmt.Errorf("gs://%s/%s is not a record: %v", c.output.Bucket(), name, err)
	}
	return &r, false, nil
}

// download fetches a record's images into dir and returns the files
// written with their decoded sizes.
func (c *clients) download(ctx context.Context, rec job.Record, dir string, w io.Writer) error {
	if len(rec.Outputs) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, o := range rec.Outputs {
		bucket, name, err := job.ParseGCS(o.URI)
		if err != nil {
			return err
		}
		r, err := c.output.In(bucket).Reader(ctx, name)
		if err != nil {
			return err
		}
		file := filepath.Join(dir, path.Base(name))
		f, err := os.Create(file)
		if err != nil {
			r.Close()
			return err
		}
		_, err = io.Copy(f, r)
		r.Close()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("downloading %s: %w", o.URI, err)
		}
		size := "?"
		if f, err := os.Open(file); err == nil {
			if cfg, _, err := image.DecodeConfig(f); err == nil {
				size = fmt.Sprintf("%d×%d", cfg.Width, cfg.Height)
			}
			f.Close()
		}
		fmt.Fprintf(w, "image     %s (%s, %d bytes)\n", file, size, o.Bytes)
	}
	return nil
}

// printRecord writes what a person wants to know about a finished job.
func printRecord(w io.Writer, rec job.Record) {
	fmt.Fprintf(w, "job       %s\n", rec.JobID)
	fmt.Fprintf(w, "outcome   %s\n", rec.Outcome)
	fmt.Fprintf(w, "trigger   %s %s\n", rec.Trigger.Kind, rec.Trigger.Source)
	if rec.Parent != "" {
		fmt.Fprintf(w, "parent    %s\n", rec.Parent)
	}
	if rec.Model != "" {
		fmt.Fprintf(w, "model     %s %s\n", rec.Model, rec.ModelVersion)
	}
	u := rec.Usage
	fmt.Fprintf(w, "usage     prompt %d%s, candidates %d%s, thoughts %d, cached %d, total %d tokens\n",
		u.PromptTokens, modalities(u.PromptTokensByModality), u.CandidatesTokens, modalities(u.CandidatesTokensByModality),
		u.ThoughtsTokens, u.CachedTokens, u.TotalTokens)
	fmt.Fprintf(w, "cost      $%.4f (%d model call%s)\n", rec.CostUSD, rec.Attempts, plural(rec.Attempts))
	if rec.FinishReason != "" {
		fmt.Fprintf(w, "finish    %s %s\n", rec.FinishReason, rec.FinishMessage)
	}
	for _, r := range rec.SafetyRatings {
		fmt.Fprintf(w, "safety    %s\n", rating(r))
	}
	if pf := rec.PromptFeedback; pf != nil {
		if pf.BlockReason != "" {
			fmt.Fprintf(w, "blocked   %s %s\n", pf.BlockReason, pf.BlockReasonMessage)
		}
		for _, r := range pf.SafetyRatings {
			fmt.Fprintf(w, "prompt    %s\n", rating(r))
		}
	}
	if rec.Text != "" {
		fmt.Fprintf(w, "text      %s\n", rec.Text)
	}
	if e := rec.Error; e != nil {
		fmt.Fprintf(w, "error     %s (retryable: %t): %s\n", e.Code, e.Retryable, e.Message)
	}
	fmt.Fprintf(w, "time      %d ms total, %d ms in the model, completed %s\n",
		rec.Timings.TotalMs, rec.Timings.ModelMs, rec.Timings.CompletedAt.Format(time.RFC3339))
	for _, o := range rec.Outputs {
		fmt.Fprintf(w, "output    %s (%s %d×%d, %d bytes)\n", o.URI, o.MIMEType, o.Width, o.Height, o.Bytes)
	}
}

func modalities(m map[string]int32) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func rating(r job.SafetyRating) string {
	s := r.Category + " " + r.Probability
	if r.Severity != "" {
		s += " " + r.Severity
	}
	if r.Blocked {
		s += " BLOCKED"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// progress shows a live status line on a terminal: elapsed time and state.
// On anything else it is silent, so logs and pipes stay clean.
type progress struct {
	w     io.Writer
	on    bool
	start time.Time
	mu    sync.Mutex
	state string
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func startProgress(w io.Writer, state string) *progress {
	p := &progress{w: w, on: isTerminal(w), start: time.Now(), state: state, stop: make(chan struct{}), done: make(chan struct{})}
	if !p.on {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\033[K")
				return
			case <-t.C:
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r\033[K%6.1fs  %s", time.Since(p.start).Seconds(), p.state)
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *progress) set(state string) {
	p.mu.Lock()
	p.state = state
	p.mu.Unlock()
}

// end clears the line; it may be called more than once.
func (p *progress) end() {
	p.once.Do(func() {
		if p.on {
			close(p.stop)
		}
	})
	<-p.done
}
