package pipeline

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
)

func TestWatch(t *testing.T) {
	var s Service
	w1, w2 := s.Watch("a"), s.Watch("a")
	other := s.Watch("b")

	end := s.waits.running("a")
	if !w1.Running() || other.Running() {
		t.Fatalf("Running: a %v, b %v; want true, false", w1.Running(), other.Running())
	}
	select {
	case <-w2.Changed():
	default:
		t.Fatal("no change signalled when the run started")
	}
	rec := job.Record{JobID: "a", Outcome: job.Succeeded, Fingerprint: "f"}
	s.waits.published(rec)
	s.waits.published(job.Record{JobID: "nobody-waits"})
	end()
	if w1.Running() {
		t.Error("still running after the run ended")
	}
	select {
	case got := <-w1.Done():
		if diff := cmp.Diff(rec, got); diff != "" {
			t.Errorf("record (-want +got):\n%s", diff)
		}
	default:
		t.Fatal("no record delivered")
	}
	select {
	case <-other.Done():
		t.Fatal("a record for b")
	default:
	}

	w1.Close()
	w2.Close()
	other.Close()
	if n := len(s.waits.m); n != 0 {
		t.Errorf("%d watches left after Close", n)
	}
	if end := s.waits.running("a"); end == nil {
		t.Error("running without a watch returned nil")
	} else {
		end()
	}
}
