// Package storagetest runs fake-gcs-server in process for tests and the
// local stack, with real cloud.google.com/go/storage clients whose HTTP
// traffic passes through a fault-injecting transport.
package storagetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
)

// A Server is an in-process fake-gcs-server listening on loopback.
type Server struct {
	// Fake is the fake-gcs-server itself (for seeding objects directly).
	Fake *fakestorage.Server
	// URL is the server's base URL, http://127.0.0.1:PORT.
	URL string
	// Client talks to the server through Transport.
	Client *gcs.Client
	// Transport injects faults into Client's requests.
	Transport *Transport
}

// NewServer starts a fake Cloud Storage server on a free loopback port with
// the given buckets, and a client for it. Both stop when t ends.
func NewServer(t testing.TB, buckets ...string) *Server {
	t.Helper()
	fake, err := Start(0)
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	t.Cleanup(fake.Stop)
	for _, b := range buckets {
		fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	s := &Server{Fake: fake, URL: fake.URL()}
	s.Client, s.Transport = s.NewClient(t)
	return s
}

// Start starts a fake-gcs-server on 127.0.0.1:port (0: a free port), with
// PublicHost set to that address so that XML-path reads work too. The
// caller stops it.
func Start(port int) (*fakestorage.Server, error) {
	var lastErr error
	for range 5 {
		p := port
		if p == 0 {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			p = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{
			Scheme:     "http",
			Host:       "127.0.0.1",
			Port:       uint16(p),
			PublicHost: fmt.Sprintf("127.0.0.1:%d", p),
			Writer:     io.Discard,
		})
		if err == nil {
			return fake, nil
		}
		lastErr = err
		if port != 0 {
			break
		}
	}
	return nil, fmt.Errorf("starting fake-gcs-server: %w", lastErr)
}

// NewClient makes another client of the server (another "instance"), with
// its own fault transport. It is closed when t ends.
func (s *Server) NewClient(t testing.TB) (*gcs.Client, *Transport) {
	t.Helper()
	c, tr, err := NewClient(context.Background(), s.URL)
	if err != nil {
		t.Fatalf("storagetest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, tr
}

// NewClient connects a real storage client to the fake at baseURL: JSON
// API for reads and writes, no credentials, fast retries (so tests of
// retried faults take milliseconds), every request through a new Transport.
func NewClient(ctx context.Context, baseURL string) (*gcs.Client, *Transport, error) {
	tr := &Transport{Base: &http.Transport{MaxIdleConnsPerHost: 64}}
	c, err := gcs.NewClient(ctx,
		option.WithEndpoint(strings.TrimSuffix(baseURL, "/")+"/storage/v1/"),
		option.WithoutAuthentication(),
		option.WithHTTPClient(&http.Client{Transport: tr}),
		gcs.WithJSONReads(),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("storage client for %s: %w", baseURL, err)
	}
	c.SetRetry(
		gcs.WithBackoff(gax.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond, Multiplier: 2}),
		gcs.WithMaxAttempts(4),
	)
	return c, tr, nil
}

// A Fault is one injected failure.
type Fault struct {
	// Match selects requests; nil matches all. See MatchObject.
	Match func(r *http.Request, body []byte) bool
	// Status answers the request with this HTTP status without reaching
	// the server (e.g. 429, 503).
	Status int
	// DropResponse lets the request reach the server (it commits) and then
	// fails it with a connection reset, as a lost answer looks.
	DropResponse bool
	// Times is how many matching requests fail; 0 means every one.
	Times int
}

// A Transport is an http.RoundTripper that injects Faults. It is safe for
// concurrent use.
type Transport struct {
	Base http.RoundTripper

	mu       sync.Mutex
	faults   []*Fault
	requests int
	injected int
}

// Inject adds a fault.
func (t *Transport) Inject(f Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults = append(t.faults, &f)
}

// Clear removes all faults.
func (t *Transport) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults = nil
}

// Counts answers how many requests passed and how many faults fired.
func (t *Transport) Counts() (requests, injected int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.requests, t.injected
}

// maxPeek bounds how much of an upload body is buffered for matching.
const maxPeek = 1 << 20

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil && r.ContentLength >= 0 && r.ContentLength <= maxPeek && r.Method != http.MethodGet {
		b, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		r = r.Clone(r.Context())
		r.Body = io.NopCloser(bytes.NewReader(b))
		r.ContentLength = int64(len(b))
	}
	t.mu.Lock()
	t.requests++
	var fire *Fault
	for _, f := range t.faults {
		if f.Times < 0 {
			continue
		}
		if f.Match == nil || f.Match(r, body) {
			fire = f
			if f.Times > 0 {
				f.Times--
				if f.Times == 0 {
					f.Times = -1 // spent
				}
			}
			t.injected++
			break
		}
	}
	t.mu.Unlock()
	if fire == nil {
		return t.Base.RoundTrip(r)
	}
	if fire.Status != 0 {
		if r.Body != nil {
			r.Body.Close()
		}
		msg := fmt.Sprintf(`{"error":{"code":%d,"message":"injected by storagetest"}}`, fire.Status)
		return &http.Response{
			StatusCode: fire.Status, Status: fmt.Sprintf("%d %s", fire.Status, http.StatusText(fire.Status)),
			Header: http.Header{"Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(msg)), ContentLength: int64(len(msg)),
			Request: r, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}, nil
	}
	resp, err := t.Base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The server has committed; the caller never learns it.
	return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
}

// MatchObject matches requests that touch object name: reads, deletes and
// metadata calls by path, uploads by the name in the query or body.
func MatchObject(name string) func(*http.Request, []byte) bool {
	escaped := "/o/" + url.PathEscape(name)
	return func(r *http.Request, body []byte) bool {
		if strings.HasSuffix(r.URL.EscapedPath(), escaped) || strings.HasSuffix(r.URL.Path, "/o/"+name) {
			return true
		}
		if r.URL.Query().Get("name") == name {
			return true
		}
		return bytes.Contains(body, []byte(`"name":"`+name+`"`))
	}
}

// MatchUpload matches uploads (object writes) of name.
func MatchUpload(name string) func(*http.Request, []byte) bool {
	m := MatchObject(name)
	return func(r *http.Request, body []byte) bool {
		return strings.Contains(r.URL.Path, "/upload/") && m(r, body)
	}
}
