package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	_ "image/jpeg" // DecodeConfig for the accepted input types
	_ "image/png"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// headBytes is how much of an input the Vertex path reads to check it: the
// PNG and WebP headers are in the first 30 bytes; a JPEG's frame header
// follows its EXIF/ICC segments, which are rarely beyond 64 KiB. A JPEG
// whose header lies further is read again up to headMaxBytes.
const (
	headBytes    = 64 << 10
	headMaxBytes = 1 << 20
	tailBytes    = 16
)

// stagedInput matches the output bucket's staging area, the one part of it
// inputs may come from.
var stagedInput = regexp.MustCompile(`^jobs/[A-Za-z0-9._-]{1,128}/inputs/[0-9a-f]{64}\.[a-z]{3,4}$`)

// An Input is what Resolve found out about one input image.
type Input struct {
	// URI is the gs:// object, or "" for an inline image.
	URI string
	// Generation is the object generation that was checked (and, on the
	// Gemini API, read).
	Generation int64
	MIMEType   string
	Bytes      int64
	Width      int
	Height     int
}

// ResolveImages checks and resolves every image of a validated job in place. gs://
// images must come from cfg.InputBuckets or the output bucket's
// jobs/*/inputs/ staging area; their size is checked from attributes before
// any read; their type is sniffed from the bytes (a declared content type is
// only a hint) and checked against the model; their dimensions are checked
// with image.DecodeConfig against limits.MaxImagePixels before anything
// decodes them, and their structure (complete PNG chunks, JPEG end marker,
// RIFF size) so that a truncated file is refused here rather than by the
// model after a paid call.
//
// On the Gemini API backend a gs:// image is read at the checked generation
// and replaced by its bytes (Data and MIMEType set, URI cleared). On Vertex
// AI it keeps its URI (Vertex reads it) and gets MIMEType; it is checked
// with small ranged reads of its head and tail, pinned to one generation.
// Vertex's fileData cannot name a generation, so an object replaced between
// this check and the model call is read as replaced; Vertex enforces its own
// size and type limits on it.
//
// Rejections wrap job.ErrInvalid (and job.ErrTooLarge for size and pixel
// limits) and name the object and the limit. A missing object is invalid; a
// storage 429/5xx is job.ErrTransient.
func (s *Store) ResolveImages(ctx context.Context, j *job.Job) error {
	_, err := s.ResolveInputs(ctx, j)
	return err
}

// ResolveInputs is ResolveImages, also answering what was checked per image (in
// the job's image order), for logs and records.
func (s *Store) ResolveInputs(ctx context.Context, j *job.Job) ([]Input, error) {
	model := j.Model
	if model == "" {
		model = job.DefaultModel
	}
	capab, err := job.Lookup(model, s.backend)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", job.ErrInvalid, err)
	}
	out := make([]Input, len(j.Images))
	for i := range j.Images {
		img := &j.Images[i]
		var in Input
		var err error
		switch {
		case img.URI != "" && len(img.Data) > 0:
			err = fmt.Errorf("%w: images[%d]: give either uri or data, not both", job.ErrInvalid, i)
		case img.URI != "":
			in, err = s.resolveObject(ctx, i, img, capab)
		case len(img.Data) > 0:
			in, err = s.checkInline(i, img, capab)
		default:
			err = fmt.Errorf("%w: images[%d]: no uri and no data", job.ErrInvalid, i)
		}
		if err != nil {
			return nil, err
		}
		out[i] = in
	}
	return out, nil
}

// allowed reports whether inputs may be read from bucket/object.
func (s *Store) allowed(bucket, object string) bool {
	if bucket == s.cfg.OutputBucket {
		// The output bucket holds other jobs' state and images: only the
		// staging area of inline inputs is readable as input.
		return stagedInput.MatchString(object)
	}
	return slices.Contains(s.cfg.InputBuckets, bucket)
}

func (s *Store) resolveObject(ctx context.Context, i int, img *job.Image, capab job.Capability) (Input, error) {
	bucket, object, err := job.ParseGCS(img.URI)
	if err != nil {
		return Input{}, fmt.Errorf("%w: images[%d]: %v", job.ErrInvalid, i, err)
	}
	name := gsURI(bucket, object)
	if !s.allowed(bucket, object) {
		return Input{}, fmt.Errorf("%w: images[%d] %s: bucket %q is not one genimg may read inputs from (GENIMG_INPUT_BUCKETS: %s)",
			job.ErrInvalid, i, truncate(name), bucket, strings.Join(s.cfg.InputBuckets, ","))
	}
	if s.backend != job.VertexAI && bucket == s.cfg.OutputBucket && img.Generation == 0 {
		// Staged by Generate on this instance a moment ago: its name is its
		// content's hash, so the bytes at hand are the object's bytes.
		if data, gen, ok := staged.take(s, object); ok {
			in := Input{URI: img.URI, Generation: gen, Bytes: int64(len(data))}
			what := fmt.Sprintf("images[%d] %s#%d", i, truncate(name), gen)
			mime, w, h, err := s.checkImage(what, data, int64(len(data)), nil, capab)
			if err != nil {
				return Input{}, err
			}
			img.Data, img.MIMEType, img.URI = data, mime, ""
			in.MIMEType, in.Width, in.Height = mime, w, h
			return in, nil
		}
	}
	obj := s.client.Bucket(bucket).Object(object)
	attrs, err := obj.Attrs(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return Input{}, fmt.Errorf("%w: images[%d] %s: object does not exist", job.ErrInvalid, i, truncate(name))
	}
	if err != nil {
		return Input{}, classify(err, fmt.Sprintf("images[%d] %s: attributes", i, truncate(name)))
	}
	if max := s.limits.MaxImageBytes; max > 0 && attrs.Size > max {
		return Input{}, fmt.Errorf("%w: %w: images[%d] %s: %d bytes; at most %d bytes per image (GENIMG_MAX_IMAGE_BYTES)",
			job.ErrInvalid, job.ErrTooLarge, i, truncate(name), attrs.Size, max)
	}
	// Every read below names the generation whose size was checked, so the
	// bytes checked are the bytes used even if the object is replaced.
	pinned := obj.Generation(attrs.Generation)
	in := Input{URI: img.URI, Generation: attrs.Generation, Bytes: attrs.Size}
	what := fmt.Sprintf("images[%d] %s#%d", i, truncate(name), attrs.Generation)

	if s.backend != job.VertexAI {
		data, err := readAll(ctx, pinned, attrs.Size)
		if err != nil {
			return Input{}, s.readErr(err, what)
		}
		mime, w, h, err := s.checkImage(what, data, int64(len(data)), nil, capab)
		if err != nil {
			return Input{}, err
		}
		img.Data, img.MIMEType, img.URI = data, mime, ""
		in.MIMEType, in.Width, in.Height = mime, w, h
		return in, nil
	}

	head, err := readRange(ctx, pinned, 0, min(attrs.Size, headBytes))
	if err != nil {
		return Input{}, s.readErr(err, what)
	}
	var tail []byte
	if attrs.Size > int64(len(head)) {
		if tail, err = readRange(ctx, pinned, max(attrs.Size-tailBytes, 0), tailBytes); err != nil {
			return Input{}, s.readErr(err, what)
		}
	}
	mime, w, h, err := s.checkImage(what, head, attrs.Size, tail, capab)
	if err != nil && mime == "image/jpeg" && attrs.Size > headBytes && errors.Is(err, errHeaderBeyond) {
		// The JPEG frame header lies past the first read: read further,
		// still bounded.
		if head, err = readRange(ctx, pinned, 0, min(attrs.Size, headMaxBytes)); err != nil {
			return Input{}, s.readErr(err, what)
		}
		mime, w, h, err = s.checkImage(what, head, attrs.Size, tail, capab)
	}
	if err != nil {
		return Input{}, err
	}
	img.MIMEType = mime
	in.MIMEType, in.Width, in.Height = mime, w, h
	return in, nil
}

func (s *Store) readErr(err error, what string) error {
	if errors.Is(err, gcs.ErrObjectNotExist) {
		// Deleted or replaced since its attributes were read.
		return fmt.Errorf("%w: %s: object no longer exists at the checked generation", job.ErrInvalid, what)
	}
	return classify(err, what+": read")
}

func readAll(ctx context.Context, obj *gcs.ObjectHandle, size int64) ([]byte, error) {
	return readRange(ctx, obj, 0, size)
}

func readRange(ctx context.Context, obj *gcs.ObjectHandle, off, n int64) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	r, err := obj.NewRangeReader(ctx, off, n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// Never more than asked for, whatever the server sends, and one
	// allocation of exactly that (bytes.Buffer.ReadFrom would double a full
	// buffer to look for the end: ≈ 2 MB more per 1 MiB input). A shorter
	// object (a tail range past its start) yields what there is.
	buf := make([]byte, n)
	k, err := io.ReadFull(r, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	return buf[:k], nil
}

func (s *Store) checkInline(i int, img *job.Image, capab job.Capability) (Input, error) {
	what := fmt.Sprintf("images[%d] (inline)", i)
	if max := s.limits.MaxImageBytes; max > 0 && int64(len(img.Data)) > max {
		return Input{}, fmt.Errorf("%w: %w: %s: %d bytes; at most %d bytes per image (GENIMG_MAX_IMAGE_BYTES)",
			job.ErrInvalid, job.ErrTooLarge, what, len(img.Data), max)
	}
	mime, w, h, err := s.checkImage(what, img.Data, int64(len(img.Data)), nil, capab)
	if err != nil {
		return Input{}, err
	}
	img.MIMEType = mime
	return Input{MIMEType: mime, Bytes: int64(len(img.Data)), Width: w, Height: h}, nil
}

var errHeaderBeyond = errors.New("image header not within the bytes read")

// checkImage sniffs head, checks the type against the model, the
// dimensions against the pixel limit (DecodeConfig reads only the header:
// no pixel is decoded, so a decompression bomb costs nothing), and the
// file's structure. head is the whole file when len(head) == size;
// otherwise tail is its last bytes.
func (s *Store) checkImage(what string, head []byte, size int64, tail []byte, capab job.Capability) (string, int, int, error) {
	mime := job.Sniff(head)
	if !slices.Contains(capab.InputTypes, mime) {
		got := mime
		if got == "" {
			got = "not a recognised image"
		}
		return mime, 0, 0, fmt.Errorf("%w: %s: content is %s; the model accepts %s", job.ErrInvalid, what, got, strings.Join(capab.InputTypes, ", "))
	}
	cfg, err := decodeConfig(mime, head)
	if err != nil {
		if int64(len(head)) < size {
			return mime, 0, 0, fmt.Errorf("%w: %s: %w", job.ErrInvalid, what, errHeaderBeyond)
		}
		return mime, 0, 0, fmt.Errorf("%w: %s: %s header is unreadable (truncated or corrupt): %v", job.ErrInvalid, what, mime, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return mime, 0, 0, fmt.Errorf("%w: %s: %d×%d pixels is not an image", job.ErrInvalid, what, cfg.Width, cfg.Height)
	}
	if max := s.limits.MaxImagePixels; max > 0 && int64(cfg.Width)*int64(cfg.Height) > max {
		return mime, 0, 0, fmt.Errorf("%w: %w: %s: %d×%d = %d pixels; at most %d pixels per image (GENIMG_MAX_IMAGE_PIXELS)",
			job.ErrInvalid, job.ErrTooLarge, what, cfg.Width, cfg.Height, int64(cfg.Width)*int64(cfg.Height), max)
	}
	whole := int64(len(head)) == size
	if tail == nil && whole {
		tail = head[max(len(head)-tailBytes, 0):]
	}
	if err := checkStructure(mime, head, whole, size, tail); err != nil {
		return mime, 0, 0, fmt.Errorf("%w: %s: %s is truncated or corrupt: %v", job.ErrInvalid, what, mime, err)
	}
	return mime, cfg.Width, cfg.Height, nil
}

// decodeConfig reads an image's dimensions from its header. PNG and JPEG go
// through image.DecodeConfig; WebP's header is parsed here (x/image is not
// a dependency of genimg, and the three layouts are a few bytes each).
func decodeConfig(mime string, head []byte) (image.Config, error) {
	if mime != "image/webp" {
		cfg, _, err := image.DecodeConfig(bytes.NewReader(head))
		return cfg, err
	}
	if len(head) < 30 {
		return image.Config{}, errors.New("webp: short header")
	}
	switch string(head[12:16]) {
	case "VP8X": // extended: 24-bit width-1 and height-1 at 24 and 27
		w := int(head[24]) | int(head[25])<<8 | int(head[26])<<16
		h := int(head[27]) | int(head[28])<<8 | int(head[29])<<16
		return image.Config{Width: w + 1, Height: h + 1}, nil
	case "VP8L": // lossless: signature 0x2f, then 14-bit width-1, height-1
		if head[20] != 0x2f {
			return image.Config{}, errors.New("webp: bad VP8L signature")
		}
		bits := binary.LittleEndian.Uint32(head[21:25])
		return image.Config{Width: int(bits&0x3fff) + 1, Height: int(bits>>14&0x3fff) + 1}, nil
	case "VP8 ": // lossy: 3-byte frame tag, start code 9d 01 2a, 14-bit sizes
		if !bytes.Equal(head[23:26], []byte{0x9d, 0x01, 0x2a}) {
			return image.Config{}, errors.New("webp: bad VP8 start code")
		}
		w := int(binary.LittleEndian.Uint16(head[26:28]) & 0x3fff)
		h := int(binary.LittleEndian.Uint16(head[28:30]) & 0x3fff)
		return image.Config{Width: w, Height: h}, nil
	}
	return image.Config{}, fmt.Errorf("webp: unknown chunk %q", head[12:16])
}

var pngIEND = []byte{0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82}

// checkStructure finds truncation without decoding pixels: a PNG's chunks
// (lengths and CRCs, when all bytes are at hand) up to IEND, a JPEG's end
// marker, a WebP's RIFF size.
func checkStructure(mime string, head []byte, whole bool, size int64, tail []byte) error {
	switch mime {
	case "image/png":
		if whole {
			return walkPNG(head)
		}
		if !bytes.HasSuffix(tail, pngIEND) {
			return errors.New("no IEND chunk at the end")
		}
	case "image/jpeg":
		t := bytes.TrimRight(tail, "\x00") // some encoders pad after EOI
		if !bytes.HasSuffix(t, []byte{0xFF, 0xD9}) {
			return errors.New("no end-of-image marker")
		}
	case "image/webp":
		if len(head) < 8 {
			return errors.New("short RIFF header")
		}
		if riff := int64(binary.LittleEndian.Uint32(head[4:8])) + 8; riff > size {
			return fmt.Errorf("RIFF says %d bytes, object has %d", riff, size)
		}
	}
	return nil
}

func walkPNG(b []byte) error {
	p := 8
	for p+12 <= len(b) {
		n := int(binary.BigEndian.Uint32(b[p:]))
		if n < 0 || p+12+n > len(b) {
			return fmt.Errorf("chunk %q at offset %d runs past the end", b[p+4:p+8], p)
		}
		typ := b[p+4 : p+8]
		if crc32.ChecksumIEEE(b[p+4:p+8+n]) != binary.BigEndian.Uint32(b[p+8+n:]) {
			return fmt.Errorf("chunk %q at offset %d has a bad CRC", typ, p)
		}
		if string(typ) == "IEND" {
			return nil
		}
		p += 12 + n
	}
	return errors.New("no IEND chunk")
}

// extension names a file extension for a sniffed type.
func extension(mime string) string {
	switch mime {
	case "image/png":
		return "png"
	case "image/jpeg":
		return "jpg"
	case "image/webp":
		return "webp"
	}
	return "bin"
}

// StageInputs writes each inline image of j to
// gs://OUTPUT/jobs/<jobID>/inputs/<sha256>.<ext> and replaces it in j by its
// URI, so the HTTP path can queue a job that fits a Pub/Sub message. Names
// are content addresses and writes are create-only, so a retry (or a second
// job with the same image) finds the object already there and uses it.
func (s *Store) StageInputs(ctx context.Context, jobID string, j *job.Job) error {
	dir, err := jobDir(jobID)
	if err != nil {
		return err
	}
	for i := range j.Images {
		img := &j.Images[i]
		if len(img.Data) == 0 {
			continue
		}
		mime := job.Sniff(img.Data)
		sum := sha256.Sum256(img.Data)
		name := dir + "inputs/" + hex.EncodeToString(sum[:]) + "." + extension(mime)
		if mime == "" {
			mime = "application/octet-stream"
		}
		attrs, err := s.stage(ctx, name, img.Data, mime, jobID)
		// 412: the same bytes are already there under their own hash (an
		// earlier try, or another job with this image): nothing to do.
		if err != nil && !isPrecondition(err) {
			return classify(err, fmt.Sprintf("staging images[%d] to %s", i, gsURI(s.cfg.OutputBucket, name)))
		}
		if err == nil && attrs != nil && s.backend != job.VertexAI {
			staged.put(s, name, img.Data, attrs.Generation)
		}
		img.URI, img.Data = gsURI(s.cfg.OutputBucket, name), nil
		if mime != "application/octet-stream" {
			img.MIMEType = mime
		}
	}
	return nil
}

// stage writes one staged input in a single request that streams data
// (ChunkSize 0: no chunk buffer, no resumable session — a 1 MiB input
// would otherwise be copied into a buffer and sent as four 256 KiB chunk
// requests). The client does not retry such a write, so stage does: the
// bytes are at hand and the write is create-only under their hash, so a
// retry after a lost answer finds the object there (412) and is done.
func (s *Store) stage(ctx context.Context, name string, data []byte, mime, jobID string) (*gcs.ObjectAttrs, error) {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		attrs, err := s.stageOnce(ctx, name, data, mime, jobID)
		if err == nil || attempt == stageAttempts || !job.Retryable(classify(err, "")) || ctx.Err() != nil {
			return attrs, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
			delay *= 2
		}
	}
}

const stageAttempts = 4

func (s *Store) stageOnce(ctx context.Context, name string, data []byte, mime, jobID string) (*gcs.ObjectAttrs, error) {
	ctx, cancel := context.WithTimeout(ctx, s.retryDeadline)
	defer cancel()
	w := s.client.Bucket(s.cfg.OutputBucket).Object(name).If(gcs.Conditions{DoesNotExist: true}).NewWriter(ctx)
	w.ChunkSize = 0
	w.ContentType = mime
	w.Metadata = map[string]string{MetaJob: jobID, MetaGeneratedBy: GeneratedBy}
	if _, err := w.Write(data); err != nil {
		_ = w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return w.Attrs(), nil
}

// staged keeps the inputs Generate staged on this instance for a short
// while, so that when the same instance runs the job (the queued message
// is usually pushed back to it) the run takes the bytes from memory rather
// than reading back what it has just written: two Cloud Storage requests
// and a copy of the image fewer per inline input. The run takes an entry
// once; entries not taken (the job ran elsewhere) leave after stagedTTL
// or when the budget of stagedBudget bytes needs their room. Names are
// content addresses written create-only, so the bytes kept are the bytes
// of the object.
var staged = stagedCache{m: map[stagedKey]*stagedEntry{}}

// stagedBudget holds the inputs staged but not yet taken by their run: at
// side.sh's 36 edits a second, a few. Lowered from 32 MiB to 16, then to 8
// with the front door's large bodies (httpapi): 50 edits in flight peaked
// at 122 MiB instead of 175 at the same CPU per job (BENCHMARKS.md). 4 MiB
// peaked at 114 MiB with 0.7 ms more CPU per job, inside the runs' noise;
// at 1 MiB per input it would also be the largest input kept (budget/4).
const (
	stagedBudget = 8 << 20
	stagedTTL    = time.Minute
)

type stagedKey struct {
	s    *Store
	name string
}

type stagedEntry struct {
	key  stagedKey
	data []byte
	gen  int64
	at   time.Time
}

type stagedCache struct {
	mu    sync.Mutex
	m     map[stagedKey]*stagedEntry
	order []*stagedEntry // oldest first
	bytes int
}

func (c *stagedCache) put(s *Store, name string, data []byte, gen int64) {
	if len(data) > stagedBudget/4 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	k := stagedKey{s, name}
	if _, ok := c.m[k]; ok {
		return
	}
	for len(c.order) > 0 && (c.bytes+len(data) > stagedBudget || now.Sub(c.order[0].at) > stagedTTL) {
		c.drop(c.order[0])
	}
	e := &stagedEntry{key: k, data: data, gen: gen, at: now}
	c.m[k] = e
	c.order = append(c.order, e)
	c.bytes += len(data)
}

func (c *stagedCache) take(s *Store, name string) ([]byte, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[stagedKey{s, name}]
	if !ok || time.Since(e.at) > stagedTTL {
		return nil, 0, false
	}
	c.drop(e)
	return e.data, e.gen, true
}

// drop removes e; c.mu is held.
func (c *stagedCache) drop(e *stagedEntry) {
	delete(c.m, e.key)
	c.bytes -= len(e.data)
	if i := slices.Index(c.order, e); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
}
