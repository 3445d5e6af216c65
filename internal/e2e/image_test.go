package e2e

import (
	"encoding/json"
	"fmt"
	"image"
	_ "image/jpeg"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	_ "golang.org/x/image/webp"

	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
)

// runOn delivers a job message to an extra instance's OnMessage, as the
// push subscription does, and reads the job's record.
func runOn(t *testing.T, in *testInstance, id, body string) job.Record {
	t.Helper()
	deliver(t, in.path+"/OnMessage", "m-"+id, []byte(body), time.Now(), http.StatusOK)
	return storedRecord(t, id)
}

// errorMessage is a 400 answer's message.
func errorMessage(b []byte) string {
	var e struct{ Error struct{ Message string } }
	json.Unmarshal(b, &e)
	return e.Error.Message
}

// objectOf reads an output object: its decoded size and format, content
// type and Cache-Control.
func objectOf(t *testing.T, uri string) (w, h int, format, contentType, cacheControl string) {
	t.Helper()
	bucket, name, err := job.ParseGCS(uri)
	if err != nil {
		t.Fatal(err)
	}
	obj := stack.gcs.Bucket(bucket).Object(name)
	r, err := obj.NewReader(t.Context())
	if err != nil {
		t.Fatalf("reading %s: %v", uri, err)
	}
	defer r.Close()
	img, format, err := image.Decode(r)
	if err != nil {
		t.Fatalf("%s does not decode: %v", uri, err)
	}
	attrs, err := obj.Attrs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return img.Bounds().Dx(), img.Bounds().Dy(), format, attrs.ContentType, attrs.CacheControl
}

// A 16:9 job with a WebP 256 and a JPEG 512 rendition: both are written
// beside the image, decode to the sizes the record names (the short side
// rounded from the image's own ratio), and every output object carries the
// configured Cache-Control.
func TestRenditions(t *testing.T) {
	cfg := baseConfig(t, newModel(t))
	cfg.Storage.CacheControl = "public, max-age=86400"
	in := newInstance(t, cfg, "renditions")
	id := uniq(t)
	rec := runOn(t, in, id, fmt.Sprintf(`{"id": %q, "prompt": "a lighthouse at dusk", "aspectRatio": "16:9",
		"renditions": [{"format": "webp", "maxSize": 256}, {"format": "JPEG", "maxSize": 512, "quality": 80}]}`, id))
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 {
		t.Fatalf("outcome %s, %d outputs, error %+v", rec.Outcome, len(rec.Outputs), rec.Error)
	}
	out := rec.Outputs[0]
	if out.Width != 1344 || out.Height != 768 {
		t.Fatalf("image %d×%d, want 1344×768", out.Width, out.Height)
	}
	type object struct {
		W, H                              int
		Format, ContentType, CacheControl string
	}
	_, _, _, _, imageCC := objectOf(t, out.URI)
	if imageCC != "public, max-age=86400" {
		t.Errorf("image Cache-Control %q", imageCC)
	}
	want := []object{{256, 146, "webp", "image/webp", "public, max-age=86400"}, {512, 293, "jpeg", "image/jpeg", "public, max-age=86400"}}
	var got []object
	base := strings.TrimSuffix(out.URI, ".png")
	for i, r := range out.Renditions {
		w, h, format, ct, cc := objectOf(t, r.URI)
		got = append(got, object{w, h, format, ct, cc})
		if r.Width != w || r.Height != h || r.MIMEType != ct || r.Bytes == 0 || len(r.SHA256) != 64 {
			t.Errorf("renditions[%d] in the record: %+v; the object is %d×%d %s", i, r, w, h, ct)
		}
		if wantURI := fmt.Sprintf("%s_%d.%s", base, []int{256, 512}[i], []string{"webp", "jpg"}[i]); r.URI != wantURI {
			t.Errorf("renditions[%d] at %s, want %s", i, r.URI, wantURI)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("renditions (-want +got):\n%s", diff)
	}
	// The folder holds the image and its renditions, nothing else.
	if n := countObjects(t, outputBucket, "images/"+rec.JobID+"/"); n != 3 {
		t.Errorf("%d objects in the job's folder, want 3", n)
	}

	// Without GENIMG_CACHE_CONTROL, no Cache-Control.
	resp, b := postJSON(t, `{"prompt": "a lighthouse at dawn", "renditions": [{"format": "png", "maxSize": 64}]}`, nil)
	rec = decodeRecord(t, b)
	if resp.StatusCode != http.StatusOK || len(rec.Outputs) != 1 || len(rec.Outputs[0].Renditions) != 1 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if w, h, _, ct, cc := objectOf(t, rec.Outputs[0].Renditions[0].URI); w != 64 || h != 64 || ct != "image/png" || cc != "" {
		t.Errorf("png rendition %d×%d %s, Cache-Control %q; want 64×64 image/png and none", w, h, ct, cc)
	}
}

// Renditions that cannot be made are refused before any model call, each
// problem named with what is accepted.
func TestRenditionRefusals(t *testing.T) {
	calls := stack.model.Calls()
	for _, tt := range []struct{ renditions, want string }{
		{`[{"format": "avif", "maxSize": 256}]`, `renditions[0].format "avif": accepted: webp, jpeg, png`},
		{`[{"format": "webp", "maxSize": 8}]`, `renditions[0].maxSize 8: the longest side in pixels, 16 to 4096`},
		{`[{"format": "jpeg", "maxSize": 256, "quality": 101}]`, `renditions[0].quality 101: accepted 1 to 100`},
		{`[{"format": "png", "maxSize": 256, "quality": 80}]`, `png is lossless and takes no quality`},
		{`[{"format": "png", "maxSize": 16}, {"format": "png", "maxSize": 32}, {"format": "png", "maxSize": 48}, {"format": "png", "maxSize": 64}, {"format": "png", "maxSize": 80}]`, `5 renditions; at most 4`},
		{`[{"format": "webp", "maxSize": 256}, {"format": "webp", "maxSize": 256}]`, `asked for twice`},
		{`[{"format": "webp", "maxsize": 256, "size": 1}]`, `renditions[0]: unknown field "size"; accepted fields: format, maxSize, quality`},
	} {
		resp, b := postJSON(t, `{"prompt": "x", "renditions": `+tt.renditions+`}`, nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(errorMessage(b), tt.want) {
			t.Errorf("%s: status %d: %s; want 400 saying %q", tt.renditions, resp.StatusCode, b, tt.want)
		}
	}
	if got := stack.model.Calls() - calls; got != 0 {
		t.Errorf("%d model calls for refused jobs", got)
	}
}

// An upload rule with renditions and its own Cache-Control: the renditions
// of the edit are written beside it, every object with the rule's header.
func TestUploadRuleRenditions(t *testing.T) {
	name := "products/" + uniq(t) + ".png"
	attrs := upload(t, inputBucket, name, testPNG(t, 400, 300), "image/png", nil)
	source := fmt.Sprintf("gs://%s/%s#%d", inputBucket, name, attrs.Generation)
	rec := stack.events.wait(t, func(e event) bool { return e.Record.Trigger.Source == source }).Record
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 || len(rec.Outputs[0].Renditions) != 2 {
		t.Fatalf("outcome %s, outputs %+v, error %+v", rec.Outcome, rec.Outputs, rec.Error)
	}
	type object struct {
		W, H                 int
		ContentType, CacheCC string
	}
	var got []object
	for _, uri := range []string{rec.Outputs[0].URI, rec.Outputs[0].Renditions[0].URI, rec.Outputs[0].Renditions[1].URI} {
		w, h, _, ct, cc := objectOf(t, uri)
		got = append(got, object{w, h, ct, cc})
	}
	// 1184×864 (4:3): 128 → 128×93 (93.4), 600 → 600×438 (437.8).
	want := []object{{1184, 864, "image/png", "public, max-age=600"}, {128, 93, "image/webp", "public, max-age=600"}, {600, 438, "image/jpeg", "public, max-age=600"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

// A rendition Cloud Storage refuses past every retry costs no second model
// call: the job succeeds with its image, and the record says why the
// renditions are missing.
func TestRenditionWriteFailureCostsNoCall(t *testing.T) {
	model := newModel(t)
	in := newInstance(t, baseConfig(t, model), "renditionfault")
	id := uniq(t)
	in.gcsFaults.Inject(storagetest.Fault{Status: 503, Match: storagetest.MatchUpload("images/" + id + "/a1-0_128.webp")})
	rec := runOn(t, in, id, fmt.Sprintf(`{"id": %q, "prompt": "a lighthouse", "renditions": [{"format": "webp", "maxSize": 128}]}`, id))
	if rec.Outcome != job.Succeeded || len(rec.Outputs) != 1 || rec.Attempts != 1 || model.Calls() != 1 {
		t.Fatalf("outcome %s, %d outputs, %d attempts, %d calls; want succeeded with one call", rec.Outcome, len(rec.Outputs), rec.Attempts, model.Calls())
	}
	if o := rec.Outputs[0]; len(o.Renditions) != 0 || !strings.Contains(o.RenditionError, "no renditions") {
		t.Errorf("renditions %+v, renditionError %q", o.Renditions, o.RenditionError)
	}
}
