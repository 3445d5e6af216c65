package storage

import "sync"

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
	room := 0
	if len(b.chunks) > 0 {
		room = spoolChunk - len(*b.chunks[len(b.chunks)-1])
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
