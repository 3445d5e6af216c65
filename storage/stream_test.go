package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"time"

	gcs "cloud.google.com/go/storage"

	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

// chunked writes b to w in pieces of n bytes, as the model-answer decoder
// does.
func chunked(t *testing.T, w io.Writer, b []byte, n int) {
	t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := w.Write(b[:k]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		b = b[k:]
	}
}

// noise is a PNG header (so it sniffs as PNG and DecodeConfig reads w×h)
// followed by random bytes: an image bigger than several upload chunks.
func noise(t *testing.T, w, h, n int) []byte {
	b := pngBytes(t, w, h)[:33] // signature and IHDR
	r := rand.New(rand.NewPCG(uint64(n), 1))
	for len(b) < n {
		b = append(b, byte(r.Uint32()))
	}
	return b
}

// TestOutputsStreamMatchesWriteImages streams images of every size class
// (under the sniff buffer, several upload chunks) through Outputs and
// checks that the record's outputs, the objects and their metadata are
// what WriteImages gives for the same bytes.
func TestOutputsStreamMatchesWriteImages(t *testing.T) {
	tiny := pngBytes(t, 2, 3) // under 512 bytes
	big := noise(t, 1024, 1024, 1_700_000)
	gif := gifBytes(t)
	meta := ImageMeta{Model: job.DefaultModel, PromptSHA256: job.PromptHash("p"), Source: "gs://in/a.png#1"}
	tests := []struct {
		name     string
		images   []job.Image
		pieces   int
		wantDims [][2]int
	}{
		{"one large PNG in decoder-sized pieces", []job.Image{{Data: big, MIMEType: "image/png"}}, 24 << 10, [][2]int{{1024, 1024}}},
		{"tiny PNG, GIF with no declared type", []job.Image{{Data: tiny, MIMEType: "image/png"}, {Data: gif}}, 7, [][2]int{{2, 3}, {4, 4}}},
		{"declared type used when bytes do not say", []job.Image{{Data: []byte("not an image at all"), MIMEType: "image/png"}}, 5, [][2]int{{0, 0}}},
	}
	for _, budget := range spoolBudgets {
		for _, tt := range tests {
			t.Run(budget.name+"/"+tt.name, func(t *testing.T) {
				srv := newServer(t)
				s := streamStore(srv.Client, budget.bytes)
				j := job.Job{Prompt: "p", Model: job.DefaultModel}

				// The reference: WriteImages on a job of its own.
				rc, _, err := s.Claim(t.Context(), "ref", "fp", upload1)
				if err != nil {
					t.Fatal(err)
				}
				want, err := s.WriteImages(t.Context(), rc, &j, tt.images, meta)
				if err != nil {
					t.Fatal(err)
				}

				c, _, err := s.Claim(t.Context(), "st", "fp", upload1)
				if err != nil {
					t.Fatal(err)
				}
				out, err := s.NewOutputs(t.Context(), c, &j, meta)
				if err != nil {
					t.Fatal(err)
				}
				for k, img := range tt.images {
					w, err := out.OpenImage(k, img.MIMEType)
					if err != nil {
						t.Fatal(err)
					}
					chunked(t, w, img.Data, tt.pieces)
					if err := w.Close(); err != nil {
						t.Fatalf("Close: %v", err)
					}
				}
				got := out.Stored()
				var dims [][2]int
				for i := range got {
					dims = append(dims, [2]int{got[i].Width, got[i].Height})
					// Same bytes, same fields, but the job's own folder.
					want[i].URI = "gs://out/images/st/" + want[i].URI[len("gs://out/images/ref/"):]
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("stored images (-WriteImages +stream):\n%s", diff)
				}
				if diff := cmp.Diff(tt.wantDims, dims); diff != "" {
					t.Errorf("dimensions (-want +got):\n%s", diff)
				}
				for i, o := range got {
					_, name, _ := job.ParseGCS(o.URI)
					data, attrs := get(t, srv.Client, outBucket, name)
					wantMeta := map[string]string{MetaJob: "st", MetaSource: meta.Source, MetaModel: meta.Model,
						MetaPromptSHA256: meta.PromptSHA256, MetaGeneratedBy: GeneratedBy, "genimg-attempt": "1"}
					if !bytes.Equal(data, tt.images[i].Data) || attrs.ContentType != o.MIMEType {
						t.Errorf("image %d: %d bytes stored of %d, type %q", i, len(data), len(tt.images[i].Data), attrs.ContentType)
					}
					// A spooled image went up through Put, which tags the write
					// with its nonce.
					delete(attrs.Metadata, metaWrite)
					if diff := cmp.Diff(wantMeta, attrs.Metadata); diff != "" {
						t.Errorf("image %d metadata (-want +got):\n%s", i, diff)
					}
				}
				// The claim knows the images, so Commit tidies as before.
				if diff := cmp.Diff(len(got), len(c.written)); diff != "" {
					t.Errorf("claim's written images (-want +got):\n%s", diff)
				}
				if held := s.spooled.Load(); held != 0 {
					t.Errorf("%d bytes of the spool budget still taken", held)
				}
			})
		}
	}
}

// spoolBudgets are the three ways an image goes up: streamed (no spool),
// spooled and sent in one request, and spooled until the budget runs out
// partway (a 1.7 MB image, 1 MiB), then streamed.
var spoolBudgets = []struct {
	name  string
	bytes int64
}{
	{"streamed", 0},
	{"spooled", 64 << 20},
	{"spool runs out", 1 << 20},
}

// TestOutputsAbortAndFailures: a dropped image never becomes an object; a
// reader that fails is transient; a bad prefix fails before any write;
// a name taken with other bytes is transient, with the same bytes is ours.
func TestOutputsAbortAndFailures(t *testing.T) {
	for _, budget := range spoolBudgets {
		t.Run(budget.name, func(t *testing.T) { testAbortAndFailures(t, budget.bytes) })
	}
}

func testAbortAndFailures(t *testing.T, spoolBytes int64) {
	srv := newServer(t)
	s := streamStore(srv.Client, spoolBytes)
	out, c := claimOutputs(t, s, "ab")
	big := noise(t, 64, 64, 700_000)

	// Dropped after several chunks went up: no object.
	w, _ := out.OpenImage(0, "image/png")
	chunked(t, w, big[:600_000], 32<<10)
	w.(interface{ CloseWithError(error) error }).CloseWithError(errors.New("answer broke off"))
	if exists(t, srv.Client, outBucket, "images/ab/a1-0.png") {
		t.Error("a dropped image was stored")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after CloseWithError succeeded")
	}

	// A reader that fails midway: transient, nothing stored.
	_, err := out.WriteImageStream(1, io.MultiReader(bytes.NewReader(big[:300_000]), iotest.ErrReader(io.ErrUnexpectedEOF)), "image/png")
	if !errors.Is(err, job.ErrTransient) || exists(t, srv.Client, outBucket, "images/ab/a1-1.png") {
		t.Errorf("failing reader: %v, stored %v; want transient, nothing stored", err, exists(t, srv.Client, outBucket, "images/ab/a1-1.png"))
	}

	// The same name already holding the same bytes (our own committed
	// retry): kept. Holding other bytes: transient.
	put(t, srv.Client, outBucket, "images/ab/a1-2.png", big, "image/png")
	st, err := out.WriteImageStream(2, bytes.NewReader(big), "image/png")
	if err != nil || st.Bytes != int64(len(big)) || st.SHA256 != sha(big) {
		t.Errorf("same bytes already stored: %+v, %v; want ours", st, err)
	}
	put(t, srv.Client, outBucket, "images/ab/a1-3.png", big[:1000], "image/png")
	if _, err := out.WriteImageStream(3, bytes.NewReader(big), "image/png"); !errors.Is(err, job.ErrTransient) {
		t.Errorf("other bytes already stored: %v, want transient", err)
	}
	if diff := cmp.Diff([]string{"gs://out/images/ab/a1-2.png"}, uris(out.Stored())); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}

	bad := job.Job{Prompt: "p", Output: &job.OutputOptions{Prefix: "../escape"}}
	if _, err := s.NewOutputs(t.Context(), c, &bad, ImageMeta{}); !errors.Is(err, job.ErrInvalid) {
		t.Errorf("NewOutputs with prefix ../escape: %v, want ErrInvalid", err)
	}
}

// streamStore is newStore with an upload deadline that megabyte images
// meet under the race detector on a loaded machine.
func streamStore(client *gcs.Client, spoolBytes int64) *Store {
	clk := newClock()
	cfg := testCfg
	cfg.SpoolBytes = spoolBytes
	return New(client, cfg, testLimits, job.GeminiAPI, WithOwner("me"), WithClock(clk.now),
		WithUploadRetryDeadline(20*time.Second), fastRetry)
}

func uris(imgs []job.StoredImage) []string {
	var out []string
	for _, i := range imgs {
		out = append(out, i.URI)
	}
	return out
}

// A spooled image whose upload fails is kept, paid for, and written by
// Flush once Cloud Storage answers again; a streamed one fails the attempt.
func TestOutputsKeepFailedUpload(t *testing.T) {
	for _, budget := range spoolBudgets[:2] {
		t.Run(budget.name, func(t *testing.T) {
			srv := newServer(t)
			cfg := testCfg
			cfg.SpoolBytes = budget.bytes
			// A short deadline: the streamed upload retries its chunks until then.
			s := New(srv.Client, cfg, testLimits, job.GeminiAPI, WithOwner("me"), WithClock(newClock().now),
				WithUploadRetryDeadline(500*time.Millisecond), fastRetry)
			out, _ := claimOutputs(t, s, "kf")
			img := noise(t, 256, 256, 300_000)
			srv.Transport.Inject(storagetest.Fault{Match: storagetest.MatchUpload("images/kf/a1-0.png"), Status: 503})
			_, err := out.WriteImageStream(0, bytes.NewReader(img), "image/png")
			if budget.bytes == 0 {
				if !errors.Is(err, job.ErrTransient) || out.Pending() {
					t.Fatalf("streamed: err = %v, pending %v; want transient, nothing kept", err, out.Pending())
				}
				return
			}
			if err != nil || !out.Pending() {
				t.Fatalf("spooled: err = %v, pending %v; want kept for Flush", err, out.Pending())
			}
			if err := out.Flush(t.Context()); !errors.Is(err, job.ErrTransient) || !out.Pending() {
				t.Fatalf("Flush while Cloud Storage fails: %v, pending %v; want transient, still kept", err, out.Pending())
			}
			srv.Transport.Clear()
			if err := out.Flush(t.Context()); err != nil || out.Pending() {
				t.Fatalf("Flush: %v, pending %v", err, out.Pending())
			}
			if got, _ := get(t, srv.Client, outBucket, "images/kf/a1-0.png"); !bytes.Equal(got, img) {
				t.Errorf("stored %d bytes, want the image's %d", len(got), len(img))
			}
			if diff := cmp.Diff([]string{"gs://out/images/kf/a1-0.png"}, uris(out.Stored())); diff != "" {
				t.Errorf("stored (-want +got):\n%s", diff)
			}
			if held := s.spooled.Load(); held != 0 {
				t.Errorf("%d bytes of the spool budget still taken", held)
			}
		})
	}
}

// An image waits for spool room before its first byte while another holds
// it, and spools (one request, protected) once that one is stored.
func TestOutputsWaitForSpoolRoom(t *testing.T) {
	srv := newServer(t)
	s := streamStore(srv.Client, spoolAhead)
	out, _ := claimOutputs(t, s, "wait")
	first, err := out.OpenImage(0, "image/png")
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan *ImageWriter)
	go func() {
		w, _ := out.OpenImage(1, "image/png") // waits: the budget is first's
		second <- w.(*ImageWriter)
	}()
	img := noise(t, 128, 128, 200_000)
	select {
	case <-second:
		t.Fatal("the second image opened while the first held the whole budget")
	case <-time.After(50 * time.Millisecond):
	}
	chunked(t, first, img, 32<<10)
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	w := <-second
	if !w.spooling {
		t.Fatal("the second image streams; want it spooled once the first gave its room back")
	}
	chunked(t, w, img, 32<<10)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"gs://out/images/wait/a1-0.png", "gs://out/images/wait/a1-1.png"}, uris(out.Stored())); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	if held := s.spooled.Load(); held != 0 {
		t.Errorf("%d bytes of the spool budget still taken", held)
	}
}

// claimOutputs claims jobID for a one-prompt job and opens its outputs.
func claimOutputs(t *testing.T, s *Store, jobID string) (*Outputs, *Claim) {
	t.Helper()
	j := job.Job{Prompt: "p", Model: job.DefaultModel}
	c, _, err := s.Claim(t.Context(), jobID, "fp", upload1)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.NewOutputs(t.Context(), c, &j, ImageMeta{})
	if err != nil {
		t.Fatal(err)
	}
	return out, c
}
