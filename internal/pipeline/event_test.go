package pipeline

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
)

// The completion event is the record in Pub/Sub binary content mode; its
// ce-id is derived from the record's content, so that the same record
// republished carries the same id, and another record another.
func TestCompletionMessage(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	rec := job.Record{JobID: "j1", Outcome: job.Succeeded, Trigger: job.Trigger{Kind: job.Upload, Source: "gs://in/a.png#1"},
		Timings: job.Timings{CompletedAt: at}}
	m1, err := completionMessage("//genimg/test", rec)
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := completionMessage("//genimg/test", rec)
	want := map[string]string{
		"ce-specversion": "1.0", "ce-type": job.EventType, "ce-source": "//genimg/test", "ce-id": m1.Attributes["ce-id"],
		"ce-subject": "jobs/j1", "ce-time": "2026-12-07T10:00:00Z", "content-type": "application/json",
		"ce-outcome": "succeeded", "ce-trigger": "upload",
	}
	for k, v := range want {
		if m1.Attributes[k] != v {
			t.Errorf("%s = %q, want %q", k, m1.Attributes[k], v)
		}
	}
	if m1.Attributes["ce-id"] != m2.Attributes["ce-id"] {
		t.Errorf("the same record has two ids: %s, %s", m1.Attributes["ce-id"], m2.Attributes["ce-id"])
	}
	other := rec
	other.Outcome = job.Failed
	m3, _ := completionMessage("//genimg/test", other)
	if m3.Attributes["ce-id"] == m1.Attributes["ce-id"] {
		t.Errorf("two records share the id %s", m1.Attributes["ce-id"])
	}
	var got job.Record
	if err := json.Unmarshal(m1.Data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rec, got); diff != "" {
		t.Errorf("data (-want +got):\n%s", diff)
	}
}

// A job's age runs from the first time genimg saw it.
func TestFirstSeen(t *testing.T) {
	a, b := time.Unix(100, 0), time.Unix(200, 0)
	for _, tt := range []struct{ x, y, want time.Time }{
		{a, b, a}, {b, a, a}, {time.Time{}, b, b}, {a, time.Time{}, a}, {time.Time{}, time.Time{}, time.Time{}},
	} {
		if got := firstSeen(tt.x, tt.y); !got.Equal(tt.want) {
			t.Errorf("firstSeen(%v, %v) = %v, want %v", tt.x, tt.y, got, tt.want)
		}
	}
}

// The unfinished answers of an instance are bounded and handed back once,
// only for the same work.
func TestUnfinished(t *testing.T) {
	var u unfinished
	now := time.Unix(1_800_000_000, 0)
	u.keep(now, job.Record{JobID: "a", Fingerprint: "fp"}, nil, nil)
	if _, ok := u.take(now, "a", "other"); ok {
		t.Error("an answer handed back for other work")
	}
	if got, ok := u.take(now, "a", "fp"); !ok || got.rec.JobID != "a" {
		t.Errorf("take = %+v, %v", got, ok)
	}
	if _, ok := u.take(now, "a", "fp"); ok {
		t.Error("an answer handed back twice")
	}
	for i := range maxUnfinished + 10 {
		u.keep(now, job.Record{JobID: string(rune('A'+i%26)) + string(rune('0'+i/26)), Fingerprint: "fp"}, nil, nil)
	}
	if n := len(u.kept); n != maxUnfinished {
		t.Errorf("%d answers kept, want at most %d", n, maxUnfinished)
	}
	// Past keepUnfinished, what was kept is given back (its spool too).
	u.keep(now.Add(keepUnfinished), job.Record{JobID: "late", Fingerprint: "fp"}, nil, nil)
	if n := len(u.kept); n != 1 {
		t.Errorf("%d answers kept after they expired, want only the new one", n)
	}
}
