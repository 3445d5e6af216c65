package geminitest

import (
	"bytes"
	"compress/flate"
	"container/list"
	"encoding/binary"
	"hash/adler32"
	"hash/crc32"
	"hash/fnv"
	"image"
	"image/draw"
	_ "image/jpeg" // decode JPEG inputs of edits
	_ "image/png"  // decode PNG inputs of edits
	"io"
	"math"
	"runtime"
	"sync"
)

// imageKey identifies one drawn image: the same key always draws the same
// pixels, so encoded PNGs can be cached.
type imageKey struct {
	seed          uint64
	width, height int
}

// pngCache keeps the most recently encoded PNGs. Encoding a 1024×1024
// textured image is the stand-in's dominant cost; a load test that repeats
// prompts then costs almost nothing.
type pngCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // of imageKey, most recent first
	items map[imageKey]*list.Element
	data  map[imageKey][]byte
}

func newPNGCache(max int) *pngCache {
	return &pngCache{max: max, order: list.New(), items: map[imageKey]*list.Element{}, data: map[imageKey][]byte{}}
}

func (c *pngCache) get(k imageKey) ([]byte, bool) {
	if c.max <= 0 {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return c.data[k], true
}

func (c *pngCache) put(k imageKey, b []byte) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(k)
	c.data[k] = b
	for c.order.Len() > c.max {
		old := c.order.Remove(c.order.Back()).(imageKey)
		delete(c.items, old)
		delete(c.data, old)
	}
}

// source is what an edit draws from: the input image, sampled.
type source struct {
	img *image.RGBA
}

// drawPNG draws a width×height image for seed and encodes it as PNG. The
// picture is visibly derived from the seed (two colours and a wave pattern
// chosen by it) and, for an edit, from the input image (its pixels, tinted),
// with per-pixel noise like a photograph's grain so that the PNG weighs what
// a real answer does (1.2–2 MB at 1024×1024), not a few kilobytes of flat
// colour.
//
// It writes the PNG itself, rows straight into the compressor with the Sub
// filter and Huffman-only deflate: on grain, LZ77 matching finds nothing and
// only costs time, so this is several times faster than image/png at
// BestSpeed for the same size (BenchmarkDrawPNG), and the stand-in does not
// become the bottleneck of a load test. Bands of rows (up to maxBands, each
// with its own grain) are drawn and compressed at once, as many as there
// are CPUs, and their deflate streams joined: the first answer of a fresh
// stand-in, which no cache can hold, comes that much sooner.
func drawPNG(seed uint64, width, height int, src *source) []byte {
	r := rng(seed | 1)
	c1 := [3]float64{float64(uint8(r.next())), float64(uint8(r.next())), float64(uint8(r.next()))}
	c2 := [3]float64{float64(uint8(r.next())), float64(uint8(r.next())), float64(uint8(r.next()))}
	freq := 2 + float64(r.next()%7)
	angle := float64(r.next()%360) * math.Pi / 180
	ca, sa := math.Cos(angle), math.Sin(angle)

	// The wave sin(2π·f·(x·cos a + y·sin a)) is separable by the angle
	// sum identity, so per-pixel work is a few multiplications.
	sinX, cosX := make([]float64, width), make([]float64, width)
	for x := range width {
		sinX[x], cosX[x] = math.Sincos(2 * math.Pi * freq * ca * float64(x) / float64(width))
	}
	var in *image.RGBA
	if src != nil {
		in = src.img
	}

	// rows draws and compresses rows y0 to y1 (Sub-filtered, each with its
	// filter byte) into deflate blocks; the last band ends the stream.
	rows := func(y0, y1 int, noise rng, last bool) band {
		var out bytes.Buffer
		out.Grow((y1 - y0) * width * 2)
		zw := huffmanWriters.Get().(*flate.Writer)
		defer huffmanWriters.Put(zw)
		zw.Reset(&out)
		sum := adler32.New()
		row := make([]byte, 1+3*width)
		for y := y0; y < y1; y++ {
			sinY, cosY := math.Sincos(2 * math.Pi * freq * sa * float64(y) / float64(height))
			var inRow []uint8
			if in != nil {
				sy := y * in.Rect.Dy() / height
				inRow = in.Pix[sy*in.Stride:]
			}
			row[0] = 1 // filter Sub: each byte minus the one 3 to its left
			var prev [3]byte
			for x := range width {
				t := 0.5 + 0.5*(sinX[x]*cosY+cosX[x]*sinY)
				c := [3]float64{
					c1[0]*(1-t) + c2[0]*t,
					c1[1]*(1-t) + c2[1]*t,
					c1[2]*(1-t) + c2[2]*t,
				}
				if in != nil {
					sx := 4 * (x * in.Rect.Dx() / width)
					// 70 % input, 30 % the prompt's pattern: the edit
					// visibly keeps the input and visibly differs by prompt.
					for i := range 3 {
						c[i] = 0.7*float64(inRow[sx+i]) + 0.3*c[i]
					}
				}
				n := noise.next()
				for i := range 3 {
					v := clamp(c[i] + grain(n>>(8*i)))
					row[1+3*x+i] = v - prev[i]
					prev[i] = v
				}
			}
			zw.Write(row) // writes to a bytes.Buffer cannot fail
			sum.Write(row)
		}
		if last {
			zw.Close()
		} else {
			zw.Flush() // ends on a byte boundary, the stream not ended
		}
		return band{out.Bytes(), sum.Sum32(), (y1 - y0) * len(row)}
	}
	// The bands depend on the image alone, never on the machine: the same
	// key draws the same bytes everywhere (golden files hold their hashes).
	// As many are drawn at once as there are CPUs.
	n := max(1, min(maxBands, height/64))
	bands := make([]band, n)
	var wg sync.WaitGroup
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	for b := range n {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			bands[b] = rows(b*height/n, (b+1)*height/n, rng(seedOf(binary.LittleEndian.AppendUint64(nil, seed), []byte{byte(b)})|1), b == n-1)
		})
	}
	wg.Wait()

	// The zlib stream: its header, the bands' deflate blocks in order, and
	// the Adler-32 of all the rows.
	size := 2 + 4
	for _, b := range bands {
		size += len(b.deflated)
	}
	idat := append(make([]byte, 0, size), 0x78, 0x01)
	sum := uint32(1) // Adler-32 of nothing
	for _, b := range bands {
		idat = append(idat, b.deflated...)
		sum = adler32Combine(sum, b.adler, b.n)
	}
	idat = binary.BigEndian.AppendUint32(idat, sum)

	var buf bytes.Buffer
	buf.Grow(len(idat) + 64)
	buf.WriteString("\x89PNG\r\n\x1a\n")
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(width))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(height))
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB, like the model's answers
	writeChunk(&buf, "IHDR", ihdr[:])
	writeChunk(&buf, "IDAT", idat)
	writeChunk(&buf, "IEND", nil)
	return buf.Bytes()
}

// huffmanWriters are Huffman-only compressors, reused: each holds about
// 1 MB of state.
var huffmanWriters = sync.Pool{New: func() any {
	zw, err := flate.NewWriter(io.Discard, flate.HuffmanOnly)
	if err != nil {
		panic("geminitest: " + err.Error()) // HuffmanOnly is a valid level
	}
	return zw
}}

// maxBands is how many bands an image is drawn in, at most.
const maxBands = 8

// A band is rows of an image, deflated: their Adler-32 and length.
type band struct {
	deflated []byte
	adler    uint32
	n        int
}

// adler32Combine is the Adler-32 of A followed by B, from their checksums
// and B's length (zlib's adler32_combine).
func adler32Combine(a, b uint32, lenB int) uint32 {
	const mod = 65521
	rem := uint32(lenB % mod)
	s1 := a & 0xffff
	s2 := rem * s1 % mod
	s1 += (b & 0xffff) + mod - 1
	s2 += (a >> 16) + (b >> 16) + mod - rem
	if s1 >= mod {
		s1 -= mod
	}
	if s1 >= mod {
		s1 -= mod
	}
	if s2 >= 2*mod {
		s2 -= 2 * mod
	}
	if s2 >= mod {
		s2 -= mod
	}
	return s1 | s2<<16
}

func writeChunk(w *bytes.Buffer, kind string, data []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	w.Write(n[:])
	crc := crc32.NewIEEE()
	crc.Write([]byte(kind))
	crc.Write(data)
	w.WriteString(kind)
	w.Write(data)
	binary.BigEndian.PutUint32(n[:], crc.Sum32())
	w.Write(n[:])
}

// grainLevels is the noise amplitude, tuned so that a 1024×1024 answer
// weighs 1.2–2 MB like a real photograph (TestImageSizes pins it).
const grainLevels = 12

func grain(n uint64) float64 { return float64(int(n&0xff)%grainLevels) - grainLevels/2 }

func clamp(v float64) uint8 {
	switch {
	case v < 0:
		return 0
	case v > 255:
		return 255
	}
	return uint8(v)
}

// rng is xorshift64*: fast, deterministic noise.
type rng uint64

func (r *rng) next() uint64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return x * 2685821657736338717
}

// seedOf hashes the parts that make an answer.
func seedOf(parts ...[]byte) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum64()
}

// imageSize reads an input image's dimensions without decoding its pixels:
// PNG, JPEG (the standard library), and WebP (its header).
func imageSize(data []byte) (w, h int, ok bool) {
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
		return cfg.Width, cfg.Height, true
	}
	return webpSize(data)
}

// webpSize parses the VP8, VP8L or VP8X header of a WebP file.
func webpSize(b []byte) (int, int, bool) {
	if len(b) < 30 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		return 0, 0, false
	}
	switch string(b[12:16]) {
	case "VP8 ":
		if b[23] != 0x9d || b[24] != 0x01 || b[25] != 0x2a {
			return 0, 0, false
		}
		return int(binary.LittleEndian.Uint16(b[26:28]) & 0x3fff), int(binary.LittleEndian.Uint16(b[28:30]) & 0x3fff), true
	case "VP8L":
		if b[20] != 0x2f {
			return 0, 0, false
		}
		v := binary.LittleEndian.Uint32(b[21:25])
		return int(v&0x3fff) + 1, int((v>>14)&0x3fff) + 1, true
	case "VP8X":
		w := int(b[24]) | int(b[25])<<8 | int(b[26])<<16
		h := int(b[27]) | int(b[28])<<8 | int(b[29])<<16
		return w + 1, h + 1, true
	}
	return 0, 0, false
}

// decodeSource decodes an edit's input for drawing; WebP and anything else
// the standard library cannot decode yields nil, and the answer is then
// derived from the input's bytes through the seed alone.
func decodeSource(data []byte) *source {
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil
	}
	// One conversion to RGBA (draw has fast paths for the decoders'
	// types) so that drawing indexes bytes instead of calling At.
	b := img.Bounds()
	rgba := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(rgba, rgba.Rect, img, b.Min, draw.Src)
	return &source{img: rgba}
}
