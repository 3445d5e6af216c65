// Package spend keeps genimg's model calls within limits that hold across
// instances: a per-instance rate of calls per minute, spend budgets per UTC
// hour and per UTC day shared by every instance through Cloud Storage, and
// a kill switch. It also estimates what a backfill of upload rules would
// cost (Backfill).
//
// # Limits
//
//   - Concurrent calls per instance: GENIMG_MAX_CONCURRENT_CALLS, enforced
//     by the gemini client around each HTTP call (not repeated here).
//   - Calls per minute per instance: GENIMG_CALLS_PER_MINUTE, a token
//     bucket refilled at that rate holding one second's worth of calls
//     (WithBurst changes it). Admit waits for a token up to WithMaxWait,
//     else refuses with a RetryAfter.
//   - Spend per hour and per day: GENIMG_BUDGET_HOURLY_USD and
//     GENIMG_BUDGET_DAILY_USD, UTC windows, shared by all instances.
//   - Kill switch: GENIMG_PAUSED=true, or the object
//     gs://OUTPUT_BUCKET/control/paused (Pause, Resume), seen by every
//     instance within the refresh interval.
//
// A refused call is an error wrapping job.ErrTransient (a *LimitError
// with RetryAfter): the delivery is redelivered later and nothing is lost.
// A job refused for longer than GENIMG_MAX_EVENT_AGE ends in a retryable
// failed record, which an explicit resubmission runs again.
//
// # Shared budget: batched per-instance ledgers
//
// One Cloud Storage object takes about one write per second, so a counter
// written per call cannot serve a fleet. Instead every instance owns one
// object per UTC hour,
//
//	spend/<YYYY-MM-DD>/<HH>/<instance>   metadata genimg-spend-usd=<cumulative USD>
//
// that only it writes: its admitted spend in that hour (actual costs of
// finished calls plus the estimates of calls in flight). It keeps the
// figure in memory and writes it every flush interval (default 2 s) when it
// changed, so each object takes at most one write per flush interval, with
// no contention and no preconditions. An instance learns the others' spend
// by listing spend/<day>/ (one request returns every object's metadata)
// at most every refresh interval (default 2 s). The hour's spend is the
// sum over the hour's objects, the day's the sum over the day's; its own
// figure it always knows exactly.
//
// The trade-off against sharded generation-match counters: no write per
// call, no 412 retries, and the cost of a call is one List every refresh
// interval; in exchange the budget is approximate. The overshoot bound:
// what another instance admitted in the last S = flush interval + refresh
// interval + one write and one list (about a second with the defaults:
// S ≈ 2 s + 2 s + 0.2 s) is not yet visible. With N instances, each
// admitting at most A calls in any period S (A = burst + rate × S with
// GENIMG_CALLS_PER_MINUTE; without it, A is bounded only by
// GENIMG_MAX_CONCURRENT_CALLS ÷ model latency × S), and c the estimate of
// one call (0.039 USD for one image),
//
//	spend admitted in a window ≤ budget + (N − 1) × A × c
//
// plus what calls cost beyond their estimate (in-process retries of one
// job are each paid; the release records them, after the fact). Example:
// 20 instances, 60 calls per minute each (burst 1), defaults:
// A = 1 + 1 × 4.2 ≈ 5.2, overshoot ≤ 19 × 5.2 × 0.039 ≈ 3.9 USD. Shorter
// intervals tighten it at the price of more List requests (each instance
// makes 1 / refresh interval; that is cheap, but it is per instance).
// An instance that dies without Close loses at most one flush interval of
// its own spend from the ledger (Cloud Run gives 10 s after SIGTERM: Close
// flushes).
//
// The spend/ folder needs a lifecycle rule deleting objects older than
// two days; the day's ledger is never read after the day.
//
// # Sizing max instances × concurrency to the model quota
//
// The model's quota is requests per minute (RPM) per project and model
// (and tokens per minute, and requests per day). Every model call of every
// instance counts, including in-process retries. Pick:
//
//	calls per minute per instance (GENIMG_CALLS_PER_MINUTE) = RPM ÷ max instances, rounded down
//	concurrency per instance (GENIMG_MAX_CONCURRENT_CALLS)  ≥ calls per minute per instance × model latency (s) ÷ 60
//
// and keep the functions' max instances × the function's request
// concurrency consistent with it: with max instances M, concurrency per
// instance C and a call latency of L seconds, the fleet can start up to
// M × C × 60 ÷ L calls a minute; when that is above the RPM quota, either
// set GENIMG_CALLS_PER_MINUTE (excess jobs wait, then are redelivered)
// or lower M or C (excess requests are refused by the platform). Example:
// RPM 500, L ≈ 8 s, M = 10: GENIMG_CALLS_PER_MINUTE=50, and C ≥ 50 × 8 ÷
// 60 ≈ 7, so 8 concurrent calls per instance; M × C × 60 ÷ L = 600 ≥ 500
// shows the rate limit is the one that binds. Budgets then bound the
// money: at 0.039 USD an image, 500 RPM is 1,170 USD an hour.
package spend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
)

// MetaSpend is the custom metadata key holding a ledger's USD.
const MetaSpend = "genimg-spend-usd"

// Defaults of the intervals behind the overshoot bound.
const (
	DefaultFlushInterval   = 2 * time.Second
	DefaultRefreshInterval = 2 * time.Second
	DefaultMaxWait         = 5 * time.Second
	// pausedRetryAfter is the hint given while paused: about when a
	// resumed switch is seen.
	pausedRetryAfter = time.Minute
	ioTimeout        = 10 * time.Second
)

// Reasons a call is refused.
const (
	ReasonPaused = "paused"
	ReasonRate   = "rate"
	ReasonBudget = "budget"
)

// Windows of the budgets, as the alert's window attribute names them.
const (
	WindowHour = "hour"
	WindowDay  = "day"
)

// A LimitError is a call refused by the guard. It wraps job.ErrTransient:
// the delivery should be retried, not failed.
type LimitError struct {
	// Reason is ReasonPaused, ReasonRate or ReasonBudget.
	Reason string
	// Window is WindowHour or WindowDay for a budget, else empty.
	Window string
	// BudgetUSD and SpentUSD are the budget and the spend seen, for a
	// budget.
	BudgetUSD, SpentUSD float64
	// RetryAfter is when trying again can succeed: the end of the window,
	// the next token, or a while for the kill switch.
	RetryAfter time.Duration
}

func (e *LimitError) Error() string {
	switch e.Reason {
	case ReasonBudget:
		return fmt.Sprintf("spend budget per %s reached (%.4f of %.2f USD); model calls resume in %s",
			e.Window, e.SpentUSD, e.BudgetUSD, e.RetryAfter.Round(time.Second))
	case ReasonPaused:
		return "model calls are paused (GENIMG_PAUSED or gs://OUTPUT_BUCKET/" + storage.PauseObject + ")"
	default:
		return fmt.Sprintf("calls per minute limit reached (GENIMG_CALLS_PER_MINUTE); retry in %s", e.RetryAfter.Round(time.Millisecond))
	}
}

// Unwrap makes every LimitError a job.ErrTransient.
func (e *LimitError) Unwrap() error { return job.ErrTransient }

// An Alert is raised once per instance and window when a budget is hit.
type Alert struct {
	Window      string
	WindowStart time.Time
	BudgetUSD   float64
	SpentUSD    float64
}

// A Guard admits model calls. It is safe for concurrent use; build one per
// instance, share it, and Close it on shutdown.
type Guard struct {
	objects  *storage.Objects
	cfg      config.Spend
	instance string
	now      func() time.Time
	log      *slog.Logger
	alert    func(context.Context, Alert)
	flushInt time.Duration
	refresh  time.Duration
	maxWait  time.Duration
	burst    float64

	refreshMu sync.Mutex // one List at a time
	flushMu   sync.Mutex // one flush at a time: writes stay in order
	flushed   time.Time  // when the last flush began (under flushMu)

	mu       sync.Mutex
	own      map[string]float64 // hour key → this instance's spend
	dirty    map[string]bool
	others   map[string]float64 // hour key → other instances' spend, as listed
	listedAt time.Time
	listed   string // day key of the listing
	paused   bool   // the pause object exists
	tokens   float64
	filled   time.Time
	alerted  map[string]bool

	stop chan struct{}
	done chan struct{}
}

// An Option changes a Guard built by New.
type Option func(*Guard)

// WithClock replaces time.Now (windows, tokens, refresh ages).
func WithClock(now func() time.Time) Option { return func(g *Guard) { g.now = now } }

// WithFlushInterval sets how often this instance's ledger is written
// (DefaultFlushInterval; at least 1 s in production, Cloud Storage's
// per-object write rate). 0 turns off the background flush: call Flush.
func WithFlushInterval(d time.Duration) Option { return func(g *Guard) { g.flushInt = d } }

// WithRefreshInterval sets how old the others' spend may be before Admit
// lists it again (DefaultRefreshInterval).
func WithRefreshInterval(d time.Duration) Option { return func(g *Guard) { g.refresh = d } }

// WithMaxWait sets how long Admit waits for a rate token before refusing
// (DefaultMaxWait).
func WithMaxWait(d time.Duration) Option { return func(g *Guard) { g.maxWait = d } }

// WithBurst sets how many calls the rate limiter lets through at once
// (default: one second's worth of GENIMG_CALLS_PER_MINUTE, at least 1).
func WithBurst(n int) Option { return func(g *Guard) { g.burst = float64(max(n, 1)) } }

// WithAlert calls f once per instance and window when a budget is hit,
// besides the log line, e.g. to publish an alert event. f must not block
// for long: it runs on the refused call's goroutine.
func WithAlert(f func(context.Context, Alert)) Option { return func(g *Guard) { g.alert = f } }

// WithLogger replaces slog.Default() for the guard's log lines.
func WithLogger(l *slog.Logger) Option { return func(g *Guard) { g.log = l } }

// New builds a Guard keeping its ledgers and reading the kill switch in
// objects (the output bucket), and starts its background flush.
func New(objects *storage.Objects, cfg config.Spend, opts ...Option) *Guard {
	g := &Guard{
		objects: objects, cfg: cfg, now: time.Now, log: slog.Default(),
		flushInt: DefaultFlushInterval, refresh: DefaultRefreshInterval, maxWait: DefaultMaxWait,
		burst: math.Max(1, math.Floor(float64(cfg.CallsPerMinute)/60)),
		own:   map[string]float64{}, dirty: map[string]bool{}, others: map[string]float64{},
		alerted: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, o := range opts {
		o(g)
	}
	if g.instance == "" {
		g.instance = "i-" + randomHex(8)
	}
	g.tokens, g.filled = g.burst, g.now()
	if g.flushInt > 0 {
		go g.flushLoop()
	} else {
		close(g.done)
	}
	return g
}

// Close stops the background flush and writes the ledger one last time.
func (g *Guard) Close(ctx context.Context) error {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	<-g.done
	return g.Flush(ctx)
}

// Admit asks to start one model call expected to cost estimateUSD (the
// price of the images it asks for). It refuses with a *LimitError
// (wrapping job.ErrTransient) while paused, over a budget, or over the
// rate; it returns an error wrapping job.ErrTransient when the shared
// ledger cannot be read. Otherwise the estimate is counted at once, and
// release must be called exactly once when the call is over, with what it
// actually cost (0 if nothing was paid; a negative value keeps the
// estimate, for when the cost is unknown).
func (g *Guard) Admit(ctx context.Context, estimateUSD float64) (release func(costUSD float64), err error) {
	if g.cfg.Paused {
		return nil, &LimitError{Reason: ReasonPaused, RetryAfter: pausedRetryAfter}
	}
	if err := g.fresh(ctx); err != nil {
		return nil, err
	}
	estimateUSD = math.Max(estimateUSD, 0)

	g.mu.Lock()
	now := g.now().UTC()
	if g.paused {
		g.mu.Unlock()
		return nil, &LimitError{Reason: ReasonPaused, RetryAfter: pausedRetryAfter}
	}
	hour, day := hourKey(now), dayKey(now)
	if lerr, first := g.overBudget(now, hour, day, estimateUSD); lerr != nil {
		g.mu.Unlock()
		if first {
			g.raise(ctx, now, lerr)
		}
		return nil, lerr
	}
	// Count the estimate before the call, so that other instances see
	// calls in flight, not only finished ones.
	g.add(hour, estimateUSD)
	wait := g.takeToken(now)
	if wait > g.maxWait {
		g.add(hour, -estimateUSD)
		g.tokens++ // give the token back
		g.mu.Unlock()
		return nil, &LimitError{Reason: ReasonRate, RetryAfter: wait}
	}
	g.mu.Unlock()

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			g.mu.Lock()
			g.add(hour, -estimateUSD)
			g.tokens++
			g.mu.Unlock()
			return nil, fmt.Errorf("waiting for a model call slot: %w: %w", job.ErrTransient, ctx.Err())
		}
	}
	var once sync.Once
	return func(costUSD float64) {
		once.Do(func() {
			if costUSD < 0 {
				return
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			// The call belongs to the hour it was admitted in.
			g.add(hour, costUSD-estimateUSD)
		})
	}, nil
}

// Check reports, without admitting anything, whether a call would be
// refused now for the kill switch or a spent budget (not the rate, which
// frees up within seconds): a *LimitError, or nil. Front doors use it to
// turn new work away at once rather than queue what cannot run.
func (g *Guard) Check(ctx context.Context) error {
	if g.cfg.Paused {
		return &LimitError{Reason: ReasonPaused, RetryAfter: pausedRetryAfter}
	}
	if err := g.fresh(ctx); err != nil {
		return err
	}
	g.mu.Lock()
	if g.paused {
		g.mu.Unlock()
		return &LimitError{Reason: ReasonPaused, RetryAfter: pausedRetryAfter}
	}
	now := g.now().UTC()
	lerr, first := g.overBudget(now, hourKey(now), dayKey(now), 0)
	g.mu.Unlock()
	if lerr == nil {
		return nil
	}
	if first {
		g.raise(ctx, now, lerr)
	}
	return lerr
}

// add changes this instance's spend in an hour. Callers hold mu.
func (g *Guard) add(hour string, usd float64) {
	if usd == 0 {
		return
	}
	g.own[hour] += usd
	g.dirty[hour] = true
}

// overBudget checks both budgets with usd more. Callers hold mu. first
// reports whether this is the first refusal of the window here.
func (g *Guard) overBudget(now time.Time, hour, day string, usd float64) (*LimitError, bool) {
	check := func(window string, budget, spent float64, start time.Time, length time.Duration) (*LimitError, bool) {
		if budget <= 0 || spent+usd <= budget {
			return nil, false
		}
		key := window + " " + start.Format(time.RFC3339)
		first := !g.alerted[key]
		g.alerted[key] = true
		return &LimitError{Reason: ReasonBudget, Window: window, BudgetUSD: budget, SpentUSD: spent,
			RetryAfter: start.Add(length).Sub(now)}, first
	}
	if e, first := check(WindowDay, g.cfg.DailyUSD, g.spentDay(day), now.Truncate(24*time.Hour), 24*time.Hour); e != nil {
		return e, first
	}
	return check(WindowHour, g.cfg.HourlyUSD, g.own[hour]+g.others[hour], now.Truncate(time.Hour), time.Hour)
}

func (g *Guard) spentDay(day string) float64 {
	var sum float64
	for _, m := range []map[string]float64{g.own, g.others} {
		for h, v := range m {
			if strings.HasPrefix(h, day+"/") {
				sum += v
			}
		}
	}
	return sum
}

// raise logs the alert the Terraform log-based metric watches for, with
// exactly this message and a window attribute, and calls the callback.
func (g *Guard) raise(ctx context.Context, now time.Time, e *LimitError) {
	length := time.Hour
	if e.Window == WindowDay {
		length = 24 * time.Hour
	}
	a := Alert{Window: e.Window, WindowStart: now.Truncate(length), BudgetUSD: e.BudgetUSD, SpentUSD: e.SpentUSD}
	g.log.WarnContext(ctx, "spend budget reached", "window", a.Window, "windowStart", a.WindowStart,
		"budgetUsd", a.BudgetUSD, "spentUsd", a.SpentUSD, "instance", g.instance)
	if g.alert != nil {
		g.alert(ctx, a)
	}
}

// takeToken refills the bucket and takes a token, answering how long to
// wait for it (the bucket may go negative: waiters queue). Callers hold mu.
func (g *Guard) takeToken(now time.Time) time.Duration {
	if g.cfg.CallsPerMinute <= 0 {
		return 0
	}
	rate := float64(g.cfg.CallsPerMinute) / 60 // tokens per second
	if el := now.Sub(g.filled).Seconds(); el > 0 {
		g.tokens = math.Min(g.burst, g.tokens+el*rate)
		g.filled = now
	}
	g.tokens--
	if g.tokens >= 0 {
		return 0
	}
	return time.Duration(-g.tokens / rate * float64(time.Second))
}

// fresh lists the others' spend and the kill switch when the last listing
// is older than the refresh interval or of another day.
func (g *Guard) fresh(ctx context.Context) error {
	stale := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		now := g.now().UTC()
		return g.listed != dayKey(now) || now.Sub(g.listedAt) >= g.refresh
	}
	if !stale() {
		return nil
	}
	g.refreshMu.Lock()
	defer g.refreshMu.Unlock()
	if !stale() { // another goroutine listed meanwhile
		return nil
	}
	now := g.now().UTC()
	day := dayKey(now)
	ctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	others := map[string]float64{}
	var err error
	if g.cfg.HourlyUSD > 0 || g.cfg.DailyUSD > 0 {
		others, err = g.list(ctx, day)
	}
	if err != nil {
		// Without the ledger the guard cannot tell; the pipeline cannot
		// run without Cloud Storage anyway. Retry later.
		return fmt.Errorf("reading the spend ledger: %w: %w", job.ErrTransient, err)
	}
	paused := false
	if _, err := g.objects.Stat(ctx, storage.PauseObject); err == nil {
		paused = true
	} else if !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("reading the kill switch: %w: %w", job.ErrTransient, err)
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	if paused != g.paused {
		g.log.WarnContext(ctx, "model calls paused by the kill switch", "paused", paused, "object", "gs://"+g.objects.Bucket()+"/"+storage.PauseObject)
	}
	g.paused = paused
	g.others, g.listed, g.listedAt = others, day, now
	// Forget own figures of past days once they are written.
	for h := range g.own {
		if !strings.HasPrefix(h, day+"/") && !g.dirty[h] {
			delete(g.own, h)
		}
	}
	return nil
}

// list sums the other instances' ledgers of a day by hour.
func (g *Guard) list(ctx context.Context, day string) (map[string]float64, error) {
	out := map[string]float64{}
	err := g.objects.List(ctx, storage.LedgerDay(day), "", func(a storage.Attrs) error {
		hour, instance, ok := parseLedger(a.Name)
		if !ok || instance == g.instance {
			return nil // our own figure is known exactly
		}
		v, err := strconv.ParseFloat(a.Metadata[MetaSpend], 64)
		if err != nil || v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			g.log.WarnContext(ctx, "spend ledger unreadable", "object", a.Name)
			return nil
		}
		out[hour] += v
		return nil
	})
	return out, err
}

// Flush writes this instance's changed ledgers now.
func (g *Guard) Flush(ctx context.Context) error {
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	g.flushed = g.now()
	g.mu.Lock()
	snap := map[string]float64{}
	for h := range g.dirty {
		snap[h] = g.own[h]
	}
	clear(g.dirty)
	g.mu.Unlock()

	var errs []error
	for h, v := range snap {
		if err := g.write(ctx, h, v); err != nil {
			g.mu.Lock()
			g.dirty[h] = true // try again next flush
			g.mu.Unlock()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (g *Guard) write(ctx context.Context, hour string, usd float64) error {
	ctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	// Only this instance writes its ledger, and each write carries the
	// whole figure: no precondition is needed, and a retried write is
	// harmless.
	_, err := g.objects.Put(ctx, storage.LedgerObject(hour, g.instance), []byte(strconv.FormatFloat(usd, 'f', -1, 64)), storage.Put{
		If: storage.Overwrite, ContentType: "text/plain",
		Metadata: map[string]string{MetaSpend: strconv.FormatFloat(math.Max(usd, 0), 'f', -1, 64)},
	})
	if err != nil {
		return fmt.Errorf("writing the spend ledger %s: %w", hour, err)
	}
	return nil
}

// FlushDue writes this instance's changed ledgers unless a flush began
// less than a second ago (Cloud Storage takes about one write per second
// per object). The pipeline calls it before it answers a delivery: once
// the answer is sent, Cloud Run throttles the CPU and the background flush
// may not run until the next request. What a crash can still lose is the
// spend of the last second before it.
func (g *Guard) FlushDue(ctx context.Context) error {
	g.mu.Lock()
	dirty := len(g.dirty) > 0
	g.mu.Unlock()
	if !dirty {
		return nil
	}
	g.flushMu.Lock()
	due := g.now().Sub(g.flushed) >= time.Second
	g.flushMu.Unlock()
	if !due {
		return nil
	}
	return g.Flush(ctx)
}

func (g *Guard) flushLoop() {
	defer close(g.done)
	t := time.NewTicker(g.flushInt)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			if err := g.Flush(context.Background()); err != nil {
				g.log.Warn("spend ledger not written; retrying at the next flush", "error", err)
			}
		}
	}
}

// Pause sets the kill switch for every instance: it creates
// gs://OUTPUT_BUCKET/control/paused in objects. Instances see it within
// their refresh interval.
func Pause(ctx context.Context, objects *storage.Objects) error {
	_, err := objects.Put(ctx, storage.PauseObject, []byte("model calls paused; delete this object to resume\n"),
		storage.Put{If: storage.Overwrite, ContentType: "text/plain"})
	return err
}

// Resume clears the kill switch set by Pause.
func Resume(ctx context.Context, objects *storage.Objects) error {
	return objects.Delete(ctx, storage.PauseObject, 0)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// hourKey is "YYYY-MM-DD/HH" of a UTC time; dayKey is "YYYY-MM-DD".
func hourKey(t time.Time) string { return t.Format("2006-01-02/15") }
func dayKey(t time.Time) string  { return t.Format("2006-01-02") }

// parseLedger splits spend/<day>/<HH>/<instance>.
func parseLedger(name string) (hour, instance string, ok bool) {
	rest, ok := strings.CutPrefix(name, storage.SpendPrefix)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] == "" {
		return "", "", false
	}
	return parts[0] + "/" + parts[1], parts[2], true
}
