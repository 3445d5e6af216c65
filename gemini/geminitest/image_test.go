package geminitest

import (
	"bytes"
	"hash/adler32"
	"image/png"
	"math/rand/v2"
	"runtime"
	"testing"
)

// An image drawn in bands is one valid PNG (its zlib stream's checksum
// included: the decoder checks it), the same bytes every time for a seed,
// however many CPUs draw it.
func TestDrawPNGBands(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, size := range [][2]int{{1024, 1024}, {256, 256}, {300, 130}, {64, 48}} {
		runtime.GOMAXPROCS(1)
		a := drawPNG(42, size[0], size[1], nil)
		runtime.GOMAXPROCS(4)
		if b := drawPNG(42, size[0], size[1], nil); !bytes.Equal(a, b) {
			t.Errorf("%dx%d: drawn on 1 and 4 CPUs, one seed gives two images", size[0], size[1])
		}
		img, err := png.Decode(bytes.NewReader(a))
		if err != nil {
			t.Fatalf("%dx%d: %v", size[0], size[1], err)
		}
		if got := img.Bounds().Size(); got.X != size[0] || got.Y != size[1] {
			t.Errorf("decoded %v, want %dx%d", got, size[0], size[1])
		}
	}
}

func TestAdler32Combine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, cut := range []int{0, 1, 5552, 65521, 65522, 150_000, len(data)} {
		a, b := data[:cut], data[cut:]
		got := adler32Combine(adler32.Checksum(a), adler32.Checksum(b), len(b))
		if want := adler32.Checksum(data); got != want {
			t.Errorf("cut at %d: %08x, want %08x", cut, got, want)
		}
	}
}

// Warm is not a call: nothing counted, recorded or cached.
func TestWarm(t *testing.T) {
	srv := NewServer()
	defer srv.Close()
	srv.Warm()
	if srv.Calls() != 0 || len(srv.Requests()) != 0 {
		t.Errorf("after Warm: %d calls, %d requests; want none", srv.Calls(), len(srv.Requests()))
	}
	if n := srv.cache.order.Len(); n != 0 {
		t.Errorf("after Warm: %d images cached, want none", n)
	}
}
