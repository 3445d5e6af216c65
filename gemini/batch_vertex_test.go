package gemini

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	gcs "cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/iterator"

	"github.com/genimg/genimg/gemini/geminitest"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

// gcsFiles is BatchFiles on a real Cloud Storage client (fake-gcs-server).
type gcsFiles struct{ c *gcs.Client }

func splitGS(uri string) (string, string) {
	b, o, _ := strings.Cut(strings.TrimPrefix(uri, "gs://"), "/")
	return b, o
}

func (f gcsFiles) Write(ctx context.Context, uri string, data []byte) error {
	b, o := splitGS(uri)
	w := f.c.Bucket(b).Object(o).NewWriter(ctx)
	if _, err := w.Write(data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func (f gcsFiles) List(ctx context.Context, prefix string) ([]string, error) {
	b, o := splitGS(prefix)
	it := f.c.Bucket(b).Objects(ctx, &gcs.Query{Prefix: o})
	var out []string
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, "gs://"+b+"/"+a.Name)
	}
}

func (f gcsFiles) Read(ctx context.Context, uri string) ([]byte, error) {
	b, o := splitGS(uri)
	r, err := f.c.Bucket(b).Object(o).NewReader(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// vertexBatchEnv is a stand-in whose Vertex AI batches read and write
// fake-gcs-server, and a Vertex AI client on it.
func vertexBatchEnv(t *testing.T) (*geminitest.Server, *Client, gcsFiles) {
	t.Helper()
	g := storagetest.NewServer(t, "out")
	files := gcsFiles{g.Client}
	srv := geminitest.NewServer(geminitest.Options{
		ReadGCS:  func(uri string) ([]byte, error) { return files.Read(context.Background(), uri) },
		WriteGCS: func(uri string, data []byte) error { return files.Write(context.Background(), uri, data) },
	})
	t.Cleanup(srv.Close)
	c, _ := newClient(t, srv, job.VertexAI, nil)
	return srv, c, files
}

func batchJobs(prompts map[string]string) []job.Job {
	var js []job.Job
	p := job.Policy{Backend: job.VertexAI, Models: []string{job.DefaultModel}}
	for _, id := range []string{"job-0", "job-1", "Job.Upper", "job-3"} {
		j := job.Job{ID: id, Prompt: prompts[id], AspectRatio: "1:1", BillingLabels: map[string]string{"team": "art"}}
		j.Normalize(p)
		js = append(js, j)
	}
	return js
}

// TestVertexBatch: four jobs (one blocked, one refused by the model, one
// whose id is no label value) as a Vertex AI batch prediction job: input
// JSONL in Cloud Storage, predictions read back and mapped to job ids,
// priced at the batch rate.
func TestVertexBatch(t *testing.T) {
	srv, c, files := vertexBatchEnv(t)
	srv.SetBatchPolls(1)
	jobs := batchJobs(map[string]string{
		"job-0": "a red boat", "job-1": "a forbidden thing [[standin:block]]",
		"Job.Upper": "a lighthouse", "job-3": "a bad one [[standin:status=400]]",
	})
	dir := "gs://out/batches/c-1"
	sub, err := c.SubmitBatch(t.Context(), job.DefaultModel, "genimg c-1", jobs, 0, InCloudStorage(files, dir+"/"))
	if err != nil {
		t.Fatalf("SubmitBatch: %v", err)
	}
	if sub.InputFile != dir+"/input.jsonl" || !strings.HasPrefix(sub.Name, "projects/genimg-test/locations/us-central1/batchPredictionJobs/") {
		t.Errorf("Submitted = %+v", sub)
	}
	// The input: one {"request"} a line, labelled with the id and line.
	in, err := files.Read(t.Context(), dir+"/input.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var labels []map[string]string
	sc := bufio.NewScanner(bytes.NewReader(in))
	for sc.Scan() {
		var l struct {
			Request struct {
				Contents []any             `json:"contents"`
				Labels   map[string]string `json:"labels"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || len(l.Request.Contents) != 1 {
			t.Fatalf("input line %s: %v", sc.Bytes(), err)
		}
		labels = append(labels, l.Request.Labels)
	}
	wantLabels := []map[string]string{
		{"team": "art", BatchJobLabel: "job-0", BatchLineLabel: "0"},
		{"team": "art", BatchJobLabel: "job-1", BatchLineLabel: "1"},
		{"team": "art", BatchLineLabel: "2"},
		{"team": "art", BatchJobLabel: "job-3", BatchLineLabel: "3"},
	}
	if diff := cmp.Diff(wantLabels, labels); diff != "" {
		t.Errorf("input labels (-want +got):\n%s", diff)
	}

	st, err := c.GetBatch(t.Context(), sub.Name, InCloudStorage(files, dir))
	if err != nil || st.Done || st.State != string(geminitest.VertexRunning) {
		t.Fatalf("first GetBatch = %+v, %v; want running", st, err)
	}
	st, err = c.GetBatch(t.Context(), sub.Name, InCloudStorage(files, dir))
	if err != nil {
		t.Fatalf("GetBatch: %v", err)
	}
	if !st.Done || st.State != BatchSucceeded || len(st.Results) != 4 {
		t.Fatalf("GetBatch = %+v; want succeeded with 4 results", st)
	}
	type got struct {
		Key     string
		Index   int
		Outcome job.Outcome
		Err     bool
	}
	var gots []got
	for _, r := range st.Results {
		g := got{Key: r.Key, Index: r.Index, Err: r.Err != nil}
		if r.Result != nil {
			g.Outcome = r.Result.Outcome
			want := c.Cost(job.DefaultModel, r.Result.Usage, true)
			if math.Abs(r.Result.CostUSD-want) > 1e-12 || r.Result.CostUSD >= c.Cost(job.DefaultModel, r.Result.Usage, false) {
				t.Errorf("%s: cost %v, want the batch price %v", r.Key, r.Result.CostUSD, want)
			}
		}
		gots = append(gots, g)
	}
	want := []got{
		{Key: "job-0", Index: 0, Outcome: job.Succeeded},
		{Key: "job-1", Index: 1, Outcome: job.Blocked},
		{Key: "", Index: 2, Outcome: job.Succeeded},
		{Key: "job-3", Index: 3, Err: true},
	}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if err := st.Results[3].Err; !errors.Is(err, job.ErrInvalid) && !errors.Is(err, job.ErrPermanent) {
		t.Errorf("the refused request's error %v is not permanent", err)
	}
	if r := st.Results[0].Result; r == nil || len(r.Images) != 1 || job.Sniff(r.Images[0].Data) != "image/png" {
		t.Errorf("job-0 answered no PNG")
	}
	vb := srv.VertexBatches()
	if len(vb) != 1 || vb[0].InputFile != dir+"/input.jsonl" || vb[0].Requests != 4 || vb[0].DisplayName != "genimg c-1" {
		t.Errorf("stand-in batches %+v", vb)
	}
}

// TestVertexBatchRefused: what SubmitBatch and GetBatch refuse on Vertex
// AI, and a batch whose input the service cannot read fails whole.
func TestVertexBatchRefused(t *testing.T) {
	srv, c, files := vertexBatchEnv(t)
	jobs := batchJobs(map[string]string{"job-0": "a", "job-1": "b", "Job.Upper": "c", "job-3": "d"})
	for _, tt := range []struct {
		name string
		opts []BatchOption
		jobs []job.Job
		want error
	}{
		{name: "no Cloud Storage", jobs: jobs, want: job.ErrPermanent},
		{name: "not a gs:// directory", opts: []BatchOption{InCloudStorage(files, "/tmp/x")}, jobs: jobs, want: job.ErrPermanent},
		{name: "empty", opts: []BatchOption{InCloudStorage(files, "gs://out/x")}, want: job.ErrInvalid},
		{name: "no id", opts: []BatchOption{InCloudStorage(files, "gs://out/x")}, jobs: []job.Job{{Model: job.DefaultModel, Prompt: "a"}}, want: job.ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.SubmitBatch(t.Context(), job.DefaultModel, "x", tt.jobs, 0, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Errorf("SubmitBatch = %v, want %v", err, tt.want)
			}
		})
	}
	if len(srv.VertexBatches()) != 0 {
		t.Errorf("refused submissions created batches: %+v", srv.VertexBatches())
	}

	// A service that cannot read the input fails the batch as a whole.
	sub, err := c.SubmitBatch(t.Context(), job.DefaultModel, "x", jobs, 0, InCloudStorage(files, "gs://out/y"))
	if err != nil {
		t.Fatal(err)
	}
	if err := files.c.Bucket("out").Object("y/input.jsonl").Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := c.GetBatch(t.Context(), sub.Name, InCloudStorage(files, "gs://out/y"))
	if err != nil || !st.Done || st.State != BatchFailed || st.Error == "" || len(st.Results) != 0 {
		t.Errorf("GetBatch = %+v, %v; want failed with its error and no results", st, err)
	}
}
