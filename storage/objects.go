package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
)

// ErrNotFound is returned (wrapped) for an object, or a job, that does not
// exist.
var ErrNotFound = errors.New("not found")

// ErrPrecondition is returned (wrapped) by Put when a conditional write
// found the object in another state — written by someone else, not by a
// retry of this very write.
var ErrPrecondition = errors.New("precondition failed: the object was changed by another writer")

// metaWrite tags each conditional write with a nonce, so that a 412 met by
// the client's own retry of a write whose first try committed is told apart
// from another writer's object.
const metaWrite = "genimg-write"

// Objects is one bucket seen through genimg's single write primitive: every
// write is create-only, generation-match or unconditional; a conditional
// write that answers 412 is read back before it is called someone else's
// (the client retries conditional writes itself, and a retry whose first
// try committed answers 412); every error is classified once, here, into
// job.ErrTransient or job.ErrPermanent, with ErrNotFound and
// ErrPrecondition for the two answers callers decide on. It is safe for
// concurrent use.
type Objects struct {
	client *gcs.Client
	bucket string
	// chunk is each streamed writer's buffer (Writer): never the client's
	// 16 MiB default (per writer: enough to exhaust a small instance under
	// concurrency), never 0 (which turns off the client's retries).
	chunk int
	// deadline bounds one write with its retries.
	deadline time.Duration
	// backoff and attempts pace the retries of Put's writes (attempts 0:
	// until the deadline). Put sends its bytes, already in memory, in one
	// request with ChunkSize 0: the client would otherwise allocate a chunk
	// buffer of at least 256 KiB for each write, even of a 300-byte lease
	// (63 % of all bytes the functions allocated in side.sh), and it does
	// not retry a write it has no buffer for, so Put retries it itself.
	backoff  gax.Backoff
	attempts int
}

// NewObjects is bucket on client, with writes buffered in chunkSize bytes
// (DefaultChunkSize when 0) and bounded by deadline with their retries
// (DefaultUploadRetryDeadline when 0).
func NewObjects(client *gcs.Client, bucket string, chunkSize int, deadline time.Duration) *Objects {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	if deadline <= 0 {
		deadline = DefaultUploadRetryDeadline
	}
	return &Objects{client: client, bucket: bucket, chunk: chunkSize, deadline: deadline}
}

// WithRetry is o with Put's retries paced by backoff, at most attempts
// tries (0: until the deadline) — as the client's own SetRetry paces its
// retries of streamed writes and reads.
func (o *Objects) WithRetry(backoff gax.Backoff, attempts int) *Objects {
	c := *o
	c.backoff, c.attempts = backoff, attempts
	return &c
}

// In is the same primitive on another bucket of the same client.
func (o *Objects) In(bucket string) *Objects {
	c := *o
	c.bucket = bucket
	return &c
}

// Bucket names the bucket.
func (o *Objects) Bucket() string { return o.bucket }

// A Precondition is what a write requires of the object it replaces.
type Precondition struct {
	createOnly bool
	generation int64
}

var (
	// CreateOnly writes only if the object does not exist.
	CreateOnly = Precondition{createOnly: true}
	// Overwrite writes whatever is there.
	Overwrite = Precondition{}
)

// IfGeneration writes only over generation g of the object.
func IfGeneration(g int64) Precondition { return Precondition{generation: g} }

func (p Precondition) conditions() *gcs.Conditions {
	switch {
	case p.createOnly:
		return &gcs.Conditions{DoesNotExist: true}
	case p.generation != 0:
		return &gcs.Conditions{GenerationMatch: p.generation}
	}
	return nil
}

// A Put describes one write.
type Put struct {
	If           Precondition
	ContentType  string
	CacheControl string
	// Metadata is the object's custom metadata; MetaGeneratedBy is always
	// added, so that nothing genimg writes is ever taken for an upload job.
	Metadata map[string]string
}

// Attrs are what genimg reads of an object besides its bytes.
type Attrs struct {
	Name        string
	Generation  int64
	Size        int64
	ContentType string
	Metadata    map[string]string
	Created     time.Time
	Updated     time.Time
}

func attrsOf(a *gcs.ObjectAttrs) Attrs {
	return Attrs{Name: a.Name, Generation: a.Generation, Size: a.Size, ContentType: a.ContentType,
		Metadata: a.Metadata, Created: a.Created, Updated: a.Updated}
}

// Put writes data at name. It returns the stored object's attributes; an
// error wrapping ErrPrecondition when the precondition failed for another
// writer's object; otherwise a classified error.
func (o *Objects) Put(ctx context.Context, name string, data []byte, p Put) (Attrs, error) {
	return o.put(ctx, name, [][]byte{data}, p)
}

// put is Put of data in parts, written in order as one object.
func (o *Objects) put(ctx context.Context, name string, data [][]byte, p Put) (Attrs, error) {
	md := make(map[string]string, len(p.Metadata)+2)
	maps.Copy(md, p.Metadata)
	md[MetaGeneratedBy] = GeneratedBy
	cond := p.If.conditions()
	if cond != nil {
		md[metaWrite] = randomHex(8)
	}
	a, err := o.write(ctx, name, data, p.ContentType, p.CacheControl, md, cond)
	if err == nil {
		return attrsOf(a), nil
	}
	if !isPrecondition(err) {
		return Attrs{}, classify(err, "writing "+o.uri(name))
	}
	got, serr := o.Stat(ctx, name)
	switch {
	case serr == nil && got.Metadata[metaWrite] == md[metaWrite]:
		return got, nil // our own first try committed
	case serr != nil && !errors.Is(serr, ErrNotFound):
		return Attrs{}, serr
	}
	return Attrs{}, fmt.Errorf("writing %s: %w", o.uri(name), ErrPrecondition)
}

// write uploads data in one request, retried while the error is one the
// client would retry and the write is conditional, all of it bounded by the
// deadline.
func (o *Objects) write(ctx context.Context, name string, data [][]byte, contentType, cacheControl string, md map[string]string, cond *gcs.Conditions) (*gcs.ObjectAttrs, error) {
	// The deadline also cancels an abandoned try: a one-request upload is
	// never half-committed.
	ctx, cancel := context.WithTimeout(ctx, o.deadline)
	defer cancel()
	var crc uint32
	for _, part := range data {
		crc = crc32.Update(crc, castagnoli, part)
	}
	backoff := o.backoff
	for try := 1; ; try++ {
		a, err := o.writeOnce(ctx, name, data, contentType, cacheControl, md, cond, crc)
		switch {
		case err == nil:
			return a, nil
		case cond == nil:
			// Not idempotent, so not retried, as the client's policy
			// (RetryIdempotent) would not; the caller's redelivery decides.
			return nil, err
		case !gcs.ShouldRetry(err), o.attempts > 0 && try >= o.attempts:
			return nil, err
		}
		// Retry: a try that committed before its answer was lost meets the
		// precondition as a 412, which put reads back by the write's nonce.
		if gax.Sleep(ctx, backoff.Pause()) != nil {
			return nil, err // the deadline: the last try's error says why
		}
	}
}

// writeOnce is one try of write: one request, its CRC32C checked by Cloud
// Storage before the object is committed.
func (o *Objects) writeOnce(ctx context.Context, name string, data [][]byte, contentType, cacheControl string, md map[string]string, cond *gcs.Conditions, crc uint32) (*gcs.ObjectAttrs, error) {
	w := o.newWriter(ctx, name, contentType, cacheControl, md, cond)
	w.ChunkSize = 0
	w.SendCRC32C, w.CRC32C = true, crc
	for _, part := range data {
		if _, err := w.Write(part); err != nil {
			_ = w.Close()
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Attrs(), nil
}

// newWriter opens an upload of name: its buffer is the configured chunk
// size (never the client's 16 MiB default; write sets 0 for its one
// request), its retries bounded by the deadline.
func (o *Objects) newWriter(ctx context.Context, name, contentType, cacheControl string, md map[string]string, cond *gcs.Conditions) *gcs.Writer {
	obj := o.client.Bucket(o.bucket).Object(name)
	if cond != nil {
		obj = obj.If(*cond)
	}
	w := obj.NewWriter(ctx)
	w.ChunkSize = o.chunk
	w.ChunkRetryDeadline = o.deadline
	w.ContentType = contentType
	w.CacheControl = cacheControl
	w.Metadata = md
	return w
}

// Get reads at most limit bytes of name, with its attributes.
func (o *Objects) Get(ctx context.Context, name string, limit int64) ([]byte, Attrs, error) {
	r, err := o.client.Bucket(o.bucket).Object(name).NewReader(ctx)
	if err != nil {
		return nil, Attrs{}, o.readErr(err, name)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return nil, Attrs{}, classify(err, "reading "+o.uri(name))
	}
	a := Attrs{Name: name, Generation: r.Attrs.Generation, Size: r.Attrs.Size, ContentType: r.Attrs.ContentType,
		Metadata: r.Metadata(), Updated: r.Attrs.LastModified}
	return b, a, nil
}

// Stat reads name's attributes.
func (o *Objects) Stat(ctx context.Context, name string) (Attrs, error) {
	a, err := o.client.Bucket(o.bucket).Object(name).Attrs(ctx)
	if err != nil {
		return Attrs{}, o.readErr(err, name)
	}
	return attrsOf(a), nil
}

// Delete removes name; generation, when not 0, must be the one stored. An
// object already gone is not an error.
func (o *Objects) Delete(ctx context.Context, name string, generation int64) error {
	obj := o.client.Bucket(o.bucket).Object(name)
	if generation != 0 {
		obj = obj.If(gcs.Conditions{GenerationMatch: generation})
	}
	err := obj.Delete(ctx)
	switch {
	case err == nil, errors.Is(err, gcs.ErrObjectNotExist):
		return nil
	case isPrecondition(err):
		return fmt.Errorf("deleting %s: %w", o.uri(name), ErrPrecondition)
	}
	return classify(err, "deleting "+o.uri(name))
}

// List calls fn for each object under prefix; with a delimiter, only for
// the objects directly under it. fn's error stops the listing and is
// returned as it is.
func (o *Objects) List(ctx context.Context, prefix, delimiter string, fn func(Attrs) error) error {
	it := o.client.Bucket(o.bucket).Objects(ctx, &gcs.Query{Prefix: prefix, Delimiter: delimiter})
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return classify(err, "listing "+o.uri(prefix))
		}
		if a.Name == "" { // a prefix under the delimiter, not an object
			continue
		}
		if err := fn(attrsOf(a)); err != nil {
			return err
		}
	}
}

// Reader opens name for streaming reads.
func (o *Objects) Reader(ctx context.Context, name string) (io.ReadCloser, error) {
	r, err := o.client.Bucket(o.bucket).Object(name).NewReader(ctx)
	if err != nil {
		return nil, o.readErr(err, name)
	}
	return r, nil
}

// Writer opens name for a streaming, unconditional write of contentType.
// Close commits it; a cancelled ctx abandons it.
func (o *Objects) Writer(ctx context.Context, name, contentType string) io.WriteCloser {
	w := o.client.Bucket(o.bucket).Object(name).NewWriter(ctx)
	w.ChunkSize = o.chunk
	w.ChunkRetryDeadline = o.deadline
	w.ContentType = contentType
	w.Metadata = map[string]string{MetaGeneratedBy: GeneratedBy}
	return classifyingWriter{w: w, what: "writing " + o.uri(name)}
}

type classifyingWriter struct {
	w    *gcs.Writer
	what string
}

func (c classifyingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		return n, classify(err, c.what)
	}
	return n, nil
}

func (c classifyingWriter) Close() error { return classify(c.w.Close(), c.what) }

func (o *Objects) readErr(err error, name string) error {
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return fmt.Errorf("%s: %w", o.uri(name), ErrNotFound)
	}
	return classify(err, "reading "+o.uri(name))
}

func (o *Objects) uri(name string) string { return gsURI(o.bucket, name) }
