package storage

import (
	"context"
	"errors"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/trigger"
)

// Uploads reads uploaded objects for the upload trigger
// (trigger.ObjectReader), pinned to the event's generation, so that an
// object overwritten after the event is never mistaken for the one that
// triggered it.
type Uploads struct{ client *gcs.Client }

// Uploads is the trigger's reader on the store's client.
func (s *Store) Uploads() Uploads { return Uploads{s.client} }

func (u Uploads) handle(o trigger.Object) *gcs.ObjectHandle {
	obj := u.client.Bucket(o.Bucket).Object(o.Name)
	if o.Generation != 0 {
		obj = obj.Generation(int64(o.Generation))
	}
	return obj
}

// StatObject answers o's attributes as stored.
func (u Uploads) StatObject(ctx context.Context, o trigger.Object) (trigger.Object, bool, error) {
	a, err := u.handle(o).Attrs(ctx)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return o, false, nil
	}
	if err != nil {
		return o, false, classify(err, "reading "+o.Source())
	}
	o.Metadata, o.ContentType = a.Metadata, a.ContentType
	o.Size, o.Generation = trigger.Int64(a.Size), trigger.Int64(a.Generation)
	return o, true, nil
}

// ReadObject answers at most limit bytes of o.
func (u Uploads) ReadObject(ctx context.Context, o trigger.Object, limit int64) ([]byte, bool, error) {
	data, err := readAll(ctx, u.handle(o), limit)
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, classify(err, "reading "+o.Source())
	}
	return data, true, nil
}
