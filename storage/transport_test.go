package storage

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
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

// A body closed unread (a DELETE's answer) leaves the connection reusable.
func TestDrainingTransportReusesConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "{\"kind\": \"storage#object\"}\n")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for _, tt := range []struct {
		name string
		rt   http.RoundTripper
		want int64
	}{
		{"plain", &http.Transport{}, 5},
		{"draining", drainingTransport{&http.Transport{}}, 1},
	} {
		conns.Store(0)
		c := &http.Client{Transport: tt.rt}
		for range 5 {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, srv.URL, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // unread, as the client library does
		}
		if got := conns.Load(); got != tt.want {
			t.Errorf("%s: %d connections for 5 requests, want %d", tt.name, got, tt.want)
		}
	}
}
