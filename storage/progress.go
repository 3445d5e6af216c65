package storage

import (
	"context"
	"errors"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/job"
)

// StoredSoFar lists the images already written to a job's folder (by any
// attempt), for progress reports while the job runs. The record decides
// which of them are the job's; this is only a view of the work under way.
func (s *Store) StoredSoFar(ctx context.Context, jobID string, j *job.Job) ([]string, error) {
	folder, err := s.folder(jobID, j)
	if err != nil {
		return nil, err
	}
	it := s.client.Bucket(s.cfg.OutputBucket).Objects(ctx, &gcs.Query{Prefix: folder, Delimiter: "/"})
	var uris []string
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return uris, nil
		}
		if err != nil {
			return uris, classify(err, "listing "+folder)
		}
		if a.Name != "" && imageName.MatchString(a.Name[len(folder):]) {
			uris = append(uris, gsURI(s.cfg.OutputBucket, a.Name))
		}
	}
}
