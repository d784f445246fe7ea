package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Child roles run in their own process (this command re-executed with
// "child ROLE"), so /proc charges each one's CPU and memory to it alone.
// Secrets arrive in the environment, not on the command line.
const (
	envClientSecret = "PROXYBENCH_CLIENT_SECRET"
	envSessionKey   = "PROXYBENCH_SESSION_KEY"
)

// upstreamBody is the fast upstream's answer: 64 bytes of JSON.
var (
	upstreamBody   = []byte(`{"id":42,"name":"proxybench","tags":["a","b"],"ok":true,"n":1234}`)
	upstreamType   = []string{"application/json"}
	upstreamLength = []string{strconv.Itoa(len(upstreamBody))}
)

// runChild serves one role until stdin closes (the parent has gone) or a
// signal arrives, then writes its CPU profile if asked to.
func runChild(ctx context.Context, role string, args []string) error {
	fs := flag.NewFlagSet("proxybench child "+role, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream URL (bare, inproc)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	issuer := fs.String("issuer", "", "auth server issuer URL (inproc)")
	clientID := fs.String("client-id", "", "client id (inproc)")
	logRequests := fs.Bool("log-requests", true, "one log line per request (inproc)")
	tokenLen := fs.Int("token-len", 0, "bare: the same-bytes variant, forwarding a token of this many bytes (0: \"Token x\" only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var h http.Handler
	flushLogs := func() {}
	switch role {
	case "upstream":
		h = http.HandlerFunc(serveUpstream)
	case "bare":
		h, err = bareProxy(*upstream, *tokenLen)
	case "inproc":
		h, flushLogs, err = inprocProxy(ctx, inprocConfig{
			listen: ln.Addr().String(), upstream: *upstream, issuer: *issuer,
			clientID: *clientID, logRequests: *logRequests,
		})
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		ln.Close()
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	srv := newServer(h)
	go srv.Serve(ln)
	fmt.Printf("ready %s\n", ln.Addr())
	<-ctx.Done()
	srv.Close()
	flushLogs()
	return nil
}

// newServer has the settings of cmd/twc-auth-proxy's proxy listener, so the
// bare proxy and ours differ only in their handlers.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    128 << 10,
	}
}

// serveUpstream is the fast upstream. It refuses a request without
// "Authorization: Token ...", so a proxy that failed to add one shows up
// as errors rather than as speed.
func serveUpstream(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Token ") {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h := w.Header()
	h["Content-Type"] = upstreamType
	h["Content-Length"] = upstreamLength
	w.Write(upstreamBody)
}

// bareProxy is the physical limit: a ReverseProxy that only sets the
// header, with the upstream transport tuned as a production proxy must be
// (the defaults' 2 idle connections per host and a fresh 32 KiB copy buffer
// per request roughly halve throughput).
//
// With tokenLen > 0 it is the same-bytes variant: it gets the session
// Cookie header our proxy gets and handles the bytes our proxy handles, with
// none of its logic. It drops the Cookie header, forwards "Authorization:
// Token " and a fixed random string of tokenLen bytes (the real ID token's
// length, joined per request as ours does), X-Forwarded-For/Host/Proto, and
// a short random X-Request-Id, which it also sets on the response.
func bareProxy(upstream string, tokenLen int) (http.Handler, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bare: bad -upstream %q", upstream)
	}
	if tokenLen < 0 || tokenLen > 64<<10 {
		return nil, fmt.Errorf("bare: bad -token-len %d", tokenLen)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", "Token x")
		},
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
		BufferPool: &bufferPool{},
	}
	if tokenLen == 0 {
		return rp, nil
	}
	token := randomB64(tokenLen)[:tokenLen]
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		h := pr.Out.Header
		delete(h, "Cookie")
		pr.SetXForwarded()
		h.Set("Authorization", "Token "+token)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strconv.FormatUint(rand.Uint64(), 36)
		w.Header().Set("X-Request-Id", id)
		r.Header.Set("X-Request-Id", id) // Out's header is a clone of this: upstream gets it
		rp.ServeHTTP(w, r)
	}), nil
}

// bufferPool is httputil.BufferPool over a sync.Pool of 32 KiB buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

type inprocConfig struct {
	listen, upstream, issuer, clientID string
	logRequests                        bool
}

// inprocProxy wires our proxy the way cmd/twc-auth-proxy's run and newApp
// do (that is package main, so it cannot be imported), for -cpuprofile: the
// binary has no profiling flag. Logs are JSON lines on stderr through the
// same buffer as there; flush writes out what the buffer holds.
func inprocProxy(ctx context.Context, c inprocConfig) (h http.Handler, flush func(), err error) {
	// The binary's main sets GOGC 150 when the environment sets none
	// (cmd/twc-auth-proxy/gcpercent.go); this process is the binary's
	// stand-in.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(150)
	}
	upstream, err := url.Parse(c.upstream)
	if err != nil {
		return nil, nil, fmt.Errorf("inproc: -upstream: %w", err)
	}
	redirect, _ := url.Parse("http://" + c.listen + "/oauth2/callback")
	key, err := base64.RawURLEncoding.DecodeString(os.Getenv(envSessionKey))
	if err != nil {
		return nil, nil, fmt.Errorf("inproc: %s: %w", envSessionKey, err)
	}
	out := proxy.NewLogWriter(os.Stderr, time.Second)
	log := jsonLogger(out)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := proxy.NewMetrics(reg)
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 10 * time.Second}
	auth := proxy.NewAuthServer(proxy.AuthConfig{
		IssuerURL:    c.issuer,
		ClientID:     c.clientID,
		ClientSecret: os.Getenv(envClientSecret),
		ClientAuth:   proxy.ClientAuthXAuthSecret,
		RedirectURL:  redirect.String(),
		Timeout:      10 * time.Second,
	}, client, log.Named("auth"), m)
	store, err := session.NewStore(session.Options{Secrets: [][]byte{key}, Path: "/", MaxAge: 336 * time.Hour})
	if err != nil {
		return nil, nil, fmt.Errorf("inproc: session: %w", err)
	}
	p, err := proxy.New(proxy.Config{
		Upstream:        upstream,
		RedirectURL:     redirect,
		RefreshMargin:   30 * time.Second,
		UpstreamTimeout: 60 * time.Second,
		LogRequests:     c.logRequests,
		RequestLog:      out, // as the binary does with its JSON logger
	}, log, store, auth, m)
	if err != nil {
		return nil, nil, err
	}
	if err := auth.Discover(ctx); err != nil {
		return nil, nil, fmt.Errorf("inproc: %w", err)
	}
	return p, func() { out.Close() }, nil
}

// jsonLogger is cmd/twc-auth-proxy's default logger: zap JSON lines into a
// proxy.LogWriter, which is safe for concurrent use without a lock.
func jsonLogger(ws zapcore.WriteSyncer) *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(ec), ws, zapcore.InfoLevel)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(os.Stderr))))
}
