package httpapi

import (
	"fmt"
	"net/http"
	"sync"

	"github.com/genimg/genimg/job"
)

// Large bodies (inline images) are read and staged a bounded number at a
// time per instance: each holds its decoded images (≈ ¾ of the body) from
// the read until they are staged, so maxLargeBodies × GENIMG_MAX_REQUEST_BYTES
// × ¾ bounds what request bodies hold at once. Others wait their turn;
// small bodies never wait. Eight hold half what sixteen did; lowered
// together with storage's staged-input budget, side.sh's 50 edits in flight
// ran at 38.4 and 30.7 jobs/s (two runs) against 35.5 before (one run).
const (
	largeBody      = 256 << 10
	maxLargeBodies = 8
)

// admitBody takes a slot for a large (or unsized) body, waiting for one
// while the caller stays. release gives it back; calling it again is a
// no-op.
func (a *API) admitBody(r *http.Request) (release func(), err error) {
	if r.ContentLength >= 0 && r.ContentLength <= largeBody {
		return func() {}, nil
	}
	select {
	case a.large <- struct{}{}: // a free slot is taken even if the caller is leaving
	default:
		select {
		case a.large <- struct{}{}:
		case <-r.Context().Done():
			return nil, fmt.Errorf("%w: the caller went away while waiting to read the body", job.ErrInvalid)
		}
	}
	var once sync.Once
	return func() { once.Do(func() { <-a.large }) }, nil
}
