package httpapi

import (
	"fmt"
	"net/http"
	"runtime"
	"sync"

	"github.com/genimg/genimg/job"
)

// Large bodies (inline images) are read and staged a bounded number at a
// time per instance (GENIMG_LARGE_BODIES; by default one per CPU, at least
// two): each holds its decoded images (≈ ¾ of the body) from the read until
// they are staged, so the slots × GENIMG_MAX_REQUEST_BYTES × ¾ bound what
// request bodies hold at once. Others wait their turn; small bodies never
// wait. Reading and staging are CPU work: on side.sh's two CPUs, 50 edits in
// flight ran as fast with two slots as with eight, in 60 MiB less (the
// figures are in BENCHMARKS.md). A caller that sends its body slowly holds
// its slot as long: raise the setting where callers upload over slow links.
const largeBody = 256 << 10

// largeBodies is how many large bodies an instance takes at once.
func largeBodies(setting int) int {
	if setting > 0 {
		return setting
	}
	return max(2, runtime.GOMAXPROCS(0))
}

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
