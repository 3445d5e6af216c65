package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// maxStreamBytes is Cloud Run's limit on a streamed response (10 MiB).
// Images are reported by URI, so a stream stays far below it; the guard
// keeps a pathological record from crossing it.
const maxStreamBytes = 10 << 20

// wantsStream reports whether the caller asked for server-sent events.
func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// stream reports a queued job's progress as server-sent events: accepted,
// state on every change of the job's state (queued, held, running, …),
// running once an instance has claimed it, one image event per image as
// it is stored, then the record. The job runs in OnMessage — durably, on
// whichever instance takes it — so the stream watches its state in Cloud
// Storage rather than the model call itself; text parts arrive with the
// record. When the wait runs out the stream ends with a timeout event that
// says where to poll; the job goes on.
func (a *API) stream(ctx context.Context, w http.ResponseWriter, r *http.Request, j job.Job, fp string, wait time.Duration) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	sent := 0
	emit := func(name string, v any) bool {
		data, err := json.Marshal(v)
		if err != nil || sent+len(data) > maxStreamBytes {
			return false
		}
		n, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
		sent += n
		return err == nil && rc.Flush() == nil
	}
	loc := location(r, j.ID)
	if !emit("accepted", map[string]string{"jobId": j.ID, "location": loc}) {
		return
	}

	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	state := job.State("")
	seen := map[string]bool{}
	st, err := a.follow(ctx, j.ID, func(st storage.JobStatus) bool {
		if st.State != state {
			state = st.State
			if !emit("state", pending{JobID: j.ID, State: st.State, Reason: st.Reason, Since: st.Since}) {
				return false
			}
			if st.State == job.Running && !emit("running", map[string]string{"jobId": j.ID}) {
				return false
			}
		}
		if st.State == job.Running {
			uris, _ := a.store.StoredSoFar(ctx, j.ID, &j)
			for _, u := range uris {
				if !seen[u] {
					seen[u] = true
					emit("image", map[string]string{"uri": u})
				}
			}
		}
		return true
	})
	switch {
	case st.State == job.Done && st.Fingerprint != fp:
		emit("error", map[string]any{"code": http.StatusConflict, "message": "job id " + j.ID + " was already used for a different job"})
	case st.State == job.Done:
		for _, o := range st.Record.Outputs {
			if !seen[o.URI] {
				emit("image", o)
			}
		}
		emit("record", st.Record)
	case err != nil:
		emit("timeout", map[string]string{"jobId": j.ID, "location": loc, "message": "the job is still " + string(state) + "; poll its location"})
	}
}
