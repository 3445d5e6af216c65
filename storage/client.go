package storage

import (
	"context"
	"fmt"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/option"
)

// DialObjects is bucket on a Cloud Storage client of its own, made with
// opts, for a program that holds no Store (the command line). The emulator
// is found through STORAGE_EMULATOR_HOST, as the client library defines
// it. closeClient closes the client, and with it every Objects made from
// this one by In.
func DialObjects(ctx context.Context, bucket string, opts ...option.ClientOption) (_ *Objects, closeClient func() error, _ error) {
	client, err := newClient(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	return NewObjects(client, bucket, 0, 0), client.Close, nil
}

// newClient is a Cloud Storage client with JSON reads: the XML path fails
// against fake-gcs-server unless its public host matches, and costs
// nothing here.
func newClient(ctx context.Context, opts []option.ClientOption) (*gcs.Client, error) {
	client, err := gcs.NewClient(ctx, append([]option.ClientOption{gcs.WithJSONReads()}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("cloud storage client: %w", err)
	}
	return client, nil
}

// ClaimObject is where a job's lease lives: a job with a claim and no
// record is running.
func ClaimObject(id string) string { return jobObject(id, claimFile) }

// Upload writes data at name as a person's upload does: unconditionally,
// and without the MetaGeneratedBy mark that Put and Writer give everything
// genimg writes, so that the upload trigger takes it for a job.
func (o *Objects) Upload(ctx context.Context, name string, data []byte, contentType string, metadata map[string]string) (Attrs, error) {
	a, err := o.write(ctx, name, [][]byte{data}, contentType, "", metadata, nil)
	if err != nil {
		return Attrs{}, classify(err, "uploading "+o.uri(name))
	}
	return attrsOf(a), nil
}

// Uploads reads uploaded objects, pinned to a generation, on o's client.
func (o *Objects) Uploads() Uploads { return Uploads{o.client} }
