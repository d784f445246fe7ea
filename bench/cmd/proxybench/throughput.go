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

// Targets of the throughput runs, in this order in every results row.
const (
	tBare = iota
	tSame // bare, fed and forwarding the bytes ours is (bareProxy's -token-len)
	tOurs
	tQuiet // ours with log.requests: false
)

// results is everything the report prints.
type results struct {
	env      string // Go, OS, CPUs
	loadavg  string // of the machine when the run began
	labels   []string
	samples  [][][]sample // [conns index][round][target]
	peaks    []procPeak   // of the throughput runs' proxies
	logLines int64        // our proxy's stderr lines over the rounds
	requests []int64      // requests each target answered over the rounds, warm-ups included
	upstream string       // URL, reused by the later runs
	cookie   int          // bytes of the Cookie header sent to our proxy
	idToken  int          // bytes of the ID token it forwards
	idle     *idleResult
	storm    *stormResult
}

type procPeak struct {
	name string
	peak int64 // VmHWM, bytes
	ours bool  // the RSS target applies
}

// throughput starts the upstream, the bare proxy, ours (with and without
// request logs) and, once a login has told the ID token's length, the bare
// proxy's same-bytes variant, and runs the rounds: for every round and
// every -conns value, each target once (see round).
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

	var bareArgs, sameArgs []string
	oursCfg := oursConfig{realm: rm, upstream: res.upstream, margin: 30 * time.Second, logRequests: true}
	oursLabel := "twc-auth-proxy"
	if b.o.cpuprofile != "" {
		bareArgs = []string{"-cpuprofile", filepath.Join(b.o.cpuprofile, "bare.pprof")}
		sameArgs = []string{"-cpuprofile", filepath.Join(b.o.cpuprofile, "bare-same-bytes.pprof")}
		oursCfg.profile = filepath.Join(b.o.cpuprofile, "ours.pprof")
		oursLabel = "twc-auth-proxy (in-process wiring, profiled)"
	}
	bare, bareAddr, err := b.child(ctx, "bare", nil, "bare", append([]string{"-upstream", res.upstream}, bareArgs...)...)
	if err != nil {
		return nil, err
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
	same, sameAddr, err := b.child(ctx, "bare-same-bytes", nil, "bare",
		append([]string{"-upstream", res.upstream, "-token-len", strconv.Itoa(res.idToken)}, sameArgs...)...)
	if err != nil {
		return nil, err
	}
	const path = "/api/bench"
	targets := []loadTarget{
		{name: "bare", addr: bareAddr, req: getRequest(bareAddr, path, ""), pid: bare.pid()},
		{name: "bare-bytes", addr: sameAddr, req: getRequest(sameAddr, path, cookie), pid: same.pid()},
		{name: "ours", addr: oursAddr, req: getRequest(oursAddr, path, cookie), pid: ours.pid()},
	}
	res.labels = []string{"bare ReverseProxy", "bare ReverseProxy, same bytes", oursLabel}
	procs := []*proc{bare, same, ours}
	if b.o.logOff {
		quietCfg := oursCfg
		quietCfg.logRequests, quietCfg.profile = false, ""
		quiet, quietAddr, err := b.ours(ctx, "twc-auth-proxy-nolog", quietCfg)
		if err != nil {
			return nil, err
		}
		targets = append(targets, loadTarget{name: "ours-nolog", addr: quietAddr, req: getRequest(quietAddr, path, cookie), pid: quiet.pid()})
		res.labels = append(res.labels, "twc-auth-proxy, log.requests: false")
		procs = append(procs, quiet)
	}
	for _, t := range targets {
		if err := probe(t); err != nil {
			return nil, err
		}
	}

	lines0 := ours.lines.Load()
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
		res.peaks = append(res.peaks, procPeak{name: res.labels[i], peak: peak, ours: i >= tOurs})
	}
	if _, peak, err := memory(up.pid()); err == nil {
		res.peaks = append(res.peaks, procPeak{name: "upstream (context)", peak: peak})
	}
	for _, p := range procs { // free the CPUs for the next runs; all log lines are in once it has exited
		if err := p.stop(); err != nil {
			return nil, err
		}
	}
	res.logLines = ours.lines.Load() - lines0
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
