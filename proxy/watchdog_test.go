package proxy

import (
	"sync/atomic"
	"testing"
	"time"
)

// counted returns a cancel func that counts its calls.
func counted() (func(), *atomic.Int32) {
	var n atomic.Int32
	return func() { n.Add(1) }, &n
}

// waitIdle waits until d's goroutine has returned, failing after 10 s (it
// returns at its first tick with nothing to watch; the slack is for a
// machine that stalls for seconds).
func waitIdle(t *testing.T, d *watchdog) {
	t.Helper()
	idle := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return !d.running
	}
	if !waitFor(10*time.Second, idle) {
		t.Fatal("the watchdog goroutine still runs with nothing to watch")
	}
}

// waitCalls waits up to 10 s for a cancel func to have been called.
func waitCalls(t *testing.T, calls *atomic.Int32) {
	t.Helper()
	waitFor(10*time.Second, func() bool { return calls.Load() > 0 })
}

func TestWatchdogExpires(t *testing.T) {
	d := newWatchdog(50 * time.Millisecond)
	var late, early, ended waiting
	cancelLate, nLate := counted()
	cancelEarly, nEarly := counted()
	cancelEnded, nEnded := counted()
	// early and ended entered the list an hour after late: their deadlines
	// cannot pass during the test however slow the machine, so a cancel of
	// either can only come from a watchdog that ignores stop.
	now := time.Now()
	d.start(&late, now, cancelLate)
	d.start(&early, now.Add(time.Hour), cancelEarly)
	d.start(&ended, now.Add(time.Hour), cancelEnded)
	// early's headers come in time; ended is taken out from the middle
	// of the list when its request ends.
	if d.stop(&early, false) {
		t.Fatal("stop before the deadline reported it passed")
	}
	d.stop(&ended, true)
	waitCalls(t, nLate)
	if n := nLate.Load(); n != 1 {
		t.Errorf("overdue request cancelled %d times, want 1", n)
	}
	if !d.stop(&late, false) {
		t.Error("stop after the deadline: want expired, so a late answer becomes the timeout's 504")
	}
	if nEarly.Load() != 0 || nEnded.Load() != 0 {
		t.Errorf("requests that left the list were cancelled: %d, %d", nEarly.Load(), nEnded.Load())
	}
	waitIdle(t, d)
}

// TestWatchdogDoneStaysOut: a body write that finishes after the answer
// (start from the WroteRequest hook) must not put an ended request back in
// the list, where it would be cancelled, or kept, long after.
func TestWatchdogDoneStaysOut(t *testing.T) {
	d := newWatchdog(20 * time.Millisecond)
	var n waiting
	cancel, calls := counted()
	d.stop(&n, true)
	d.start(&n, time.Now(), cancel)
	d.mu.Lock()
	head := d.head
	d.mu.Unlock()
	if head != nil {
		t.Fatal("an ended request entered the list")
	}
	time.Sleep(20*time.Millisecond + 3*d.tick)
	if calls.Load() != 0 {
		t.Error("an ended request was cancelled")
	}
}

// TestWatchdogRestarts: the goroutine returns once nothing is watched and
// a later request starts it again.
func TestWatchdogRestarts(t *testing.T) {
	d := newWatchdog(30 * time.Millisecond)
	for range 2 {
		var n waiting
		cancel, calls := counted()
		d.start(&n, time.Now(), cancel)
		waitCalls(t, calls)
		if calls.Load() != 1 {
			t.Fatalf("overdue request cancelled %d times, want 1", calls.Load())
		}
		waitIdle(t, d)
	}
}

func TestWatchdogTick(t *testing.T) {
	for _, tt := range []struct{ timeout, want time.Duration }{
		{60 * time.Second, time.Second},
		{2 * time.Second, 200 * time.Millisecond},
		{50 * time.Millisecond, 10 * time.Millisecond},
		{time.Hour, time.Second},
	} {
		if got := newWatchdog(tt.timeout).tick; got != tt.want {
			t.Errorf("tick for %v = %v, want %v", tt.timeout, got, tt.want)
		}
	}
}
