// Package proxy is the authenticating reverse proxy: it signs browser users
// in through the TWC Authentication server (OpenID Connect authorization-code
// flow with TWC's deviations), keeps their tokens in encrypted cookie
// sessions, refreshes ID tokens before they expire and forwards requests
// upstream with "Authorization: Token <id_token>".
package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Fixed routes on the proxy listener. The callback path comes from
// Config.RedirectURL.
const (
	pathStart    = "/oauth2/start"
	pathSignOut  = "/oauth2/sign_out"
	pathUserInfo = "/oauth2/userinfo"
	pathAuth     = "/oauth2/auth"
)

// Config is the proxy's part of the configuration, already parsed.
type Config struct {
	// Upstream is where authenticated requests go (TWC REST, a dashboard).
	Upstream *url.URL
	// RedirectURL is the callback URL registered at the auth server; its
	// path is the callback route.
	RedirectURL *url.URL
	// RefreshMargin: refresh the ID token this long before it expires.
	RefreshMargin time.Duration
	// SkipAuth rules let matching requests through without a session.
	SkipAuth []Rule
	// TrustedProxies are peers whose X-Forwarded-* headers are passed on.
	TrustedProxies []netip.Prefix
	// UpstreamTimeout bounds the wait for the upstream's response headers.
	UpstreamTimeout time.Duration
	// UpstreamTLS, when set, is the TLS client configuration for an https
	// upstream: the roots its certificate must chain to (TWC REST usually
	// has a certificate of its own, made at install time), or no check at
	// all. Nil: Go's defaults, the system roots.
	UpstreamTLS *tls.Config
	// PostLogoutRedirectURL is sent to the provider's end-session endpoint
	// as post_logout_redirect_uri, when set.
	PostLogoutRedirectURL string
	// LogRequests logs one line per request (the default in production).
	LogRequests bool
	// RequestLog, when set, receives those lines directly instead of
	// through the logger: one JSON line per Write, the bytes the binary's
	// JSON logger would write (see requestlog.go), at a third of the
	// cost. It must be safe for concurrent use. Lines are still written
	// only while the logger has the info level enabled.
	RequestLog io.Writer
	// ServiceAccount, when set, serves requests on its routes that carry
	// no user session with the service identity's token.
	ServiceAccount *ServiceAccount
	// APITokens lets callers bring their own verified token.
	APITokens APITokens
}

// Server is the proxy's http.Handler.
type Server struct {
	cfg          Config
	log          *zap.Logger
	store        *session.Store
	auth         *AuthServer
	m            *Metrics
	now          func() time.Time
	refresher    *refresher
	rp           *httputil.ReverseProxy
	callbackPath string
	apiVerifier  atomic.Pointer[apiVerifier]
	requestLog   *requestLog // nil: request lines go through log
	watchdog     *watchdog   // enforces UpstreamTimeout

	// upstreamOrigin ("http://127.0.0.1:8080") and upstreamBase (the
	// upstream URL's path without its trailing '/') recognise Locations
	// that point at the upstream itself; see localLocation.
	upstreamOrigin, upstreamBase string
	// upstreamURL names the upstream in log lines about its failures.
	upstreamURL string
}

// New builds the proxy handler. auth must be discovered (Run) before
// protected routes work; until then they answer 503.
func New(cfg Config, log *zap.Logger, store *session.Store, auth *AuthServer, m *Metrics) (*Server, error) {
	if cfg.Upstream == nil || cfg.Upstream.Scheme == "" || cfg.Upstream.Host == "" {
		return nil, errors.New("proxy: upstream must be an absolute URL")
	}
	if cfg.RedirectURL == nil || cfg.RedirectURL.Path == "" {
		return nil, errors.New("proxy: redirect URL must have a path")
	}
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = 60 * time.Second
	}
	s := &Server{
		cfg:          cfg,
		log:          log,
		store:        store,
		auth:         auth,
		m:            m,
		now:          time.Now,
		callbackPath: cfg.RedirectURL.Path,

		upstreamOrigin: cfg.Upstream.Scheme + "://" + cfg.Upstream.Host,
		upstreamBase:   strings.TrimSuffix(cfg.Upstream.Path, "/"),
		upstreamURL:    cfg.Upstream.Redacted(),
	}
	switch s.callbackPath {
	case pathStart, pathSignOut, pathUserInfo, pathAuth:
		return nil, fmt.Errorf("proxy: redirect URL path %q collides with a fixed route", s.callbackPath)
	}
	if cfg.RequestLog != nil {
		s.requestLog = newRequestLog(cfg.RequestLog)
	}
	s.refresher = newRefresher(auth, func() time.Time { return s.now() })
	s.watchdog = newWatchdog(cfg.UpstreamTimeout)
	s.rp = s.newReverseProxy()
	return s, nil
}

// ServeHTTP routes a request. The route table is a switch rather than a
// ServeMux because a mux cleans paths and redirects, and proxied paths must
// reach the upstream exactly as sent.
func (s *Server) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w := &recorder{ResponseWriter: rw, start: time.Now(), id: requestID(r)}
	w.Header()["X-Request-Id"] = w.value(w.id)
	defer func() {
		if p := recover(); p != nil {
			// ReverseProxy aborts a response whose body it could not copy
			// (the upstream reset it, or the client left) with
			// http.ErrAbortHandler, after it wrote the status. The line
			// says so; then the server drops the connection as asked.
			if p == http.ErrAbortHandler {
				w.outcome = "aborted"
				s.upstreamAborted(w, r)
			}
			s.finish(w, r)
			panic(p)
		}
		s.finish(w, r)
	}()

	switch r.URL.Path {
	case pathStart:
		s.start(w, r)
	case s.callbackPath:
		s.callback(w, r)
	case pathSignOut:
		s.signOut(w, r)
	case pathUserInfo:
		s.userInfo(w, r)
	case pathAuth:
		s.authCheck(w, r)
	default:
		s.serveProxy(w, r)
	}
}

// finish counts and logs the request once it has been answered.
func (s *Server) finish(w *recorder, r *http.Request) {
	code := w.status()
	s.m.request(code)
	if !s.cfg.LogRequests {
		return
	}
	if s.requestLog != nil {
		if s.log.Core().Enabled(zapcore.InfoLevel) {
			s.requestLog.write(w, r, time.Now())
		}
		return
	}
	// Only the path is logged: query strings can carry codes and tokens.
	s.log.Info("request",
		zap.String("request_id", w.id),
		zap.String("method", r.Method),
		zap.String("path", r.URL.Path),
		zap.Int("status", code),
		zap.Duration("duration", time.Since(w.start)),
		zap.String("user", w.user),
		zap.String("outcome", w.outcome),
		zap.String("remote", r.RemoteAddr),
	)
}

// recorder remembers the status and what the proxy decided, for the
// request's log line and metrics. Unwrap lets http.ResponseController (used
// by ReverseProxy for flushing) reach the real writer; Hijack (websockets)
// goes through the recorder, which records the 101.
type recorder struct {
	http.ResponseWriter
	code    int
	start   time.Time
	id      string
	user    string // sub of the session, when there is one
	outcome string // what the proxy did: proxied, login, unauthenticated, ...

	// Set by forward for Rewrite and ModifyResponse.
	authorization string         // "Token <id_token>" for the upstream; "" for skip_auth
	service       bool           // the token is the service account's: use its cookie jar
	opensSession  bool           // set by serveServiceAccount: the others wait for this request's answer
	serviceJar    *cookiejar.Jar // the service session's jar the request went with (Rewrite)
	upstreamStart time.Time
	wait          waiting      // in the watchdog's list while the upstream's headers are awaited
	body          bodyReader   // the client's request body, when it has one
	answer        answerReader // the upstream's answer body, once its headers are in

	// vals backs the one-value slices of the headers the proxy sets
	// (X-Request-Id both ways, Authorization, X-Forwarded-*), so that
	// setting them costs no allocation each; see value.
	vals [6]string
	used int

	// ownCookies are the Set-Cookie lines the proxy wrote before
	// forwarding (a refreshed session); held is set while an upstream's
	// 1xx took them and X-Request-Id out of the header map (see
	// WriteHeader).
	ownCookies []string
	held       bool
}

// value returns v as a header value slice ([]string{v}) backed by w.vals
// while room is left. Its capacity is 1, so an Add to that header later
// copies instead of writing into the next value.
func (w *recorder) value(v string) []string {
	if w.used == len(w.vals) {
		return []string{v}
	}
	i := w.used
	w.used++
	w.vals[i] = v
	return w.vals[i : i+1 : i+1]
}

// WriteHeader records the request's status. An informational status
// (100 Continue, 103 Early Hints) is not one: ReverseProxy passes an
// upstream's 1xx on with whatever the header map holds and then clears the
// map, which would send the proxy's own headers with the 1xx, where
// browsers ignore cookies, and drop them from the final answer. So the 1xx
// goes out without Set-Cookie, and the proxy's cookies and X-Request-Id
// are put back for the final answer.
func (w *recorder) WriteHeader(code int) {
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		delete(w.Header(), "Set-Cookie")
		w.held = true
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.restore()
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	w.restore()
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// restore puts back what a 1xx took out of the header map (see
// WriteHeader), ahead of the final answer's own values.
func (w *recorder) restore() {
	if !w.held {
		return
	}
	w.held = false
	h := w.Header()
	h["X-Request-Id"] = append([]string{w.id}, h["X-Request-Id"]...)
	if len(w.ownCookies) > 0 {
		h["Set-Cookie"] = append(slices.Clip(w.ownCookies), h["Set-Cookie"]...)
	}
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack takes over the connection for a protocol switch: ReverseProxy
// then writes the upstream's 101 on it itself, never through WriteHeader,
// so the status is recorded here.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

func (w *recorder) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// requestID returns the caller's X-Request-Id when it is short and plain,
// else a new random one. A hostile value must not reach logs or upstream.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 && plainToken(id) {
		return id
	}
	return strconv.FormatUint(rand.Uint64(), 36)
}

func plainToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
