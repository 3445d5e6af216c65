package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// An imageFile is an input image read from disk.
type imageFile struct {
	name string
	data []byte
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("generate", `"prompt" [flags]`, stderr)
	t := addTargetFlags(fs)
	var images multiFlag
	fs.Var(&images, "image", "input image file to edit or combine (repeat for more; at most 3)")
	aspect := fs.String("aspect", "", "aspect ratio, e.g. 16:9 (1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9)")
	via := fs.String("via", "http", "trigger: http (POST /Generate), pubsub (the requests topic) or upload (the input bucket)")
	id := fs.String("id", "", "job id (idempotency key, [A-Za-z0-9._-]{1,128}); default a new one")
	out := fs.String("out", "", "directory for the images (default ./"+defaultOutDirRoot+"/<jobId>/)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the job to finish")
	callbackURL := fs.String("callback", "", "URL that receives the completion event, signed (try genimg listen)")
	parent := fs.String("parent", "", "continue this succeeded job's conversation (an edit session: \"now add a dog\")")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || strings.TrimSpace(pos[0]) == "" {
		fs.Usage()
		return errors.New("generate takes one prompt (quote it)")
	}
	if *via != "http" && *via != "pubsub" && *via != "upload" {
		return fmt.Errorf("--via %q: use http, pubsub or upload", *via)
	}
	if *id != "" && !job.ValidID(*id) {
		return fmt.Errorf("--id %q: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", *id)
	}
	if *parent != "" && !job.ValidID(*parent) {
		return fmt.Errorf("--parent %q: a job id, 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", *parent)
	}
	files := make([]imageFile, 0, len(images))
	for _, name := range images {
		data, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		files = append(files, imageFile{name: filepath.Base(name), data: data})
	}
	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	j := job.Job{ID: *id, Prompt: pos[0], AspectRatio: *aspect, Callback: callbackOf(*callbackURL), Parent: *parent}
	// An image upload with its prompt in metadata is the upload trigger's
	// own form, with an id derived from the object; everything else goes
	// with an id the command chooses.
	derived := *via == "upload" && len(files) == 1 && *id == ""
	if j.ID == "" && !derived {
		j.ID = newID("cli-")
	}
	rec, err := c.generate(ctx, *via, j, files, *wait, *out, stdout, stderr)
	if err != nil {
		return err
	}
	if rec.Outcome == job.Failed {
		return exitError(1)
	}
	return nil
}

// generate submits one job, waits for its completion event, prints the
// record and downloads the images. A copy of the submitted job is kept
// beside the images (job.json) so that replay can resubmit it.
func (c *clients) generate(ctx context.Context, via string, j job.Job, files []imageFile, wait time.Duration, out string, stdout, stderr io.Writer) (job.Record, error) {
	filter := `attributes.ce-trigger = "upload"`
	if j.ID != "" {
		filter = fmt.Sprintf(`attributes.ce-subject = "jobs/%s"`, j.ID)
	}
	sub, err := c.subscribe(ctx, filter)
	if err != nil {
		return job.Record{}, err
	}
	defer sub.delete(ctx)

	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	events := make(chan event, 64)
	go sub.receive(ctx, func(e event) bool {
		select {
		case events <- e:
		case <-ctx.Done():
		}
		return false
	})

	p := startProgress(stderr, "submitting via "+via)
	defer p.end()
	s, err := c.submit(ctx, via, j, files)
	if err != nil {
		return job.Record{}, err
	}
	if s.job.ID != "" {
		p.set("queued as " + s.job.ID + " via " + via)
	} else {
		p.set("uploaded " + s.source)
	}

	rec := s.answer
	if rec == nil {
		rec, err = c.await(ctx, events, s, p)
		if err != nil {
			return job.Record{}, err
		}
	}
	p.end()
	printRecord(stdout, *rec)
	if out == "" {
		out = filepath.Join(defaultOutDirRoot, rec.JobID)
	}
	if err := c.download(ctx, *rec, out, stdout); err != nil {
		return *rec, err
	}
	if saved, err := json.MarshalIndent(s.job, "", "  "); err == nil && s.job.ID != "" {
		if err := os.MkdirAll(out, 0o755); err == nil {
			os.WriteFile(filepath.Join(out, "job.json"), saved, 0o644)
		}
	}
	return *rec, nil
}

// await reads completion events until the submitted job's arrives.
func (c *clients) await(ctx context.Context, events <-chan event, s submitted, p *progress) (*job.Record, error) {
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	for {
		select {
		case e := <-events:
			if s.matches(e.Record) {
				return &e.Record, nil
			}
		case <-poll.C:
			if s.job.ID != "" {
				if _, running, err := c.readRecord(ctx, s.job.ID); err == nil && running {
					p.set("running " + s.job.ID)
				}
			}
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				what := s.source
				if s.job.ID != "" {
					what = "genimg get " + s.job.ID
				}
				return nil, fmt.Errorf("the job did not finish in time; it keeps running: see later with %s", what)
			}
			return nil, ctx.Err()
		}
	}
}

// submitted is what a submission left to match its completion event with.
type submitted struct {
	// job is the job as sent (images staged to gs:// where they were);
	// its ID is empty for an upload whose id the trigger derives.
	job job.Job
	// source is the uploaded object (gs://bucket/name#generation) of such
	// an upload: its record's trigger.source.
	source string
	// answer is the record when the function answered with it at once
	// (HTTP, a job done before).
	answer *job.Record
}

func (s submitted) matches(rec job.Record) bool {
	if s.job.ID != "" {
		return rec.JobID == s.job.ID
	}
	return rec.Trigger.Kind == job.Upload && rec.Trigger.Source == s.source
}

// submit sends j (with files as its images) through one trigger.
func (c *clients) submit(ctx context.Context, via string, j job.Job, files []imageFile) (submitted, error) {
	switch via {
	case "http":
		return c.submitHTTP(ctx, j, files)
	case "pubsub":
		// Eventarc delivers at most 512 KB: images go by gs:// URI.
		if err := c.stage(ctx, &j, files); err != nil {
			return submitted{}, err
		}
		return submitted{job: j}, c.publish(ctx, j)
	case "upload":
		if j.ID == "" && len(files) == 1 {
			src, err := c.uploadImage(ctx, j, files[0])
			return submitted{source: src}, err
		}
		if err := c.stage(ctx, &j, files); err != nil {
			return submitted{}, err
		}
		data, err := json.Marshal(j)
		if err != nil {
			return submitted{}, err
		}
		name := cliPrefix + j.ID + "-" + newID("") + trigger.JobFileSuffix
		if _, err := c.put(ctx, name, data, "application/json", nil); err != nil {
			return submitted{}, err
		}
		return submitted{job: j}, nil
	}
	return submitted{}, fmt.Errorf("unknown trigger %q", via)
}

// stage uploads files to the input bucket under genimg-cli/<id>/ and
// references them in j by URI.
func (c *clients) stage(ctx context.Context, j *job.Job, files []imageFile) error {
	for i, f := range files {
		name := fmt.Sprintf("%s%s/%d-%s", cliPrefix, j.ID, i, f.name)
		if _, err := c.put(ctx, name, f.data, http.DetectContentType(f.data), nil); err != nil {
			return err
		}
		j.Images = append(j.Images, job.Image{URI: "gs://" + c.t.inputBucket + "/" + name})
	}
	return nil
}

// uploadImage uploads an image with its prompt (and aspect ratio) as custom
// metadata, the upload trigger's form of an edit, and returns the object
// with its generation.
func (c *clients) uploadImage(ctx context.Context, j job.Job, f imageFile) (string, error) {
	meta := map[string]string{trigger.MetaPrompt: j.Prompt}
	if j.AspectRatio != "" {
		meta[trigger.MetaAspectRatio] = j.AspectRatio
	}
	if j.SystemInstruction != "" {
		meta[trigger.MetaSystemInstruction] = j.SystemInstruction
	}
	if j.Parent != "" {
		meta[trigger.MetaParent] = j.Parent
	}
	name := cliPrefix + newID("") + "/" + f.name
	gen, err := c.put(ctx, name, f.data, http.DetectContentType(f.data), meta)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("gs://%s/%s#%d", c.t.inputBucket, name, gen), nil
}

// put uploads an object to the input bucket, as a person would, and
// returns its generation.
func (c *clients) put(ctx context.Context, name string, data []byte, contentType string, meta map[string]string) (int64, error) {
	a, err := c.input().Upload(ctx, name, data, contentType, meta)
	if err != nil {
		return 0, err
	}
	return a.Generation, nil
}

// publish puts j on the requests topic.
func (c *clients) publish(ctx context.Context, j job.Job) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if len(data) > trigger.MaxEventBytes {
		return fmt.Errorf("the job is %d bytes; a Pub/Sub job must fit %d bytes (512 KB)", len(data), trigger.MaxEventBytes)
	}
	p := c.pubsub.Publisher(c.t.topicName(c.t.requestsTopic))
	defer p.Stop()
	if _, err := p.Publish(ctx, &pubsub.Message{Data: data}).Get(ctx); err != nil {
		return fmt.Errorf("publishing to %s: %w", c.t.topicName(c.t.requestsTopic), err)
	}
	return nil
}

// submitHTTP POSTs the job (multipart when there are image files) asking
// for an asynchronous answer: the completion event says when it is done.
func (c *clients) submitHTTP(ctx context.Context, j job.Job, files []imageFile) (submitted, error) {
	var body bytes.Buffer
	contentType := "application/json"
	if len(files) == 0 {
		if err := json.NewEncoder(&body).Encode(j); err != nil {
			return submitted{}, err
		}
	} else {
		mw := multipart.NewWriter(&body)
		part, err := mw.CreateFormField("job")
		if err != nil {
			return submitted{}, err
		}
		if err := json.NewEncoder(part).Encode(j); err != nil {
			return submitted{}, err
		}
		for _, f := range files {
			h := textproto.MIMEHeader{}
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="image"; filename=%q`, path.Base(f.name)))
			h.Set("Content-Type", http.DetectContentType(f.data))
			w, err := mw.CreatePart(h)
			if err != nil {
				return submitted{}, err
			}
			w.Write(f.data)
			j.Images = append(j.Images, job.Image{Data: f.data, MIMEType: h.Get("Content-Type")})
		}
		if err := mw.Close(); err != nil {
			return submitted{}, err
		}
		contentType = mw.FormDataContentType()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.t.url, &body)
	if err != nil {
		return submitted{}, err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Prefer", "respond-async")
	rec, status, err := c.do(req)
	switch {
	case err != nil:
		return submitted{}, err
	case rec != nil:
		return submitted{job: j, answer: rec}, nil
	case status == http.StatusAccepted:
		return submitted{job: j}, nil
	}
	return submitted{}, fmt.Errorf("POST %s: unexpected status %d", c.t.url, status)
}

// do sends a request to the function and reads its answer: a record (any
// status: failed records answer with their error's status), a 202, or an
// error with the function's message.
func (c *clients) do(req *http.Request) (*job.Record, int, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	var rec job.Record
	if json.Unmarshal(data, &rec) == nil && rec.JobID != "" && rec.Outcome != "" {
		return &rec, resp.StatusCode, nil
	}
	if resp.StatusCode == http.StatusAccepted || resp.StatusCode == http.StatusNotFound {
		return nil, resp.StatusCode, nil
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		msg = e.Error.Message
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		msg += " (an IAM-protected function needs --token or --impersonate SA)"
	}
	return nil, resp.StatusCode, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Redacted(), resp.Status, msg)
}
