package spend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/spend"
	"github.com/genimg/genimg/job"
	"github.com/genimg/genimg/storage"
	"github.com/genimg/genimg/storage/storagetest"
)

func TestMain(m *testing.M) {
	// Nothing may leave this machine: the clients never look for the
	// metadata server.
	os.Setenv("GCE_METADATA_HOST", "127.0.0.1:9")
	os.Setenv("METADATA_SERVER_DETECTION", "none")
	os.Exit(m.Run())
}

const bucket = "genimg-output"

// clock is a settable time source shared by guards.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

func limitOf(t *testing.T, err error) *spend.LimitError {
	t.Helper()
	var le *spend.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("error %v is not a *spend.LimitError", err)
	}
	if !errors.Is(err, job.ErrTransient) || !job.Retryable(err) {
		t.Errorf("LimitError %v does not wrap job.ErrTransient", err)
	}
	return le
}

// TestBudgetAcrossInstances: three instances, one ledger, goroutines
// admitting as fast as the limits let them. Together they stay within the
// hourly budget plus the documented overshoot (N − 1) × A × c, where
// A = burst + rate × S is what one instance can admit before the others
// see it. Without sharing they would admit three budgets' worth.
func TestBudgetAcrossInstances(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	const (
		instances = 3
		workers   = 4
		cost      = 0.04
		budget    = 1.00 // 25 calls
		perMinute = 1200 // 20 calls/s per instance
		interval  = 25 * time.Millisecond
	)
	cfg := config.Spend{HourlyUSD: budget, DailyUSD: 10, CallsPerMinute: perMinute}
	var guards []*spend.Guard
	for range instances {
		c, _ := srv.NewClient(t)
		g := spend.New(storage.NewObjects(c, bucket, 0, 0), cfg, spend.WithFlushInterval(interval), spend.WithRefreshInterval(interval),
			spend.WithBurst(1), spend.WithMaxWait(2*time.Second), spend.WithLogger(slog.New(slog.DiscardHandler)))
		t.Cleanup(func() { g.Close(context.Background()) })
		guards = append(guards, g)
	}

	var mu sync.Mutex
	admitted := 0
	var wg sync.WaitGroup
	start := time.Now()
	for i := range instances * workers {
		g := guards[i%instances]
		wg.Go(func() {
			for time.Since(start) < 20*time.Second {
				release, err := g.Admit(t.Context(), cost)
				if err != nil {
					if le := limitOf(t, err); le.Reason == spend.ReasonBudget {
						return
					}
					continue
				}
				mu.Lock()
				admitted++
				mu.Unlock()
				time.Sleep(time.Millisecond) // the "model call"
				release(cost)
			}
			t.Errorf("a worker was still admitted after 20 s")
		})
	}
	wg.Wait()

	// S: flush + refresh interval, plus a generous allowance for one write
	// and one list against the local server.
	s := (2*interval + 100*time.Millisecond).Seconds()
	a := 1 + float64(perMinute)/60*s
	bound := budget + (instances-1)*a*cost
	got := float64(admitted) * cost
	t.Logf("admitted %d calls = %.2f USD; budget %.2f, bound %.2f", admitted, got, budget, bound)
	if got > bound+1e-9 {
		t.Errorf("admitted %.2f USD across %d instances, over budget + overshoot bound %.2f", got, instances, bound)
	}
	if got < budget-cost-1e-9 {
		t.Errorf("admitted %.2f USD, want the budget %.2f used up (to within one call)", got, budget)
	}

	// Every instance has flushed its share on Close; the ledger sums to
	// what was admitted.
	for _, g := range guards {
		if err := g.Close(t.Context()); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	objs, _, err := srv.Fake.ListObjectsWithOptions(bucket, fakeListPrefix("spend/"))
	if err != nil {
		t.Fatal(err)
	}
	var ledger float64
	for _, o := range objs {
		v := 0.0
		if err := json.Unmarshal([]byte(o.Metadata[spend.MetaSpend]), &v); err != nil {
			t.Fatalf("ledger %s: metadata %v", o.Name, o.Metadata)
		}
		ledger += v
	}
	if math.Abs(ledger-got) > 1e-6 || len(objs) < instances {
		t.Errorf("ledger: %d objects summing to %.4f USD; want %d summing to %.4f", len(objs), ledger, instances, got)
	}
}

// TestWindowRollover: budgets per UTC hour and day, on an injected clock,
// shared by two instances; the alert is logged once per window with the
// message and window attribute the log-based alert watches for.
func TestWindowRollover(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	clk := &clock{t: time.Date(2026, 3, 1, 10, 59, 30, 0, time.UTC)}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	var alerts []spend.Alert
	var amu sync.Mutex
	cfg := config.Spend{HourlyUSD: 0.10, DailyUSD: 0.25}
	// Refresh 0: every Admit lists, so each step sees the other's flush.
	opts := []spend.Option{spend.WithClock(clk.Now), spend.WithFlushInterval(0), spend.WithRefreshInterval(0), spend.WithLogger(logger),
		spend.WithAlert(func(_ context.Context, a spend.Alert) { amu.Lock(); alerts = append(alerts, a); amu.Unlock() })}
	other, _ := srv.NewClient(t)
	a := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), cfg, opts...)
	b := spend.New(storage.NewObjects(other, bucket, 0, 0), cfg, opts...)
	ctx := t.Context()

	type step struct {
		at     time.Time
		guard  *spend.Guard
		cost   float64
		window string        // refused for this window; "" admitted
		retry  time.Duration // RetryAfter when refused
	}
	h := func(hh, mm, ss int) time.Time { return time.Date(2026, 3, 1, hh, mm, ss, 0, time.UTC) }
	steps := []step{
		{at: h(10, 59, 30), guard: a, cost: 0.04},
		{at: h(10, 59, 30), guard: a, cost: 0.06},                                          // 0.10: exactly the budget
		{at: h(10, 59, 31), guard: b, cost: 0.04, window: "hour", retry: 29 * time.Second}, // b sees a's 0.10
		{at: h(10, 59, 32), guard: a, cost: 0.01, window: "hour", retry: 28 * time.Second},
		{at: h(11, 0, 1), guard: b, cost: 0.04}, // new hour
		{at: h(11, 0, 2), guard: a, cost: 0.04}, // hour 0.08, day 0.18
		{at: h(11, 0, 3), guard: b, cost: 0.04, window: "hour", retry: 59*time.Minute + 57*time.Second},
		{at: h(12, 0, 0), guard: a, cost: 0.04},                                                                       // day 0.22
		{at: h(12, 0, 1), guard: b, cost: 0.04, window: "day", retry: 11*time.Hour + 59*time.Minute + 59*time.Second}, // 0.26 > 0.25
		{at: h(23, 59, 59), guard: a, cost: 0.01},                                                                     // day 0.23
		{at: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), guard: b, cost: 0.09},                                       // a new day
	}
	for i, s := range steps {
		clk.Set(s.at)
		release, err := s.guard.Admit(ctx, s.cost)
		if s.window == "" {
			if err != nil {
				t.Fatalf("step %d at %s: Admit(%.2f) = %v, want admitted", i, s.at.Format(time.TimeOnly), s.cost, err)
			}
			release(s.cost)
		} else {
			if err == nil {
				t.Fatalf("step %d at %s: Admit(%.2f) admitted, want refused for the %s", i, s.at.Format(time.TimeOnly), s.cost, s.window)
			}
			le := limitOf(t, err)
			if le.Reason != spend.ReasonBudget || le.Window != s.window || le.RetryAfter != s.retry {
				t.Errorf("step %d: refused %s/%s retry %s, want budget/%s retry %s", i, le.Reason, le.Window, le.RetryAfter, s.window, s.retry)
			}
		}
		// Each instance writes its ledger before the next step.
		for _, g := range []*spend.Guard{a, b} {
			if err := g.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
		}
	}

	// One alert per instance and window: b for 10:00, a for 10:00, b for
	// 11:00, b for the day.
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec struct {
			Level, Msg, Window string
			WindowStart        time.Time
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "spend budget reached" {
			got = append(got, rec.Level+" "+rec.Window+" "+rec.WindowStart.Format(time.DateTime))
		}
	}
	want := []string{
		"WARN hour 2026-03-01 10:00:00", "WARN hour 2026-03-01 10:00:00",
		"WARN hour 2026-03-01 11:00:00", "WARN day 2026-03-01 00:00:00",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("alert log lines (-want +got):\n%s", diff)
	}
	if len(alerts) != 4 || alerts[3].Window != "day" || alerts[3].BudgetUSD != 0.25 {
		t.Errorf("alert callbacks = %+v, want 4, the last for the day's 0.25 USD", alerts)
	}
}

// TestKillSwitch: GENIMG_PAUSED refuses every call; the pause object does
// so for every instance once seen, and Resume lifts it. Refusals are
// retryable, with a hint.
func TestKillSwitch(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	ctx := t.Context()

	byEnv := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{Paused: true}, spend.WithFlushInterval(0))
	if _, err := byEnv.Admit(ctx, 0.04); limitOf(t, err).Reason != spend.ReasonPaused || limitOf(t, err).RetryAfter <= 0 {
		t.Errorf("Admit with GENIMG_PAUSED = %v, want paused with a RetryAfter", err)
	}

	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	other, _ := srv.NewClient(t)
	guards := []*spend.Guard{
		spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{HourlyUSD: 5}, spend.WithClock(clk.Now), spend.WithFlushInterval(0)),
		spend.New(storage.NewObjects(other, bucket, 0, 0), config.Spend{}, spend.WithClock(clk.Now), spend.WithFlushInterval(0)),
	}
	admit := func(i int) error {
		release, err := guards[i].Admit(ctx, 0.04)
		if err == nil {
			release(0.04)
		}
		return err
	}
	for i := range guards {
		if err := admit(i); err != nil {
			t.Fatalf("guard %d before pausing: %v", i, err)
		}
	}
	if err := spend.Pause(ctx, storage.NewObjects(srv.Client, bucket, 0, 0)); err != nil {
		t.Fatal(err)
	}
	clk.Set(clk.Now().Add(spend.DefaultRefreshInterval))
	for i := range guards {
		if le := limitOf(t, admit(i)); le.Reason != spend.ReasonPaused {
			t.Errorf("guard %d while paused: %v, want paused", i, le)
		}
		if le := limitOf(t, guards[i].Check(ctx)); le.Reason != spend.ReasonPaused {
			t.Errorf("guard %d Check while paused: %v, want paused", i, le)
		}
	}
	if err := spend.Resume(ctx, storage.NewObjects(srv.Client, bucket, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := spend.Resume(ctx, storage.NewObjects(srv.Client, bucket, 0, 0)); err != nil {
		t.Errorf("Resume when not paused = %v, want nil", err)
	}
	clk.Set(clk.Now().Add(spend.DefaultRefreshInterval))
	for i := range guards {
		if err := guards[i].Check(ctx); err != nil {
			t.Errorf("guard %d Check after Resume: %v", i, err)
		}
		if err := admit(i); err != nil {
			t.Errorf("guard %d after Resume: %v", i, err)
		}
	}
}

// TestCheckBudget: Check refuses once a budget is spent, without counting
// anything itself.
func TestCheckBudget(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	ctx := t.Context()
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	g := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{HourlyUSD: 0.05}, spend.WithClock(clk.Now), spend.WithFlushInterval(0))
	for range 3 {
		if err := g.Check(ctx); err != nil {
			t.Fatalf("Check with nothing spent: %v", err)
		}
	}
	release, err := g.Admit(ctx, 0.04)
	if err != nil {
		t.Fatal(err)
	}
	release(0.06) // the call cost more than its estimate: the budget is spent
	le := limitOf(t, g.Check(ctx))
	if le.Reason != spend.ReasonBudget || le.Window != spend.WindowHour || le.RetryAfter != time.Hour {
		t.Errorf("Check over budget = %+v", le)
	}
	clk.Set(clk.Now().Add(time.Hour))
	if err := g.Check(ctx); err != nil {
		t.Errorf("Check in the next hour: %v", err)
	}
}

// TestRateLimit: calls per minute per instance, on an injected clock, and
// a real wait for a token within the maximum wait.
func TestRateLimit(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	ctx := t.Context()
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	g := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{CallsPerMinute: 120}, spend.WithClock(clk.Now),
		spend.WithFlushInterval(0), spend.WithMaxWait(0)) // 2/s, burst 2
	var got []string
	for _, at := range []time.Duration{0, 0, 0, 250 * time.Millisecond, 500 * time.Millisecond, 500 * time.Millisecond, 1500 * time.Millisecond} {
		clk.Set(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC).Add(at))
		release, err := g.Admit(ctx, 0)
		switch {
		case err == nil:
			release(0)
			got = append(got, at.String()+" ok")
		default:
			got = append(got, at.String()+" retry in "+limitOf(t, err).RetryAfter.String())
		}
	}
	want := []string{"0s ok", "0s ok", "0s retry in 500ms", "250ms retry in 250ms", "500ms ok", "500ms retry in 500ms", "1.5s ok"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("admissions (-want +got):\n%s", diff)
	}

	// With a maximum wait, Admit waits for the token instead of refusing.
	w := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{CallsPerMinute: 600}, spend.WithFlushInterval(0),
		spend.WithBurst(1), spend.WithMaxWait(time.Second)) // one per 100 ms
	start := time.Now()
	for range 4 {
		release, err := w.Admit(ctx, 0)
		if err != nil {
			t.Fatalf("Admit within the maximum wait: %v", err)
		}
		release(0)
	}
	if el := time.Since(start); el < 280*time.Millisecond || el > 2*time.Second {
		t.Errorf("4 calls at 10/s with burst 1 took %s, want about 300ms", el)
	}
}

// TestLedgerUnavailable: when the ledger cannot be read the call is
// refused retryably, not admitted blind.
func TestLedgerUnavailable(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	g := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{DailyUSD: 1}, spend.WithFlushInterval(0))
	srv.Transport.Inject(storagetest.Fault{Status: 503})
	_, err := g.Admit(t.Context(), 0.04)
	if err == nil || !errors.Is(err, job.ErrTransient) {
		t.Fatalf("Admit with the ledger unreadable = %v, want ErrTransient", err)
	}
	srv.Transport.Clear()
	release, err := g.Admit(t.Context(), 0.04)
	if err != nil {
		t.Fatalf("Admit once storage is back: %v", err)
	}
	release(-1) // unknown cost: the estimate stands
	if err := g.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	objs, _, err := srv.Fake.ListObjectsWithOptions(bucket, fakeListPrefix("spend/"))
	if err != nil || len(objs) != 1 || objs[0].Metadata[spend.MetaSpend] != "0.04" {
		t.Errorf("ledger after release(-1) = %+v, %v; want one object at 0.04", objs, err)
	}
}

func fakeListPrefix(p string) fakestorage.ListOptions { return fakestorage.ListOptions{Prefix: p} }

// TestFlushDue: what a call cost reaches the ledger before the delivery
// is answered (the pipeline calls FlushDue then), not only when the
// background flush gets CPU again; at most one write a second. (Before,
// nothing flushed until the background loop ran, which Cloud Run's CPU
// throttling after a response can delay indefinitely.)
func TestFlushDue(t *testing.T) {
	srv := storagetest.NewServer(t, bucket)
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	g := spend.New(storage.NewObjects(srv.Client, bucket, 0, 0), config.Spend{DailyUSD: 10},
		spend.WithFlushInterval(0), spend.WithClock(clk.Now))
	ledger := func() string {
		objs, _, err := srv.Fake.ListObjectsWithOptions(bucket, fakeListPrefix("spend/"))
		if err != nil || len(objs) > 1 {
			t.Fatalf("ledgers %+v, %v", objs, err)
		}
		if len(objs) == 0 {
			return ""
		}
		return objs[0].Metadata[spend.MetaSpend]
	}
	if err := g.FlushDue(t.Context()); err != nil || ledger() != "" {
		t.Fatalf("FlushDue with nothing spent wrote %q, %v", ledger(), err)
	}
	release, err := g.Admit(t.Context(), 0.039)
	if err != nil {
		t.Fatal(err)
	}
	release(0.039)
	if err := g.FlushDue(t.Context()); err != nil || ledger() != "0.039" {
		t.Fatalf("ledger after FlushDue = %q, %v; want 0.039", ledger(), err)
	}
	// A second call within the second waits for the next flush.
	release, _ = g.Admit(t.Context(), 0.039)
	release(0.039)
	if err := g.FlushDue(t.Context()); err != nil || ledger() != "0.039" {
		t.Errorf("ledger after a second FlushDue within 1 s = %q, %v; want it unwritten (0.039)", ledger(), err)
	}
	clk.Set(clk.Now().Add(1100 * time.Millisecond))
	if err := g.FlushDue(t.Context()); err != nil || ledger() != "0.078" {
		t.Errorf("ledger a second later = %q, %v; want 0.078", ledger(), err)
	}
}
