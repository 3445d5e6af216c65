package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/genimg/genimg/job"
)

// TestAdmitBody: large (or unsized) bodies take one of the instance's
// slots, and wait for one while their caller stays; small ones never wait.
func TestAdmitBody(t *testing.T) {
	a := &API{large: make(chan struct{}, 1)}
	req := func(ctx context.Context, length int64) *http.Request {
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/Generate", strings.NewReader("{}"))
		r.ContentLength = length
		return r
	}
	release, err := a.admitBody(req(t.Context(), largeBody+1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.admitBody(req(t.Context(), 100)); err != nil {
		t.Fatalf("a small body waited: %v", err)
	}
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	for _, length := range []int64{largeBody + 1, -1} {
		if _, err := a.admitBody(req(gone, length)); !errors.Is(err, job.ErrInvalid) {
			t.Errorf("length %d with every slot taken: err = %v, want to wait and give up with the caller", length, err)
		}
	}
	release()
	release() // a second release gives nothing back twice
	if got := len(a.large); got != 0 {
		t.Fatalf("%d slots held after release, want 0", got)
	}
	if _, err := a.admitBody(req(gone, -1)); err != nil {
		t.Errorf("a free slot refused: %v", err)
	}
}
