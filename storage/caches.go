package storage

import (
	"context"
	"errors"
)

// maxCacheRecordBytes bounds a cache record's read.
const maxCacheRecordBytes = 1 << 20

// CacheRecords keeps shared contexts' cache records at
// caches/<context>.json in the output bucket, so that every instance reuses
// one model cache per context (gemini.CacheStore). Last writer wins.
type CacheRecords struct{ objects *Objects }

// NewCacheRecords keeps records in objects (the output bucket).
func NewCacheRecords(objects *Objects) CacheRecords { return CacheRecords{objects} }

// LoadCache reads a context's record; nil, nil when there is none.
func (c CacheRecords) LoadCache(ctx context.Context, name string) ([]byte, error) {
	data, _, err := c.objects.Get(ctx, CacheObject(name), maxCacheRecordBytes)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return data, err
}

// SaveCache writes a context's record.
func (c CacheRecords) SaveCache(ctx context.Context, name string, record []byte) error {
	_, err := c.objects.Put(ctx, CacheObject(name), record, Put{If: Overwrite, ContentType: "application/json"})
	return err
}
