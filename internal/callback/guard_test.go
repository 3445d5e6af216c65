package callback

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/genimg/genimg/job"
)

// hosts is a resolver that never leaves the machine: each name answers
// its next list of addresses (the last one repeats), so a test can make a
// name resolve elsewhere the second time, as DNS rebinding does.
type hosts struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	asked   map[string]int
}

func (h *hosts) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	as, ok := h.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	if h.asked == nil {
		h.asked = map[string]int{}
	}
	n := min(h.asked[host], len(as)-1)
	h.asked[host]++
	return as[n], nil
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestGuardCheck(t *testing.T) {
	r := &hosts{answers: map[string][][]netip.Addr{
		"receiver.example":  {addrs("203.0.113.10")},
		"internal.example":  {addrs("10.1.2.3")},
		"mixed.example":     {addrs("203.0.113.10", "192.168.1.1")},
		"v6private.example": {addrs("fd12::1")},
		"mapped.example":    {addrs("::ffff:127.0.0.1")},
		"ops.corp":          {addrs("10.9.9.9")},
	}}
	production := Policy{Allow: []string{"ops.corp"}}
	local := Policy{AllowLoopback: true}
	tests := []struct {
		name    string
		policy  Policy
		url     string
		wantErr string // "" accepts
	}{
		{"public https", production, "https://receiver.example/hooks", ""},
		{"public literal", production, "https://203.0.113.10/hooks", ""},
		{"http in production", production, "http://receiver.example/hooks", `scheme "http" is not accepted`},
		{"ftp", local, "ftp://receiver.example/", `scheme "ftp" is not accepted`},
		{"loopback literal", production, "https://127.0.0.1:8443/", "127.0.0.1 is a loopback address"},
		{"loopback v6", production, "https://[::1]/", "::1 is a loopback address"},
		{"localhost", production, "https://localhost/", "resolves to a refused address: 127.0.0.1 is a loopback address"},
		{"private literal", production, "https://10.0.0.1/", "10.0.0.1 is a private address"},
		{"metadata literal", production, "https://169.254.169.254/computeMetadata/v1/", "169.254.169.254 is the metadata server"},
		{"metadata name", production, "https://metadata.google.internal/", "is the metadata server"},
		{"link-local", production, "https://169.254.10.1/", "is a link-local address"},
		{"unspecified", production, "https://0.0.0.0/", "unspecified"},
		{"cgnat", production, "https://100.64.0.1/", "carrier-grade NAT"},
		{"name to private", production, "https://internal.example/", "host internal.example resolves to a refused address: 10.1.2.3 is a private address"},
		{"one private address among public", production, "https://mixed.example/", "192.168.1.1 is a private address"},
		{"name to private v6", production, "https://v6private.example/", "fd12::1 is a private (unique local) address"},
		{"mapped loopback", production, "https://mapped.example/", "127.0.0.1 is a loopback address"},
		{"unknown name", production, "https://nowhere.example/", "not found in DNS"},
		{"allow-listed private host", production, "https://ops.corp/hook", ""},
		{"allow-listed host still https", production, "http://ops.corp/hook", `scheme "http" is not accepted`},
		{"local loopback over http", local, "http://127.0.0.1:9000/", ""},
		{"local localhost", local, "http://localhost:9000/", ""},
		{"local still refuses private", local, "http://10.0.0.1/", "10.0.0.1 is a private address"},
		{"local still refuses metadata", local, "http://169.254.169.254/", "metadata server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewGuard(tt.policy, r).Check(t.Context(), tt.url)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want accepted", tt.url, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Check(%s) = %v, want an error containing %q", tt.url, err, tt.wantErr)
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Errorf("Check(%s) = %v, want it to wrap job.ErrInvalid", tt.url, err)
			}
		})
	}
}

// TestDialRefusesRebinding: a name that was public when the job was
// checked and resolves to loopback at delivery is refused at connect time:
// the receiver on loopback never sees a request.
func TestDialRefusesRebinding(t *testing.T) {
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	r := &hosts{answers: map[string][][]netip.Addr{"rebind.example": {addrs("203.0.113.10"), addrs("127.0.0.1")}}}
	g := NewGuard(Policy{}, r)
	if err := g.Check(t.Context(), "https://rebind.example/"); err != nil {
		t.Fatalf("first lookup is public, Check = %v", err)
	}
	_, err := g.DialContext(t.Context(), "tcp", net.JoinHostPort("rebind.example", itoa(port)))
	if err == nil || !strings.Contains(err.Error(), "refused at connect time") {
		t.Fatalf("DialContext after rebinding = %v, want refused at connect time", err)
	}
	if hits != 0 {
		t.Errorf("the receiver got %d requests, want 0", hits)
	}

	// The same dial with loopback allowed reaches it: the refusal above
	// was the Control hook's, not a dead port.
	local := NewGuard(Policy{AllowLoopback: true}, r)
	c, err := local.DialContext(t.Context(), "tcp", net.JoinHostPort("rebind.example", itoa(port)))
	if err != nil {
		t.Fatalf("DialContext with loopback allowed = %v", err)
	}
	c.Close()
}

func itoa(n int) string { return strconv.Itoa(n) }
