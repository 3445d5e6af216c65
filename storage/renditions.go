package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/genimg/genimg/job"
)

// OpenOutput opens one of the job's stored output images for reading, so
// that its renditions are made from the bytes Cloud Storage holds: the
// image stream was written as it arrived and no copy of it is in memory.
func (s *Store) OpenOutput(ctx context.Context, img job.StoredImage) (io.ReadCloser, error) {
	bucket, name, err := job.ParseGCS(img.URI)
	if err != nil || bucket != s.cfg.OutputBucket {
		return nil, fmt.Errorf("%w: %s is not an output image", job.ErrInvalid, img.URI)
	}
	r, err := s.client.Bucket(bucket).Object(name).NewReader(ctx)
	if err != nil {
		return nil, classify(err, "reading "+img.URI)
	}
	return r, nil
}

// RenditionName is where a rendition of the output image named image goes:
// beside it, as <image without extension>_<maxSize>.<ext>
// (images/JOB/a1-0.png → images/JOB/a1-0_256.webp).
func RenditionName(image string, maxSize int, ext string) string {
	if i := strings.LastIndexByte(image, '.'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image + "_" + strconv.Itoa(maxSize) + "." + ext
}

// WriteRendition writes one rendition of c's output image of (create-only,
// read back on a 412 as images are) with the image's metadata and
// meta.CacheControl, and returns what the record says of it.
func (s *Store) WriteRendition(ctx context.Context, c *Claim, of job.StoredImage, maxSize int, ext, mime string,
	width, height int, data []byte, meta ImageMeta) (job.StoredImage, error) {
	_, image, err := job.ParseGCS(of.URI)
	if err != nil {
		return job.StoredImage{}, err
	}
	name := RenditionName(image, maxSize, ext)
	if c.folder != "" && !within(c.folder, name) {
		return job.StoredImage{}, fmt.Errorf("%w: rendition name %q escapes %s", job.ErrInvalid, name, c.folder)
	}
	md := map[string]string{
		MetaJob: c.JobID, MetaModel: meta.Model, MetaPromptSHA256: meta.PromptSHA256,
		MetaGeneratedBy: GeneratedBy, "genimg-attempt": strconv.Itoa(c.Attempt), "genimg-rendition-of": of.URI,
	}
	if meta.Source != "" {
		md[MetaSource] = meta.Source
	}
	if err := s.createOnce(ctx, name, data, mime, meta.CacheControl, md); err != nil {
		return job.StoredImage{}, err
	}
	c.written = append(c.written, name)
	sum := sha256.Sum256(data)
	st := job.StoredImage{URI: gsURI(s.cfg.OutputBucket, name), MIMEType: mime, Bytes: int64(len(data)),
		Width: width, Height: height, SHA256: hex.EncodeToString(sum[:])}
	slog.InfoContext(ctx, "rendition stored", "jobId", c.JobID, "uri", st.URI, "bytes", st.Bytes)
	return st, nil
}

// renditionURIs lists an output image's renditions.
func renditionURIs(o job.StoredImage) []string {
	uris := make([]string, 0, len(o.Renditions))
	for _, r := range o.Renditions {
		uris = append(uris, r.URI)
	}
	return uris
}
