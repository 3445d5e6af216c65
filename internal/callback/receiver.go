package callback

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/genimg/genimg/internal/webhook"
	"github.com/genimg/genimg/job"
)

// maxReceiveBytes bounds a callback body a Receiver reads: a record is
// small (images are named, not carried).
const maxReceiveBytes = 4 << 20

// A Receiver is a callback endpoint for trying callbacks (genimg listen):
// it verifies each delivery's Standard Webhooks signature, answers 204 (or
// 401 for a bad signature), and writes one line per delivery to Out —
// JSON (the headers that matter and the record) when JSON is set.
// Repeated deliveries of one webhook-id are marked as such.
type Receiver struct {
	Key       webhook.Key
	Tolerance time.Duration
	Out       io.Writer
	JSON      bool

	mu   sync.Mutex
	seen map[string]int
}

// ServeHTTP verifies and prints one delivery.
func (rv *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST the completion event here", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReceiveBytes+1))
	if err != nil || len(body) > maxReceiveBytes {
		http.Error(w, "unreadable or too large body", http.StatusBadRequest)
		return
	}
	tolerance := rv.Tolerance
	if tolerance == 0 {
		tolerance = 5 * time.Minute
	}
	id, err := webhook.Verify(rv.Key, r.Header, body, time.Now(), tolerance)
	rv.mu.Lock()
	if rv.seen == nil {
		rv.seen = map[string]int{}
	}
	if err == nil {
		rv.seen[id]++
	}
	n := rv.seen[id]
	rv.mu.Unlock()
	var rec job.Record
	json.Unmarshal(body, &rec)
	if rv.JSON {
		line := map[string]any{
			"verified": err == nil, "webhookId": r.Header.Get(webhook.HeaderID), "delivery": n,
			"type": r.Header.Get("ce-type"), "subject": r.Header.Get("ce-subject"), "outcome": r.Header.Get("ce-outcome"),
			"traceparent": r.Header.Get("ce-traceparent"), "record": json.RawMessage(body),
		}
		if err != nil {
			line["error"] = err.Error()
			delete(line, "record")
		}
		b, _ := json.Marshal(line)
		fmt.Fprintf(rv.Out, "%s\n", b)
	} else if err != nil {
		fmt.Fprintf(rv.Out, "REJECTED %s: %v\n", r.Header.Get(webhook.HeaderID), err)
	} else {
		again := ""
		if n > 1 {
			again = fmt.Sprintf(" (delivery %d of this webhook-id)", n)
		}
		fmt.Fprintf(rv.Out, "%s %s %s %d image(s) $%.4f%s\n", r.Header.Get("ce-subject"), rec.Outcome, id, len(rec.Outputs), rec.CostUSD, again)
		for _, o := range rec.Outputs {
			fmt.Fprintf(rv.Out, "  %s %dx%d\n", o.URI, o.Width, o.Height)
		}
		if rec.Error != nil {
			fmt.Fprintf(rv.Out, "  error: %s\n", rec.Error.Message)
		}
	}
	if err != nil {
		http.Error(w, "signature rejected", http.StatusUnauthorized)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
