package trigger

import (
	"context"
	"fmt"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// An ObjectReader reads the uploaded object an event names, pinned to the
// event's generation (any generation when it is 0). found is false when
// the object no longer exists; other errors are classified by the reader.
type ObjectReader interface {
	// StatObject answers o with its Metadata, ContentType, Size and
	// Generation as stored.
	StatObject(ctx context.Context, o Object) (attrs Object, found bool, err error)
	// ReadObject answers at most limit bytes of o's content.
	ReadObject(ctx context.Context, o Object, limit int64) (data []byte, found bool, err error)
}

// CompleteUpload finishes decoding an upload that needs the object itself:
// a notification that carried no metadata is decided on the object's
// attributes, and a job file's content becomes the job. An object deleted
// meanwhile is ignored; a job file over maxBytes fails its job. The error
// is the reader's, transient: the delivery is retried.
func CompleteUpload(ctx context.Context, d Delivery, r ObjectReader, u config.Uploads, maxBytes int64) (Delivery, error) {
	if d.Ignore != "" || d.Object == nil {
		return d, nil
	}
	o := *d.Object
	if !o.MetadataKnown {
		attrs, found, err := r.StatObject(ctx, o)
		if err != nil {
			return d, fmt.Errorf("%w: reading %s: %w", job.ErrTransient, o.Source(), err)
		}
		if !found {
			d.Ignore = "the uploaded object no longer exists"
			return d, nil
		}
		o.Metadata, o.ContentType, o.Size = attrs.Metadata, attrs.ContentType, attrs.Size
		o.Generation, o.MetadataKnown = attrs.Generation, true
		d = FromObject(o, d.Time, u)
	}
	if d.Ignore != "" || d.Object == nil || !d.Object.JobFile {
		return d, nil
	}
	if int64(d.Object.Size) > maxBytes {
		d.Err = fmt.Errorf("%w: job file %s is %d bytes; at most %d", job.ErrTooLarge, o.URI(), d.Object.Size, maxBytes)
		return d, nil
	}
	content, found, err := r.ReadObject(ctx, *d.Object, maxBytes+1)
	if err != nil {
		return d, fmt.Errorf("%w: reading %s: %w", job.ErrTransient, o.Source(), err)
	}
	if !found {
		d.Ignore = "the uploaded job file no longer exists"
		return d, nil
	}
	if int64(len(content)) > maxBytes {
		d.Err = fmt.Errorf("%w: job file %s is over %d bytes", job.ErrTooLarge, o.URI(), maxBytes)
		return d, nil
	}
	return JobFile(d, content), nil
}
