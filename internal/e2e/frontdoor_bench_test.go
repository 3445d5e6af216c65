package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/httpapi"
	"github.com/genimg/genimg/internal/pipeline"
	"github.com/genimg/genimg/internal/webhook"
)

// BenchmarkGenerateFrontDoor measures Generate's front door alone: one POST
// of a job, from the request to the queued job (Prefer: respond-async, so
// it answers 202 once the job is on the requests topic): authenticate,
// read and decode the body, validate, spend check, stage inline images,
// read the job's state, queue. The requests topic here has no
// subscription, so no job runs. cpu-ms/op is the whole process's user+sys
// CPU (getrusage) over the loop ÷ b.N: it includes fake-gcs-server and
// pstest, which run in this process (storing the staged image is most of
// their share).
func BenchmarkGenerateFrontDoor(b *testing.B) {
	cfg, err := stack.Config()
	if err != nil {
		b.Fatal(err)
	}
	topic := "bench-frontdoor-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := stack.pubsub.TopicAdminClient.CreateTopic(b.Context(), &pb.Topic{Name: stack.Topic(topic)}); err != nil {
		b.Fatal(err)
	}
	cfg.Topics.Requests = topic
	svc, err := pipeline.New(b.Context(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	api, err := httpapi.New(svc)
	if err != nil {
		b.Fatal(err)
	}
	// The same front door for signed callers (GENIMG_WEBHOOK_SECRET): the
	// signature is checked as the body streams.
	scfg := cfg
	scfg.Webhook.Secret = config.Secret("whsec_" + base64.StdEncoding.EncodeToString([]byte("bench-frontdoor-secret-32-bytes!")))
	ssvc, err := pipeline.New(b.Context(), scfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ssvc.Close() })
	signedAPI, err := httpapi.New(ssvc)
	if err != nil {
		b.Fatal(err)
	}
	key, err := webhook.ParseKey(scfg.Webhook.Secret)
	if err != nil {
		b.Fatal(err)
	}

	input := noisePNG(b, 592, 592) // about 1 MiB as PNG
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	for _, bc := range []struct {
		name   string
		rest   string // the body after its id
		signed bool
	}{
		{"text-to-image", `"prompt": "a lighthouse at dawn", "aspectRatio": "1:1"}`, false},
		{"edit-1MiB-inline", `"prompt": "make it a watercolor", "aspectRatio": "1:1", "images": [{"data": "` +
			base64.StdEncoding.EncodeToString(input) + `", "mimeType": "image/png"}]}`, false},
		// Signed: the benchmark itself builds each whole body to sign it
		// (one body-sized allocation per request that the front door does
		// not make).
		{"edit-1MiB-inline-signed", `"prompt": "make it a watercolor", "aspectRatio": "1:1", "images": [{"data": "` +
			base64.StdEncoding.EncodeToString(input) + `", "mimeType": "image/png"}]}`, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rest := []byte(bc.rest)
			post := func(i int) {
				head := fmt.Sprintf(`{"id": "fd-%s-%s-%d", `, run, bc.name, i)
				r := httptest.NewRequestWithContext(b.Context(), http.MethodPost, "/Generate",
					io.MultiReader(bytes.NewReader([]byte(head)), bytes.NewReader(rest)))
				r.ContentLength = int64(len(head) + len(rest))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Prefer", "respond-async")
				w := httptest.NewRecorder()
				if bc.signed {
					webhook.SignHeaders(r.Header, key, fmt.Sprintf("wh-%s-%d", run, i), time.Now(), append([]byte(head), rest...))
					signedAPI.Generate(w, r)
				} else {
					api.Generate(w, r)
				}
				if w.Code != http.StatusAccepted {
					b.Fatalf("POST: %d %s", w.Code, w.Body)
				}
			}
			post(-1) // warm connections
			b.ReportAllocs()
			b.SetBytes(int64(len(rest)))
			cpu0 := cpuTime()
			i := 0
			for b.Loop() {
				post(i)
				i++
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1e3/float64(i), "cpu-ms/op")
		})
	}
}
