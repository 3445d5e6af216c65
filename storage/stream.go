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
// metadata, create-only writes and StoredImage fields, but each image goes
// to Cloud Storage as it arrives, through a writer whose buffer is the
// configured chunk size, so no whole image is held in memory.
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
	return &ImageWriter{o: o, index: index, declared: mimeType, sha: sha256.New(), head: make([]byte, 0, sniffBytes),
		spooling: o.s.cfg.SpoolBytes > 0, spool: &spool{s: o.s}}, nil
}

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

// An ImageWriter streams one output image to Cloud Storage, computing its
// SHA-256, size and CRC32C on the way and its dimensions from its first
// bytes. Errors wrap job's categories.
type ImageWriter struct {
	o        *Outputs
	index    int
	declared string

	head []byte // the first bytes: sniffing, then image.DecodeConfig
	dims *image.Config
	// spool keeps the image's bytes, within the store's spool budget, so
	// that a failed upload does not lose a paid answer; spooling is false
	// once the budget said no (or there is none). upErr is the upload's
	// failure, met while spooling: the bytes keep coming into the spool.
	spool    *spool
	spooling bool
	upErr    error
	md       map[string]string
	sha      hash.Hash
	crc      uint32
	n        int64
	mime     string
	name     string
	w        *gcs.Writer
	cancel   context.CancelFunc
	done     bool
	err      error
	stored   job.StoredImage
}

// Write passes p on to the object, opening it once the first bytes have
// told the image's type.
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
	if w.spooling && !w.spool.write(p) {
		w.spooling = false // no room: this image is not protected
	}
	w.sha.Write(p)
	w.crc = crc32.Update(w.crc, castagnoli, p)
	w.n += int64(len(p))
	if w.upErr != nil {
		if w.spooling {
			return len(p), nil // the upload failed; the spool keeps the rest
		}
		return 0, w.upErr
	}
	if w.w == nil {
		if len(w.head) < sniffBytes {
			return len(p), nil // not enough to name the object yet
		}
		if err := w.open(); err != nil {
			return 0, err
		}
		// The held bytes go first; p's tail is the rest.
		held := int(w.n) - len(p)
		if _, err := w.w.Write(w.head[:held]); err != nil {
			return w.failUpload(len(p), err)
		}
	}
	if _, err := w.w.Write(p); err != nil {
		return w.failUpload(len(p), err)
	}
	return len(p), nil
}

// failUpload ends a failed upload. While the spool holds the image the
// answer goes on (Close keeps it pending); without, the image is lost.
func (w *ImageWriter) failUpload(n int, err error) (int, error) {
	w.upErr = classify(err, "writing "+gsURI(w.o.s.cfg.OutputBucket, w.name))
	w.cancel()
	_ = w.w.Close()
	if w.spooling {
		slog.WarnContext(w.o.ctx, "image upload failed; kept in memory to be written later", "jobId", w.o.c.JobID, "object", w.name, "error", err)
		return n, nil
	}
	return 0, w.fail(err)
}

// dropSpool gives the spool's memory back.
func (w *ImageWriter) dropSpool() {
	w.spool.release()
	w.spooling = false
}

// open names the object from the image's type and starts its upload.
func (w *ImageWriter) open() error {
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
	// The deadline also cancels an abandoned writer: never half-committed.
	ctx, cancel := context.WithTimeout(o.ctx, o.s.retryDeadline)
	w.cancel = cancel
	w.w = o.s.newWriter(ctx, o.s.cfg.OutputBucket, name, writeOpts{
		contentType: mime, cacheControl: o.meta.CacheControl, metadata: md, cond: &gcs.Conditions{DoesNotExist: true},
	})
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

// Close finishes the upload (create-only) and records the image. A 412 is
// read back: the same bytes (by CRC32C and size) are our own earlier try,
// committed before its answer was lost.
func (w *ImageWriter) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	o := w.o
	if w.w == nil {
		if err := w.open(); err != nil {
			w.done = true
			return err
		}
		if _, err := w.w.Write(w.head[:w.n]); err != nil {
			if _, err := w.failUpload(0, err); err != nil {
				return err
			}
		}
	}
	w.done = true
	err := w.upErr
	if err == nil {
		err = w.w.Close()
		w.cancel()
	}
	uri := gsURI(o.s.cfg.OutputBucket, w.name)
	switch {
	case err != nil && !isPrecondition(err) && w.spooling:
		// The answer is paid and whole in the spool: keep it for Flush.
		o.pending = append(o.pending, pendingImage{name: w.name, mime: w.mime, metadata: w.md, data: w.spool})
		w.spool, w.spooling = &spool{s: o.s}, false // the chunks go with it
	case err != nil:
		if !isPrecondition(err) {
			w.err = classify(err, "writing "+uri)
			return w.err
		}
		attrs, aerr := o.s.client.Bucket(o.s.cfg.OutputBucket).Object(w.name).Attrs(o.ctx)
		if aerr != nil {
			w.err = classify(aerr, "reading back "+uri)
			return w.err
		}
		if attrs.CRC32C != w.crc || attrs.Size != w.n {
			// Names are per attempt and attempts are unique: a bug or a
			// hand-made object; do not overwrite it; retry later.
			w.err = fmt.Errorf("%w: %s exists with other content", job.ErrTransient, uri)
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
			slog.WarnContext(o.ctx, "output image dimensions unreadable", "jobId", o.c.JobID, "uri", uri, "error", err)
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

// newWriter opens an object writer as write does: its buffer is the
// configured chunk size (never the client's 16 MiB default, never 0, which
// would turn off the client's retries).
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
