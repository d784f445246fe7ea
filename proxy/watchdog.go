package proxy

import (
	"context"
	"sync"
	"time"
)

// watchdog enforces upstream_timeout, the wait for an upstream's response
// headers, without a timer per request. http.Transport's
// ResponseHeaderTimeout starts a runtime timer for every round trip, and
// the runtime wakes an idle thread to watch a newly added timer: under the
// benchmark's load at 8 connections, turning it off took CPU per request
// from 1.15x to 1.11x the bare proxy's, more than the whole session check
// costs. The watchdog, in three A/B runs against the timer, gained 0.01 to
// 0.05 of throughput ratio and 0 to 0.06 of CPU ratio.
//
// Instead each request waiting for headers is a node in one list, oldest
// first (every request has the same timeout, so the order of entry is the
// order of deadlines, give or take the moment between reading the clock
// and taking the lock: a node a little out of order is expired at most a
// tick late), and one goroutine, running only while the list is not
// empty, looks at its head every tick and cancels the requests whose
// deadline has passed. A request leaves the list when its headers arrive,
// when it fails, or when it is done. The timeout is thus enforced to
// within a tick: a tenth of it, at least 10 ms and at most a second.
//
// Headers and the deadline cannot both win: the node's state changes only
// under mu, so a request either left the list in time (its headers count)
// or was expired (and its answer, if the headers came a moment later, is
// turned into the timeout's 504).
type watchdog struct {
	timeout time.Duration
	tick    time.Duration

	mu         sync.Mutex
	head, tail *waiting
	running    bool // the goroutine is watching
}

// waiting is a request's node in the watchdog's list; it lives in the
// request's recorder. Its fields are guarded by the watchdog's mu.
type waiting struct {
	prev, next *waiting
	deadline   time.Time
	cancel     context.CancelFunc
	linked     bool // in the list
	expired    bool // the deadline passed before the headers came
	done       bool // the request is over: never linked again (written only by the request's goroutine; see end)
}

func newWatchdog(timeout time.Duration) *watchdog {
	return &watchdog{timeout: timeout, tick: min(max(timeout/10, 10*time.Millisecond), time.Second)}
}

// start puts n in the list with a deadline of timeout from now; cancel is
// called if the deadline passes first. A node that is done stays out.
func (d *watchdog) start(n *waiting, now time.Time, cancel context.CancelFunc) {
	d.mu.Lock()
	if n.linked || n.done {
		d.mu.Unlock()
		return
	}
	n.deadline, n.cancel, n.linked = now.Add(d.timeout), cancel, true
	n.prev, n.next = d.tail, nil
	if d.tail != nil {
		d.tail.next = n
	} else {
		d.head = n
	}
	d.tail = n
	run := !d.running
	d.running = true
	d.mu.Unlock()
	if run {
		go d.watch()
	}
}

// stop takes n out of the list: its headers came, or it ended. It reports
// whether the deadline had passed first. With done set, n never enters the
// list again (a body write that ends after the answer).
func (d *watchdog) stop(n *waiting, done bool) (expired bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if done {
		n.done = true
	}
	if n.linked {
		d.unlink(n)
	}
	return n.expired
}

// end takes n out of the list for good once its request is over. A
// request whose headers came is out already (stop with done, called from
// this same goroutine, which alone writes done), so end then costs no
// second lock.
func (d *watchdog) end(n *waiting) {
	if !n.done {
		d.stop(n, true)
	}
}

func (d *watchdog) unlink(n *waiting) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		d.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		d.tail = n.prev
	}
	n.prev, n.next, n.linked = nil, nil, false
}

// watch expires overdue requests every tick, and returns once the list
// is empty.
func (d *watchdog) watch() {
	t := time.NewTicker(d.tick)
	defer t.Stop()
	var overdue []context.CancelFunc
	for now := range t.C {
		d.mu.Lock()
		for n := d.head; n != nil && !now.Before(n.deadline); n = d.head {
			d.unlink(n)
			n.expired = true
			overdue = append(overdue, n.cancel)
			n.cancel = nil
		}
		empty := d.head == nil
		if empty {
			d.running = false
		}
		d.mu.Unlock()
		for i, cancel := range overdue {
			cancel()
			overdue[i] = nil
		}
		overdue = overdue[:0]
		if empty {
			return
		}
	}
}
