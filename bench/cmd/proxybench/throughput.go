package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// kind is the role of a throughput target. Every run has kBare and kOurs;
// the others are optional rows.
type kind int

const (
	// kBare is the reference: the bare ReverseProxy, sent the very
	// requests ours is sent (the session cookie included, which it passes
	// on, setting only "Authorization: Token x").
	kBare kind = iota
	// kNoCookie is the same bare proxy sent requests without the cookie:
	// what the cookie's bytes cost on their own (informational).
	kNoCookie
	// kSame is bare, fed and forwarding the bytes ours is (bareProxy's
	// -token-len): our bytes without our logic (informational).
	kSame
	kOurs
	kQuiet // ours with log.requests: false
)

// results is everything the report prints.
type results struct {
	env      string // Go, OS, CPUs
	loadavg  string // of the machine when the run began
	labels   []string
	kinds    []kind
	samples  [][][]sample // [conns index][round][target]
	peaks    []procPeak   // of the throughput runs' proxies
	logLines int64        // our proxy's stderr lines, from start to exit
	requests []int64      // requests each target answered over the rounds, warm-ups included
	upstream string       // URL, reused by the later runs
	cookie   int          // bytes of the Cookie header sent to our proxy
	idToken  int          // bytes of the ID token it forwards
	idle     *idleResult
	storm    *stormResult
}

// index is the target of kind k, or -1 when the run has none.
func (r *results) index(k kind) int {
	for i, x := range r.kinds {
		if x == k {
			return i
		}
	}
	return -1
}

type procPeak struct {
	name string
	peak int64 // VmHWM, bytes
	ours bool  // the RSS target applies
}

// throughput starts the upstream, the bare proxy, ours (with and without
// request logs) and the optional references (bare without the cookie; bare
// with our bytes, once a login has told the ID token's length), and runs
// the rounds: for every round and every -conns value, each target once
// (see round).
func (b *bench) throughput(ctx context.Context) (*results, error) {
	up, upAddr, err := b.child(ctx, "upstream", nil, "upstream")
	if err != nil {
		return nil, err
	}
	res := &results{env: environment(), loadavg: loadAverage(), upstream: "http://" + upAddr}
	rm, err := newRealm(time.Hour, nil) // no refresh during these runs
	if err != nil {
		return nil, err
	}
	defer rm.idp.Close()

	profile := func(name string) []string {
		if b.o.cpuprofile == "" {
			return nil
		}
		return []string{"-cpuprofile", filepath.Join(b.o.cpuprofile, name+".pprof")}
	}
	oursCfg := oursConfig{realm: rm, upstream: res.upstream, margin: 30 * time.Second, logRequests: true}
	oursLabel := "twc-auth-proxy"
	if b.o.cpuprofile != "" {
		oursCfg.profile = filepath.Join(b.o.cpuprofile, "ours.pprof")
		oursLabel = "twc-auth-proxy (in-process wiring, profiled)"
	}
	ours, oursAddr, err := b.ours(ctx, "twc-auth-proxy", oursCfg)
	if err != nil {
		return nil, err
	}
	b.logf("signing in through %s and the fake TWC auth server", oursAddr)
	cookies, err := login(ctx, "http://"+oursAddr, rm.user, rm.pass)
	if err != nil {
		return nil, err
	}
	cookie := cookieHeader(cookies)
	res.cookie = len(cookie)
	sess, err := rm.open(cookies)
	if err != nil {
		return nil, fmt.Errorf("reading the session cookie: %w", err)
	}
	res.idToken = len(sess.IDToken)

	const path = "/api/bench"
	var targets []loadTarget
	var procs []*proc
	add := func(k kind, name, label string, p *proc, addr, cookie string) {
		targets = append(targets, loadTarget{name: name, addr: addr, req: getRequest(addr, path, cookie), pid: p.pid()})
		res.kinds, res.labels, procs = append(res.kinds, k), append(res.labels, label), append(procs, p)
	}
	bare, bareAddr, err := b.child(ctx, "bare", nil, "bare", append([]string{"-upstream", res.upstream}, profile("bare")...)...)
	if err != nil {
		return nil, err
	}
	add(kBare, "bare", "bare ReverseProxy", bare, bareAddr, cookie)
	if b.o.noCookie {
		p, addr, err := b.child(ctx, "bare-no-cookie", nil, "bare", "-upstream", res.upstream)
		if err != nil {
			return nil, err
		}
		add(kNoCookie, "bare-nocookie", "bare ReverseProxy, requests without the cookie", p, addr, "")
	}
	if b.o.sameBytes {
		p, addr, err := b.child(ctx, "bare-same-bytes", nil, "bare",
			append([]string{"-upstream", res.upstream, "-token-len", strconv.Itoa(res.idToken)}, profile("bare-same-bytes")...)...)
		if err != nil {
			return nil, err
		}
		add(kSame, "bare-bytes", "bare ReverseProxy, same bytes", p, addr, cookie)
	}
	add(kOurs, "ours", oursLabel, ours, oursAddr, cookie)
	if b.o.logOff {
		quietCfg := oursCfg
		quietCfg.logRequests, quietCfg.profile = false, ""
		quiet, quietAddr, err := b.ours(ctx, "twc-auth-proxy-nolog", quietCfg)
		if err != nil {
			return nil, err
		}
		add(kQuiet, "ours-nolog", "twc-auth-proxy, log.requests: false", quiet, quietAddr, cookie)
	}
	for _, t := range targets {
		if err := probe(t); err != nil {
			return nil, err
		}
	}

	res.requests = make([]int64, len(targets))
	res.samples = make([][][]sample, len(b.o.conns))
	for r := range b.o.rounds {
		for ci, conns := range b.o.conns {
			row, err := b.round(ctx, targets, r, conns)
			if err != nil {
				return nil, err
			}
			for ti, s := range row {
				res.requests[ti] += int64(s.n + s.warm)
				b.logf("round %d/%d  %3d conns  %-12s %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  %6.1f µs CPU/req  %d errors",
					r+1, b.o.rounds, conns, targets[ti].name, s.rps(), ms(s.p50), ms(s.p99), s.cpuPerReq(), s.errs)
			}
			res.samples[ci] = append(res.samples[ci], row)
		}
	}
	for i, p := range procs {
		_, peak, err := memory(p.pid())
		if err != nil {
			return nil, err
		}
		res.peaks = append(res.peaks, procPeak{name: res.labels[i], peak: peak, ours: res.kinds[i] >= kOurs})
	}
	if _, peak, err := memory(up.pid()); err == nil {
		res.peaks = append(res.peaks, procPeak{name: "upstream (context)", peak: peak})
	}
	for _, p := range procs { // free the CPUs for the next runs; all log lines are in once it has exited
		if err := p.stop(); err != nil {
			return nil, err
		}
	}
	if res.logLines, err = ours.logLines(); err != nil {
		return nil, err
	}
	return res, nil
}

// round measures every target once at conns connections. The duration is
// cut into -slices slices per target, run in mirrored passes (A B C, C B A,
// A B C, ...) on connections kept open, so that neither a drift over the
// round nor a burst of a neighbour's load falls on one target more than on
// another; the first target rotates from round to round.
func (b *bench) round(ctx context.Context, targets []loadTarget, r, conns int) ([]sample, error) {
	runs := make([]*loadRun, len(targets))
	defer func() {
		for _, lr := range runs {
			if lr != nil {
				lr.close()
			}
		}
	}()
	pass := make([]int, len(targets))
	for k := range targets {
		pass[k] = (k + r) % len(targets)
	}
	slice := b.o.duration / time.Duration(b.o.slices)
	for range b.o.slices {
		for _, ti := range pass {
			if runs[ti] == nil { // first slice: connect and warm up
				lr, err := openRun(targets[ti], conns)
				if err != nil {
					return nil, err
				}
				runs[ti] = lr
				lr.warmUp(&b.stop, b.o.warmup)
			}
			if err := runs[ti].measure(&b.stop, slice); err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("stopped: %w", ctx.Err())
			}
		}
		slices.Reverse(pass)
	}
	row := make([]sample, len(targets))
	for ti, lr := range runs {
		s, err := lr.sample()
		if err != nil {
			return nil, err
		}
		row[ti] = s
	}
	return row, nil
}

// probe sends one request, so that a target that cannot answer stops the
// run before anything is measured.
func probe(t loadTarget) error {
	c, err := dialRaw(t.addr, t.req)
	if err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	defer c.close()
	if err := c.roundTrip(); err != nil {
		return fmt.Errorf("%s: first request: %w", t.name, err)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func environment() string {
	return fmt.Sprintf("%s %s/%s, %d CPUs (%s)", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel())
}
