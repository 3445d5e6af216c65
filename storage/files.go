package storage

import (
	"context"
	"fmt"
	"strings"

	"github.com/genimg/genimg/job"
)

// maxBatchFileBytes bounds one batch file read (a chunk's requests or
// predictions: 16 jobs of inline images stay far below it).
const maxBatchFileBytes = 1 << 30

// BatchFiles reads and writes a Vertex AI batch's JSONL files by gs:// URI
// (gemini.BatchFiles), marked as genimg's so they never become upload jobs.
type BatchFiles struct{ objects *Objects }

// NewBatchFiles uses objects' client for any bucket a URI names.
func NewBatchFiles(objects *Objects) BatchFiles { return BatchFiles{objects} }

// splitURI splits gs://bucket/object.
func splitURI(uri string) (bucket, object string, err error) {
	rest, ok := strings.CutPrefix(uri, "gs://")
	bucket, object, _ = strings.Cut(rest, "/")
	if !ok || bucket == "" {
		return "", "", fmt.Errorf("%w: %q is not a gs:// URI", job.ErrPermanent, uri)
	}
	return bucket, object, nil
}

// Write stores data at uri.
func (f BatchFiles) Write(ctx context.Context, uri string, data []byte) error {
	bucket, object, err := splitURI(uri)
	if err != nil {
		return err
	}
	_, err = f.objects.In(bucket).Put(ctx, object, data, Put{If: Overwrite, ContentType: "application/jsonl"})
	return err
}

// List names the objects under a gs:// prefix.
func (f BatchFiles) List(ctx context.Context, prefix string) ([]string, error) {
	bucket, object, err := splitURI(prefix)
	if err != nil {
		return nil, err
	}
	var out []string
	err = f.objects.In(bucket).List(ctx, object, "", func(a Attrs) error {
		out = append(out, gsURI(bucket, a.Name))
		return nil
	})
	return out, err
}

// Read returns the object at uri.
func (f BatchFiles) Read(ctx context.Context, uri string) ([]byte, error) {
	bucket, object, err := splitURI(uri)
	if err != nil {
		return nil, err
	}
	data, _, err := f.objects.In(bucket).Get(ctx, object, maxBatchFileBytes)
	return data, err
}
