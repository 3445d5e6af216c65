package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
// running (once an instance has claimed it), one image event per image as
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
	running := false
	seen := map[string]bool{}
	delay := 100 * time.Millisecond
	for {
		rec, _, claimed, err := a.store.Status(ctx, j.ID)
		switch {
		case rec != nil && rec.Fingerprint != fp:
			emit("error", map[string]any{"code": http.StatusConflict, "message": "job id " + j.ID + " was already used for a different job"})
			return
		case rec != nil:
			for _, o := range rec.Outputs {
				if !seen[o.URI] {
					emit("image", o)
				}
			}
			emit("record", rec)
			return
		case err != nil && !errors.Is(err, storage.ErrNotFound) && ctx.Err() == nil:
			slog.WarnContext(ctx, "reading the job's state", "error", err)
		}
		if claimed && !running {
			running = emit("running", map[string]string{"jobId": j.ID})
		}
		if running {
			uris, _ := a.store.StoredSoFar(ctx, j.ID, &j)
			for _, u := range uris {
				if !seen[u] {
					seen[u] = true
					emit("image", map[string]string{"uri": u})
				}
			}
		}
		select {
		case <-ctx.Done():
			emit("timeout", map[string]string{"jobId": j.ID, "location": loc, "message": "the job is still running; poll its location"})
			return
		case <-time.After(delay):
			delay = min(delay*3/2, time.Second)
		}
	}
}
