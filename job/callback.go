package job

import (
	"fmt"
	"net/url"
	"strings"
)

// MaxCallbackURLBytes bounds a callback URL.
const MaxCallbackURLBytes = 2048

// checkCallback checks the form of the job's callback URL: an absolute
// http(s) URL with a host, no user information and no fragment. Which
// schemes and addresses a deployment will actually call is decided by
// internal/callback, which may resolve the host; this check is pure.
func (j *Job) checkCallback() error {
	if j.Callback == nil {
		return nil
	}
	raw := j.Callback.URL
	if raw == "" {
		return fmt.Errorf(`callback.url is required: the https:// URL that receives the completion event, such as {"url": "https://receiver.example/hooks/genimg"}`)
	}
	if len(raw) > MaxCallbackURLBytes {
		return fmt.Errorf("callback.url is %d bytes; at most %d are accepted", len(raw), MaxCallbackURLBytes)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("callback.url %q: not a URL; expected https://host/path", truncate(raw))
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("callback.url %q: scheme %q; expected https://host/path", truncate(raw), truncate(u.Scheme))
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("callback.url %q: no host; expected https://host/path", truncate(raw))
	case u.User != nil:
		return fmt.Errorf("callback.url %q: user information in the URL is not accepted; receivers authenticate genimg by the webhook-signature header", truncate(redactUser(raw)))
	case u.Fragment != "" || strings.HasSuffix(raw, "#"):
		return fmt.Errorf("callback.url %q: a fragment (#…) is never sent; remove it", truncate(raw))
	}
	return nil
}

// redactUser drops a password from a URL quoted in a message.
func redactUser(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}
