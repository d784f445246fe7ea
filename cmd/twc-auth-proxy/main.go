// Command twc-auth-proxy is the authenticating sidecar for Teamwork Cloud:
// it signs browser users in through the TWC Authentication server and
// forwards their requests upstream with "Authorization: Token <id_token>".
//
// Usage:
//
//	twc-auth-proxy --config FILE
//	twc-auth-proxy --config FILE --check-config
//	twc-auth-proxy token --config FILE   # print a service-account ID token
//	twc-auth-proxy demo [-listen 127.0.0.1:4180] [-token-ttl 2m]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	// Here rather than in run: the memory limit and the GC percent are the
	// process's, and the tests call run in theirs.
	if limit, ok := containerMemoryLimit(os.Getenv, os.ReadFile); ok {
		debug.SetMemoryLimit(limit)
	}
	if percent, ok := gcPercent(os.Getenv); ok {
		debug.SetGCPercent(percent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "twc-auth-proxy:", err)
		os.Exit(1)
	}
}

// run is the whole program: flags, config, wiring, serving until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(ctx, args[1:], stdout, stderr)
		case "token":
			return runToken(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("twc-auth-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "path to the YAML config file")
	checkOnly := fs.Bool("check-config", false, "validate the config file and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*configPath, getenv)
	if err != nil {
		return err
	}
	if *checkOnly {
		fmt.Fprintln(stdout, "config OK")
		return nil
	}
	// One log line per request goes into a buffer that a goroutine of its
	// own writes out every second, or at 64 KiB (and on exit): a write(2)
	// per line would cost four times as much, and a request never waits
	// for one.
	out := proxy.NewLogWriter(stderr, time.Second)
	defer out.Close()
	log, lines, err := newLogger(cfg.logFormat, cfg.logLevel, out)
	if err != nil {
		return err
	}
	cfg.proxy.RequestLog = lines

	if u := cfg.proxy.RedirectURL; cfg.session.Secure && u.Scheme == "http" && !isLoopbackHost(u.Hostname()) {
		// Browsers drop Secure cookies set over plain http (except on
		// localhost): every login would end in "not started in this browser".
		log.Warn("session.cookie_secure is true but redirect_url is plain http: browsers will not keep the session cookies; serve over https or set cookie_secure: false",
			zap.String("redirect_url", u.String()))
	}
	a, err := newApp(cfg, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	proxyLn, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	metricsLn, err := net.Listen("tcp", cfg.metricsListen)
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("metrics_listen: %w", err)
	}
	return a.serve(ctx, proxyLn, metricsLn)
}

// app is the wired program: the proxy handler, the auth server client and
// the metrics/health handler.
type app struct {
	cfg     *settings
	log     *zap.Logger
	auth    *proxy.AuthServer
	proxy   *proxy.Server
	metrics http.Handler
	// draining is set once shutdown has begun: the proxy's listener is
	// closed, so /readyz must no longer say ready.
	draining atomic.Bool
}

// newApp builds every component from cfg. Nothing here touches the network.
func newApp(cfg *settings, log *zap.Logger, reg *prometheus.Registry) (*app, error) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := proxy.NewMetrics(reg)
	client, err := authHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.authTLS.insecureSkipVerify {
		log.Warn("auth.insecure_skip_verify is set: the auth server's TLS certificate is not checked")
	}
	upstreamTLS, err := cfg.upstreamTLS.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("upstream_ca_file: %w", err)
	}
	if cfg.upstreamTLS.insecureSkipVerify {
		log.Warn("upstream_insecure_skip_verify is set: the upstream's TLS certificate is not checked",
			zap.String("upstream", cfg.proxy.Upstream.String()))
	}
	auth := proxy.NewAuthServer(cfg.auth, client, log.Named("auth"), m)
	store, err := session.NewStore(cfg.session) // its errors start with "session: "
	if err != nil {
		return nil, err
	}
	pcfg := cfg.proxy
	pcfg.UpstreamTLS = upstreamTLS
	if cfg.service != nil {
		pcfg.ServiceAccount = proxy.NewServiceAccount(*cfg.service, auth, log.Named("service_account"), m)
	}
	p, err := proxy.New(pcfg, log, store, auth, m)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: log, auth: auth, proxy: p}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(log), Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.draining.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !auth.Ready():
			http.Error(w, "auth server discovery has not succeeded yet", http.StatusServiceUnavailable)
		default:
			io.WriteString(w, "ready\n")
		}
	})
	a.metrics = mux
	return a, nil
}

// authHTTPClient is the client for the auth server: its own CA bundle when
// configured (TWC often runs on a self-signed certificate), a timeout, and
// no redirect that could carry the client's credentials elsewhere.
func authHTTPClient(cfg *settings) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	tc, err := cfg.authTLS.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("auth.ca_file: %w", err)
	}
	if tc != nil {
		t.TLSClientConfig = tc
	}
	return &http.Client{Transport: t, Timeout: cfg.auth.Timeout, CheckRedirect: checkAuthRedirect}, nil
}

// clientConfig is the TLS client configuration for tr: nil (Go's defaults,
// the system roots) when neither key is set. A CA file replaces the system
// roots rather than adding to them: a server that presents a certificate
// of a public CA instead of the expected one is refused.
func (tr tlsTrust) clientConfig() (*tls.Config, error) {
	if tr.caFile == "" && !tr.insecureSkipVerify {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: tr.insecureSkipVerify}
	if tr.caFile != "" {
		pool, err := readCAFile(tr.caFile)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// checkAuthRedirect is the auth server client's redirect policy. net/http
// follows a redirect with every header but Authorization and Cookie (and
// keeps those for the same host name on another port), and after a 307 or
// 308 with the body: X-Auth-Secret, client_secret_post, codes and refresh
// tokens would reach wherever the Location points. So a POST (the token
// endpoint) never follows one: its 3xx comes back as the answer, an error
// to the caller. A GET (discovery, JWKS) follows up to 10 on the same
// scheme and host:port, or from http to https there.
func checkAuthRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	if first.Method != http.MethodGet && first.Method != http.MethodHead {
		return http.ErrUseLastResponse
	}
	sameOrigin := strings.EqualFold(req.URL.Host, first.URL.Host) &&
		(req.URL.Scheme == first.URL.Scheme || req.URL.Scheme == "https")
	if !sameOrigin {
		return fmt.Errorf("redirect from %s://%s to %s://%s refused: the auth server may redirect only on its own host",
			first.URL.Scheme, first.URL.Host, req.URL.Scheme, req.URL.Host)
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// serve runs discovery and both servers until ctx ends, then shuts down:
// listeners close first, in-flight requests get shutdown_timeout to finish,
// then the service account's TWC session is released.
func (a *app) serve(ctx context.Context, proxyLn, metricsLn net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var discovery sync.WaitGroup
	discovery.Go(func() { a.auth.Run(ctx) })

	// What http.Server logs about these plain-http listeners is the
	// process's trouble, never one client's (no TLS handshakes to fail):
	// it cannot accept connections (out of file descriptors), or a
	// handler misbehaved. Errors, then, not info among the request lines.
	errLog, _ := zap.NewStdLogAt(a.log.Named("http"), zap.ErrorLevel) // fails only for an unknown level
	proxySrv := &http.Server{
		Handler:           a.proxy,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       a.cfg.idleTimeout,
		MaxHeaderBytes:    128 << 10, // room for a 64 KiB Cookie header, which then counts as no session
		ErrorLog:          errLog,
	}
	metricsSrv := &http.Server{
		Handler:           a.metrics,
		ReadHeaderTimeout: 5 * time.Second,
		// Without it a scraper's (or anyone's) keep-alive connection would
		// stay open for good after its last request: Go's default is no
		// idle timeout once ReadTimeout is unset.
		IdleTimeout: a.cfg.idleTimeout,
		ErrorLog:    errLog,
	}
	errc := make(chan error, 2)
	go func() { errc <- proxySrv.Serve(proxyLn) }()
	go func() { errc <- metricsSrv.Serve(metricsLn) }()
	a.log.Info("twc-auth-proxy started",
		zap.String("listen", proxyLn.Addr().String()),
		zap.String("metrics_listen", metricsLn.Addr().String()),
		zap.String("upstream", a.cfg.proxy.Upstream.String()),
		zap.String("issuer_url", a.cfg.auth.IssuerURL),
		memoryLimitField(debug.SetMemoryLimit(-1)),
		gcPercentField())

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	a.log.Info("shutting down", zap.Duration("timeout", a.cfg.shutdownTimeout))
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.shutdownTimeout)
	defer scancel()
	// With a service account, the drain leaves the last quarter of the
	// grace (at most logoutReserve) to its logout: one slow request must
	// not use up the time in the busy case, where the seat matters most.
	drain := sctx
	if a.cfg.service != nil {
		var dcancel context.CancelFunc
		drain, dcancel = context.WithTimeout(sctx, a.cfg.shutdownTimeout-min(logoutReserve, a.cfg.shutdownTimeout/4))
		defer dcancel()
	}
	// Not ready from the moment the listener closes: whatever still routes
	// by readiness (a terminating endpoint's "serving" condition, a load
	// balancer's health check) would otherwise send connections to a
	// closed port. /healthz and /metrics keep answering during the drain.
	a.draining.Store(true)
	if serr := proxySrv.Shutdown(drain); serr != nil {
		err = errors.Join(err, fmt.Errorf("shutdown: %w", serr))
	}
	// The service account's TWC session (a license seat) ends now rather
	// than at TWC's idle timeout: once no service request is in flight, or
	// when the drain ran out of its time, since the process is about to
	// cut what is left anyway. The outcome is logged there; it does not
	// change how run ends.
	a.proxy.ReleaseServiceSession(sctx)
	metricsSrv.Shutdown(sctx)
	// Discovery may still be retrying, and logging: run returns only once
	// it has ended too.
	cancel()
	discovery.Wait()
	a.log.Info("stopped")
	return err
}

// logoutReserve is the most of shutdown_timeout kept from the drain for
// the service account's logout.
const logoutReserve = 5 * time.Second

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// newLogger builds the zap logger: JSON lines by default, or console. With
// JSON it also returns the writer for the proxy's request lines
// (proxy.Config.RequestLog): the same sink, which the proxy writes in the
// logger's shape without going through it.
func newLogger(format, level string, w io.Writer) (log *zap.Logger, requestLines io.Writer, err error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, nil, fmt.Errorf("log.level: %w", err)
	}
	ws := zapcore.AddSync(w)
	if _, safe := w.(*proxy.LogWriter); !safe {
		ws = zapcore.Lock(ws)
	}
	// proxy/requestlog.go writes these keys and encodings too; change
	// them together (TestRequestLineMatchesLogger).
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
		requestLines = ws
	}
	core := zapcore.NewCore(enc, ws, lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), requestLines, nil
}
