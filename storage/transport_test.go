package storage

import (
	"bytes"
	"strings"
	"testing"

	gcs "cloud.google.com/go/storage"
	"google.golang.org/api/option"
)

// The production transport carries one-request uploads (chunked bodies),
// streamed uploads and reads, against the emulator without credentials.
func TestHTTPClient(t *testing.T) {
	srv := newServer(t)
	opts := []option.ClientOption{option.WithEndpoint(strings.TrimSuffix(srv.URL, "/") + "/storage/v1/"), option.WithoutAuthentication()}
	hc, err := HTTPClient(t.Context(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	client, err := gcs.NewClient(t.Context(), append(opts, option.WithHTTPClient(hc), gcs.WithJSONReads())...)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	o := NewObjects(client, outBucket, 0, 0)
	big := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: 49 chunks of 32 KiB
	if _, err := o.Put(t.Context(), "t/one-request", big, Put{If: CreateOnly}); err != nil {
		t.Fatalf("Put: %v", err)
	}
	w := o.Writer(t.Context(), "t/streamed", "application/octet-stream")
	if _, err := w.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("streamed upload: %v", err)
	}
	for _, name := range []string{"t/one-request", "t/streamed"} {
		got, _, err := o.Get(t.Context(), name, 4<<20)
		if err != nil || !bytes.Equal(got, big) {
			t.Errorf("%s: %d bytes back (%v), want the %d written", name, len(got), err, len(big))
		}
	}
	if _, err := HTTPClient(t.Context(), option.WithHTTPClient(hc)); err == nil {
		t.Error("HTTPClient accepted an HTTP client of the caller's")
	}
}
