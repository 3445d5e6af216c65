package trigger

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	simd "github.com/segmentio/asm/base64"

	"github.com/genimg/genimg/job"
)

// Reading a JSON body once. A job's inline images are most of its bytes
// (a 1 MiB PNG is 1.4 MB of base64), and parsing that text is most of what
// the front door costs when encoding/json does it: the body held whole, then
// scanned once to find the value's end, once to unquote the string, and then
// base64-decoded. streamJob reads the body in one pass through a small
// buffer instead: every images[].data string is base64-decoded as it is read,
// straight into the image's bytes, and what is left of the body — the job
// with each inline image's data replaced by "" — is decoded by job.Decode as
// before, so unknown fields, types and trailing data get the same strict
// checks and the same messages. The whole body is never held; the decoded
// images are (they are staged by content address, whose name needs all of
// their bytes).

// bodyBufSize is the read buffer of one body: big enough that a base64
// string is decoded in long runs.
const bodyBufSize = 64 << 10

var bodyBufs = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bodyBufSize) }}

// errBatch says the body's first member is "batch": a batch submission.
var errBatch = errors.New("batch submission")

// A bodyReader copies a JSON body into rest, except the contents of inline
// images' data strings, which it decodes into images.
type bodyReader struct {
	br *bufio.Reader
	// rest is the body without inline image data.
	rest []byte
	// images[i] is images[i].data, decoded; nil where the image had none.
	images [][]byte
	// hint sizes the first image's buffer (from the body's length).
	hint int
	// readErr is the first error reading the body (too large, cut off):
	// it wins over any syntax error it caused.
	readErr error
	// b64 is the first inline image decoding error.
	b64 error
}

// streamJob reads one JSON value from body: a job, or (when its first member
// is "batch", case-insensitively as encoding/json matches it) a batch
// submission, which is returned whole in data for DecodeBatch. sizeHint is
// the body's length when known, or -1.
// With form set (a body labelled application/x-www-form-urlencoded, as curl
// -d labels JSON), only a body that is a JSON object is taken.
func streamJob(body io.Reader, sizeHint int64, maxBytes int64, form bool) (j job.Job, batch []byte, err error) {
	br := bodyBufs.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() { br.Reset(nil); bodyBufs.Put(br) }()
	r := &bodyReader{br: br, rest: make([]byte, 0, 1024)}
	if sizeHint > 0 {
		r.hint = int(min(sizeHint, maxBytes)) / 4 * 3
	}
	err = r.top()
	if r.readErr != nil {
		return job.Job{}, nil, bodyError(r.readErr, maxBytes)
	}
	if errors.Is(err, errBatch) {
		rest, err := io.ReadAll(br)
		if err != nil {
			return job.Job{}, nil, bodyError(err, maxBytes)
		}
		return job.Job{}, append(r.rest, rest...), nil
	}
	if form && !bytes.HasPrefix(bytes.TrimSpace(r.rest), []byte("{")) {
		return job.Job{}, nil, errFormBody
	}
	if r.b64 != nil {
		return job.Job{}, nil, r.b64
	}
	if j, err = job.Decode(r.rest); err != nil {
		return job.Job{}, nil, err
	}
	for i, data := range r.images {
		if data != nil && i < len(j.Images) {
			j.Images[i].Data = data
		}
	}
	return j, nil, nil
}

// peek returns the next byte without consuming it; ok is false at the end
// of the body or on a read error (kept in readErr).
func (r *bodyReader) peek() (byte, bool) {
	b, err := r.br.Peek(1)
	if err != nil {
		if !errors.Is(err, io.EOF) && r.readErr == nil {
			r.readErr = err
		}
		return 0, false
	}
	return b[0], true
}

// copyByte moves one byte from the body to rest.
func (r *bodyReader) copyByte() {
	b, _ := r.br.ReadByte()
	r.rest = append(r.rest, b)
}

// ws copies whitespace.
func (r *bodyReader) ws() {
	for {
		b, ok := r.peek()
		if !ok || (b != ' ' && b != '\t' && b != '\n' && b != '\r') {
			return
		}
		r.copyByte()
	}
}

// expect copies the next byte if it is c.
func (r *bodyReader) expect(c byte) bool {
	r.ws()
	if b, ok := r.peek(); ok && b == c {
		r.copyByte()
		return true
	}
	return false
}

// copyRest copies what is left of the body: from here on, job.Decode
// finds what is wrong with it.
func (r *bodyReader) copyRest() error {
	rest, err := io.ReadAll(r.br)
	if err != nil && r.readErr == nil {
		r.readErr = err
	}
	r.rest = append(r.rest, rest...)
	return nil
}

// top reads the job object; the members other than "images" are copied.
func (r *bodyReader) top() error {
	if !r.expect('{') {
		return r.copyRest()
	}
	for first := true; ; first = false {
		r.ws()
		if b, ok := r.peek(); ok && b == '}' && first {
			r.copyByte()
			return r.copyRest()
		}
		key, ok := r.key()
		if !ok {
			return r.copyRest()
		}
		if first && strings.EqualFold(key, "batch") {
			return errBatch
		}
		r.ws()
		if b, ok := r.peek(); ok && b == '[' && strings.EqualFold(key, "images") {
			if !r.imageList() {
				return r.copyRest()
			}
		} else if !r.value() {
			return r.copyRest()
		}
		if more, ok := r.next('}'); !ok || !more {
			return r.copyRest() // after the object, trailing data: job.Decode refuses it
		}
	}
}

// imageList reads an images array: objects are read member by member.
func (r *bodyReader) imageList() bool {
	r.copyByte() // [
	r.images = r.images[:0]
	r.ws()
	if b, ok := r.peek(); ok && b == ']' {
		r.copyByte()
		return true
	}
	for i := 0; ; i++ {
		r.ws()
		r.images = append(r.images, nil)
		if b, ok := r.peek(); ok && b == '{' {
			if !r.image(i) {
				return false
			}
		} else if !r.value() {
			return false
		}
		if more, ok := r.next(']'); !ok || !more {
			return ok
		}
	}
}

// next reads what follows a member or an element: a ',' (more) or the
// closing byte (done), copied; anything else is not ok.
func (r *bodyReader) next(closing byte) (more, ok bool) {
	r.ws()
	b, ok := r.peek()
	if !ok || (b != ',' && b != closing) {
		return false, false
	}
	r.copyByte()
	return b == ',', true
}

// image reads one image object; a "data" string is decoded as it is read
// and left in rest as "".
func (r *bodyReader) image(i int) bool {
	r.copyByte() // {
	r.ws()
	if b, ok := r.peek(); ok && b == '}' {
		r.copyByte()
		return true
	}
	for {
		r.ws()
		key, ok := r.key()
		if !ok {
			return false
		}
		r.ws()
		if b, ok := r.peek(); ok && b == '"' && strings.EqualFold(key, "data") {
			data, ok := r.base64String(i)
			if !ok {
				return false
			}
			r.images[i] = data
		} else if !r.value() {
			return false
		}
		if more, ok := r.next('}'); !ok || !more {
			return ok
		}
	}
}

// key copies a member name and its colon, and returns the name unquoted.
func (r *bodyReader) key() (string, bool) {
	start := len(r.rest)
	if b, ok := r.peek(); !ok || b != '"' || !r.str() {
		return "", false
	}
	raw := r.rest[start:]
	var name string
	if bytes.IndexByte(raw, '\\') < 0 {
		name = string(raw[1 : len(raw)-1])
	} else if json.Unmarshal(raw, &name) != nil {
		return "", false
	}
	return name, r.expect(':')
}

// str copies a string, escapes and all (job.Decode checks them).
func (r *bodyReader) str() bool {
	r.copyByte() // "
	for {
		b, ok := r.peek()
		if !ok {
			return false
		}
		r.copyByte()
		switch b {
		case '"':
			return true
		case '\\':
			if _, ok := r.peek(); !ok {
				return false
			}
			r.copyByte()
		}
	}
}

// value copies one JSON value without checking it: strings whole, objects
// and arrays to their matching end, anything else to the next delimiter.
func (r *bodyReader) value() bool {
	depth := 0
	for {
		b, ok := r.peek()
		if !ok {
			return false
		}
		switch b {
		case '"':
			if !r.str() {
				return false
			}
		case '{', '[':
			depth++
			r.copyByte()
		case '}', ']':
			if depth == 0 {
				return true
			}
			depth--
			r.copyByte()
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return true
			}
			r.copyByte()
		default:
			r.copyByte()
		}
		if depth == 0 && (b == '"' || b == '}' || b == ']') {
			return true
		}
	}
}

// base64String decodes a JSON string of standard base64 as it is read,
// and copies "" in its place. Escapes are unquoted first, as encoding/json
// does, and a newline (escaped) is skipped, as base64.StdEncoding does.
func (r *bodyReader) base64String(i int) ([]byte, bool) {
	r.br.ReadByte() // "
	r.rest = append(r.rest, '"', '"')
	d := b64{out: make([]byte, 0, max(r.hint, 64))}
	r.hint = 0 // later images: grown as they come
	fail := func(err error) ([]byte, bool) {
		if r.b64 == nil {
			var c base64.CorruptInputError
			if errors.As(err, &c) {
				err = fmt.Errorf("not standard base64 (error at byte %d)", int64(c))
			}
			r.b64 = fmt.Errorf("%w: job: images[%d].data: %v", job.ErrInvalid, i, err)
		}
		return nil, false
	}
	for {
		if _, ok := r.peek(); !ok {
			return fail(errors.New("unexpected end of the body in a string"))
		}
		chunk, _ := r.br.Peek(r.br.Buffered())
		end := bytes.IndexByte(chunk, '"')
		seg := chunk
		if end >= 0 {
			seg = chunk[:end]
		}
		if k := bytes.IndexByte(seg, '\\'); k >= 0 {
			seg = seg[:k]
		}
		if bytes.IndexByte(seg, '\n') >= 0 || bytes.IndexByte(seg, '\r') >= 0 {
			return fail(errors.New("invalid character (a raw line break) in string literal"))
		}
		if err := d.write(seg); err != nil {
			return fail(err)
		}
		r.br.Discard(len(seg))
		b, ok := r.peek()
		switch {
		case ok && b == '"':
			r.br.ReadByte()
			if err := d.close(); err != nil {
				return fail(err)
			}
			return d.out, true
		case ok && b == '\\':
			c, err := r.escape()
			if err != nil {
				return fail(err)
			}
			if c == '\n' || c == '\r' {
				continue
			}
			if err := d.write([]byte{c}); err != nil {
				return fail(err)
			}
		}
	}
}

// escape reads one escape sequence of a base64 string: anything but an
// ASCII character cannot be base64, so those are an error here.
func (r *bodyReader) escape() (byte, error) {
	r.br.ReadByte() // \
	c, err := r.br.ReadByte()
	if err != nil {
		return 0, errors.New("unexpected end of the body in a string")
	}
	switch c {
	case '"', '\\', '/':
		return c, nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 'u':
		var hex [4]byte
		if _, err := io.ReadFull(r.br, hex[:]); err != nil {
			return 0, errors.New("unexpected end of the body in a string")
		}
		var v rune
		for _, h := range hex {
			d, ok := unhex(h)
			if !ok {
				return 0, fmt.Errorf("invalid escape \\u%s in string literal", hex[:])
			}
			v = v<<4 | rune(d)
		}
		if v >= utf8.RuneSelf {
			return 0, fmt.Errorf("not standard base64 (character U+%04X)", v)
		}
		return byte(v), nil
	}
	return 0, fmt.Errorf("not standard base64 (escape \\%c)", c)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// b64 decodes standard base64 pushed to it in pieces of any length.
type b64 struct {
	carry [4]byte
	nc    int
	// in counts the base64 characters taken, for error offsets.
	in  int64
	out []byte
	// padded is set once a quantum with padding was decoded: nothing may
	// follow it.
	padded bool
}

func (d *b64) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	if d.padded {
		return base64.CorruptInputError(d.in)
	}
	for d.nc > 0 && len(p) > 0 {
		d.carry[d.nc] = p[0]
		d.nc++
		p = p[1:]
		if d.nc == 4 {
			d.nc = 0
			if err := d.decode(d.carry[:]); err != nil {
				return err
			}
		}
	}
	if d.nc > 0 {
		return nil // p went into the carry
	}
	full := len(p) &^ 3
	if full > 0 {
		if err := d.decode(p[:full]); err != nil {
			return err
		}
	}
	d.nc = copy(d.carry[:], p[full:])
	return nil
}

func (d *b64) decode(q []byte) error {
	if d.padded {
		return base64.CorruptInputError(d.in)
	}
	n := len(d.out)
	d.out = slices.Grow(d.out, len(q)/4*3)
	k, err := simd.StdEncoding.Decode(d.out[n:n+len(q)/4*3], q)
	if err != nil {
		// The vector decoder's offsets count from where it handed over to
		// encoding/base64; decoding again there names the exact byte.
		_, err = base64.StdEncoding.Decode(d.out[n:n+len(q)/4*3], q)
		var c base64.CorruptInputError
		if errors.As(err, &c) {
			return base64.CorruptInputError(d.in + int64(c))
		}
		return err
	}
	d.out = d.out[:n+k]
	d.in += int64(len(q))
	d.padded = q[len(q)-1] == '='
	return nil
}

func (d *b64) close() error {
	if d.nc != 0 {
		return base64.CorruptInputError(d.in + int64(d.nc))
	}
	if d.out == nil {
		d.out = []byte{}
	}
	return nil
}
