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
	kQuiet   // ours with log.requests: false
	kCompare // another build of ours (-compare-bin), log on (informational)
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

// throughput starts the upstream, signs in once through our proxy, and
// runs the rounds: for every round and every -conns value, each target
// once (see round). Each round has proxy processes of its own (see fleet),
// started before it and stopped after it, so that what differs between
// two processes of the same program (where their threads run, how their
// memory happens to lie) varies from round to round like any other noise,
// and the medians see through it. A profiled run keeps one set of
// processes throughout, so that each profile covers the whole run.
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

	// The session cookie of a real login; every instance of our proxy
	// opens it, as they share the session key.
	login0, loginAddr, err := b.ours(ctx, "twc-auth-proxy-login", oursConfig{realm: rm, upstream: res.upstream, margin: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	b.logf("signing in through %s and the fake TWC auth server", loginAddr)
	cookies, err := login(ctx, "http://"+loginAddr, rm.user, rm.pass)
	if err != nil {
		return nil, err
	}
	if err := login0.stop(); err != nil {
		return nil, err
	}
	cookie := cookieHeader(cookies)
	res.cookie = len(cookie)
	sess, err := rm.open(cookies)
	if err != nil {
		return nil, fmt.Errorf("reading the session cookie: %w", err)
	}
	res.idToken = len(sess.IDToken)

	peaks := map[string]int64{}
	var f *fleet
	res.samples = make([][][]sample, len(b.o.conns))
	for r := range b.o.rounds {
		if f == nil {
			tag := fmt.Sprintf("-r%d", r+1)
			if b.o.cpuprofile != "" {
				tag = ""
			}
			if f, err = b.startFleet(ctx, res, rm, cookie, tag); err != nil {
				return nil, err
			}
			if res.labels == nil {
				res.kinds, res.labels = f.kinds, f.labels
				res.requests = make([]int64, len(f.targets))
			}
		}
		for ci, conns := range b.o.conns {
			row, err := b.round(ctx, f.targets, r, conns)
			if err != nil {
				return nil, err
			}
			for ti, s := range row {
				res.requests[ti] += int64(s.n + s.warm)
				b.logf("round %d/%d  %3d conns  %-12s %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  %6.1f µs CPU/req  %d errors",
					r+1, b.o.rounds, conns, f.targets[ti].name, s.rps(), ms(s.p50), ms(s.p99), s.cpuPerReq(), s.errs)
			}
			res.samples[ci] = append(res.samples[ci], row)
		}
		if b.o.cpuprofile == "" || r == b.o.rounds-1 {
			lines, err := f.stop(peaks)
			if err != nil {
				return nil, err
			}
			res.logLines += lines
			f = nil
		}
	}
	for i, label := range res.labels {
		res.peaks = append(res.peaks, procPeak{name: label, peak: peaks[label], ours: res.kinds[i] == kOurs || res.kinds[i] == kQuiet})
	}
	if _, peak, err := memory(up.pid()); err == nil {
		res.peaks = append(res.peaks, procPeak{name: "upstream (context)", peak: peak})
	}
	return res, nil
}

// fleet is one set of the proxies measured, in the order of a results row.
type fleet struct {
	targets []loadTarget
	procs   []*proc
	kinds   []kind
	labels  []string
	ours    *proc // whose log lines are counted
}

// startFleet starts bare, the optional references and our proxy (with and
// without request logs); tag tells their log files apart.
func (b *bench) startFleet(ctx context.Context, res *results, rm *realm, cookie, tag string) (*fleet, error) {
	f := &fleet{}
	const path = "/api/bench"
	add := func(k kind, name, label string, p *proc, addr, cookie string) {
		f.targets = append(f.targets, loadTarget{name: name, addr: addr, req: getRequest(addr, path, cookie), pid: p.pid()})
		f.kinds, f.labels, f.procs = append(f.kinds, k), append(f.labels, label), append(f.procs, p)
	}
	profile := func(name string) []string {
		if b.o.cpuprofile == "" {
			return nil
		}
		return []string{"-cpuprofile", filepath.Join(b.o.cpuprofile, name+".pprof")}
	}
	bare, addr, err := b.child(ctx, "bare"+tag, nil, "bare", append([]string{"-upstream", res.upstream}, profile("bare")...)...)
	if err != nil {
		return nil, err
	}
	add(kBare, "bare", "bare ReverseProxy", bare, addr, cookie)
	if b.o.noCookie {
		p, addr, err := b.child(ctx, "bare-no-cookie"+tag, nil, "bare", "-upstream", res.upstream)
		if err != nil {
			return nil, err
		}
		add(kNoCookie, "bare-nocookie", "bare ReverseProxy, requests without the cookie", p, addr, "")
	}
	if b.o.sameBytes {
		p, addr, err := b.child(ctx, "bare-same-bytes"+tag, nil, "bare",
			append([]string{"-upstream", res.upstream, "-token-len", strconv.Itoa(res.idToken)}, profile("bare-same-bytes")...)...)
		if err != nil {
			return nil, err
		}
		add(kSame, "bare-bytes", "bare ReverseProxy, same bytes", p, addr, cookie)
	}
	oursCfg := oursConfig{realm: rm, upstream: res.upstream, margin: 30 * time.Second, logRequests: true}
	oursLabel := "twc-auth-proxy"
	if b.o.cpuprofile != "" {
		oursCfg.profile = filepath.Join(b.o.cpuprofile, "ours.pprof")
		oursLabel = "twc-auth-proxy (in-process wiring, profiled)"
	}
	ours, addr, err := b.ours(ctx, "twc-auth-proxy"+tag, oursCfg)
	if err != nil {
		return nil, err
	}
	add(kOurs, "ours", oursLabel, ours, addr, cookie)
	f.ours = ours
	if b.o.logOff {
		quietCfg := oursCfg
		quietCfg.logRequests, quietCfg.profile = false, ""
		quiet, addr, err := b.ours(ctx, "twc-auth-proxy-nolog"+tag, quietCfg)
		if err != nil {
			return nil, err
		}
		add(kQuiet, "ours-nolog", "twc-auth-proxy, log.requests: false", quiet, addr, cookie)
	}
	if b.o.compareBin != "" && b.o.cpuprofile == "" {
		other := oursCfg
		other.bin = b.o.compareBin
		p, addr, err := b.ours(ctx, "twc-auth-proxy-compare"+tag, other)
		if err != nil {
			return nil, err
		}
		add(kCompare, "ours-compare", "twc-auth-proxy, -compare-bin", p, addr, cookie)
	}
	for _, t := range f.targets {
		if err := probe(t); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// stop records each process's peak RSS in peaks (the highest per label),
// stops them all, freeing the CPUs, and returns how many lines our proxy
// with request logs wrote (all are in once it has exited).
func (f *fleet) stop(peaks map[string]int64) (int64, error) {
	for i, p := range f.procs {
		_, peak, err := memory(p.pid())
		if err != nil {
			return 0, err
		}
		peaks[f.labels[i]] = max(peaks[f.labels[i]], peak)
	}
	for _, p := range f.procs {
		if err := p.stop(); err != nil {
			return 0, err
		}
	}
	return f.ours.logLines()
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
