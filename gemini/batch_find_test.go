package gemini

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
)

// TestFindBatch: a batch is found by its display name on both backends,
// the newest of two so named, through the Gemini API's pages (more batches
// than one page holds); a name no batch carries is "".
func TestFindBatch(t *testing.T) {
	for _, tt := range []struct {
		name    string
		backend job.Backend
		others  int // batches of other names submitted first
	}{
		{name: "gemini api, several pages", backend: job.GeminiAPI, others: 130},
		{name: "vertex ai, filtered", backend: job.VertexAI, others: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var (
				srv  *geminitest.Server
				c    *Client
				opts []BatchOption
			)
			if tt.backend == job.VertexAI {
				var files gcsFiles
				srv, c, files = vertexBatchEnv(t)
				opts = []BatchOption{InCloudStorage(files, "gs://out/find")}
			} else {
				srv = geminitest.NewServer()
				t.Cleanup(srv.Close)
				c, _ = newClient(t, srv, job.GeminiAPI, nil)
			}
			jobs := batchJobs(map[string]string{"job-0": "a", "job-1": "b", "Job.Upper": "c", "job-3": "d"})
			submit := func(name string) string {
				t.Helper()
				sub, err := c.SubmitBatch(t.Context(), job.DefaultModel, name, jobs, 0, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return sub.Name
			}
			submit("genimg c-first")
			for i := range tt.others {
				submit(fmt.Sprintf("genimg c-other-%d", i))
			}
			newest := submit("genimg c-first")
			got := map[string]string{}
			for _, name := range []string{"genimg c-first", "genimg c-none"} {
				found, err := c.FindBatch(t.Context(), name)
				if err != nil {
					t.Fatalf("FindBatch(%q): %v", name, err)
				}
				got[name] = found
			}
			if diff := cmp.Diff(map[string]string{"genimg c-first": newest, "genimg c-none": ""}, got); diff != "" {
				t.Errorf("found (-want +got):\n%s", diff)
			}
			if srv.BatchLists() < 2 {
				t.Errorf("%d list calls, want at least one per lookup", srv.BatchLists())
			}
		})
	}
}
