// Package render makes renditions of output images (contract 9.4): a
// smaller copy in WebP, JPEG or PNG, scaled with Catmull-Rom, never
// upscaled, its aspect ratio kept.
//
// It is pure: it decodes from a reader and encodes to bytes, so that the
// caller decides where images come from and go (the pipeline reads each
// stored image back from Cloud Storage and writes its renditions beside
// it, one decoded image at a time).
//
// Encoders are pure Go, because a deploy builds from source on Cloud Build
// without a cgo toolchain: image/jpeg and image/png from the standard
// library, and github.com/HugoSmits86/nativewebp for WebP, which is
// lossless only (VP8L). A lossless WebP of a photograph is several times
// the bytes of a lossy one at quality 80 and larger than a JPEG at 85; the
// alternative, github.com/gen2brain/webp (libwebp compiled to WASM, run by
// wazero), is lossy but starts a WASM runtime per process and costs more
// CPU per image. BENCHMARKS.md, "renditions", has the numbers.
package render

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math"

	"github.com/HugoSmits86/nativewebp"
	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // decode WebP output images

	"github.com/genimg/genimg/job"
)

// Size is the size of a rendition of a width×height image at most maxSize
// on its longest side: the longest side becomes maxSize (or stays, if it is
// not longer: never upscaled), and the short side is the long side scaled
// by the image's own ratio, rounded to the nearest pixel (at least 1).
func Size(width, height, maxSize int) (w, h int) {
	long, short := width, height
	if height > width {
		long, short = height, width
	}
	if long <= maxSize || long == 0 {
		return width, height
	}
	s := max(1, int(math.Round(float64(short)*float64(maxSize)/float64(long))))
	if height > width {
		return s, maxSize
	}
	return maxSize, s
}

// MIMEType is the content type of format's renditions.
func MIMEType(format string) string {
	switch format {
	case job.FormatWebP:
		return "image/webp"
	case job.FormatJPEG:
		return "image/jpeg"
	case job.FormatPNG:
		return "image/png"
	}
	return ""
}

// Extension is the file extension of format's renditions.
func Extension(format string) string {
	if format == job.FormatJPEG {
		return "jpg"
	}
	return format
}

// Decode reads an image, refusing one of more than maxPixels pixels before
// decoding it (0: no bound): a decoded image costs 4 bytes a pixel.
func Decode(r io.Reader, maxPixels int64) (image.Image, error) {
	var head bytes.Buffer
	cfg, _, err := image.DecodeConfig(io.TeeReader(r, &head))
	if err != nil {
		return nil, fmt.Errorf("reading the image's header: %w", err)
	}
	if maxPixels > 0 && int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, fmt.Errorf("image is %d×%d, over %d pixels", cfg.Width, cfg.Height, maxPixels)
	}
	img, _, err := image.Decode(io.MultiReader(&head, r))
	if err != nil {
		return nil, fmt.Errorf("decoding the image: %w", err)
	}
	return img, nil
}

// A Result is one rendition, encoded.
type Result struct {
	Data          []byte
	MIMEType      string
	Width, Height int
}

// Make scales src to r's size and encodes it in r's format. The scaled
// image is the only pixel buffer it allocates; it is garbage once Make
// returns.
func Make(src image.Image, r job.Rendition) (Result, error) {
	b := src.Bounds()
	w, h := Size(b.Dx(), b.Dy(), r.MaxSize)
	img := src
	if w != b.Dx() || h != b.Dy() {
		// RGBA: the JPEG encoder's fast path (an NRGBA goes pixel by pixel).
		dst := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
		img = dst
	}
	var buf bytes.Buffer
	var err error
	switch r.Format {
	case job.FormatJPEG:
		q := r.Quality
		if q == 0 {
			q = job.DefaultJPEGQuality
		}
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: q})
	case job.FormatPNG:
		err = (&png.Encoder{CompressionLevel: png.DefaultCompression}).Encode(&buf, img)
	case job.FormatWebP:
		err = nativewebp.Encode(&buf, img, nil)
	default:
		return Result{}, fmt.Errorf("rendition format %q: accepted: %v", r.Format, job.RenditionFormats)
	}
	if err != nil {
		return Result{}, fmt.Errorf("encoding a %s rendition: %w", r.Format, err)
	}
	return Result{Data: buf.Bytes(), MIMEType: MIMEType(r.Format), Width: w, Height: h}, nil
}
