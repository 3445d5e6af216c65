package callback

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/genimg/genimg/job"
)

// A Resolver looks up a host's addresses; *net.Resolver is one. Tests
// pass a map, so that no name is ever looked up off the machine.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// A Policy says which callback URLs a deployment calls.
type Policy struct {
	// Allow lists hosts (GENIMG_CALLBACK_ALLOW) exempt from the address
	// rules: an operator's own receiver on a private network.
	Allow []string
	// AllowLoopback (GENIMG_CALLBACK_ALLOW_LOOPBACK, set by the local
	// stack) accepts loopback addresses, and plain http:// URLs.
	AllowLoopback bool
}

// A Guard keeps callbacks from reaching what they should not (SSRF): https
// only, and no loopback, private, link-local, metadata-server or other
// non-public address, unless the policy allows the host. It checks a URL
// when a job arrives (resolving its host), and every address again at
// connect time (Dial), so that a name that resolves elsewhere the second
// time (DNS rebinding) still cannot reach a refused address.
type Guard struct {
	policy   Policy
	resolver Resolver
}

// NewGuard returns a Guard for p that resolves names with r (nil:
// net.DefaultResolver).
func NewGuard(p Policy, r Resolver) *Guard {
	if r == nil {
		r = net.DefaultResolver
	}
	allow := make([]string, len(p.Allow))
	for i, h := range p.Allow {
		allow[i] = canonicalHost(h)
	}
	p.Allow = allow
	return &Guard{policy: p, resolver: r}
}

// refusedRanges are the addresses a callback never reaches, with what
// they are, for the message. Loopback is handled apart (the local stack
// allows it).
var refusedRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), "the metadata server"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "a metadata server"},
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified (this-network) address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("::/96"), "an unspecified or IPv4-compatible address"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64 address"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address"},
	{netip.MustParsePrefix("fc00::/7"), "a private (unique local) address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
}

// metadataHosts are names of the metadata server that must never be
// called, whatever they resolve to.
var metadataHosts = []string{"metadata.google.internal", "metadata", "metadata.goog"}

// Check reports whether a callback to raw is allowed. The error wraps
// job.ErrInvalid and says what was refused and what is accepted; or
// job.ErrTransient when the host's name could not be looked up for now.
func (g *Guard) Check(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: callback.url: not an absolute URL; expected https://host/path", job.ErrInvalid)
	}
	host := canonicalHost(u.Hostname())
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && g.policy.AllowLoopback:
		// The local stack: receivers such as `genimg listen` serve plain http.
	default:
		return fmt.Errorf("%w: callback.url: scheme %q is not accepted; use https://", job.ErrInvalid, u.Scheme)
	}
	if g.allowed(host) {
		return nil
	}
	if slices.Contains(metadataHosts, host) {
		return fmt.Errorf("%w: callback.url: host %s is the metadata server; callbacks never reach it", job.ErrInvalid, host)
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if err := g.checkAddr(a); err != nil {
			if a.String() == host {
				return fmt.Errorf("%w: callback.url: %v", job.ErrInvalid, err)
			}
			return fmt.Errorf("%w: callback.url: host %s resolves to a refused address: %v", job.ErrInvalid, host, err)
		}
	}
	return nil
}

// resolve is the host's addresses: itself when it is an address, the
// loopback addresses for localhost (RFC 6761: never looked up).
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := g.resolver.LookupNetIP(ctx, "ip", host)
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return nil, fmt.Errorf("%w: callback.url: host %s is not found in DNS", job.ErrInvalid, host)
	case err != nil:
		return nil, fmt.Errorf("%w: looking up the callback host %s: %v", job.ErrTransient, host, err) // a DNS outage: retry, do not fail the job
	case len(addrs) == 0:
		return nil, fmt.Errorf("%w: callback.url: host %s has no address", job.ErrInvalid, host)
	}
	return addrs, nil
}

// checkAddr refuses an address a callback must not reach.
func (g *Guard) checkAddr(a netip.Addr) error {
	a = a.Unmap()
	if a.IsLoopback() {
		if g.policy.AllowLoopback {
			return nil
		}
		return fmt.Errorf("%s is a loopback address; callbacks go to public addresses only (or a host listed in GENIMG_CALLBACK_ALLOW)", a)
	}
	a = a.WithZone("")
	for _, r := range refusedRanges {
		if r.prefix.Contains(a) {
			return fmt.Errorf("%s is %s; callbacks go to public addresses only (or a host listed in GENIMG_CALLBACK_ALLOW)", a, r.what)
		}
	}
	if !a.IsGlobalUnicast() {
		return fmt.Errorf("%s is not a public unicast address; callbacks go to public addresses only (or a host listed in GENIMG_CALLBACK_ALLOW)", a)
	}
	return nil
}

func (g *Guard) allowed(host string) bool { return slices.Contains(g.policy.Allow, host) }

// canonicalHost lowercases a host and drops a trailing dot and IPv6
// brackets, so that allow-list entries and URLs compare.
func canonicalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	return strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
}

// DialContext connects to addr (host:port) for a callback. The host is
// resolved with the Guard's resolver, and the address actually connected
// is checked again by the dialer's Control hook, after the lookup and
// before any packet is sent: the check at job time cannot be undone by a
// name that resolves elsewhere now.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	host = canonicalHost(host)
	d := &net.Dialer{Timeout: 10 * time.Second}
	if g.allowed(host) {
		return d.DialContext(ctx, network, addr)
	}
	if slices.Contains(metadataHosts, host) {
		return nil, fmt.Errorf("callback to %s refused: the metadata server", host)
	}
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("callback to %s refused: unparsable address %q", host, address)
		}
		if err := g.checkAddr(ap.Addr()); err != nil {
			return fmt.Errorf("callback to %s refused at connect time: %v", host, err)
		}
		return nil
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
