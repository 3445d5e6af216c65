package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"runtime"
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

// The front door takes as many large bodies at once as the setting says,
// or by default as it has CPUs, at least two.
func TestLargeBodies(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tt := range []struct{ setting, cpus, want int }{
		{0, 1, 2}, {0, 2, 2}, {0, 4, 4}, {3, 1, 3}, {1, 8, 1},
	} {
		runtime.GOMAXPROCS(tt.cpus)
		if got := largeBodies(tt.setting); got != tt.want {
			t.Errorf("GENIMG_LARGE_BODIES=%d on %d CPUs: %d slots, want %d", tt.setting, tt.cpus, got, tt.want)
		}
	}
}
