package geminitest

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// cache is one context cache (cachedContents/ID).
type cache struct {
	Name        string
	Model       string
	DisplayName string
	Created     time.Time
	Expires     time.Time
	// Tokens is what the cache holds: its text at about 4 characters a
	// token, 258 tokens per image.
	Tokens int32
}

// cacheRequest is POST /v1beta/cachedContents.
type cacheRequest struct {
	Model             string    `json:"model"`
	DisplayName       string    `json:"displayName,omitempty"`
	Contents          []Content `json:"contents,omitempty"`
	SystemInstruction *Content  `json:"systemInstruction,omitempty"`
	TTL               string    `json:"ttl,omitempty"`
	ExpireTime        string    `json:"expireTime,omitempty"`
}

func (c *cache) resource() map[string]any {
	return map[string]any{
		"name": c.Name, "model": c.Model, "displayName": c.DisplayName,
		"createTime": c.Created.UTC().Format(time.RFC3339Nano), "updateTime": c.Created.UTC().Format(time.RFC3339Nano),
		"expireTime":    c.Expires.UTC().Format(time.RFC3339Nano),
		"usageMetadata": map[string]any{"totalTokenCount": c.Tokens},
	}
}

// cacheNotFound is what the Gemini API answers for a cache that expired or
// never was: 403, not 404.
func cacheNotFound() *APIError {
	return newAPIError(403, "CachedContent not found (or permission denied)")
}

func (h *Handler) createCache(w http.ResponseWriter, body []byte) {
	var req cacheRequest
	if err := json.Unmarshal(body, &req); err != nil {
		badRequest("Invalid JSON payload received. " + err.Error()).write(w)
		return
	}
	model := strings.TrimPrefix(req.Model, "models/")
	if apiErr := h.checkModel(Request{Backend: "gemini-api", Model: model}); apiErr != nil {
		apiErr.write(w)
		return
	}
	var tokens int32
	count := func(c *Content) {
		for _, p := range c.Parts {
			switch {
			case p.InlineData != nil, p.FileData != nil:
				tokens += tokensPerInputImage
			default:
				tokens += textTokens(p.Text)
			}
		}
	}
	for i := range req.Contents {
		count(&req.Contents[i])
	}
	if req.SystemInstruction != nil {
		count(req.SystemInstruction)
	}
	if tokens == 0 {
		badRequest("Cached content must not be empty.").write(w)
		return
	}
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	now := h.res.now()
	ttl := time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			badRequest("Invalid value at 'cached_content.ttl' (type.googleapis.com/google.protobuf.Duration), " + req.TTL).write(w)
			return
		}
		ttl = d
	}
	c := &cache{Name: "cachedContents/" + h.res.id("cache"), Model: "models/" + model, DisplayName: req.DisplayName,
		Created: now, Expires: now.Add(ttl), Tokens: tokens}
	h.res.caches[c.Name] = c
	h.res.creates++
	writeJSON(w, c.resource())
}

// liveCache returns the named cache unless it has expired; callers hold mu.
func (h *Handler) liveCache(name string) (*cache, bool) {
	h.res.init()
	c, ok := h.res.caches[name]
	if !ok || !h.res.now().Before(c.Expires) {
		return nil, false
	}
	return c, true
}

func (h *Handler) getCache(w http.ResponseWriter, name string) {
	h.res.mu.Lock()
	c, ok := h.liveCache(name)
	h.res.mu.Unlock()
	if !ok {
		cacheNotFound().write(w)
		return
	}
	writeJSON(w, c.resource())
}

func (h *Handler) deleteCache(w http.ResponseWriter, name string) {
	h.res.mu.Lock()
	_, ok := h.liveCache(name)
	delete(h.res.caches, name)
	h.res.deleted[name] = true
	h.res.mu.Unlock()
	if !ok {
		cacheNotFound().write(w)
		return
	}
	writeJSON(w, map[string]any{})
}

// cacheTokens is what a live cache holds, by its name as a request spells
// it (cachedContents/ID).
func (h *Handler) cacheTokens(name string) (int32, bool) {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	c, ok := h.liveCache(name)
	if !ok {
		return 0, false
	}
	return c.Tokens, true
}

// checkCachedContent answers 403 for a generateContent request naming a
// cache that expired or never was, as the service does; otherwise it puts
// the body back and lets the request through.
func (h *Handler) checkCachedContent(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	body, err := bodyOf(r, h.opts.MaxBodyBytes)
	if err != nil || !strings.Contains(string(body), `"cachedContent"`) {
		return false
	}
	var probe struct {
		CachedContent string `json:"cachedContent"`
	}
	if json.Unmarshal(body, &probe) != nil || probe.CachedContent == "" || !cachedName.MatchString(probe.CachedContent) {
		return false // the normal path reports a bad body or name
	}
	if _, ok := h.cacheTokens(probe.CachedContent); ok || !h.cacheKnown(probe.CachedContent) {
		// A name this stand-in never issued is taken as a cache made
		// elsewhere (golden files, the local stack) and answered as before.
		return false
	}
	h.calls.Add(1)
	cacheNotFound().write(w)
	return true
}

// cacheKnown reports whether the stand-in ever issued the name (caches are
// kept, expired or not, until deleted; a deleted one is forgotten and
// answered like an expired one through its tombstone).
func (h *Handler) cacheKnown(name string) bool {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	h.res.init()
	_, ok := h.res.caches[name]
	return ok || h.res.deleted[name]
}

// Caches lists the live caches' names.
func (h *Handler) Caches() []string {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	var names []string
	for name := range h.res.caches {
		if _, ok := h.liveCache(name); ok {
			names = append(names, name)
		}
	}
	return names
}

// CacheCreates is how many caches were created.
func (h *Handler) CacheCreates() int {
	h.res.mu.Lock()
	defer h.res.mu.Unlock()
	return h.res.creates
}
