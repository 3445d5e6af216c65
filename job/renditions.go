package job

import (
	"fmt"
	"slices"
	"strings"
)

// A Rendition asks for a web-ready copy of every output image (contract
// 9.4): the image in Format, at most MaxSize pixels on its longest side
// (never upscaled, aspect ratio kept), written beside the image and listed
// in the record under outputs[i].renditions.
//
// In JSON:
//
//	"renditions": [{"format": "webp", "maxSize": 512}, {"format": "jpeg", "maxSize": 256, "quality": 80}]
type Rendition struct {
	// Format is one of RenditionFormats.
	Format string `json:"format"`
	// MaxSize is the longest side in pixels, MinRenditionSize to
	// MaxRenditionSize.
	MaxSize int `json:"maxSize"`
	// Quality is the JPEG quality, 1 to 100 (0: DefaultJPEGQuality). WebP
	// renditions are lossless (the pure-Go encoder genimg uses has no lossy
	// mode), so quality does not change them; PNG takes none.
	Quality int `json:"quality,omitempty"`
}

// Rendition limits. The size bounds keep a rendition a thumbnail-to-web
// image: below 16 px nothing is recognisable, and 4096 covers every output
// size of the image models (their 4K outputs are larger on one side, and
// are then scaled down). Four renditions per image bound the CPU one job
// spends after its model call (BENCHMARKS.md, "renditions").
const (
	MinRenditionSize   = 16
	MaxRenditionSize   = 4096
	MaxRenditions      = 4
	DefaultJPEGQuality = 85
)

// The rendition formats.
const (
	FormatWebP = "webp"
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
)

// RenditionFormats are the accepted Rendition.Format values.
var RenditionFormats = []string{FormatWebP, FormatJPEG, FormatPNG}

var renditionFieldNames = []string{"format", "maxSize", "quality"}

// normalizeRenditions lower-cases the formats, so that "WebP" and "webp"
// are the same work.
func (j *Job) normalizeRenditions() {
	for i := range j.Renditions {
		r := &j.Renditions[i]
		r.Format = strings.ToLower(strings.TrimSpace(r.Format))
	}
}

// ValidateRenditions checks renditions as a job or an upload rule carries
// them; where names the field in messages ("renditions").
func ValidateRenditions(where string, rs []Rendition) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(rs) > MaxRenditions {
		bad("%s: %d renditions; at most %d per job", where, len(rs), MaxRenditions)
	}
	type key struct {
		format string
		size   int
	}
	seen := map[key]bool{}
	for i, r := range rs {
		at := fmt.Sprintf("%s[%d]", where, i)
		if !slices.Contains(RenditionFormats, r.Format) {
			bad("%s.format %q: accepted: %s", at, truncate(r.Format), strings.Join(RenditionFormats, ", "))
		}
		if r.MaxSize < MinRenditionSize || r.MaxSize > MaxRenditionSize {
			bad("%s.maxSize %d: the longest side in pixels, %d to %d", at, r.MaxSize, MinRenditionSize, MaxRenditionSize)
		}
		switch {
		case r.Quality < 0 || r.Quality > 100:
			bad("%s.quality %d: accepted 1 to 100 (or leave it out for %d)", at, r.Quality, DefaultJPEGQuality)
		case r.Quality != 0 && r.Format == FormatPNG:
			bad("%s.quality: png is lossless and takes no quality; leave it out", at)
		}
		// Each rendition is named by its image, size and format: two alike
		// would be one object.
		k := key{r.Format, r.MaxSize}
		if seen[k] {
			bad("%s: a %s rendition of maxSize %d is asked for twice", at, r.Format, r.MaxSize)
		}
		seen[k] = true
	}
	return errs
}
