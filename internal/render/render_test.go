package render

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	_ "golang.org/x/image/webp"

	"github.com/genimg/genimg/job"
)

func TestSize(t *testing.T) {
	for _, tt := range []struct {
		w, h, max    int
		wantW, wantH int
	}{
		{1344, 768, 256, 256, 146}, // 146.29
		{1344, 768, 512, 512, 293}, // 292.57
		{768, 1344, 512, 293, 512},
		{1024, 1024, 300, 300, 300},
		{1024, 1024, 2048, 1024, 1024}, // never upscaled
		{1344, 768, 1344, 1344, 768},
		{5504, 3072, 4096, 4096, 2286}, // 2286.14
		{4096, 16, 16, 16, 1},          // the short side is at least 1
	} {
		w, h := Size(tt.w, tt.h, tt.max)
		if diff := cmp.Diff([2]int{tt.wantW, tt.wantH}, [2]int{w, h}); diff != "" {
			t.Errorf("Size(%d, %d, %d) (-want +got):\n%s", tt.w, tt.h, tt.max, diff)
		}
	}
}

// testImage is a w×h gradient with grain, a photograph's entropy.
func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	n := uint32(1)
	for y := range h {
		for x := range w {
			n = n*1664525 + 1013904223
			g := uint8(n >> 28)
			img.SetNRGBA(x, y, color.NRGBA{uint8(x*255/w) ^ g, uint8(y*255/h) + g, uint8((x+y)/8) - g, 255})
		}
	}
	return img
}

func TestMake(t *testing.T) {
	src := testImage(1344, 768)
	for _, tt := range []struct {
		r            job.Rendition
		mime         string
		wantW, wantH int
	}{
		{job.Rendition{Format: "webp", MaxSize: 256}, "image/webp", 256, 146},
		{job.Rendition{Format: "jpeg", MaxSize: 512, Quality: 70}, "image/jpeg", 512, 293},
		{job.Rendition{Format: "png", MaxSize: 4096}, "image/png", 1344, 768},
	} {
		t.Run(tt.r.Format, func(t *testing.T) {
			res, err := Make(src, tt.r)
			if err != nil {
				t.Fatal(err)
			}
			cfg, format, err := image.DecodeConfig(bytes.NewReader(res.Data))
			if err != nil {
				t.Fatal(err)
			}
			want := []any{tt.mime, tt.wantW, tt.wantH, tt.wantW, tt.wantH, tt.r.Format}
			got := []any{res.MIMEType, res.Width, res.Height, cfg.Width, cfg.Height, format}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Make(src, job.Rendition{Format: "avif", MaxSize: 64}); err == nil {
		t.Error("an avif rendition was made")
	}
}

func TestDecodeBoundsPixels(t *testing.T) {
	var b bytes.Buffer
	if err := png.Encode(&b, testImage(64, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(bytes.NewReader(b.Bytes()), 64*32-1); err == nil {
		t.Error("an image over the pixel bound was decoded")
	}
	img, err := Decode(bytes.NewReader(b.Bytes()), 64*32)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got != image.Pt(64, 32) {
		t.Errorf("decoded %v, want 64×32", got)
	}
}

// BenchmarkRendition measures one rendition of a 1344×768 output image
// (the 16:9 size of gemini-2.5-flash-image): scale and encode. The decode
// of the source is once per image, not per rendition (BenchmarkDecode).
func BenchmarkRendition(b *testing.B) {
	src := testImage(1344, 768)
	for _, r := range []job.Rendition{
		{Format: "webp", MaxSize: 256}, {Format: "webp", MaxSize: 1024},
		{Format: "jpeg", MaxSize: 512, Quality: 80}, {Format: "jpeg", MaxSize: 1024, Quality: 80},
		{Format: "png", MaxSize: 512},
	} {
		b.Run(r.Format+"-"+itoa(r.MaxSize), func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				res, err := Make(src, r)
				if err != nil {
					b.Fatal(err)
				}
				size = len(res.Data)
			}
			b.ReportMetric(float64(size), "bytes/rendition")
		})
	}
}

// BenchmarkDecode measures decoding a stored 1344×768 PNG output image.
func BenchmarkDecode(b *testing.B) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, testImage(1344, 768)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(bytes.NewReader(buf.Bytes()), 0); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
