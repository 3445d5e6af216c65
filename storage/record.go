package storage

import (
	"context"
	"errors"
	"fmt"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/job"
)

// Record reads a job's record alone, in one request: what Generate needs
// before it queues a job (Status also reads the claim when there is no
// record, to tell running from unknown). A job without a record is
// ErrNotFound.
func (s *Store) Record(ctx context.Context, jobID string) (*job.Record, error) {
	dir, err := jobDir(jobID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	rec, _, _, err := s.readRecord(ctx, dir)
	switch {
	case errors.Is(err, gcs.ErrObjectNotExist):
		return nil, fmt.Errorf("job %s: %w", jobID, ErrNotFound)
	case err != nil:
		return nil, classify(err, "reading "+dir+resultFile)
	}
	return &rec, nil
}
