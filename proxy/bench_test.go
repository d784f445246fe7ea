package proxy

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// benchServer is a Server with discovered endpoints and an in-memory
// upstream, so benchmarks measure the proxy's own work per request.
type benchServer struct {
	s      *Server
	cookie string // Cookie header of a valid session
}

type cannedUpstream struct{}

func (cannedUpstream) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(strings.NewReader(`{"ok":true}`)),
		ContentLength: 11,
		Request:       r,
	}, nil
}

func newBenchServer(b *testing.B, logRequests bool) *benchServer {
	b.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	store, err := session.NewStore(session.Options{Secrets: [][]byte{key}})
	if err != nil {
		b.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	auth := NewAuthServer(AuthConfig{IssuerURL: "http://idp.invalid/authentication", ClientID: "dashboard"}, nil, log, m)
	ep, err := auth.newEndpoints(&discoveryDoc{Issuer: "http://idp.invalid/authentication", AuthURL: "http://idp.invalid/a", TokenURL: "http://idp.invalid/t", JWKSURL: "http://idp.invalid/j"})
	if err != nil {
		b.Fatal(err)
	}
	auth.ep.Store(ep)
	up, _ := url.Parse("http://127.0.0.1:8111")
	cb, _ := url.Parse("http://127.0.0.1:4180/oauth2/callback")
	cfg := Config{Upstream: up, RedirectURL: cb, RefreshMargin: 30 * time.Second, LogRequests: logRequests}
	if logRequests {
		cfg.RequestLog = discard{} // as the binary with its JSON logger
	}
	s, err := New(cfg, log, store, auth, m)
	if err != nil {
		b.Fatal(err)
	}
	s.rp.Transport = cannedUpstream{}
	// A realistic RS256 ID token (~900 bytes) and an opaque refresh token.
	idToken := "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("x", 250) + "." + strings.Repeat("s", 342)
	rec := httptest.NewRecorder()
	sess := &session.Session{Subject: "alice", IDToken: idToken, RefreshToken: strings.Repeat("r", 64), Expiry: time.Now().Add(time.Hour), Created: time.Now()}
	if err := store.Save(rec, httptest.NewRequest("GET", "/", nil), sess); err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, c := range rec.Result().Cookies() {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return &benchServer{s: s, cookie: strings.Join(parts, "; ")}
}

func (bs *benchServer) request() *http.Request {
	r := httptest.NewRequest("GET", "http://127.0.0.1:4180/osmc/workspaces?x=1", nil)
	r.Header.Set("Cookie", bs.cookie+"; twc-rest-session-id=abc")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", "bench")
	r.RemoteAddr = "127.0.0.1:50000"
	return r
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkServeHTTP is the whole per-request path for a signed-in user:
// routing, session check, header rewrite, ReverseProxy, metrics and the
// log line, against an in-memory upstream.
func BenchmarkServeHTTP(b *testing.B) {
	for _, logOn := range []bool{true, false} {
		name := map[bool]string{true: "log", false: "nolog"}[logOn]
		b.Run(name, func(b *testing.B) {
			bs := newBenchServer(b, logOn)
			r := bs.request()
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clear(w.h)
				bs.s.ServeHTTP(w, r)
			}
		})
	}
}

// BenchmarkSessionCheck is opening the cookie plus the session check of a
// valid, not-yet-due session, as a request pays for it: the cookie is a
// decode-cache hit, as for every request of a session but its first in a
// minute (session.BenchmarkLoadDecode is the cold decode).
func BenchmarkSessionCheck(b *testing.B) {
	bs := newBenchServer(b, false)
	r := bs.request()
	w := &recorder{ResponseWriter: &discardWriter{h: http.Header{}}}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := bs.s.requireSession(w, r, true); !ok {
			b.Fatal("no session")
		}
	}
}

// BenchmarkRewrite is the upstream header rewrite (the trust boundary).
func BenchmarkRewrite(b *testing.B) {
	bs := newBenchServer(b, false)
	in := bs.request()
	in.Header.Set("X-Forwarded-For", "6.6.6.6")
	st := &recorder{authorization: "Token " + strings.Repeat("t", 900), id: "abc"}
	in = in.WithContext(contextWithState(in, st))
	b.ReportAllocs()
	for b.Loop() {
		out := in.Clone(in.Context())
		bs.s.rewrite(&httputil.ProxyRequest{In: in, Out: out})
	}
}

// BenchmarkRefreshFastPath is a refresh answered from the memo (the
// requests that arrive just after another one refreshed the session). The
// remembered session's ID token must still be valid: the memo never serves
// an expired one (lookup), so without an Expiry every call would miss.
func BenchmarkRefreshFastPath(b *testing.B) {
	bs := newBenchServer(b, false)
	old := &session.Session{Subject: "alice", RefreshToken: strings.Repeat("r", 64), Expiry: time.Now().Add(10 * time.Second)}
	fresh := &session.Session{Subject: "alice", RefreshToken: strings.Repeat("n", 64), Expiry: time.Now().Add(time.Hour)}
	r := newRefresher(bs.s.auth, time.Now)
	key := refreshKey(old.RefreshToken)
	r.store(key, memoEntry{sess: fresh, until: time.Now().Add(time.Hour)})
	ep := bs.s.auth.endpoints()
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		if _, outcome, shared, _ := r.refresh(ctx, ep, old); outcome != refreshOK || !shared {
			b.Fatal("memo miss")
		}
	}
}

func contextWithState(r *http.Request, st *recorder) context.Context {
	return context.WithValue(r.Context(), proxyStateKey{}, st)
}

// BenchmarkBareReverseProxy is the floor: a ReverseProxy that only sets
// the Token header, against the same in-memory upstream.
func BenchmarkBareReverseProxy(b *testing.B) {
	up, _ := url.Parse("http://127.0.0.1:8111")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			pr.Out.Header.Set("Authorization", "Token x")
		},
		Transport:  cannedUpstream{},
		BufferPool: newBufferPool(),
	}
	bs := newBenchServer(b, false)
	r := bs.request()
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		rp.ServeHTTP(w, r)
	}
}

// BenchmarkLogLine is the per-request log line, written directly as the
// binary does with JSON logs (requestlog.go), from parallel requests to a
// pipe drained by another goroutine, as stderr to a container runtime is:
// unbuffered (a write(2) per line), through zap's BufferedWriteSyncer (the
// request that fills the buffer writes it out, holding its lock), and
// through LogWriter (what the binary uses: a goroutine of its own writes).
func BenchmarkLogLine(b *testing.B) {
	for _, sink := range []string{"unbuffered", "zap-buffered", "logwriter"} {
		b.Run(sink, func(b *testing.B) {
			pr, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			drained := make(chan struct{})
			go func() {
				io.Copy(io.Discard, pr)
				close(drained)
			}()
			defer func() {
				pw.Close()
				<-drained
				pr.Close()
			}()
			var ws zapcore.WriteSyncer
			switch sink {
			case "unbuffered":
				ws = zapcore.Lock(pw)
			case "zap-buffered":
				bw := &zapcore.BufferedWriteSyncer{WS: pw, Size: 256 << 10, FlushInterval: time.Second}
				defer bw.Stop()
				ws = bw
			case "logwriter":
				lw := NewLogWriter(pw, time.Second)
				defer lw.Close()
				ws = lw
			}
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), ws, zap.InfoLevel))
			s := &Server{cfg: Config{LogRequests: true}, log: log, m: NewMetrics(prometheus.NewRegistry()), requestLog: newRequestLog(ws)}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest("GET", "/osmc/workspaces", nil)
				w := &recorder{id: "k3j2h4", user: "alice", outcome: "proxied", start: time.Now(), code: 200}
				for pb.Next() {
					s.finish(w, r)
				}
			})
		})
	}
}
