package gemini

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	simd "github.com/segmentio/asm/base64"
)

// An ImageSink receives an answer's images while the answer is read off the
// wire, so that no whole image is held in memory (see BENCHMARKS.md
// "## memory design"). It is called on the goroutine that called
// GenerateTo.
type ImageSink interface {
	// OpenImage starts the index-th image of the answer (0, 1, … in answer
	// order). mimeType is the type the answer declared, or "" when the
	// answer had not declared it before the bytes began. The decoder writes
	// the image's bytes, then calls Close to keep it; or, when the answer
	// breaks off or the part turns out to be a thought, CloseWithError if
	// the writer has it (as io.PipeWriter does), to drop it.
	OpenImage(index int, mimeType string) (io.WriteCloser, error)
}

// The answer is decoded in two passes over different data. The first,
// here, streams the HTTP body once: it copies the JSON to a small buffer,
// except that the base64 value of each part's inlineData.data is decoded
// straight into an ImageSink and replaced by a short marker. The second is
// the SDK's own decoding of that small JSON into genai types, so every field
// but the image bytes is exactly what the SDK yields. fillResult maps the
// markers back to the images.
//
// The first pass sits in the HTTP client's transport (answerTransport), the
// one place the SDK lets a caller see the body; the request, its URL,
// headers, auth and error answers stay the SDK's.

// markerPrefix starts the bytes that stand in for a streamed image in the
// JSON handed to the SDK; the image's index follows.
const markerPrefix = "\x00genimg-streamed-image:"

// maxDepth bounds JSON nesting: a generateContent answer is a few levels
// deep, and recursion must not be driven by the input.
const maxDepth = 64

// callKey carries a call's *callState through the SDK to the transport.
type callKey struct{}

// callState is one model call's view of its answer.
type callState struct {
	sink ImageSink
	mem  *memorySink // sink, when Generate holds the images in memory
	// opened counts images opened on the sink; kept marks those kept.
	opened int
	kept   map[int]bool
	// sinkErr is the sink's own failure (storage), which ends the job's
	// attempt rather than being retried as a model failure.
	sinkErr error
	// finishMessages are the candidates' finishMessage, which the SDK drops
	// on the Gemini API backend.
	finishMessages []string
	// inline are the inputs spliced into the request body (request.go).
	inline []inlineInput
}

// answerTransport runs the first pass over every successful answer to a
// call made with a callState; everything else passes through untouched, so
// error answers reach the SDK and become genai.APIError as before.
type answerTransport struct{ base http.RoundTripper }

func (t answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st, _ := req.Context().Value(callKey{}).(*callState)
	if st != nil && len(st.inline) > 0 && req.Body != nil {
		spliced, err := spliceRequest(req, st.inline)
		if err != nil {
			return nil, err
		}
		req = spliced
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil || st == nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp, err
	}
	small, err := st.decode(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(small))
	resp.ContentLength = int64(len(small))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// withAnswerTransport returns a copy of hc (or of a default client) whose
// transport runs the first pass.
func withAnswerTransport(hc *http.Client) *http.Client {
	var c http.Client
	if hc != nil {
		c = *hc
	}
	base := c.Transport
	if base == nil {
		base = modelTransport
	}
	if _, ok := base.(answerTransport); !ok {
		c.Transport = answerTransport{base: base}
	}
	return &c
}

// modelTransport is the model calls' transport when none is given:
// http.DefaultTransport keeps two idle connections per host, so with more
// calls than that in flight over HTTP/1.1 nearly every call dialled (and,
// over TLS, shook hands) anew and closed its connection after; 256 cover
// GENIMG_MAX_CONCURRENT_CALLS' range in practice. Over HTTP/2 (the Gemini
// API) one connection carries them all anyway.
var modelTransport = func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 256
	return t
}()

// decode runs the first pass over body and returns the small JSON.
func (st *callState) decode(body io.Reader) ([]byte, error) {
	d := &decoder{r: bufio.NewReaderSize(body, 32<<10), st: st}
	if err := d.document(); err != nil {
		return nil, err
	}
	small := d.out.Bytes()
	// finishMessage survives in the small JSON; read it here because the
	// SDK drops it on the Gemini API backend.
	var fm struct {
		Candidates []struct {
			FinishMessage string `json:"finishMessage"`
		} `json:"candidates"`
	}
	if json.Unmarshal(small, &fm) == nil {
		for _, c := range fm.Candidates {
			st.finishMessages = append(st.finishMessages, c.FinishMessage)
		}
	}
	return small, nil
}

// streamedIndex reports which streamed image a part's data stands for.
func streamedIndex(data []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(data, []byte(markerPrefix))
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest))
	return n, err == nil
}

// errAnswer is a malformed answer body. It is transient: the service or
// the wire glitched, as for a JSON syntax error in the SDK.
var errAnswer = errors.New("malformed answer")

// decoder is the first pass: a streaming JSON copier that knows where
// images sit (candidates[].content.parts[].inlineData.data).
type decoder struct {
	r     *bufio.Reader
	out   bytes.Buffer
	st    *callState
	depth int

	// base64 state of the image being streamed.
	carry  [4]byte
	ncarry int
	padded bool
	dec    []byte
	w      io.Writer
	// escape state inside the data string: 0 none, 1 after '\', 2–5
	// reading the hex digits of \u00XX.
	esc  int
	uval int
}

// valueKind is what a JSON value is, by where it sits.
type valueKind int

const (
	kindOther  valueKind = iota
	kindParts            // a "parts" array
	kindPart             // one part
	kindInline           // a part's inlineData
	kindData             // inlineData.data: the image
)

// answerPart is what the decoder tracks of one part while reading it.
type answerPart struct {
	thought bool
	img     io.WriteCloser
	index   int
	mime    string
}

func (d *decoder) document() error {
	if err := d.value(kindOther, nil); err != nil {
		return err
	}
	if c, err := d.next(); err != io.EOF {
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: data after the answer (%q)", errAnswer, c)
	}
	return nil
}

// next returns the next byte that is not white space.
func (d *decoder) next() (byte, error) {
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return c, nil
		}
	}
}

// must is next, where the answer may not end.
func (d *decoder) must() (byte, error) {
	c, err := d.next()
	if err == io.EOF {
		return 0, io.ErrUnexpectedEOF
	}
	return c, err
}

func (d *decoder) value(k valueKind, p *answerPart) error {
	c, err := d.must()
	if err != nil {
		return err
	}
	switch c {
	case '{':
		return d.object(k, p)
	case '[':
		return d.array(k)
	case '"':
		if k == kindData {
			return d.image(p)
		}
		d.out.WriteByte('"')
		return d.copyString()
	default:
		_, err := d.literal(c)
		return err
	}
}

// literal copies a number, true, false or null starting with c and
// returns it.
func (d *decoder) literal(c byte) ([]byte, error) {
	start := d.out.Len()
	for {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c == '-', c == '+', c == '.', c == 'E':
			d.out.WriteByte(c)
		default:
			return nil, fmt.Errorf("%w: unexpected %q", errAnswer, c)
		}
		next, err := d.r.Peek(1)
		if err != nil || !isLiteralByte(next[0]) {
			if err != nil && err != io.EOF {
				return nil, err
			}
			return d.out.Bytes()[start:], nil
		}
		c, _ = d.r.ReadByte()
	}
}

func isLiteralByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '+' || c == '.' || c == 'E'
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > maxDepth {
		return fmt.Errorf("%w: nested deeper than %d", errAnswer, maxDepth)
	}
	return nil
}

func (d *decoder) array(k valueKind) (err error) {
	if err := d.enter(); err != nil {
		return err
	}
	defer func() { d.depth-- }()
	elem := kindOther
	if k == kindParts {
		elem = kindPart
	}
	d.out.WriteByte('[')
	c, err := d.must()
	if err != nil {
		return err
	}
	if c == ']' {
		d.out.WriteByte(']')
		return nil
	}
	d.r.UnreadByte()
	for {
		if err := d.element(elem); err != nil {
			return err
		}
		c, err := d.must()
		if err != nil {
			return err
		}
		switch c {
		case ',':
			d.out.WriteByte(',')
		case ']':
			d.out.WriteByte(']')
			return nil
		default:
			return fmt.Errorf("%w: unexpected %q in an array", errAnswer, c)
		}
	}
}

// element reads one array element; a part gets its own tracking, so that
// its image is kept or dropped when the part ends.
func (d *decoder) element(k valueKind) (err error) {
	if k != kindPart {
		return d.value(k, nil)
	}
	p := &answerPart{index: -1}
	defer func() {
		if p.img == nil {
			return
		}
		switch {
		case err != nil:
			abort(p.img, err)
		case p.thought:
			// Thoughts are not the answer (fillResult skips them too).
			abort(p.img, errThought)
		default:
			if cerr := p.img.Close(); cerr != nil {
				d.st.sinkErr = cerr
				err = cerr
				return
			}
			d.st.kept[p.index] = true
		}
	}()
	return d.value(kindPart, p)
}

var errThought = errors.New("the image is a thought, not the answer")

// abort drops an image whose writer can be closed with an error.
func abort(w io.WriteCloser, cause error) {
	if cw, ok := w.(interface{ CloseWithError(error) error }); ok {
		_ = cw.CloseWithError(cause)
		return
	}
	_ = w.Close()
}

func (d *decoder) object(k valueKind, p *answerPart) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer func() { d.depth-- }()
	d.out.WriteByte('{')
	c, err := d.must()
	if err != nil {
		return err
	}
	if c == '}' {
		d.out.WriteByte('}')
		return nil
	}
	for {
		if c != '"' {
			return fmt.Errorf("%w: unexpected %q for an object key", errAnswer, c)
		}
		d.out.WriteByte('"')
		start := d.out.Len()
		if err := d.copyString(); err != nil {
			return err
		}
		key := string(d.out.Bytes()[start : d.out.Len()-1])
		if c, err := d.must(); err != nil {
			return err
		} else if c != ':' {
			return fmt.Errorf("%w: unexpected %q after an object key", errAnswer, c)
		}
		d.out.WriteByte(':')
		child := kindOther
		switch {
		case key == "parts":
			child = kindParts
		case k == kindPart && key == "inlineData":
			child = kindInline
		case k == kindInline && key == "data":
			child = kindData
		}
		switch {
		case k == kindPart && key == "thought":
			c, err := d.must()
			if err != nil {
				return err
			}
			lit, err := d.literal(c)
			if err != nil {
				return err
			}
			p.thought = string(lit) == "true"
		case k == kindInline && key == "mimeType":
			c, err := d.must()
			if err != nil {
				return err
			}
			if c != '"' {
				return fmt.Errorf("%w: inlineData.mimeType is not a string", errAnswer)
			}
			d.out.WriteByte('"')
			start := d.out.Len()
			if err := d.copyString(); err != nil {
				return err
			}
			p.mime = string(d.out.Bytes()[start : d.out.Len()-1])
		default:
			if err := d.value(child, p); err != nil {
				return err
			}
		}
		c, err := d.must()
		if err != nil {
			return err
		}
		switch c {
		case ',':
			d.out.WriteByte(',')
		case '}':
			d.out.WriteByte('}')
			return nil
		default:
			return fmt.Errorf("%w: unexpected %q in an object", errAnswer, c)
		}
		if c, err = d.must(); err != nil {
			return err
		}
	}
}

// rawString passes the rest of a string (its opening quote read) to fn in
// pieces, escapes intact, without the closing quote, which it consumes.
func (d *decoder) rawString(fn func([]byte) error) error {
	escaped := false // the next byte is escaped
	for {
		chunk, err := d.r.ReadSlice('"')
		if err != nil && err != bufio.ErrBufferFull {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		closed := err == nil
		body := chunk
		if closed {
			body = chunk[:len(chunk)-1]
		}
		run := 0
		for run < len(body) && body[len(body)-1-run] == '\\' {
			run++
		}
		after := run%2 == 1 // a trailing odd run of backslashes escapes the next byte
		if run == len(body) {
			after = after != escaped // the run starts with the byte the last piece escaped
		}
		if closed && !after {
			return fn(body)
		}
		if err := fn(chunk); err != nil {
			return err
		}
		escaped = !closed && after
	}
}

// copyString copies the rest of a string, closing quote included.
func (d *decoder) copyString() error {
	if err := d.rawString(func(b []byte) error { d.out.Write(b); return nil }); err != nil {
		return err
	}
	d.out.WriteByte('"')
	return nil
}

// image streams one inlineData.data value (its opening quote read) into
// the sink, and writes a marker in its place.
func (d *decoder) image(p *answerPart) error {
	if p == nil {
		return fmt.Errorf("%w: inlineData outside a part", errAnswer)
	}
	if p.img != nil {
		// A repeated key: the last one wins, as in encoding/json.
		abort(p.img, errors.New("replaced by a later inlineData.data"))
		p.img = nil
	}
	d.ncarry, d.padded, d.esc, d.w = 0, false, 0, io.Discard
	if d.dec == nil {
		d.dec = make([]byte, 24<<10)
	}
	started := false
	open := func() error {
		started = true
		if p.thought {
			return nil // dropped unread: thoughts are not the answer
		}
		w, err := d.st.sink.OpenImage(d.st.opened, p.mime)
		if err != nil {
			d.st.sinkErr = err
			return err
		}
		p.img, p.index, d.w = w, d.st.opened, w
		d.st.opened++
		return nil
	}
	err := d.rawString(func(b []byte) error {
		if len(b) > 0 && !started {
			if err := open(); err != nil {
				return err
			}
		}
		return d.unescape(b)
	})
	if err != nil {
		return err
	}
	if d.ncarry != 0 || d.esc != 0 {
		return fmt.Errorf("%w: inlineData.data is not padded base64", errAnswer)
	}
	if !started {
		d.out.WriteString(`""`) // empty data: nothing to keep
		return nil
	}
	marker := markerPrefix + strconv.Itoa(p.index)
	if p.img == nil {
		marker = markerPrefix + "dropped"
	}
	d.out.WriteByte('"')
	d.out.WriteString(base64.StdEncoding.EncodeToString([]byte(marker)))
	d.out.WriteByte('"')
	return nil
}

// unescape feeds a raw piece of the data string to the base64 decoder,
// undoing the JSON escapes base64 text can carry (\/, \u00XX; \n and \r
// are skipped, as base64 decoding skips newlines).
func (d *decoder) unescape(b []byte) error {
	if d.esc == 0 && bytes.IndexByte(b, '\\') < 0 {
		return d.feed(b)
	}
	var one [1]byte
	for _, c := range b {
		switch {
		case d.esc == 0 && c == '\\':
			d.esc = 1
		case d.esc == 0:
			one[0] = c
			if err := d.feed(one[:]); err != nil {
				return err
			}
		case d.esc == 1:
			d.esc = 0
			switch c {
			case '/', '\\', '"':
				one[0] = c
				if err := d.feed(one[:]); err != nil {
					return err
				}
			case 'n', 'r':
			case 'u':
				d.esc, d.uval = 2, 0
			default:
				return fmt.Errorf("%w: escape \\%c in inlineData.data", errAnswer, c)
			}
		default: // \u: four hex digits
			v, ok := unhex(c)
			if !ok {
				return fmt.Errorf("%w: bad \\u escape in inlineData.data", errAnswer)
			}
			d.uval = d.uval<<4 | v
			if d.esc++; d.esc == 6 {
				d.esc = 0
				if d.uval > 0x7f {
					return fmt.Errorf("%w: non-ASCII in inlineData.data", errAnswer)
				}
				if d.uval != '\n' && d.uval != '\r' {
					one[0] = byte(d.uval)
					if err := d.feed(one[:]); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func unhex(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// feed decodes base64 text in whole quanta, carrying a partial quantum to
// the next piece, and writes the bytes to the image's writer.
func (d *decoder) feed(b []byte) error {
	for len(b) > 0 {
		if d.padded {
			return fmt.Errorf("%w: inlineData.data goes on after its padding", errAnswer)
		}
		if d.ncarry > 0 || len(b) < 4 {
			n := copy(d.carry[d.ncarry:], b)
			d.ncarry += n
			b = b[n:]
			if d.ncarry < 4 {
				return nil
			}
			d.ncarry = 0
			if err := d.decodeQuanta(d.carry[:]); err != nil {
				return err
			}
			continue
		}
		n := min(len(b)&^3, len(d.dec)/3*4)
		if err := d.decodeQuanta(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (d *decoder) decodeQuanta(q []byte) error {
	n, err := simd.StdEncoding.Decode(d.dec, q)
	if err != nil {
		return fmt.Errorf("%w: inlineData.data: %w", errAnswer, err)
	}
	if q[len(q)-1] == '=' {
		d.padded = true
	}
	if _, err := d.w.Write(d.dec[:n]); err != nil {
		d.st.sinkErr = err
		return err
	}
	return nil
}

// memorySink keeps each image in memory, for Generate.
type memorySink struct{ images map[int]*bytes.Buffer }

func (m *memorySink) OpenImage(index int, _ string) (io.WriteCloser, error) {
	b := new(bytes.Buffer)
	m.images[index] = b
	return nopCloser{b}, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// newCallState prepares one call's state; sink nil holds images in memory.
func newCallState(sink ImageSink) *callState {
	st := &callState{sink: sink, kept: map[int]bool{}}
	if sink == nil {
		st.mem = &memorySink{images: map[int]*bytes.Buffer{}}
		st.sink = st.mem
	}
	return st
}

func (st *callState) context(ctx context.Context) context.Context {
	return context.WithValue(ctx, callKey{}, st)
}
