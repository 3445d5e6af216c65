package genimg

import (
	"context"
	"errors"
	"fmt"
	"io"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/trigger"
)

// completeUpload finishes decoding an upload that needs the object itself:
// a notification that carried no metadata, or a job file whose content is
// the job. Reads are pinned to the event's generation.
func (s *Service) completeUpload(ctx context.Context, d trigger.Delivery) (trigger.Delivery, error) {
	if d.Ignore != "" || d.Object == nil {
		return d, nil
	}
	o := *d.Object
	obj := s.gcs.Bucket(o.Bucket).Object(o.Name)
	if o.Generation != 0 {
		obj = obj.Generation(int64(o.Generation))
	}
	if !o.MetadataKnown {
		attrs, err := obj.Attrs(ctx)
		if errors.Is(err, gcs.ErrObjectNotExist) {
			d.Ignore = "the uploaded object no longer exists"
			return d, nil
		}
		if err != nil {
			return d, fmt.Errorf("%w: reading %s: %v", job.ErrTransient, o.Source(), err)
		}
		o.Metadata, o.ContentType, o.Size = attrs.Metadata, attrs.ContentType, trigger.Int64(attrs.Size)
		o.Generation, o.MetadataKnown = trigger.Int64(attrs.Generation), true
		d = trigger.FromObject(o, d.Time, s.cfg.Uploads)
	}
	if d.Ignore != "" || d.Object == nil || !d.Object.JobFile {
		return d, nil
	}
	limit := s.cfg.Limits.MaxRequestBytes
	if int64(d.Object.Size) > limit {
		d.Err = fmt.Errorf("%w: job file %s is %d bytes; at most %d", job.ErrTooLarge, o.URI(), d.Object.Size, limit)
		return d, nil
	}
	r, err := obj.NewReader(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		d.Ignore = "the uploaded job file no longer exists"
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("%w: reading %s: %v", job.ErrTransient, o.Source(), err)
	}
	defer r.Close()
	content, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return d, fmt.Errorf("%w: reading %s: %v", job.ErrTransient, o.Source(), err)
	}
	if int64(len(content)) > limit {
		d.Err = fmt.Errorf("%w: job file %s is over %d bytes", job.ErrTooLarge, o.URI(), limit)
		return d, nil
	}
	return trigger.JobFile(d, content), nil
}
