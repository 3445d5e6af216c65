package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"image"
	"io"
	"log/slog"
	"strconv"
	"time"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// sniffBytes is how much of an image is held before its object is opened:
// enough for job.Sniff, which decides the name's extension.
const sniffBytes = 512

// outputHeadBytes is how much of an image's start is kept for image.DecodeConfig:
// a PNG's size is in its first 33 bytes, a JPEG's in its SOF marker, after
// any EXIF/ICC segments, which are rarely longer than this.
const outputHeadBytes = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Outputs streams one attempt's output images into the job's folder, as
// WriteImages does with whole images: the same names (a<attempt>-<n>.<ext>),
// metadata, create-only writes and StoredImage fields, but each image is
// taken as it arrives: held in the spool within its budget, streamed
// beyond it (see ImageWriter), never held whole outside the budget.
//
// It serves gemini.Client.GenerateTo as its image sink. Like the Claim, it is
// used by one goroutine at a time.
type Outputs struct {
	s      *Store
	ctx    context.Context
	c      *Claim
	meta   ImageMeta
	folder string
	stored map[int]job.StoredImage
	// pending are images of the answer whose upload failed but whose bytes
	// the spool kept: Flush writes them.
	pending []pendingImage
}

// A pendingImage is an output image held in memory until it can be
// written.
type pendingImage struct {
	name, mime string
	metadata   map[string]string
	data       *spool
}

// NewOutputs prepares the writing of c's images for j. It fails, before any
// model call, when j's output prefix would leave the output area.
func (s *Store) NewOutputs(ctx context.Context, c *Claim, j *job.Job, meta ImageMeta) (*Outputs, error) {
	folder, err := s.folder(c.JobID, j)
	if err != nil {
		return nil, err
	}
	c.folder = folder
	return &Outputs{s: s, ctx: ctx, c: c, meta: meta, folder: folder, stored: map[int]job.StoredImage{}}, nil
}

// Stored returns the images kept so far (closed without error), in index
// order: the record's outputs.
func (o *Outputs) Stored() []job.StoredImage {
	if len(o.stored) == 0 {
		return nil
	}
	out := make([]job.StoredImage, 0, len(o.stored))
	for k := 0; len(out) < len(o.stored); k++ {
		if st, ok := o.stored[k]; ok {
			out = append(out, st)
		}
	}
	return out
}

// StoredAt is the index-th image, if it was kept.
func (o *Outputs) StoredAt(index int) (job.StoredImage, bool) {
	st, ok := o.stored[index]
	return st, ok
}

// OpenImage starts the index-th image. mimeType is the type the model
// declared, used only when the bytes do not say (job.Sniff). The returned
// writer keeps the image on Close, and drops it (the object is never
// created) on CloseWithError.
func (o *Outputs) OpenImage(index int, mimeType string) (io.WriteCloser, error) {
	if index < 0 {
		return nil, fmt.Errorf("%w: image index %d", job.ErrInvalid, index)
	}
	w := &ImageWriter{o: o, index: index, declared: mimeType, sha: sha256.New(), head: make([]byte, 0, sniffBytes),
		spool: &spool{s: o.s}}
	if o.s.cfg.SpoolBytes > 0 {
		// Room for a typical image, waited for while holding nothing, so
		// that no two images can each hold part of the budget and wait for
		// the rest: the answer's bytes wait in the connection meanwhile.
		w.spooling = w.spool.reserveAhead(o.ctx, int(min(spoolAhead, o.s.cfg.SpoolBytes)), spoolWait)
	}
	return w, nil
}

const (
	// spoolAhead is the room an image reserves in the spool before its
	// first byte: a 1024×1024 PNG is 1.5–2 MB; a larger image takes more as
	// it grows, if there is room, and streams the rest if there is not.
	spoolAhead = 2 << 20
	// spoolWait bounds the wait for that room. Images held for Flush after
	// a failed upload keep theirs until written, so a long Cloud Storage
	// outage fills the budget: past this wait, images stream unprotected,
	// as they always did beyond the budget.
	spoolWait = 2 * time.Second
)

// WriteImageStream writes the index-th image from r: OpenImage, copy,
// Close. It returns what the record says of the image.
func (o *Outputs) WriteImageStream(index int, r io.Reader, mimeType string) (job.StoredImage, error) {
	w, err := o.OpenImage(index, mimeType)
	if err != nil {
		return job.StoredImage{}, err
	}
	iw := w.(*ImageWriter)
	if _, err := io.Copy(iw, r); err != nil {
		iw.CloseWithError(err)
		return job.StoredImage{}, fmt.Errorf("%w: reading image %d: %w", job.ErrTransient, index, err)
	}
	if err := iw.Close(); err != nil {
		return job.StoredImage{}, err
	}
	return iw.Stored(), nil
}

// An ImageWriter writes one output image to Cloud Storage, computing its
// SHA-256 and size on the way and its dimensions from its first bytes.
//
// The image is held in the spool (GENIMG_SPOOL_BYTES) and goes up on
// Close in one request, which Put retries from memory: no chunk buffer, one
// request instead of a resumable session's one per 256 KiB, and a paid
// answer that outlives a failed upload (Outputs.Flush). Before its first
// byte an image waits, up to spoolWait, for spoolAhead bytes of room, so the
// budget also bounds how many images are decoded and uploaded at once; an
// image the budget has no room for (after that wait, or as it grows beyond
// its reservation) streams through a resumable upload as it arrives,
// unprotected: its failure fails the attempt. Errors wrap job's categories.
type ImageWriter struct {
	o        *Outputs
	index    int
	declared string

	head []byte // the first bytes: sniffing, then image.DecodeConfig
	dims *image.Config
	// spool holds the image while spooling; spooling is false once the
	// budget said no (or there is none), and the image streams instead.
	spool    *spool
	spooling bool
	md       map[string]string
	sha      hash.Hash
	// crc is the streamed bytes' CRC32C, to tell our own committed upload
	// from another object after a 412 (a spooled image computes it then).
	crc    uint32
	n      int64
	mime   string
	name   string
	w      *gcs.Writer
	cancel context.CancelFunc
	done   bool
	err    error
	stored job.StoredImage
}

// Write holds p in the spool or passes it on to the upload, opening the
// upload once the first bytes have told the image's type.
func (w *ImageWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, fmt.Errorf("storage: write to a closed image writer")
	}
	if w.dims == nil && len(w.head) < outputHeadBytes {
		w.head = append(w.head, p[:min(len(p), outputHeadBytes-len(w.head))]...)
	}
	w.sha.Write(p)
	w.n += int64(len(p))
	if w.spooling {
		if w.spool.write(p) {
			return len(p), nil
		}
		// No room left in the budget: stream what the spool holds, then
		// the rest as it comes.
		w.spooling = false
		if err := w.stream(w.spool.parts()...); err != nil {
			return 0, err
		}
		w.spool.release()
		return w.streamOn(p)
	}
	if w.w == nil {
		if len(w.head) < sniffBytes {
			return len(p), nil // not enough to name the object yet
		}
		// The held bytes go first; p's tail is the rest.
		held := int(w.n) - len(p)
		if err := w.stream(w.head[:held]); err != nil {
			return 0, err
		}
	}
	return w.streamOn(p)
}

// streamOn writes p to the open upload.
func (w *ImageWriter) streamOn(p []byte) (int, error) {
	if err := w.stream(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// stream writes parts to the upload, opening it first if need be.
func (w *ImageWriter) stream(parts ...[]byte) error {
	if w.w == nil {
		if err := w.nameObject(); err != nil {
			return err
		}
		// The deadline also cancels an abandoned writer: never half-committed.
		ctx, cancel := context.WithTimeout(w.o.ctx, w.o.s.retryDeadline)
		w.cancel = cancel
		w.w = w.o.s.newWriter(ctx, w.o.s.cfg.OutputBucket, w.name, writeOpts{
			contentType: w.mime, cacheControl: w.o.meta.CacheControl, metadata: w.md, cond: &gcs.Conditions{DoesNotExist: true},
		})
	}
	for _, p := range parts {
		w.crc = crc32.Update(w.crc, castagnoli, p)
		if _, err := w.w.Write(p); err != nil {
			return w.fail(err)
		}
	}
	return nil
}

// dropSpool gives the spool's memory back.
func (w *ImageWriter) dropSpool() {
	w.spool.release()
	w.spooling = false
}

// nameObject names the object from the image's type, once.
func (w *ImageWriter) nameObject() error {
	if w.name != "" {
		return nil
	}
	o := w.o
	mime := job.Sniff(w.head)
	if mime == "" {
		mime = w.declared
	}
	if mime == "" {
		mime = "application/octet-stream"
	}
	name := o.folder + "a" + strconv.Itoa(o.c.Attempt) + "-" + strconv.Itoa(w.index) + "." + extension(mime)
	if !within(o.folder, name) {
		w.err = fmt.Errorf("%w: image name %q escapes %s", job.ErrInvalid, name, o.folder)
		return w.err
	}
	md := map[string]string{
		MetaJob: o.c.JobID, MetaModel: o.meta.Model, MetaPromptSHA256: o.meta.PromptSHA256,
		MetaGeneratedBy: GeneratedBy, "genimg-attempt": strconv.Itoa(o.c.Attempt),
	}
	if o.meta.Source != "" {
		md[MetaSource] = o.meta.Source
	}
	w.mime, w.name, w.md = mime, name, md
	if cfg, err := decodeConfig(mime, w.head); err == nil {
		w.dims = &cfg // a PNG's size is known now: stop holding its head
	}
	return nil
}

func (w *ImageWriter) fail(err error) error {
	w.err = classify(err, "writing "+gsURI(w.o.s.cfg.OutputBucket, w.name))
	w.CloseWithError(w.err)
	return w.err
}

// CloseWithError drops the image: its upload is cancelled, so the object is
// never created.
func (w *ImageWriter) CloseWithError(err error) error {
	if w.done {
		return nil
	}
	w.done = true
	if w.err == nil {
		w.err = err
	}
	if w.w != nil {
		w.cancel()
		_ = w.w.Close()
	}
	w.dropSpool()
	return nil
}

// Close writes the image (create-only) and records it. A 412 is read
// back: the same bytes (by CRC32C and size) are our own earlier try,
// committed before its answer was lost.
func (w *ImageWriter) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	o := w.o
	if err := w.nameObject(); err != nil {
		w.done = true
		return err
	}
	if !w.spooling && w.w == nil {
		// Shorter than the sniff buffer: all of it is in head.
		if err := w.stream(w.head[:w.n]); err != nil {
			return err
		}
	}
	w.done = true
	var err error
	taken := false // the name holds an object already: read it back
	if w.spooling {
		_, err = o.s.output.put(o.ctx, w.name, w.spool.parts(), Put{If: CreateOnly, ContentType: w.mime, CacheControl: o.meta.CacheControl, Metadata: w.md})
		if errors.Is(err, ErrPrecondition) {
			taken, err = true, nil
			for _, p := range w.spool.parts() {
				w.crc = crc32.Update(w.crc, castagnoli, p)
			}
		}
	} else {
		err = w.w.Close()
		w.cancel()
		if isPrecondition(err) {
			taken, err = true, nil
		}
	}
	uri := gsURI(o.s.cfg.OutputBucket, w.name)
	switch {
	case err != nil && w.spooling:
		// The answer is paid and whole in the spool: keep it for Flush.
		slog.WarnContext(o.ctx, "image upload failed; kept in memory to be written later", "jobId", o.c.JobID, "object", w.name, "error", err)
		o.pending = append(o.pending, pendingImage{name: w.name, mime: w.mime, metadata: w.md, data: w.spool})
		w.spool, w.spooling = &spool{s: o.s}, false // the chunks go with it
	case err != nil:
		w.err = classify(err, "writing "+uri)
		return w.err
	case taken:
		attrs, aerr := o.s.client.Bucket(o.s.cfg.OutputBucket).Object(w.name).Attrs(o.ctx)
		if aerr != nil {
			w.err = classify(aerr, "reading back "+uri)
		} else if attrs.CRC32C != w.crc || attrs.Size != w.n {
			// Names are per attempt and attempts are unique: a bug or a
			// hand-made object; do not overwrite it; retry later.
			w.err = fmt.Errorf("%w: %s exists with other content", job.ErrTransient, uri)
		}
		if w.err != nil {
			w.dropSpool()
			return w.err
		}
		fallthrough
	default:
		o.c.written = append(o.c.written, w.name)
		w.dropSpool()
	}
	st := job.StoredImage{URI: uri, MIMEType: w.mime, Bytes: w.n, SHA256: hex.EncodeToString(w.sha.Sum(nil))}
	if w.dims == nil {
		if cfg, err := decodeConfig(w.mime, w.head); err == nil {
			w.dims = &cfg
		} else {
			slog.WarnContext(o.ctx, "output image dimensions unreadable", "jobId", o.c.JobID, "uri", uri, "bytes", w.n, "error", err)
		}
	}
	if w.dims != nil {
		st.Width, st.Height = w.dims.Width, w.dims.Height
	}
	slog.InfoContext(o.ctx, "image stored", "jobId", o.c.JobID, "uri", uri, "bytes", st.Bytes)
	w.stored = st
	o.stored[w.index] = st
	w.head = nil
	return nil
}

// newWriter opens a streamed upload: its buffer is the configured chunk
// size (never the client's 16 MiB default, never 0, which would turn off
// the client's retries of its chunks).
func (s *Store) newWriter(ctx context.Context, bucket, name string, o writeOpts) *gcs.Writer {
	return s.output.In(bucket).newWriter(ctx, name, o.contentType, o.cacheControl, o.metadata, o.cond)
}

// Flush writes the images whose upload failed while the answer streamed,
// from memory, create-only, and gives their memory back. An error leaves
// the rest pending: Flush again later (a redelivery on this instance), or
// Discard.
func (o *Outputs) Flush(ctx context.Context) error {
	for len(o.pending) > 0 {
		p := o.pending[0]
		_, err := o.s.output.put(ctx, p.name, p.data.parts(), Put{If: CreateOnly, ContentType: p.mime, Metadata: p.metadata})
		if err != nil && !errors.Is(err, ErrPrecondition) {
			return err
		}
		if errors.Is(err, ErrPrecondition) {
			// Names are per attempt: only our own earlier write of the
			// same bytes can stand there.
			if a, serr := o.s.output.Stat(ctx, p.name); serr != nil || a.Size != int64(p.data.n) {
				return fmt.Errorf("%w: %s exists with other content", job.ErrTransient, gsURI(o.s.cfg.OutputBucket, p.name))
			}
		}
		o.c.written = append(o.c.written, p.name)
		p.data.release()
		o.pending = o.pending[1:]
		slog.InfoContext(ctx, "kept image written", "jobId", o.c.JobID, "object", p.name)
	}
	return nil
}

// Pending reports whether images wait for Flush.
func (o *Outputs) Pending() bool { return len(o.pending) > 0 }

// Discard gives the memory of images never flushed back to the budget.
func (o *Outputs) Discard() {
	for _, p := range o.pending {
		p.data.release()
	}
	o.pending = nil
}

// Stored is what the record says of the image, once Close succeeded.
func (w *ImageWriter) Stored() job.StoredImage { return w.stored }
