// Command proxybench is the end-to-end performance benchmark of
// twc-auth-proxy, on loopback only and bounded in time. It starts a fast
// upstream, a bare httputil.ReverseProxy that only sets "Authorization:
// Token x" (the physical limit), and our proxy (its real binary) holding a
// session made by a real login against the fake TWC auth server, each in
// its own process; drives the same load (the same requests, session cookie
// included) through each, interleaved in rounds; and prints a Markdown
// table with requests/s, p50, p99, CPU per request and peak RSS of each
// proxy process, ratios taken within rounds, a refresh storm, memory per
// idle connection, and PASS/FAIL per target. Optional rows: the bare proxy
// sent no cookie, and the bare proxy fed and forwarding the bytes ours is.
//
// Usage, from the module root:
//
//	go run ./bench/cmd/proxybench [-rounds 5] [-duration 3s] [-conns 8,64]
//	    [-storm-clients 200] [-idle-conns 1000] [-cpuprofile DIR]
//	    [-no-cookie-row=false] [-same-bytes-row] [-log-off-row=false]
//
// See bench/README.md.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 2 && os.Args[1] == "child" {
		err = runChild(ctx, os.Args[2], os.Args[3:])
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

type options struct {
	rounds       int
	duration     time.Duration
	warmup       time.Duration
	slices       int
	conns        []int
	stormClients int
	idleConns    int
	logOff       bool
	noCookie     bool
	sameBytes    bool
	logSink      string
	cpuprofile   string
	bin          string
	compareBin   string
	timeout      time.Duration
	keep         bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("proxybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; every round runs each target once per -conns value")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measured time of one target at one -conns value")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured load on fresh connections before each measurement")
	fs.IntVar(&o.slices, "slices", 6, "slices the duration is cut into, alternating between the proxies (even: mirrored passes)")
	conns := fs.String("conns", "8,64", "comma-separated numbers of concurrent keep-alive connections")
	fs.IntVar(&o.stormClients, "storm-clients", 200, "clients (one session each) of the refresh storm; 0 skips it")
	fs.IntVar(&o.idleConns, "idle-conns", 1000, "idle keep-alive connections for the memory-per-connection figure; 0 skips it")
	fs.BoolVar(&o.logOff, "log-off-row", true, "also measure our proxy with log.requests: false")
	fs.StringVar(&o.logSink, "log-sink", "file", "where the processes' stderr (our proxy's log lines) goes: file (a file in the scratch directory) or pipe (read and counted by this process, which also drives the load)")
	fs.BoolVar(&o.noCookie, "no-cookie-row", true, "also measure the bare proxy sent requests without the session cookie (informational)")
	fs.BoolVar(&o.sameBytes, "same-bytes-row", false, "also measure the bare proxy fed and forwarding the bytes ours is: the cookie dropped, a token of the ID token's length, X-Forwarded-*, X-Request-Id (informational)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write CPU profiles (bare.pprof, ours.pprof, and bare-same-bytes.pprof with -same-bytes-row) to this directory; ours then runs in-process wiring of the proxy package instead of the binary")
	fs.StringVar(&o.bin, "bin", "", "twc-auth-proxy binary to measure (default: go build ./cmd/twc-auth-proxy)")
	fs.StringVar(&o.compareBin, "compare-bin", "", "also measure this other twc-auth-proxy binary (request log on) in the same rounds, e.g. an older build: an A/B within one run (informational)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "hard limit on the whole run")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (every process's log, per round with -log-sink file, and the generated configs) and print its path")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for f := range strings.SplitSeq(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1024 {
			return o, fmt.Errorf("-conns: %q is not a number from 1 to 1024", f)
		}
		o.conns = append(o.conns, n)
	}
	var errs []error
	check := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	check(o.rounds >= 1 && o.rounds <= 50, "-rounds: from 1 to 50")
	check(o.duration >= 200*time.Millisecond && o.duration <= time.Minute, "-duration: from 200ms to 1m")
	check(o.slices >= 1 && o.slices <= 60 && o.duration/time.Duration(max(o.slices, 1)) >= 50*time.Millisecond,
		"-slices: from 1 to 60, each slice at least 50ms")
	check(o.warmup >= 0 && o.warmup <= 10*time.Second, "-warmup: from 0 to 10s")
	check(o.stormClients >= 0 && o.stormClients <= 1000, "-storm-clients: from 0 to 1000")
	check(o.idleConns >= 0 && o.idleConns <= 10000, "-idle-conns: from 0 to 10000")
	check(o.timeout > 0, "-timeout: must be positive")
	check(o.logSink == "file" || o.logSink == "pipe", "-log-sink: file or pipe")
	return o, errors.Join(errs...)
}

// bench holds what every phase shares.
type bench struct {
	o        options
	self     string // this executable, re-run for child roles
	bin      string // our proxy's binary
	dir      string // scratch: the binary, generated configs
	progress io.Writer
	procs    []*proc
	stop     atomic.Bool // set when the run is interrupted: load loops return
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	b := &bench{o: o, progress: stderr}
	go func() {
		<-ctx.Done()
		b.stop.Store(true)
	}()
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.dir, err = os.MkdirTemp("", "proxybench-"); err != nil {
		return err
	}
	if o.keep {
		defer fmt.Fprintf(stderr, "scratch directory kept: %s\n", b.dir)
	} else {
		defer os.RemoveAll(b.dir)
	}
	defer b.stopAll()
	if b.bin = o.bin; b.bin == "" {
		if b.bin, err = b.build(ctx); err != nil {
			return err
		}
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}
	per := o.warmup + o.duration
	targets := 2
	for _, row := range []bool{o.logOff, o.noCookie, o.sameBytes} {
		if row {
			targets++
		}
	}
	b.logf("proxybench: %d rounds x %v x %d targets, about %v of load, then the idle-connection and refresh-storm runs",
		o.rounds, o.conns, targets, time.Duration(o.rounds*len(o.conns)*targets)*per)

	res, err := b.throughput(ctx)
	if err != nil {
		return err
	}
	if o.idleConns > 0 {
		if res.idle, err = b.idleMemory(ctx, res.upstream); err != nil {
			return err
		}
	}
	if o.stormClients > 0 {
		if res.storm, err = b.refreshStorm(ctx, res.upstream); err != nil {
			return err
		}
	}
	report(stdout, o, res)
	if o.cpuprofile != "" {
		b.logf("CPU profiles in %s: go tool pprof -top %s", o.cpuprofile, filepath.Join(o.cpuprofile, "ours.pprof"))
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, format+"\n", args...)
}

// build compiles cmd/twc-auth-proxy as a release would be built.
func (b *bench) build(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the twc-auth-proxy module, or pass -bin")
	}
	bin := filepath.Join(b.dir, "twc-auth-proxy")
	b.logf("building %s", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/twc-auth-proxy")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}

// child starts a child role and waits for its address; env adds
// variables to its environment.
func (b *bench) child(ctx context.Context, name string, env []string, role string, args ...string) (*proc, string, error) {
	p, err := startProc(name, append([]string{b.self, "child", role}, args...), childEnv(env...), b.logFile(name))
	if err != nil {
		return nil, "", err
	}
	b.procs = append(b.procs, p)
	addr, err := p.waitReady(ctx)
	return p, addr, err
}

// logFile is where process name's stderr goes: a file in the scratch
// directory with -log-sink file (the default), else a pipe to this process
// ("").
func (b *bench) logFile(name string) string {
	if b.o.logSink != "file" {
		return ""
	}
	return filepath.Join(b.dir, name+".log")
}

func (b *bench) stopAll() {
	for _, p := range slices.Backward(b.procs) {
		if err := p.stop(); err != nil {
			b.logf("%v", err)
		}
	}
	b.procs = nil
}

// realm is one fake TWC auth server with the client and user our proxy
// uses, and the proxy's session key.
type realm struct {
	idp        *authtest.Server
	clientID   string
	secret     string
	sessionKey string // base64 of 32 random bytes
	user, pass string
}

func newRealm(ttl time.Duration, now func() time.Time) (*realm, error) {
	r := &realm{clientID: "proxybench", secret: randomB64(24), sessionKey: randomB64(32), user: "bench", pass: randomB64(12)}
	idp, err := authtest.Start(authtest.Options{
		ClientIDs:           []string{r.clientID},
		Secret:              r.secret,
		Users:               map[string]string{r.user: r.pass},
		TokenTTL:            ttl,
		RotateRefreshTokens: true,
		Now:                 now,
	})
	if err != nil {
		return nil, err
	}
	r.idp = idp
	return r, nil
}

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// oursConfig is one instance of our proxy.
type oursConfig struct {
	realm       *realm
	upstream    string
	margin      time.Duration
	logRequests bool
	profile     string // set: in-process wiring (child role inproc) writing this CPU profile
	bin         string // set: this binary instead of the measured one (-compare-bin)
}

// ours starts our proxy from a generated config (or, for profiling, the
// in-process wiring) and waits until it has discovered the auth server.
func (b *bench) ours(ctx context.Context, name string, c oursConfig) (*proc, string, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	if c.profile != "" {
		p, addr, err := b.child(ctx, name, []string{
			envClientSecret + "=" + c.realm.secret, envSessionKey + "=" + c.realm.sessionKey,
		}, "inproc", "-listen", listen, "-upstream", c.upstream, "-issuer", c.realm.idp.Issuer(),
			"-client-id", c.realm.clientID, "-log-requests="+strconv.FormatBool(c.logRequests), "-cpuprofile", c.profile)
		return p, addr, err
	}
	metrics, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	config := filepath.Join(b.dir, name+".yaml")
	yaml := fmt.Sprintf(`listen: %s
metrics_listen: %s
upstream: %s
redirect_url: http://%s/oauth2/callback
shutdown_timeout: 2s
auth:
  issuer_url: %q
  client_id: %q
  client_secret: %q
  refresh_margin: %s
session:
  cookie_secure: false
  secret: %q
log:
  requests: %t
`, listen, metrics, c.upstream, listen, c.realm.idp.Issuer(), c.realm.clientID, c.realm.secret,
		c.margin, c.realm.sessionKey, c.logRequests)
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		return nil, "", err
	}
	p, err := startProc(name, []string{cmp.Or(c.bin, b.bin), "--config", config}, childEnv(), b.logFile(name))
	if err != nil {
		return nil, "", err
	}
	b.procs = append(b.procs, p)
	return p, listen, p.waitHTTP(ctx, "http://"+metrics+"/readyz")
}
