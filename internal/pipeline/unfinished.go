package pipeline

import (
	"context"
	"sync"
	"time"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// maxUnfinished bounds the answers an instance keeps in memory for lack of
// a draft: each is a record, a few KB, and the images the spool still holds
// (within GENIMG_SPOOL_BYTES).
const maxUnfinished = 256

// keepUnfinished is how long an answer waits for its redelivery on this
// instance: the platform's first retries come within minutes; past that
// the redelivery has most likely gone to another instance, and the memory
// (the spool's images above all) is given back.
const keepUnfinished = 10 * time.Minute

// unfinished keeps, per job, a paid answer whose images are stored but
// whose draft Cloud Storage refused past every retry: the redelivery, when
// it comes to this instance, commits it instead of paying for the model
// again. On another instance the answer is lost and paid again (counted in
// the record's attempts and cost): the draft is the durable copy, this is
// the instance's last resort.
type unfinished struct {
	mu    sync.Mutex
	kept  map[string]answer
	order []string
}

// An answer is a paid model answer not yet committed: its record, and the
// outputs whose images may still wait in memory (storage.Outputs.Flush).
type answer struct {
	rec     job.Record
	at      time.Time // when it was kept
	outputs *storage.Outputs
	// after completes the record once the images are stored, if it has not
	// run yet (Service.finish).
	after func(context.Context, *job.Record)
}

func (u *unfinished) keep(now time.Time, rec job.Record, outputs *storage.Outputs, after func(context.Context, *job.Record)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.expire(now)
	if u.kept == nil {
		u.kept = map[string]answer{}
	}
	if old, ok := u.kept[rec.JobID]; ok {
		old.discard()
	} else {
		u.order = append(u.order, rec.JobID)
	}
	u.kept[rec.JobID] = answer{rec: rec, at: now, outputs: outputs, after: after}
	for len(u.order) > maxUnfinished {
		u.kept[u.order[0]].discard()
		delete(u.kept, u.order[0])
		u.order = u.order[1:]
	}
}

func (a answer) discard() {
	if a.outputs != nil {
		a.outputs.Discard()
	}
}

// take hands back the kept answer of a job of this fingerprint, once.
func (u *unfinished) take(now time.Time, id, fingerprint string) (answer, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.expire(now)
	a, ok := u.kept[id]
	if !ok || a.rec.Fingerprint != fingerprint {
		return answer{}, false
	}
	delete(u.kept, id)
	return a, true
}

// expire drops the answers kept longer than keepUnfinished (oldest first).
func (u *unfinished) expire(now time.Time) {
	for len(u.order) > 0 {
		a, ok := u.kept[u.order[0]]
		if ok && now.Sub(a.at) < keepUnfinished {
			return
		}
		if ok {
			a.discard()
			delete(u.kept, u.order[0])
		}
		u.order = u.order[1:]
	}
}
