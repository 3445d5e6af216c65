package storage

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	gcs "cloud.google.com/go/storage"
	"golang.org/x/net/http2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"
)

// uploadWriteBuffer is the size of each connection's write buffer. An
// upload body of unknown length (a one-request upload is a multipart body
// streamed through a pipe) goes out with chunked transfer encoding, 32 KiB
// at a time, and net/http flushes every chunk: with the default 4 KiB buffer
// that is three writes per chunk (4096 bytes, the rest, then a 2-byte
// "\r\n"), about 150 write system calls for a 1.5 MB image (strace of a
// side.sh run). A buffer that holds a whole chunk with its size line and
// CRLF sends each in one; it is per connection (up to 100 pooled), so no
// bigger than that.
const uploadWriteBuffer = 36 << 10

// HTTPClient is the Cloud Storage client's HTTP client: the client
// library's own authenticated transport (Application Default Credentials
// and the storage scopes, or what opts say) over a base transport like the
// library's default — http.DefaultTransport with 100 idle connections per
// host and HTTP/2 health checks — whose write buffer holds a whole upload
// chunk. Pass it with option.WithHTTPClient, beside opts.
func HTTPClient(ctx context.Context, opts ...option.ClientOption) (*http.Client, error) {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 100
	base.WriteBufferSize = uploadWriteBuffer
	if h2, err := http2.ConfigureTransports(base); err == nil {
		h2.ReadIdleTimeout = 31 * time.Second // as the library's default transport
	}
	scopes := option.WithScopes(gcs.ScopeFullControl, "https://www.googleapis.com/auth/cloud-platform")
	tr, err := htransport.NewTransport(ctx, drainingTransport{base}, append([]option.ClientOption{scopes}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("cloud storage transport: %w", err)
	}
	return &http.Client{Transport: tr}, nil
}

// drainBytes is how much of a response body drainingTransport reads
// before closing it.
const drainBytes = 4 << 10

// drainingTransport keeps connections reusable when the client library
// closes a response body it has not read to its end — a DELETE's answer,
// or the newline after a JSON document — which makes net/http close the
// connection, so that the next request dials anew (about one new
// connection per job against the emulator, strace of a side.sh run). It
// reads at most drainBytes more first; a longer body is closed as before.
type drainingTransport struct{ base http.RoundTripper }

func (d drainingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := d.base.RoundTrip(r)
	if resp != nil && resp.Body != nil && resp.Body != http.NoBody {
		resp.Body = drainOnClose{resp.Body}
	}
	return resp, err
}

type drainOnClose struct{ io.ReadCloser }

func (b drainOnClose) Close() error {
	_, _ = io.CopyN(io.Discard, b.ReadCloser, drainBytes)
	return b.ReadCloser.Close()
}
