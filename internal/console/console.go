// Package console is the local stack's web console (contract section 9.6):
// every job as it moves, each job's record, images and trace, the
// completion and dead-letter topics, spend and the kill switch, and a form
// that submits a job through any trigger. Its pages are plain HTML, CSS and
// JavaScript embedded in the binary: no build step, nothing fetched from
// beyond the machine.
package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed static
var static embed.FS

// Options are the console's sources; any may be nil.
type Options struct {
	Jobs   Jobs
	Events Events
	Spend  Spend
	Traces Traces
	Submit Submitter
	// Poll is how often the job index is listed while a page watches it
	// (default 1 s).
	Poll time.Duration
	// Now replaces time.Now.
	Now func() time.Time
}

// A Console serves the pages and their API.
type Console struct {
	o   Options
	mux *http.ServeMux

	mu       sync.Mutex
	records  map[string]cached // job id → its record, by generation
	index    []Entry           // newest first
	indexed  time.Time
	indexSig string
	subs     map[chan sseEvent]bool
	events   []Message // completion topic, newest last (bounded)
	dead     []Message // dead-letter topic, newest last (bounded)
	jobs     map[string]json.RawMessage
	version  int
}

type cached struct {
	gen int64
	raw json.RawMessage
	sum summaryFields
}

type sseEvent struct{ name, data string }

// keep bounds the messages kept per topic.
const keep = 500

// New builds the console and starts watching its sources until ctx ends.
func New(ctx context.Context, o Options) *Console {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Console{o: o, mux: http.NewServeMux(), records: map[string]cached{}, subs: map[chan sseEvent]bool{},
		jobs: map[string]json.RawMessage{}}
	files, _ := fs.Sub(static, "static")
	c.mux.Handle("GET /", http.FileServerFS(files))
	c.mux.HandleFunc("GET /api/jobs", c.listJobs)
	c.mux.HandleFunc("GET /api/jobs/{id}", c.getJob)
	c.mux.HandleFunc("POST /api/jobs/{id}/rerun", c.rerun)
	c.mux.HandleFunc("POST /api/jobs/{id}/continue", c.continueJob)
	c.mux.HandleFunc("GET /api/object", c.object)
	c.mux.HandleFunc("GET /api/stream", c.stream)
	c.mux.HandleFunc("GET /api/events", c.listEvents)
	c.mux.HandleFunc("POST /api/deadletters/{id}/redeliver", c.redeliver)
	c.mux.HandleFunc("GET /api/spend", c.spend)
	c.mux.HandleFunc("POST /api/spend/pause", c.pause(true))
	c.mux.HandleFunc("POST /api/spend/resume", c.pause(false))
	c.mux.HandleFunc("POST /api/submit", c.submit)
	c.mux.HandleFunc("GET /api/directives", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, Directives) })
	if o.Events != nil {
		go o.Events.Watch(ctx, c.onMessage)
	}
	if o.Jobs != nil {
		go c.poll(ctx)
	}
	return c
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	c.mux.ServeHTTP(w, r)
}

// ---- jobs ----

// summaryFields are what the list shows of a record.
type summaryFields struct {
	Outcome string `json:"outcome"`
	Trigger struct {
		Kind string `json:"kind"`
	} `json:"trigger"`
	Model   string            `json:"model"`
	CostUSD float64           `json:"costUsd"`
	Labels  map[string]string `json:"labels"`
	Timings struct {
		TotalMs     int64     `json:"totalMs"`
		CompletedAt time.Time `json:"completedAt"`
	} `json:"timings"`
	Parent string `json:"parent"`
}

// A Summary is one row of the jobs list.
type Summary struct {
	ID         string            `json:"id"`
	State      string            `json:"state"`
	Outcome    string            `json:"outcome,omitempty"`
	Trigger    string            `json:"trigger,omitempty"`
	Model      string            `json:"model,omitempty"`
	CostUSD    float64           `json:"costUsd"`
	DurationMs int64             `json:"durationMs,omitempty"`
	Created    time.Time         `json:"created"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// refresh lists the index when it is older than the poll interval, and
// reports whether it changed.
func (c *Console) refresh(ctx context.Context, force bool) ([]Entry, bool, error) {
	c.mu.Lock()
	if !force && c.o.Now().Sub(c.indexed) < c.o.Poll/2 && c.index != nil {
		idx := c.index
		c.mu.Unlock()
		return idx, false, nil
	}
	c.mu.Unlock()
	idx, err := c.o.Jobs.Index(ctx)
	if err != nil {
		return nil, false, err
	}
	slices.SortStableFunc(idx, func(a, b Entry) int {
		if d := b.Created.Compare(a.Created); d != 0 {
			return d
		}
		return strings.Compare(a.ID, b.ID)
	})
	var sig strings.Builder
	for _, e := range idx {
		fmt.Fprintf(&sig, "%s/%d/%d/%d;", e.ID, e.Record, e.Claim, e.Batch)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := sig.String() != c.indexSig
	c.index, c.indexed, c.indexSig = idx, c.o.Now(), sig.String()
	return idx, changed, nil
}

// poll lists the index while a page watches, and tells the pages when it
// changed.
func (c *Console) poll(ctx context.Context) {
	t := time.NewTicker(c.o.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		watched := len(c.subs) > 0
		c.mu.Unlock()
		if !watched {
			continue
		}
		if _, changed, err := c.refresh(ctx, true); err == nil && changed {
			c.broadcast(sseEvent{name: "jobs", data: "{}"})
		}
	}
}

// record reads a job's record, from the cache when its generation is
// known.
func (c *Console) record(ctx context.Context, e Entry) (cached, error) {
	if e.Record == 0 {
		return cached{}, nil
	}
	c.mu.Lock()
	r, ok := c.records[e.ID]
	c.mu.Unlock()
	if ok && r.gen == e.Record {
		return r, nil
	}
	raw, err := c.o.Jobs.Read(ctx, e.ID, FileRecord)
	if err != nil || raw == nil {
		return cached{}, err
	}
	r = cached{gen: e.Record, raw: raw}
	_ = json.Unmarshal(raw, &r.sum)
	c.mu.Lock()
	c.records[e.ID] = r
	c.mu.Unlock()
	return r, nil
}

// lease is what the console reads of claim.json.
type lease struct {
	// State is queued, held or running (storage's job state machine);
	// Reason says why a held job waits.
	State     string    `json:"state"`
	Reason    string    `json:"reason"`
	ExpiresAt time.Time `json:"expiresAt"`
	Attempt   int       `json:"attempt"`
	Trigger   struct {
		Kind string `json:"kind"`
	} `json:"trigger"`
}

// state names a job's state from its files as storage.Store.Status does
// (contract 9.1): done when its record exists, batched, held or queued as
// its claim says, running under a live lease; a lease that ran out is
// queued again (waiting for its redelivery).
func (c *Console) state(ctx context.Context, e Entry, _ bool) (string, lease) {
	var l lease
	switch {
	case e.Record != 0:
		return "done", l
	case e.Batch != 0:
		return "batched", l
	case e.Claim == 0:
		return "queued", l
	}
	raw, err := c.o.Jobs.Read(ctx, e.ID, FileClaim)
	if err != nil || raw == nil || json.Unmarshal(raw, &l) != nil {
		return "queued", l
	}
	switch {
	case l.State == "held", l.State == "queued":
		return l.State, l
	case c.o.Now().Before(l.ExpiresAt):
		return "running", l
	}
	return "queued", l
}

func (c *Console) paused(ctx context.Context) bool {
	if c.o.Spend == nil {
		return false
	}
	t, err := c.o.Spend.Totals(ctx, c.o.Now())
	return err == nil && t.Paused
}

func (c *Console) summary(ctx context.Context, e Entry, paused bool) (Summary, error) {
	s := Summary{ID: e.ID, Created: e.Created}
	r, err := c.record(ctx, e)
	if err != nil {
		return s, err
	}
	st, l := c.state(ctx, e, paused)
	s.State = st
	s.Trigger = l.Trigger.Kind
	if r.raw != nil {
		s.Outcome, s.Trigger, s.Model, s.CostUSD = r.sum.Outcome, r.sum.Trigger.Kind, r.sum.Model, r.sum.CostUSD
		s.DurationMs, s.Labels = r.sum.Timings.TotalMs, r.sum.Labels
	}
	return s, nil
}

// listJobs answers a page of the jobs list, newest first:
// ?limit=&offset=&outcome=&trigger=&q= (q: part of an id, or a label's
// key or value).
func (c *Console) listJobs(w http.ResponseWriter, r *http.Request) {
	if c.o.Jobs == nil {
		writeError(w, http.StatusNotImplemented, "jobs are not available")
		return
	}
	start := c.o.Now()
	q := r.URL.Query()
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	offset, _ := strconv.Atoi(q.Get("offset"))
	offset = max(offset, 0)
	outcome, trig, search := q.Get("outcome"), q.Get("trigger"), strings.ToLower(strings.TrimSpace(q.Get("q")))
	idx, _, err := c.refresh(r.Context(), false)
	if err != nil {
		writeError(w, http.StatusBadGateway, "listing the jobs: "+err.Error())
		return
	}
	paused := c.paused(r.Context())
	filtered := outcome != "" || trig != "" || search != ""
	var page []Summary
	matched := 0
	for _, e := range idx {
		if !filtered {
			if matched >= offset && len(page) < limit {
				s, err := c.summary(r.Context(), e, paused)
				if err != nil {
					writeError(w, http.StatusBadGateway, "reading job "+e.ID+": "+err.Error())
					return
				}
				page = append(page, s)
			}
			matched++
			continue
		}
		// Filters need each job's record; they are cached by generation.
		if search != "" && !strings.Contains(strings.ToLower(e.ID), search) {
			rec, err := c.record(r.Context(), e)
			if err != nil || !labelMatch(rec.sum.Labels, search) {
				continue
			}
		}
		if outcome != "" || trig != "" {
			rec, err := c.record(r.Context(), e)
			if err != nil {
				continue
			}
			if outcome != "" && rec.sum.Outcome != outcome && !(outcome == "pending" && rec.raw == nil) {
				continue
			}
			if trig != "" && rec.sum.Trigger.Kind != trig {
				continue
			}
		}
		if matched >= offset && len(page) < limit {
			s, err := c.summary(r.Context(), e, paused)
			if err != nil {
				continue
			}
			page = append(page, s)
		}
		matched++
	}
	if page == nil {
		page = []Summary{}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"jobs": page, "total": matched, "offset": offset, "limit": limit, "paused": paused,
		"tookMs": c.o.Now().Sub(start).Milliseconds(),
	})
}

func labelMatch(labels map[string]string, s string) bool {
	for k, v := range labels {
		if strings.Contains(strings.ToLower(k), s) || strings.Contains(strings.ToLower(v), s) {
			return true
		}
	}
	return false
}

// getJob answers a job's page: its record as stored, its state, claim,
// batch marker, trace and the jobs that continue it.
func (c *Console) getJob(w http.ResponseWriter, r *http.Request) {
	if c.o.Jobs == nil {
		writeError(w, http.StatusNotImplemented, "jobs are not available")
		return
	}
	id := r.PathValue("id")
	idx, _, err := c.refresh(r.Context(), false)
	if err != nil {
		writeError(w, http.StatusBadGateway, "listing the jobs: "+err.Error())
		return
	}
	i := slices.IndexFunc(idx, func(e Entry) bool { return e.ID == id })
	if i < 0 {
		if idx, _, err = c.refresh(r.Context(), true); err == nil {
			i = slices.IndexFunc(idx, func(e Entry) bool { return e.ID == id })
		}
	}
	if i < 0 {
		writeError(w, http.StatusNotFound, "no job "+id+" in the output bucket (yet)")
		return
	}
	e := idx[i]
	rec, err := c.record(r.Context(), e)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	st, _ := c.state(r.Context(), e, c.paused(r.Context()))
	claim, _ := c.o.Jobs.Read(r.Context(), id, FileClaim)
	batch, _ := c.o.Jobs.Read(r.Context(), id, FileBatch)
	out := map[string]any{"id": id, "state": st, "created": e.Created, "record": rec.raw, "claim": claim, "batch": batch}
	// Children: jobs whose record names this one as parent (cached records).
	children := []string{}
	c.mu.Lock()
	for cid, cr := range c.records {
		if cr.sum.Parent == id {
			children = append(children, cid)
		}
	}
	_, known := c.jobs[id]
	c.mu.Unlock()
	slices.Sort(children)
	out["children"] = children
	out["rerunnable"] = known
	if c.o.Traces != nil {
		spans, err := c.o.Traces.Trace(r.Context(), id)
		if err != nil {
			out["traceError"] = err.Error()
		}
		out["trace"] = spans
	}
	var msgs []Message
	c.mu.Lock()
	for _, m := range c.events {
		if m.Attributes["ce-subject"] == "jobs/"+id {
			msgs = append(msgs, m)
		}
	}
	c.mu.Unlock()
	out["events"] = msgs
	writeJSON(w, http.StatusOK, out)
}

// object streams an object of the stack's buckets (images, renditions,
// inputs) from the storage emulator.
func (c *Console) object(w http.ResponseWriter, r *http.Request) {
	if c.o.Jobs == nil {
		writeError(w, http.StatusNotImplemented, "objects are not available")
		return
	}
	uri := r.URL.Query().Get("uri")
	if !strings.HasPrefix(uri, "gs://") {
		writeError(w, http.StatusBadRequest, "uri must be gs://BUCKET/NAME")
		return
	}
	rc, ct, err := c.o.Jobs.Open(r.Context(), uri)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	defer rc.Close()
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "private, max-age=3600")
	io.Copy(w, rc)
}

// ---- submit, rerun, continue ----

// submit takes the form: prompt, via, ratio, renditions, callback, id,
// parent, image (file).
func (c *Console) submit(w http.ResponseWriter, r *http.Request) {
	if c.o.Submit == nil {
		writeError(w, http.StatusNotImplemented, "submitting is not available")
		return
	}
	if err := r.ParseMultipartForm(32 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		writeError(w, http.StatusBadRequest, "reading the form: "+err.Error())
		return
	}
	f := r.Form
	via := f.Get("via")
	if via == "" {
		via = ViaHTTP
	}
	if via != ViaHTTP && via != ViaPubSub && via != ViaUpload {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("trigger %q: use http, pubsub or upload", via))
		return
	}
	j := map[string]any{}
	id := strings.TrimSpace(f.Get("id"))
	if id == "" && via != ViaUpload {
		id = NewID()
	}
	if id != "" {
		j["id"] = id
	}
	prompt := f.Get("prompt")
	if strings.TrimSpace(prompt) == "" {
		writeError(w, http.StatusBadRequest, "a prompt is required")
		return
	}
	j["prompt"] = prompt
	if v := f.Get("aspectRatio"); v != "" {
		j["aspectRatio"] = v
	}
	if v := strings.TrimSpace(f.Get("callback")); v != "" {
		j["callback"] = map[string]string{"url": v}
	}
	if v := strings.TrimSpace(f.Get("parent")); v != "" {
		j["parent"] = v
	}
	if v := strings.TrimSpace(f.Get("renditions")); v != "" {
		var rs []map[string]any
		for _, part := range strings.Split(v, ",") {
			// format:maxSize, e.g. webp:512
			format, size, _ := strings.Cut(strings.TrimSpace(part), ":")
			rd := map[string]any{"format": format}
			if n, err := strconv.Atoi(size); err == nil {
				rd["maxSize"] = n
			}
			rs = append(rs, rd)
		}
		j["renditions"] = rs
	}
	if v := strings.TrimSpace(f.Get("label")); v != "" {
		k, val, _ := strings.Cut(v, "=")
		j["labels"] = map[string]string{strings.TrimSpace(k): strings.TrimSpace(val)}
	}
	sub := Submission{Via: via, Prompt: prompt, AspectRatio: f.Get("aspectRatio")}
	if r.MultipartForm != nil && len(r.MultipartForm.File["image"]) > 0 {
		fh := r.MultipartForm.File["image"][0]
		file, err := fh.Open()
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading the image: "+err.Error())
			return
		}
		data, err := io.ReadAll(file)
		file.Close()
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading the image: "+err.Error())
			return
		}
		sub.Image, sub.ImageName, sub.ImageType = data, fh.Filename, fh.Header.Get("Content-Type")
		if len(data) > 0 {
			j["images"] = []map[string]any{{"data": data, "mimeType": sub.ImageType}}
		}
	}
	if via == ViaUpload && len(sub.Image) == 0 {
		writeError(w, http.StatusBadRequest, "an upload job needs an image: pick one, or use http or pubsub")
		return
	}
	c.send(w, r, sub, j)
}

func (c *Console) send(w http.ResponseWriter, r *http.Request, sub Submission, j map[string]any) {
	raw, err := json.Marshal(j)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sub.Job = raw
	res, err := c.o.Submit.Submit(r.Context(), sub)
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	if res.JobID != "" {
		c.mu.Lock()
		c.jobs[res.JobID] = raw
		c.mu.Unlock()
	}
	c.broadcast(sseEvent{name: "jobs", data: "{}"})
	writeJSON(w, http.StatusOK, res)
}

// rerun submits a job the console submitted again, under a new id.
func (c *Console) rerun(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	raw, ok := c.jobs[r.PathValue("id")]
	c.mu.Unlock()
	if !ok || c.o.Submit == nil {
		writeError(w, http.StatusNotFound, "rerun needs the job's request, and records do not keep prompts: the console can rerun only the jobs it submitted since it started")
		return
	}
	j := map[string]any{}
	json.Unmarshal(raw, &j)
	j["id"] = NewID()
	c.send(w, r, Submission{Via: ViaHTTP}, j)
}

// continueJob starts a job that continues id with a new prompt (edit
// sessions, contract 9.3); the stack may reject the parent field until it
// knows it, and the answer says so.
func (c *Console) continueJob(w http.ResponseWriter, r *http.Request) {
	if c.o.Submit == nil {
		writeError(w, http.StatusNotImplemented, "submitting is not available")
		return
	}
	r.ParseMultipartForm(1 << 20)
	prompt := r.Form.Get("prompt")
	if strings.TrimSpace(prompt) == "" {
		writeError(w, http.StatusBadRequest, "a prompt is required to continue a job")
		return
	}
	c.send(w, r, Submission{Via: ViaHTTP}, map[string]any{"id": NewID(), "prompt": prompt, "parent": r.PathValue("id")})
}

// NewID is a fresh job id for the console's submissions.
func NewID() string {
	var b [8]byte
	rand.Read(b[:])
	return "console-" + hex.EncodeToString(b[:])
}

// ---- events ----

func (c *Console) onMessage(m Message) {
	c.mu.Lock()
	switch m.Topic {
	case TopicDeadLetter:
		c.dead = appendBounded(c.dead, m)
	default:
		c.events = appendBounded(c.events, m)
	}
	c.mu.Unlock()
	data, _ := json.Marshal(m)
	c.broadcast(sseEvent{name: "message", data: string(data)})
	if m.Topic == TopicCompletion {
		c.broadcast(sseEvent{name: "jobs", data: "{}"})
	}
}

func appendBounded(s []Message, m Message) []Message {
	s = append(s, m)
	if len(s) > keep {
		s = slices.Clone(s[len(s)-keep:])
	}
	return s
}

func (c *Console) listEvents(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	out := map[string]any{"available": c.o.Events != nil, "completion": slices.Clone(c.events), "deadLetter": slices.Clone(c.dead)}
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (c *Console) redeliver(w http.ResponseWriter, r *http.Request) {
	if c.o.Events == nil {
		writeError(w, http.StatusNotImplemented, "events are not available")
		return
	}
	id := r.PathValue("id")
	c.mu.Lock()
	i := slices.IndexFunc(c.dead, func(m Message) bool { return m.ID == id })
	var m Message
	if i >= 0 {
		m = c.dead[i]
	}
	c.mu.Unlock()
	if i < 0 {
		writeError(w, http.StatusNotFound, "no dead-lettered message "+id)
		return
	}
	if err := c.o.Events.Redeliver(r.Context(), m); err != nil {
		writeError(w, http.StatusBadGateway, "redelivering: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"redelivered": id})
}

// stream is the pages' server-sent events: "jobs" when the job index
// changed, "message" for each message on the topics, "spend" when the
// kill switch moved.
func (c *Console) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch := make(chan sseEvent, 64)
	c.mu.Lock()
	c.subs[ch] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.subs, ch)
		c.mu.Unlock()
	}()
	fmt.Fprint(w, "retry: 1000\n: connected\n\n")
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
		case e := <-ch:
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, e.data)
		}
		fl.Flush()
	}
}

func (c *Console) broadcast(e sseEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- e:
		default: // a slow page catches up at its next refresh
		}
	}
}

// ---- spend ----

func (c *Console) spend(w http.ResponseWriter, r *http.Request) {
	if c.o.Spend == nil {
		writeError(w, http.StatusNotImplemented, "spend is not available")
		return
	}
	t, err := c.o.Spend.Totals(r.Context(), c.o.Now())
	if err != nil {
		writeError(w, http.StatusBadGateway, "reading the spend ledgers: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (c *Console) pause(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.o.Spend == nil {
			writeError(w, http.StatusNotImplemented, "the kill switch is not available")
			return
		}
		f := c.o.Spend.Resume
		if on {
			f = c.o.Spend.Pause
		}
		if err := f(r.Context()); err != nil {
			writeError(w, http.StatusBadGateway, "the kill switch: "+err.Error())
			return
		}
		c.broadcast(sseEvent{name: "spend", data: fmt.Sprintf(`{"paused":%t}`, on)})
		c.broadcast(sseEvent{name: "jobs", data: "{}"})
		writeJSON(w, http.StatusOK, map[string]bool{"paused": on})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
