package storage

import (
	"context"
	"sync"
	"time"
)

// spoolChunk is the unit the spool holds output images in: pooled, so that
// a spooled image is never reallocated as it grows, and the budget counts
// the memory actually held.
const spoolChunk = 64 << 10

var spoolChunks = sync.Pool{New: func() any {
	b := make([]byte, 0, spoolChunk)
	return &b
}}

// A spool holds an output image's bytes in pooled chunks, within the
// store's budget (GENIMG_SPOOL_BYTES): while it streams to Cloud Storage,
// and after, should its upload fail, until it is written (Outputs.Flush).
type spool struct {
	s      *Store
	chunks []*[]byte
	n      int
	// reserved counts the chunks taken from the budget: those held, or
	// about to be.
	reserved int
}

// write keeps p, or, when the budget has no room for the chunks p needs,
// keeps none of it and answers false.
func (b *spool) write(p []byte) bool {
	// Room: what the last chunk has left, and the chunks reserved but not
	// yet taken from the pool.
	room := (b.reserved - len(b.chunks)) * spoolChunk
	if len(b.chunks) > 0 {
		room += spoolChunk - len(*b.chunks[len(b.chunks)-1])
	}
	if more := (len(p) - room + spoolChunk - 1) / spoolChunk; more > 0 {
		if !b.s.reserve(more * spoolChunk) {
			return false
		}
		b.reserved += more
	}
	for len(p) > 0 {
		if len(b.chunks) == 0 || len(*b.chunks[len(b.chunks)-1]) == spoolChunk {
			b.chunks = append(b.chunks, spoolChunks.Get().(*[]byte))
		}
		c := b.chunks[len(b.chunks)-1]
		k := min(len(p), spoolChunk-len(*c))
		*c = append(*c, p[:k]...)
		p, b.n = p[k:], b.n+k
	}
	return true
}

// reserveAhead reserves room for n bytes before any is written, waiting up
// to wait for other images to give theirs back (see ImageWriter).
func (b *spool) reserveAhead(ctx context.Context, n int, wait time.Duration) bool {
	chunks := (n + spoolChunk - 1) / spoolChunk
	if !b.s.spooled.awaitRoom(ctx, int64(chunks*spoolChunk), b.s.cfg.SpoolBytes, wait) {
		return false
	}
	b.reserved += chunks
	return true
}

// parts are the bytes held, in order.
func (b *spool) parts() [][]byte {
	out := make([][]byte, len(b.chunks))
	for i, c := range b.chunks {
		out[i] = *c
	}
	return out
}

// release gives the chunks back to the pool and the budget.
func (b *spool) release() {
	for _, c := range b.chunks {
		*c = (*c)[:0]
		spoolChunks.Put(c)
	}
	b.s.unreserve(b.reserved * spoolChunk)
	b.chunks, b.n, b.reserved = nil, 0, 0
}

// A spoolBudget counts the bytes spools hold, and lets a new image wait for
// room (awaitRoom). The zero value is an empty budget.
type spoolBudget struct {
	mu   sync.Mutex
	used int64
	// freed is closed, and replaced, whenever bytes are given back.
	freed chan struct{}
}

// take takes n bytes if used stays within max.
func (b *spoolBudget) take(n, max int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > max {
		return false
	}
	b.used += n
	return true
}

// give gives n bytes back and wakes the waiters.
func (b *spoolBudget) give(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if b.freed != nil {
		close(b.freed)
		b.freed = nil
	}
}

// Load is the bytes taken.
func (b *spoolBudget) Load() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// awaitRoom takes n bytes, waiting for others to give bytes back while ctx
// lasts, at most wait; false if it could not.
func (b *spoolBudget) awaitRoom(ctx context.Context, n, max int64, wait time.Duration) bool {
	if n > max {
		return false
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if b.used+n <= max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		if b.freed == nil {
			b.freed = make(chan struct{})
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
