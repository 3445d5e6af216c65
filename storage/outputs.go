package storage

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/job"
)

// ImageMeta is what WriteImages records on each image besides the job.
type ImageMeta struct {
	// Model is the model that made the images.
	Model string
	// PromptSHA256 is job.PromptHash of the prompt.
	PromptSHA256 string
	// Source is the object (gs://bucket/name#generation) or message the job
	// came from, if any.
	Source string
	// CacheControl is every output object's Cache-Control (images and
	// renditions): GENIMG_CACHE_CONTROL or the upload rule's; none if empty.
	CacheControl string
}

// imageName matches the images genimg writes in a job's folder:
// a<attempt>-<index>.<ext>, and their renditions,
// a<attempt>-<index>_<maxSize>.<ext>.
var imageName = regexp.MustCompile(`^a[0-9]+-[0-9]+(_[0-9]+)?\.[a-z]{3,4}$`)

// folder is where a job's images go: the job's output.prefix or
// cfg.OutputPrefix, then the job id.
func (s *Store) folder(jobID string, j *job.Job) (string, error) {
	if _, err := jobDir(jobID); err != nil {
		return "", err
	}
	prefix := s.cfg.OutputPrefix
	if j != nil && j.Output != nil && j.Output.Prefix != "" {
		prefix = j.Output.Prefix
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if slices.Contains(strings.Split(prefix, "/"), "..") || strings.HasPrefix(prefix, "/") || strings.HasPrefix(prefix, "jobs/") {
		return "", fmt.Errorf("%w: output prefix %q would leave the output area", job.ErrInvalid, truncate(prefix))
	}
	return prefix + jobID + "/", nil
}

// WriteImages writes the model's images into the job's folder under the
// output prefix, named per attempt (<prefix><jobId>/a<attempt>-<n>.<ext>) so
// that a zombie attempt never overwrites another's: the create-only record
// decides whose images are the job's. Each object gets its sniffed content
// type and genimg's metadata (MetaJob, MetaSource, MetaModel,
// MetaPromptSHA256, MetaGeneratedBy). It returns each image's URI, type,
// bytes, dimensions (image.DecodeConfig) and SHA-256.
//
// Next, Commit the record: should Cloud Storage refuse it, Commit keeps the
// answer in a draft, so that a crash then costs the next attempt no model
// call.
func (s *Store) WriteImages(ctx context.Context, c *Claim, j *job.Job, images []job.Image, meta ImageMeta) ([]job.StoredImage, error) {
	folder, err := s.folder(c.JobID, j)
	if err != nil {
		return nil, err
	}
	c.folder = folder
	out := make([]job.StoredImage, 0, len(images))
	for k, img := range images {
		mime := job.Sniff(img.Data)
		if mime == "" {
			mime = img.MIMEType
		}
		if mime == "" {
			mime = "application/octet-stream"
		}
		name := folder + "a" + strconv.Itoa(c.Attempt) + "-" + strconv.Itoa(k) + "." + extension(mime)
		if !within(folder, name) {
			return nil, fmt.Errorf("%w: image name %q escapes %s", job.ErrInvalid, name, folder)
		}
		md := map[string]string{
			MetaJob: c.JobID, MetaModel: meta.Model, MetaPromptSHA256: meta.PromptSHA256,
			MetaGeneratedBy: GeneratedBy, "genimg-attempt": strconv.Itoa(c.Attempt),
		}
		if meta.Source != "" {
			md[MetaSource] = meta.Source
		}
		if err := s.createOnce(ctx, name, img.Data, mime, meta.CacheControl, md); err != nil {
			return nil, err
		}
		c.written = append(c.written, name)
		sum := sha256.Sum256(img.Data)
		st := job.StoredImage{
			URI: gsURI(s.cfg.OutputBucket, name), MIMEType: mime, Bytes: int64(len(img.Data)),
			SHA256: hex.EncodeToString(sum[:]),
		}
		if cfg, err := decodeConfig(mime, img.Data); err == nil {
			st.Width, st.Height = cfg.Width, cfg.Height
		} else {
			slog.WarnContext(ctx, "output image dimensions unreadable", "jobId", c.JobID, "uri", st.URI, "error", err)
		}
		slog.InfoContext(ctx, "image stored", "jobId", c.JobID, "uri", st.URI, "bytes", st.Bytes)
		out = append(out, st)
	}
	return out, nil
}

// createOnce writes name create-only. A 412 is read back: the same bytes
// (by MD5) are our own earlier try, committed before its answer was lost.
func (s *Store) createOnce(ctx context.Context, name string, data []byte, mime, cacheControl string, md map[string]string) error {
	_, err := s.write(ctx, s.cfg.OutputBucket, name, data, writeOpts{
		contentType: mime, cacheControl: cacheControl, metadata: md, cond: &gcs.Conditions{DoesNotExist: true},
	})
	if err == nil {
		return nil
	}
	if !isPrecondition(err) {
		return classify(err, "writing "+gsURI(s.cfg.OutputBucket, name))
	}
	attrs, aerr := s.client.Bucket(s.cfg.OutputBucket).Object(name).Attrs(ctx)
	if aerr != nil {
		return classify(aerr, "reading back "+gsURI(s.cfg.OutputBucket, name))
	}
	sum := md5.Sum(data)
	if slices.Equal(attrs.MD5, sum[:]) {
		return nil
	}
	// Names are per attempt and attempts are unique, so this is a bug or a
	// hand-made object: do not overwrite it; retry later.
	return fmt.Errorf("%w: %s exists with other content", job.ErrTransient, gsURI(s.cfg.OutputBucket, name))
}

// prepare fills the claim's job id and fingerprint into rec and encodes it.
func prepare(c *Claim, rec *job.Record) ([]byte, error) {
	if c != nil {
		if rec.JobID == "" {
			rec.JobID = c.JobID
		}
		if rec.JobID != c.JobID {
			return nil, fmt.Errorf("record for job %q committed with the claim of job %q", rec.JobID, c.JobID)
		}
		if rec.Fingerprint == "" {
			rec.Fingerprint = c.lease.Fingerprint
		}
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("encoding record: %w", err)
	}
	return append(data, '\n'), nil
}

// WriteDraft stores rec as this attempt's draft (jobs/<id>/attempt-<n>.json):
// everything the next attempt needs to commit the job without another model
// call if this one crashes before its record is written. Commit writes it
// when it cannot write the record; a caller that will not commit at once
// may write it first, with the record as it will be committed.
func (s *Store) WriteDraft(ctx context.Context, c *Claim, rec job.Record) error {
	dir, err := jobDir(c.JobID)
	if err != nil {
		return err
	}
	data, err := prepare(c, &rec)
	if err != nil {
		return err
	}
	name := draftName(dir, c.Attempt)
	c.draftTried = true
	o := writeOpts{
		contentType: "application/json",
		metadata:    map[string]string{MetaJob: c.JobID, MetaGeneratedBy: GeneratedBy, metaRun: strconv.FormatInt(c.lease.Run, 10)},
		cond:        &gcs.Conditions{DoesNotExist: true},
	}
	_, err = s.write(ctx, s.cfg.OutputBucket, name, data, o)
	if isPrecondition(err) {
		// Our own committed retry, or an earlier draft of this attempt:
		// keep ours, replacing only the generation we read.
		old, attrs, rerr := s.read(ctx, s.cfg.OutputBucket, name, maxStateBytes)
		if rerr != nil {
			return classify(rerr, "reading back "+name)
		}
		err = nil
		if !equalJSON(old, data) {
			o.cond = &gcs.Conditions{GenerationMatch: attrs.Generation}
			_, err = s.write(ctx, s.cfg.OutputBucket, name, data, o)
		}
	}
	if err != nil {
		return classify(err, "writing draft "+name)
	}
	c.drafted = true
	return nil
}

// Commit writes rec as the job's result.json, create-only (or, for a
// reclaimed retryable failure, replacing exactly the record that was
// reclaimed). It returns the record as stored and its exact bytes (the
// caller derives the event id from them).
//
// If another attempt's record won (a 412 whose stored bytes are not ours),
// Commit returns the winner's record unchanged and deletes this attempt's
// images that the winner does not name. This attempt's cost is not added to
// the winner's record: the record and its images must come from one model
// answer, and rewriting a committed record would give its event a second
// id; the lost cost is logged (warning "attempt lost the commit" with its
// costUsd) instead.
//
// After a win, images in the job's folder that the record does not name
// (an earlier attempt's, or a zombie's) are removed, and drafts with them.
//
// Until its record is written, a claimed attempt's answer lives only in
// this process. The record goes first, straight after the images: a crash
// before it lands costs the next attempt a model call, as a crash before a
// draft's would. When the record cannot be written (Cloud Storage refuses
// it, the attempt was taken over), Commit writes the answer into this
// attempt's draft before it returns the error, so that whoever commits the
// job next — this attempt retrying, or another that takes the job over —
// does so without another call. A job whose record goes in at once thus
// costs no draft and no delete.
//
// An attempt that last renewed its lease more than a third of the lease ago
// (its instance paused, or its writes were slow) renews it before the
// record: its lease may have run out meanwhile, and an attempt that took
// the job over may have paid again — the taker's record counts both calls,
// this one's would not. Taken over, Commit writes no record, and fails
// with ErrTakenOver (and job.ErrTransient) once the draft is written, with
// the draft's error until then. Its images and draft stay: the
// taker's tidy removes them when it commits later (it lists the folder),
// and a third attempt may still commit the draft, whose images must then
// exist; images written after the taker committed are left over (storage,
// not correctness). An attempt quicker than that needs no such request: no
// one can have taken the job over while its lease was live.
//
// c may be nil for records written without a claim (invalid jobs, too-old
// deliveries): the write is create-only and an existing record is returned
// as is.
func (s *Store) Commit(ctx context.Context, c *Claim, rec job.Record) (job.Record, []byte, error) {
	jobID := rec.JobID
	if c != nil {
		jobID = c.JobID
	}
	dir, err := jobDir(jobID)
	if err != nil {
		return job.Record{}, nil, err
	}
	data, err := prepare(c, &rec)
	if err != nil {
		return job.Record{}, nil, err
	}
	stored, raw, err := s.commit(ctx, c, dir, rec, data)
	if err != nil && c != nil && !c.drafted {
		if derr := s.WriteDraft(ctx, c, rec); derr != nil {
			slog.WarnContext(ctx, "record and draft both refused: the answer is only in memory", "jobId", jobID,
				"attempt", c.Attempt, "error", derr)
			if errors.Is(err, ErrTakenOver) {
				// Taken over, the draft is all that is left to write: the
				// caller retries it (a retry finds the job taken over again).
				return job.Record{}, nil, derr
			}
		}
	}
	return stored, raw, err
}

// commit is Commit's record: renewed claim, create-only write, and a 412
// read back.
func (s *Store) commit(ctx context.Context, c *Claim, dir string, rec job.Record, data []byte) (job.Record, []byte, error) {
	jobID := rec.JobID
	if c != nil && c.renewedBefore(s.now().Add(-s.cfg.Lease/3)) {
		if err := s.renew(ctx, c); err != nil {
			return job.Record{}, nil, err
		}
	}
	cond := gcs.Conditions{DoesNotExist: true}
	if c != nil && c.lease.Run != 0 {
		cond = gcs.Conditions{GenerationMatch: c.lease.Run}
	}
	_, err := s.write(ctx, s.cfg.OutputBucket, dir+resultFile, data, writeOpts{
		contentType: "application/json",
		metadata:    map[string]string{MetaJob: jobID, MetaGeneratedBy: GeneratedBy},
		cond:        &cond,
	})
	if err == nil {
		s.tidy(ctx, c, rec)
		slog.InfoContext(ctx, "record committed", "jobId", jobID, "outcome", rec.Outcome)
		return rec, data, nil
	}
	if !isPrecondition(err) {
		return job.Record{}, nil, classify(err, "writing "+dir+resultFile)
	}
	stored, raw, _, rerr := s.readRecord(ctx, dir)
	if rerr != nil {
		return job.Record{}, nil, classify(rerr, "reading back "+dir+resultFile)
	}
	if equalJSON(raw, data) {
		// Our own write: the client retried it after the first try had
		// committed and the answer was lost.
		s.tidy(ctx, c, stored)
		return stored, raw, nil
	}
	if c != nil {
		s.removeLoser(ctx, c, rec, stored)
	}
	return stored, raw, nil
}

// removeLoser deletes this attempt's images that the winning record does
// not name, and logs what the lost attempt cost.
func (s *Store) removeLoser(ctx context.Context, c *Claim, mine, winner job.Record) {
	keep := map[string]bool{}
	for _, o := range winner.Outputs {
		keep[o.URI] = true
		for _, r := range o.Renditions {
			keep[r.URI] = true
		}
	}
	var names []string
	for _, o := range mine.Outputs {
		for _, uri := range append([]string{o.URI}, renditionURIs(o)...) {
			if b, name, err := job.ParseGCS(uri); err == nil && b == s.cfg.OutputBucket {
				names = append(names, name)
			}
		}
	}
	names = append(names, c.written...)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if keep[gsURI(s.cfg.OutputBucket, name)] {
			continue
		}
		s.remove(ctx, c.JobID, name)
	}
	slog.WarnContext(ctx, "attempt lost the commit", "jobId", c.JobID, "attempt", c.Attempt,
		"costUsd", mine.CostUSD-c.PriorCost, "winnerAttempts", winner.Attempts)
}

// tidy, after this attempt's record won, removes images in the job's folder
// that the record does not name, and the drafts. Best effort: leftovers cost
// storage, never correctness.
func (s *Store) tidy(ctx context.Context, c *Claim, rec job.Record) {
	if c == nil {
		return
	}
	dir, _ := jobDir(c.JobID)
	folder := c.folder
	keep := map[string]bool{}
	for _, o := range rec.Outputs {
		keep[o.URI] = true
		for _, r := range o.Renditions {
			keep[r.URI] = true
		}
		if _, name, err := job.ParseGCS(o.URI); err == nil && folder == "" {
			folder = name[:strings.LastIndex(name, "/")+1]
		}
	}
	switch {
	case c.Attempt == 1:
		// The job's first attempt: its folder holds no earlier attempt's
		// images (names carry the attempt, and every later attempt is a
		// later claim, which removes its own images if it loses the
		// commit), so what this attempt wrote is all there is to look at:
		// no listing, one Cloud Storage request fewer per job.
		for _, name := range c.written {
			if !keep[gsURI(s.cfg.OutputBucket, name)] {
				s.remove(ctx, c.JobID, name)
			}
		}
	case folder != "" && strings.HasSuffix(folder, "/"+c.JobID+"/"):
		it := s.client.Bucket(s.cfg.OutputBucket).Objects(ctx, &gcs.Query{Prefix: folder, Delimiter: "/"})
		for {
			attrs, err := it.Next()
			if err != nil {
				if !errors.Is(err, iterator.Done) {
					slog.WarnContext(ctx, "listing job images failed", "jobId", c.JobID, "error", err)
				}
				break
			}
			// Only genimg's own images of this job: another job's folder
			// may share the prefix.
			if attrs.Name == "" || keep[gsURI(s.cfg.OutputBucket, attrs.Name)] || attrs.Metadata[MetaJob] != c.JobID ||
				!within(folder, attrs.Name) || !imageName.MatchString(attrs.Name[len(folder):]) {
				continue
			}
			s.remove(ctx, c.JobID, attrs.Name)
		}
	}
	// Earlier attempts' drafts, and this one's if it wrote one.
	last := c.Attempt - 1
	if c.draftTried {
		last = c.Attempt
	}
	for n := 1; n <= last; n++ {
		_ = s.client.Bucket(s.cfg.OutputBucket).Object(draftName(dir, n)).Delete(ctx)
	}
}

func (s *Store) remove(ctx context.Context, jobID, name string) {
	err := s.client.Bucket(s.cfg.OutputBucket).Object(name).Delete(ctx)
	if err != nil && !errors.Is(err, gcs.ErrObjectNotExist) {
		slog.WarnContext(ctx, "removing an unused image failed", "jobId", jobID, "uri", gsURI(s.cfg.OutputBucket, name), "error", err)
		return
	}
	slog.InfoContext(ctx, "unused image removed", "jobId", jobID, "uri", gsURI(s.cfg.OutputBucket, name))
}
