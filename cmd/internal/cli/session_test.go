package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
)

// A two-turn session through the CLI: the second turn's --parent reaches
// the job through every trigger, and its record names the parent.
func TestGenerateParent(t *testing.T) {
	if stdout, stderr, err := genimg(t, "generate", "a red barn in a field", "--via", "pubsub", "--id", "sess-1", "--out", t.TempDir(), "--wait", "30s"); err != nil {
		t.Fatalf("first turn: %v\n%s\n%s", err, stdout, stderr)
	}
	tests := []struct {
		name  string
		args  []string
		image bool
	}{
		{name: "http", args: []string{"--via", "http", "--id", "sess-2-http"}},
		{name: "pubsub", args: []string{"--via", "pubsub", "--id", "sess-2-pubsub"}},
		{name: "upload job file", args: []string{"--via", "upload", "--id", "sess-2-upload"}},
		{name: "upload image with parent metadata", args: []string{"--via", "upload"}, image: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			args := append([]string{"generate", "now add a dog", "--parent", "sess-1", "--out", filepath.Join(dir, "out"), "--wait", "30s"}, tt.args...)
			if tt.image {
				args = append(args, "--image", testPNG(t, dir, 64, 64))
			}
			stdout, stderr, err := genimg(t, args...)
			if err != nil {
				t.Fatalf("second turn: %v\n%s\n%s", err, stdout, stderr)
			}
			if field(stdout, "outcome") != "succeeded" || field(stdout, "parent") != "sess-1" {
				t.Errorf("second turn's record:\n%s", stdout)
			}
			rec, _, err := newTestClients(t).readRecord(t.Context(), field(stdout, "job"))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"sess-1", string(job.Succeeded)}, []string{rec.Parent, string(rec.Outcome)}); diff != "" {
				t.Errorf("stored record's parent and outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// backfill --run over objects already in a bucket: a confirmation answered
// no (or not at all) submits nothing, a spend cap below one job submits
// nothing, --yes submits a job per object, and a rerun submits none and
// counts them as already done. Each step runs on what the ones before left.
func TestBackfillRun(t *testing.T) {
	png, err := os.ReadFile(testPNG(t, t.TempDir(), 32, 32))
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("%sphoto-%d.png", backfillPrefix, i))
	}
	put := func(name, ctype string, data []byte) {
		w := stack.Storage.Bucket(backfillBucket).Object(name).NewWriter(t.Context())
		w.ContentType = ctype
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		put(name, "image/png", png)
	}
	put(backfillPrefix+"notes.txt", "text/plain", []byte("not an image"))

	// The ids the functions' rule gives the objects.
	cfg, err := config.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	rule := cfg.Uploads.Rules[0]
	var ids []string
	c := newTestClients(t)
	for _, name := range names {
		a, err := c.output.In(backfillBucket).Stat(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, spend.UploadJobID(rule, backfillBucket, name, a.Generation))
	}
	records := func() int {
		got := 0
		for _, id := range ids {
			if rec, _, err := c.readRecord(t.Context(), id); err == nil && rec != nil {
				got++
			}
		}
		return got
	}

	steps := []struct {
		name  string
		args  []string
		stdin string
		// want is the run's summary (its cost and errors aside); nil when
		// nothing may be submitted nor a summary printed.
		want       *spend.RunSummary
		wantStderr string
		calls      int // model calls the step makes
	}{
		{name: "declined", args: []string{"--run"}, stdin: "n\n", wantStderr: "Submit 3 jobs for about $0.12? [y/N] cancelled: nothing was submitted"},
		{name: "no answer", args: []string{"--run"}, stdin: "", wantStderr: "cancelled: nothing was submitted"},
		{name: "spend cap below one job", args: []string{"--run", "--yes", "--max-usd", "0.01"}, want: &spend.RunSummary{Capped: n}},
		{name: "confirmed", args: []string{"--run", "--concurrency", "2"}, stdin: "y\n", want: &spend.RunSummary{Submitted: n}, wantStderr: "3/3  submitted 3", calls: n},
		{name: "rerun", args: []string{"--run", "--yes"}, want: &spend.RunSummary{Done: n}, wantStderr: "3/3  submitted 0, already done 3"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			stdin = strings.NewReader(st.stdin)
			t.Cleanup(func() { stdin = os.Stdin })
			calls := stack.Model.Calls()
			stdout, stderr, err := genimg(t, append([]string{"backfill", "--json"}, st.args...)...)
			if err != nil {
				t.Fatalf("backfill: %v\n%s\n%s", err, stdout, stderr)
			}
			if !strings.Contains(stderr, st.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", st.wantStderr, stderr)
			}
			if st.want == nil {
				if stdout != "" {
					t.Errorf("a declined run printed %s", stdout)
				}
			} else {
				var got backfillRun
				if err := json.Unmarshal([]byte(stdout), &got); err != nil || got.Run == nil {
					t.Fatalf("%v: %s", err, stdout)
				}
				if got.Estimate.Objects != n {
					t.Errorf("estimate of %d objects, want %d", got.Estimate.Objects, n)
				}
				sum := *got.Run
				if want := float64(st.want.Submitted) * got.Estimate.Rules[0].PerJobUSD; sum.CostUSD != want {
					t.Errorf("cost $%v, want $%v", sum.CostUSD, want)
				}
				sum.CostUSD, sum.Errors = 0, nil
				if diff := cmp.Diff(*st.want, sum); diff != "" {
					t.Errorf("summary (-want +got):\n%s", diff)
				}
			}
			// What was submitted finishes; nothing else runs.
			want := n
			if st.want == nil || (st.want.Submitted == 0 && st.want.Done == 0) {
				want = 0
			}
			deadline := time.Now().Add(30 * time.Second)
			for records() < want && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if want == 0 {
				time.Sleep(500 * time.Millisecond) // room for a job that should not exist
			}
			if got := records(); got != want {
				t.Errorf("%d records, want %d", got, want)
			}
			if got := stack.Model.Calls() - calls; got != st.calls {
				t.Errorf("%d model calls, want %d", got, st.calls)
			}
		})
	}

	// The summary a person reads.
	stdout, _, err := genimg(t, "backfill", "--run", "--yes")
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{field(stdout, "submitted"), field(stdout, "already done"), field(stdout, "failed")}; !cmp.Equal(got, []string{"0", "3", "0"}) {
		t.Errorf("summary (submitted, already done, failed) %q:\n%s", got, stdout)
	}
}

// The progress of a run: a bar redrawn in place on a terminal, a plain
// line at every tenth of the way otherwise.
func TestRunProgress(t *testing.T) {
	tests := []struct {
		name  string
		tty   bool
		total int
		steps []spend.RunSummary
		want  string
	}{
		{name: "terminal", tty: true, total: 2, steps: []spend.RunSummary{{Submitted: 1, CostUSD: 0.04}, {Submitted: 1, Done: 1, CostUSD: 0.04}},
			want: "\r\033[K[###############...............] 1/2  submitted 1, already done 0, running 0, capped 0, failed 0, $0.04" +
				"\r\033[K[##############################] 2/2  submitted 1, already done 1, running 0, capped 0, failed 0, $0.04\n"},
		{name: "plain lines per tenth", total: 20, steps: []spend.RunSummary{{Done: 1}, {Done: 2}, {Done: 3}, {Done: 20}},
			want: "2/20  submitted 0, already done 2, running 0, capped 0, failed 0, $0.00\n" +
				"20/20  submitted 0, already done 20, running 0, capped 0, failed 0, $0.00\n"},
		{name: "more objects than estimated", total: 1, steps: []spend.RunSummary{{Failed: 1}, {Failed: 1, Capped: 1}},
			want: "1/1  submitted 0, already done 0, running 0, capped 0, failed 1, $0.00\n" +
				"2/2  submitted 0, already done 0, running 0, capped 1, failed 1, $0.00\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			p := &runProgress{w: &b, tty: tt.tty, total: tt.total}
			for _, s := range tt.steps {
				p.update(s)
			}
			p.end()
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("progress (-want +got):\n%s", diff)
			}
		})
	}
}
