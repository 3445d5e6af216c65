package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/gemini"
	"github.com/genimg/genimg/job"
)

// inStorage places a chunk's Vertex AI batch in the output bucket, under
// gs://OUTPUT/batches/<chunk>/ (input.jsonl, output/).
func (l *Lane) inStorage(chunk string) gemini.BatchOption {
	return gemini.InCloudStorage(files{l.client}, "gs://"+l.bucket+"/"+chunkDir(chunk))
}

func chunkDir(chunk string) string { return "batches/" + chunk + "/" }

// files is gemini.BatchFiles on the lane's Cloud Storage client.
type files struct{ client *gcs.Client }

// splitURI splits gs://bucket/object.
func splitURI(uri string) (bucket, object string, err error) {
	rest, ok := strings.CutPrefix(uri, "gs://")
	bucket, object, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" {
		return "", "", fmt.Errorf("%w: batch: %q is not a gs:// URI", job.ErrPermanent, uri)
	}
	return bucket, object, nil
}

// Write stores data at uri, marked as genimg's (loop guard).
func (f files) Write(ctx context.Context, uri string, data []byte) error {
	bucket, object, err := splitURI(uri)
	if err != nil {
		return err
	}
	w := f.client.Bucket(bucket).Object(object).NewWriter(ctx)
	w.ContentType = "application/jsonl"
	w.ChunkSize = 256 << 10
	w.Metadata = metadata
	if _, err := w.Write(data); err != nil {
		_ = w.Close()
		return fmt.Errorf("%w: writing %s: %w", job.ErrTransient, uri, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("%w: writing %s: %w", job.ErrTransient, uri, err)
	}
	return nil
}

// List names the objects under a gs:// prefix.
func (f files) List(ctx context.Context, prefix string) ([]string, error) {
	bucket, object, err := splitURI(prefix)
	if err != nil {
		return nil, err
	}
	it := f.client.Bucket(bucket).Objects(ctx, &gcs.Query{Prefix: object})
	var out []string
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: listing %s: %w", job.ErrTransient, prefix, err)
		}
		out = append(out, "gs://"+bucket+"/"+a.Name)
	}
}

// Read returns the object at uri.
func (f files) Read(ctx context.Context, uri string) ([]byte, error) {
	bucket, object, err := splitURI(uri)
	if err != nil {
		return nil, err
	}
	r, err := f.client.Bucket(bucket).Object(object).NewReader(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", job.ErrTransient, uri, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", job.ErrTransient, uri, err)
	}
	return data, nil
}
