package storage

import (
	"errors"
	"testing"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

// Put sends its bytes in one request and retries that request itself
// (the client has no buffer to retry it from): a conditional write as the
// client's policy would, an unconditional one never.
func TestPutRetries(t *testing.T) {
	tests := []struct {
		name      string
		fault     storagetest.Fault
		If        Precondition
		wantErr   error // nil: stored
		wantTries int
	}{
		{"create-only, two 503s", storagetest.Fault{Status: 503, Times: 2}, CreateOnly, nil, 3},
		{"create-only, 429 then stored", storagetest.Fault{Status: 429, Times: 1}, CreateOnly, nil, 2},
		// The try whose answer was lost, its retry (412), the read-back of the nonce.
		{"create-only, answer lost", storagetest.Fault{DropResponse: true, Times: 1}, CreateOnly, nil, 3},
		{"create-only, 503 to the last try", storagetest.Fault{Status: 503}, CreateOnly, job.ErrTransient, 4},
		{"create-only, 400 is not retried", storagetest.Fault{Status: 400}, CreateOnly, job.ErrPermanent, 1},
		{"overwrite, 503 is not retried", storagetest.Fault{Status: 503, Times: 1}, Overwrite, job.ErrTransient, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t)
			s := newStore(srv.Client, newClock(), "me", job.GeminiAPI)
			tt.fault.Match = storagetest.MatchUpload("state/x.json")
			srv.Transport.Inject(tt.fault)
			before, _ := srv.Transport.Counts()
			_, err := s.Output().Put(t.Context(), "state/x.json", []byte(`{"a":1}`), Put{If: tt.If, ContentType: "application/json"})
			after, _ := srv.Transport.Counts()
			if tries := after - before; tries != tt.wantTries {
				t.Errorf("%d requests, want %d", tries, tt.wantTries)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Put: err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Put: %v", err)
			}
			if got, _ := get(t, srv.Client, outBucket, "state/x.json"); string(got) != `{"a":1}` {
				t.Errorf("stored %q", got)
			}
		})
	}
}
