package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// maxTurnImageBytes bounds one image of a conversation's history read back:
// the largest output of the image models (a 4K PNG) is tens of MB.
const maxTurnImageBytes = 64 << 20

// History resolves the conversation j continues (job.Job.Parent) into
// j.History, oldest turn first, with every image read back from Cloud
// Storage: inputs at the generation the parent's record pinned, outputs
// checked against the SHA-256 the record holds. On Vertex AI the images are
// checked, not held: the request names them by URI (fileData). The records are genimg's
// own, read from the output bucket; nothing of the history comes from the
// caller.
//
// It fails with job.ErrInvalid, before any model call, when a parent in the
// chain has no record (unknown, or not finished), did not succeed, kept no
// turns, wrote its images under another output prefix than j's, or when j
// would be turn number more than limits.MaxTurns; Cloud Storage errors are
// classified.
func (s *Store) History(ctx context.Context, j *job.Job) error {
	if j.Parent == "" {
		return nil
	}
	maxTurns := s.limits.MaxTurns
	if maxTurns <= 0 {
		maxTurns = job.DefaultMaxTurns
	}
	folder, err := s.folder(j.ID, j)
	if err != nil {
		return err
	}
	prefix := strings.TrimSuffix(folder, j.ID+"/")

	var chain []job.Record // newest first
	for id := j.Parent; id != ""; {
		if len(chain)+2 > maxTurns {
			return fmt.Errorf("%w: parent %s: the conversation would have more than %d turns (GENIMG_MAX_TURNS); start a new one from an image of this one", job.ErrInvalid, j.Parent, maxTurns)
		}
		if slices.ContainsFunc(chain, func(r job.Record) bool { return r.JobID == id }) {
			return fmt.Errorf("%w: parent %s: the conversation loops at job %s", job.ErrInvalid, j.Parent, id)
		}
		rec, err := s.parentRecord(ctx, id, j.Parent, prefix)
		if err != nil {
			return err
		}
		chain = append(chain, rec)
		id = rec.Parent
	}
	var turns []job.Turn
	for k := len(chain) - 1; k >= 0; k-- {
		for _, t := range chain[k].Turns {
			t.Parts = slices.Clone(t.Parts)
			for i := range t.Parts {
				if t.Parts[i].Image == nil {
					continue
				}
				img := *t.Parts[i].Image
				if img.Data, err = s.readTurnImage(ctx, chain[k].JobID, img); err != nil {
					return err
				}
				t.Parts[i].Image = &img
			}
			turns = append(turns, t)
		}
	}
	j.History = turns
	return nil
}

// parentRecord reads and checks one record of the chain.
func (s *Store) parentRecord(ctx context.Context, id, parent, prefix string) (job.Record, error) {
	what := "parent " + parent
	if id != parent {
		what += ": its ancestor " + id
	}
	dir, err := jobDir(id)
	if err != nil {
		return job.Record{}, fmt.Errorf("%w: %s: %v", job.ErrInvalid, what, err)
	}
	rec, _, _, err := s.readRecord(ctx, dir)
	switch {
	case errors.Is(err, gcs.ErrObjectNotExist):
		return job.Record{}, fmt.Errorf("%w: %s: no such job has finished (unknown id, or still running): only a succeeded job can be continued", job.ErrInvalid, what)
	case err != nil:
		return job.Record{}, classify(err, "reading the record of "+what)
	case rec.Outcome != job.Succeeded:
		return job.Record{}, fmt.Errorf("%w: %s ended %s, not succeeded: only a succeeded job can be continued", job.ErrInvalid, what, rec.Outcome)
	case len(rec.Turns) == 0:
		return job.Record{}, fmt.Errorf("%w: %s kept no conversation turns (it ran in the batch lane, or before edit sessions): it cannot be continued", job.ErrInvalid, what)
	}
	for _, o := range rec.Outputs {
		bucket, name, err := job.ParseGCS(o.URI)
		if err != nil || bucket != s.cfg.OutputBucket || !strings.HasPrefix(name, prefix+id+"/") {
			return job.Record{}, fmt.Errorf("%w: %s wrote its images outside this job's output prefix %q: a job continues only jobs of its own prefix", job.ErrInvalid, what, prefix)
		}
	}
	return rec, nil
}

// readTurnImage reads one image of a recorded turn: an input at its pinned
// generation, from where inputs may come from; an output from the output
// bucket, checked against its recorded SHA-256.
func (s *Store) readTurnImage(ctx context.Context, jobID string, img job.TurnImage) ([]byte, error) {
	bucket, name, err := job.ParseGCS(img.URI)
	if err != nil {
		return nil, fmt.Errorf("%w: job %s's turn image: %v", job.ErrInvalid, jobID, err)
	}
	output := img.SHA256 != "" && bucket == s.cfg.OutputBucket && !stagedInput.MatchString(name)
	if !output && !s.allowed(bucket, name) {
		return nil, fmt.Errorf("%w: job %s's turn image %s is not in a bucket genimg may read inputs from", job.ErrInvalid, jobID, img.URI)
	}
	obj := s.client.Bucket(bucket).Object(name)
	if s.backend == job.VertexAI {
		return nil, s.checkTurnImage(ctx, jobID, obj, img)
	}
	if img.Generation != 0 {
		obj = obj.Generation(img.Generation)
	}
	r, err := obj.NewReader(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return nil, fmt.Errorf("%w: job %s's turn image %s (generation %d) no longer exists: the conversation cannot be continued", job.ErrInvalid, jobID, img.URI, img.Generation)
	}
	if err != nil {
		return nil, classify(err, "reading "+img.URI)
	}
	defer r.Close()
	data, err := readAllLimited(r, maxTurnImageBytes)
	if err != nil {
		return nil, classify(err, "reading "+img.URI)
	}
	if img.SHA256 != "" {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != img.SHA256 {
			return nil, fmt.Errorf("%w: job %s's turn image %s has changed since it was recorded (SHA-256 differs)", job.ErrInvalid, jobID, img.URI)
		}
	}
	return data, nil
}

// checkTurnImage is readTurnImage on Vertex AI, which reads gs:// images
// itself (fileData): nothing is held. The live object must be the recorded
// one, since fileData cannot name a generation: the same generation, and
// for an image with a SHA-256 the same bytes (hashed as they stream by).
func (s *Store) checkTurnImage(ctx context.Context, jobID string, obj *gcs.ObjectHandle, img job.TurnImage) error {
	attrs, err := obj.Attrs(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return fmt.Errorf("%w: job %s's turn image %s no longer exists: the conversation cannot be continued", job.ErrInvalid, jobID, img.URI)
	}
	if err != nil {
		return classify(err, "reading "+img.URI)
	}
	if img.Generation != 0 && attrs.Generation != img.Generation {
		return fmt.Errorf("%w: job %s's turn image %s was replaced since it was recorded (generation %d, now %d); Vertex AI reads it by URI and cannot name the recorded one", job.ErrInvalid, jobID, img.URI, img.Generation, attrs.Generation)
	}
	if img.SHA256 == "" {
		return nil
	}
	r, err := obj.Generation(attrs.Generation).NewReader(ctx)
	if err != nil {
		return classify(err, "reading "+img.URI)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(r, maxTurnImageBytes)); err != nil {
		return classify(err, "reading "+img.URI)
	}
	if hex.EncodeToString(h.Sum(nil)) != img.SHA256 {
		return fmt.Errorf("%w: job %s's turn image %s has changed since it was recorded (SHA-256 differs)", job.ErrInvalid, jobID, img.URI)
	}
	return nil
}

// UserTurn is the record's user turn of a resolved job: the prompt, then
// each input image by reference, in request order. inputs are what
// ResolveInputs answered. An inline image is kept in the staging area
// (jobs/<id>/inputs/<sha256>.<ext>, as the HTTP path stages them) so that a
// child job can read it back.
func (s *Store) UserTurn(ctx context.Context, j *job.Job, inputs []Input) (job.Turn, error) {
	t := job.Turn{Role: "user", Parts: []job.TurnPart{{Text: j.Prompt}}}
	for i, in := range inputs {
		ref := job.TurnImage{URI: in.URI, Generation: in.Generation, MIMEType: in.MIMEType}
		if ref.URI == "" && i < len(j.Images) {
			one := job.Job{Images: []job.Image{{Data: j.Images[i].Data}}}
			if err := s.StageInputs(ctx, j.ID, &one); err != nil {
				return job.Turn{}, err
			}
			sum := sha256.Sum256(j.Images[i].Data)
			ref.URI, ref.SHA256 = one.Images[0].URI, hex.EncodeToString(sum[:])
		}
		t.Parts = append(t.Parts, job.TurnPart{Image: &ref})
	}
	return t, nil
}

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%w: over %d bytes", job.ErrPermanent, limit)
	}
	return data, err
}
