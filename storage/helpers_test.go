package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	gcs "cloud.google.com/go/storage"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage/storagetest"
	"github.com/googleapis/gax-go/v2"
)

func TestMain(m *testing.M) {
	// Google clients must never look for the metadata server off this
	// machine.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	flag.Parse()
	if !testing.Verbose() {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	}
	os.Exit(m.Run())
}

const (
	inBucket  = "in"
	outBucket = "out"
)

var testCfg = config.Storage{
	OutputBucket: outBucket,
	OutputPrefix: "images/",
	InputBuckets: []string{inBucket},
	Lease:        time.Minute,
	ChunkSize:    256 << 10,
}

var testLimits = config.Limits{MaxImageBytes: 1 << 20, MaxImagePixels: 4_000_000}

// clock is a settable time source shared by the stores of one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newStore(client *gcs.Client, clk *clock, owner string, backend job.Backend) *Store {
	return New(client, testCfg, testLimits, backend, WithOwner(owner), WithClock(clk.now),
		WithUploadRetryDeadline(300*time.Millisecond), fastRetry)
}

// fastRetry paces retries as storagetest's clients do.
var fastRetry = WithRetry(gax.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2}, 4)

func pngBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gifBytes(t testing.TB) []byte {
	t.Helper()
	img := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Black, color.White})
	var b bytes.Buffer
	if err := gif.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// bombPNG is a PNG whose header claims w×h pixels: what DecodeConfig sees
// of a decompression bomb, without the megabytes behind it.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// put writes an object directly through a client (seeding test inputs).
func put(t testing.TB, c *gcs.Client, bucket, name string, data []byte, contentType string) {
	t.Helper()
	w := c.Bucket(bucket).Object(name).NewWriter(t.Context())
	w.ContentType = contentType
	w.ChunkSize = 256 << 10
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatalf("seeding gs://%s/%s: %v", bucket, name, err)
	}
}

func get(t testing.TB, c *gcs.Client, bucket, name string) ([]byte, *gcs.ObjectAttrs) {
	t.Helper()
	ctx := t.Context()
	attrs, err := c.Bucket(bucket).Object(name).Attrs(ctx)
	if err != nil {
		t.Fatalf("attrs of gs://%s/%s: %v", bucket, name, err)
	}
	r, err := c.Bucket(bucket).Object(name).NewReader(ctx)
	if err != nil {
		t.Fatalf("reading gs://%s/%s: %v", bucket, name, err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return b, attrs
}

func exists(t testing.TB, c *gcs.Client, bucket, name string) bool {
	t.Helper()
	_, err := c.Bucket(bucket).Object(name).Attrs(context.WithoutCancel(t.Context()))
	return err == nil
}

func newServer(t testing.TB) *storagetest.Server {
	// "other" is a bucket genimg is not configured to read.
	return storagetest.NewServer(t, inBucket, outBucket, "other")
}
