package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

func runGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("get", "JOB [flags]", stderr)
	t := addTargetFlags(fs)
	from := fs.String("from", "http", "where to read the record: http (GET ?id= on the function) or storage (gs://OUTPUT/jobs/JOB/result.json)")
	out := fs.String("out", "", "directory for the images (default ./"+defaultOutDirRoot+"/<jobId>/)")
	raw := fs.Bool("json", false, "print the record as JSON")
	noImages := fs.Bool("no-images", false, "do not download the images")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("get takes one job id")
	}
	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rec, err := c.record(ctx, *from, pos[0])
	if err != nil {
		return err
	}
	if *raw {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rec)
	} else {
		printRecord(stdout, *rec)
	}
	if *noImages {
		return nil
	}
	if *out == "" {
		*out = filepath.Join(defaultOutDirRoot, rec.JobID)
	}
	w := stdout
	if *raw {
		w = stderr
	}
	return c.download(ctx, *rec, *out, w)
}

// errRunning says a job has no record yet.
var errRunning = errors.New("the job is still running")

// record reads a job's record from the function (http) or the output
// bucket (storage).
func (c *clients) record(ctx context.Context, from, id string) (*job.Record, error) {
	if !job.ValidID(id) {
		return nil, fmt.Errorf("%q is not a job id: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", id)
	}
	switch from {
	case "storage":
		rec, running, err := c.readRecord(ctx, id)
		if running {
			return nil, fmt.Errorf("job %s: %w", id, errRunning)
		}
		return rec, err
	case "http":
		u, err := url.Parse(c.t.url)
		if err != nil {
			return nil, fmt.Errorf("--url %q: %v", c.t.url, err)
		}
		u.RawQuery = url.Values{"id": {id}}.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		rec, status, err := c.do(req)
		switch {
		case err != nil:
			return nil, err
		case rec != nil:
			return rec, nil
		case status == http.StatusAccepted:
			return nil, fmt.Errorf("job %s: %w", id, errRunning)
		case status == http.StatusNotFound:
			return nil, fmt.Errorf("no job with id %s", id)
		}
		return nil, fmt.Errorf("GET %s: unexpected status %d", u.Redacted(), status)
	}
	return nil, fmt.Errorf("--from %q: use http or storage", from)
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", "JOB [flags]", stderr)
	t := addTargetFlags(fs)
	from := fs.String("from", "http", "where to read the record: http or storage")
	jobFile := fs.String("job", "", "the job to resubmit (JSON); default: the job.json that generate left in --out, or the uploaded object the job came from")
	via := fs.String("via", "", "trigger for the resubmission: pubsub or http (default pubsub; http when the job carries inline images)")
	out := fs.String("out", "", "directory for the images (default ./"+defaultOutDirRoot+"/<jobId>/)")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the job to finish")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("replay takes one job id")
	}
	id := pos[0]
	if *out == "" {
		*out = filepath.Join(defaultOutDirRoot, id)
	}
	t.resolve(os.Getenv)
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	rec, err := c.record(ctx, *from, id)
	if err != nil {
		return err
	}
	// Only retries that ran out on a transient cause may run again
	// (README, "The job"); anything else would pay for a known answer.
	if rec.Outcome != job.Failed || rec.Error == nil || !rec.Error.Retryable {
		why := string(rec.Outcome)
		if rec.Error != nil {
			why += " (" + rec.Error.Code + ", not retryable)"
		}
		return fmt.Errorf("job %s ended %s: only a failed job whose error is retryable can be replayed; submit a new job with a new id instead", id, why)
	}
	j, where, err := c.findJob(ctx, *rec, *jobFile, filepath.Join(*out, "job.json"))
	if err != nil {
		return err
	}
	if j.ID != "" && j.ID != id {
		return fmt.Errorf("%s is job %s, not %s", where, j.ID, id)
	}
	j.ID = id
	if *via == "" {
		*via = "pubsub"
		for _, img := range j.Images {
			if len(img.Data) > 0 {
				*via = "http" // inline images: a Pub/Sub job must fit 512 KB
			}
		}
	}
	if *via != "pubsub" && *via != "http" {
		return fmt.Errorf("--via %q: use pubsub or http", *via)
	}
	fmt.Fprintf(stderr, "replaying %s (failed: %s) with the job from %s via %s\n", id, rec.Error.Message, where, *via)
	// The new message (or request) is a new trigger source: genimg takes
	// it as the explicit resubmission that reruns a retryable failure, where
	// a redelivery of the old one would only republish the old record.
	got, err := c.generate(ctx, *via, j, nil, *wait, *out, stdout, stderr)
	if err != nil {
		return err
	}
	if got.Outcome == job.Failed {
		return exitError(1)
	}
	return nil
}

// findJob finds the original job of a record. genimg keeps the record, not
// the job, so it comes from, in order: --job FILE; the job.json generate
// left beside the images; for upload jobs, the uploaded object itself
// (pinned to its generation): its metadata or, for a job file, its content.
func (c *clients) findJob(ctx context.Context, rec job.Record, file, saved string) (job.Job, string, error) {
	read := func(name string) (job.Job, string, error) {
		data, err := os.ReadFile(name)
		if err != nil {
			return job.Job{}, "", err
		}
		j, err := job.Decode(data)
		return j, name, err
	}
	if file != "" {
		return read(file)
	}
	if _, err := os.Stat(saved); err == nil {
		return read(saved)
	}
	if rec.Trigger.Kind == job.Upload && strings.HasPrefix(rec.Trigger.Source, "gs://") {
		return c.uploadedJob(ctx, rec.Trigger.Source)
	}
	return job.Job{}, "", fmt.Errorf("the job of %s cannot be found: genimg stores its record, not the job (%s); pass it with --job FILE", rec.JobID, saved+" does not exist")
}

// uploadedJob rebuilds an upload job from gs://bucket/name#generation, as
// the upload trigger read it.
func (c *clients) uploadedJob(ctx context.Context, source string) (job.Job, string, error) {
	uri, genText, _ := strings.Cut(source, "#")
	bucket, name, err := job.ParseGCS(uri)
	if err != nil {
		return job.Job{}, "", err
	}
	gen, _ := strconv.ParseInt(genText, 10, 64)
	gone := fmt.Errorf("the job's upload %s no longer exists; pass the job with --job FILE", source)
	uploads := c.output.Uploads()
	obj, found, err := uploads.StatObject(ctx, trigger.Object{Bucket: bucket, Name: name, Generation: trigger.Int64(gen)})
	if err != nil {
		return job.Job{}, "", err
	}
	if !found {
		return job.Job{}, "", gone
	}
	if strings.HasSuffix(name, trigger.JobFileSuffix) {
		data, found, err := uploads.ReadObject(ctx, obj, 32<<20)
		if err != nil {
			return job.Job{}, "", err
		}
		if !found {
			return job.Job{}, "", gone
		}
		j, err := job.Decode(data)
		return j, source, err
	}
	prompt := obj.Metadata[trigger.MetaPrompt]
	if prompt == "" {
		return job.Job{}, "", fmt.Errorf("upload %s has no prompt metadata (an upload rule's job?); pass the job with --job FILE", source)
	}
	return job.Job{
		Prompt:            prompt,
		Images:            []job.Image{{URI: uri, Generation: gen}},
		AspectRatio:       obj.Metadata[trigger.MetaAspectRatio],
		SystemInstruction: obj.Metadata[trigger.MetaSystemInstruction],
	}, source, nil
}
