package proxy

import (
	"context"
	"crypto/rand"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testClientID = "dashboard"
	testSecret   = "s3cret-x-auth"
	testUser     = "alice"
	testPassword = "alice-pw"
)

// clock is a settable clock shared by the proxy, its verifier and the fake
// auth server, so tests can move past expiry without sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// upstreamRequest is what the upstream saw of one proxied request.
type upstreamRequest struct {
	Method string
	URI    string
	Header http.Header
}

// harness is one proxy wired to the fake TWC auth server and a recording
// upstream, all on loopback.
type harness struct {
	t        *testing.T
	clock    *clock
	idp      *authtest.Server
	upstream *httptest.Server
	server   *Server
	auth     *AuthServer
	proxy    *httptest.Server
	reg      *prometheus.Registry
	logs     *observer.ObservedLogs
	sessKey  []byte

	mu   sync.Mutex
	seen []upstreamRequest
}

type harnessOpts struct {
	idp     authtest.Options
	cfg     func(*Config)
	authCfg func(*AuthConfig)
	// upstream replaces the recording upstream handler's answer.
	upstream http.HandlerFunc
	// service enables a service account.
	service *ServiceAccountConfig
	// quiet keeps nothing per request (for load): the upstream records no
	// requests and logs are encoded to io.Discard instead of observed.
	quiet bool
}

func newHarness(t *testing.T, mods ...func(*harnessOpts)) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: time.Now().Truncate(time.Second)}}
	o := harnessOpts{idp: authtest.Options{
		ClientIDs:         []string{testClientID},
		Secret:            testSecret,
		RedirectWhitelist: []string{"http://127.0.0.1"},
		Users:             map[string]string{testUser: testPassword, "bob": "bob-pw"},
		TokenTTL:          5 * time.Minute,
	}}
	for _, m := range mods {
		m(&o)
	}
	o.idp.Now = h.clock.Now
	idp, err := authtest.Start(o.idp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	h.idp = idp

	h.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !o.quiet {
			h.mu.Lock()
			h.seen = append(h.seen, upstreamRequest{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone()})
			h.mu.Unlock()
		}
		if o.upstream != nil {
			o.upstream(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "upstream:"+r.URL.RequestURI())
	}))
	t.Cleanup(h.upstream.Close)

	// The proxy's URL must be known before its config is: listen first.
	h.proxy = httptest.NewUnstartedServer(nil)
	redirect, _ := url.Parse("http://" + h.proxy.Listener.Addr().String() + "/oauth2/callback")
	upstreamURL, _ := url.Parse(h.upstream.URL)

	core, logs := observer.New(zap.DebugLevel)
	h.logs = logs
	log := zap.New(core)
	if o.quiet {
		log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	}
	h.reg = prometheus.NewRegistry()
	m := NewMetrics(h.reg)

	acfg := AuthConfig{
		IssuerURL:    idp.Issuer(),
		ClientID:     testClientID,
		ClientSecret: testSecret,
		RedirectURL:  redirect.String(),
		// The product's default: every login, refresh and key fetch of a
		// test must come within it, on a machine that may stall for
		// seconds. Tests of the timeout set their own.
		Timeout: 10 * time.Second,
	}
	if o.authCfg != nil {
		o.authCfg(&acfg)
	}
	h.auth = NewAuthServer(acfg, &http.Client{Timeout: 15 * time.Second}, log, m)
	h.auth.now = h.clock.Now

	h.sessKey = make([]byte, 32)
	rand.Read(h.sessKey)
	store, err := session.NewStore(session.Options{Secrets: [][]byte{h.sessKey}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Upstream:      upstreamURL,
		RedirectURL:   redirect,
		RefreshMargin: 30 * time.Second,
		LogRequests:   true,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	if o.service != nil {
		sa := NewServiceAccount(*o.service, h.auth, log, m)
		sa.now = h.clock.Now
		cfg.ServiceAccount = sa
	}
	srv, err := New(cfg, log, store, h.auth, m)
	if err != nil {
		t.Fatal(err)
	}
	srv.now = h.clock.Now
	h.server = srv
	h.proxy.Config.Handler = srv
	h.proxy.Start()
	t.Cleanup(h.proxy.Close)
	if err := h.auth.Discover(t.Context()); err != nil {
		t.Fatalf("discover: %v", err)
	}
	return h
}

// browser returns a client with a cookie jar that does not follow
// redirects, so every hop can be checked.
func (h *harness) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// request sends a request to the proxy; hdr adds headers.
func (h *harness) do(c *http.Client, method, target string, hdr http.Header) (*http.Response, string) {
	h.t.Helper()
	if strings.HasPrefix(target, "/") {
		target = h.proxy.URL + target
	}
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// navigate is a top-level browser navigation.
func (h *harness) navigate(c *http.Client, target string) (*http.Response, string) {
	h.t.Helper()
	return h.do(c, http.MethodGet, target, http.Header{"Accept": {"text/html,application/xhtml+xml"}, "Sec-Fetch-Mode": {"navigate"}})
}

// fetch is a script's fetch() of JSON.
func (h *harness) fetch(c *http.Client, target string) (*http.Response, string) {
	h.t.Helper()
	return h.do(c, http.MethodGet, target, http.Header{"Accept": {"application/json"}, "Sec-Fetch-Mode": {"cors"}})
}

var (
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	actionRE = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
)

// signInAt follows a 302 to the auth server's authorize endpoint, fills the
// login form as user and returns the auth server's redirect to the
// callback (not yet followed).
func (h *harness) signInAt(c *http.Client, authorize *http.Response, user, pass string) *url.URL {
	h.t.Helper()
	if authorize.StatusCode != http.StatusFound {
		h.t.Fatalf("want a 302 to the auth server, got %d", authorize.StatusCode)
	}
	loc := authorize.Header.Get("Location")
	if !strings.HasPrefix(loc, h.idp.Issuer()+"/authorize?") {
		h.t.Fatalf("Location %q is not the authorize endpoint", loc)
	}
	resp, page := h.do(c, http.MethodGet, loc, nil)
	if resp.StatusCode == http.StatusFound { // SSO cookie: no form
		u, _ := url.Parse(resp.Header.Get("Location"))
		return u
	}
	m := actionRE.FindStringSubmatch(page)
	if m == nil {
		h.t.Fatalf("no login form (status %d):\n%s", resp.StatusCode, page)
	}
	form := url.Values{"username": {user}, "password": {pass}}
	for _, f := range hiddenRE.FindAllStringSubmatch(page, -1) {
		form.Set(f[1], html.UnescapeString(f[2]))
	}
	req, _ := http.NewRequest(http.MethodPost, h.idp.URL()+html.UnescapeString(m[1]), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("login POST: got %d, want 302", resp.StatusCode)
	}
	u, _ := url.Parse(resp.Header.Get("Location"))
	return u
}

// login runs the whole flow for a navigation to target and returns the
// final response (the upstream's page, if all went well).
func (h *harness) login(c *http.Client, target, user, pass string) (*http.Response, string) {
	h.t.Helper()
	resp, _ := h.navigate(c, target)
	cb := h.signInAt(c, resp, user, pass)
	resp, body := h.navigate(c, cb.String())
	if resp.StatusCode != http.StatusFound {
		h.t.Fatalf("callback: got %d, want 302; body: %s", resp.StatusCode, body)
	}
	return h.navigate(c, resp.Header.Get("Location"))
}

func (h *harness) upstreamSeen() []upstreamRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]upstreamRequest(nil), h.seen...)
}

func (h *harness) lastUpstream() upstreamRequest {
	h.t.Helper()
	s := h.upstreamSeen()
	if len(s) == 0 {
		h.t.Fatal("upstream saw no request")
	}
	return s[len(s)-1]
}

// waitFor polls cond every 5 ms until it holds, and reports whether it
// did within the time given; the caller fails with what it waited for.
func waitFor(within time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(within); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// waitUpstream waits up to 10 s for the upstream to receive a request for
// uri (its request URI); the upstream records a request before its handler
// runs, so a request whose body is still on its way counts.
func (h *harness) waitUpstream(uri string) {
	h.t.Helper()
	seen := func() bool {
		return slices.ContainsFunc(h.upstreamSeen(), func(u upstreamRequest) bool { return u.URI == uri })
	}
	if !waitFor(10*time.Second, seen) {
		h.t.Fatalf("the upstream did not receive %s within 10s", uri)
	}
}

// tokenOf returns the token the upstream got in Authorization: Token.
func tokenOf(t *testing.T, r upstreamRequest) string {
	t.Helper()
	v := r.Header.Values("Authorization")
	if len(v) != 1 || !strings.HasPrefix(v[0], "Token ") {
		t.Fatalf("upstream Authorization = %q, want one \"Token <jwt>\"", v)
	}
	return strings.TrimPrefix(v[0], "Token ")
}

// sessionCookies returns the jar's proxy cookies.
func (h *harness) cookies(c *http.Client) []*http.Cookie {
	u, _ := url.Parse(h.proxy.URL)
	return c.Jar.Cookies(u)
}

// cookieHeader is the Cookie header value c's jar sends to the proxy, for
// requests written by hand.
func (h *harness) cookieHeader(c *http.Client) string {
	var pairs []string
	for _, ck := range h.cookies(c) {
		pairs = append(pairs, ck.Name+"="+ck.Value)
	}
	return strings.Join(pairs, "; ")
}

// dialProxy opens a raw connection to the proxy, for requests written by
// hand; it has a 5 s deadline and is closed with the test.
func (h *harness) dialProxy() net.Conn {
	h.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.proxy.URL, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn
}

func (h *harness) hasSession(c *http.Client) bool {
	for _, ck := range h.cookies(c) {
		if ck.Name == "_twc_session" {
			return true
		}
	}
	return false
}

// counter reads a counter or gauge value of the harness registry.
func (h *harness) metric(name string, labels map[string]string) float64 {
	h.t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// assertNoSecretsLogged fails if any log line carries one of secrets.
func (h *harness) assertNoSecretsLogged(secrets ...string) {
	h.t.Helper()
	for _, e := range h.logs.All() {
		line := e.Message
		for k, v := range e.ContextMap() {
			line += " " + k + "=" + strings.ReplaceAll(strings.TrimSpace(toString(v)), "\n", " ")
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				h.t.Errorf("log line leaks a secret: %q", e.Message)
			}
		}
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case error:
		return x.Error()
	default:
		return strings.TrimSpace(strings.ReplaceAll(fmtAny(x), "\n", " "))
	}
}

func fmtAny(v any) string { return fmt.Sprint(v) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func nopLogger() *zap.Logger { return zap.NewNop() }

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// sessionOf opens the browser's session cookie with the harness's store.
func (h *harness) sessionOf(c *http.Client) *session.Session {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.proxy.URL, nil)
	for _, ck := range c.Jar.Cookies(mustURL(h.proxy.URL)) {
		req.AddCookie(ck)
	}
	sess, err := h.server.store.Load(req)
	if err != nil {
		h.t.Fatalf("browser has no session: %v", err)
	}
	return sess
}

// noLeaks fails t if goroutines started during it outlive it. Call it
// before newHarness: cleanups run last-in first-out, so the check runs
// after the harness has shut down. It waits up to about 10 s for them to
// end: the upstream watchdog's goroutine returns at its first tick (at
// most a second) with no request in flight, and a loaded machine may take
// a few more to run what is winding down.
func noLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; {
			if err = goleak.Find(before); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Error(err)
		}
	})
}
