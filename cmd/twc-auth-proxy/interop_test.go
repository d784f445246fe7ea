package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// The example OpenID provider of github.com/zitadel/oidc v3.52.0
// (example/server), as its source sets it up: main.go registers the client
// with storage.WebClient("web", "secret", REDIRECT_URI...) (client_secret_basic,
// code and refresh_token grants, http redirect URIs allowed in dev mode, no
// post_logout_redirect_uri registered), storage.NewUserStore makes the user
// "test-user@" + the issuer's host with ID "id1", and Client.IDTokenLifetime
// is one hour. Refresh tokens are issued only for offline_access and are
// rotated on every use; end_session terminates the user's grants.
const (
	zitadelVersion         = "v3.52.0"
	zitadelClientID        = "web"
	zitadelClientSecret    = "secret"
	zitadelUsername        = "test-user@localhost"
	zitadelPassword        = "verysecure"
	zitadelSubject         = "id1"
	zitadelIDTokenLifetime = time.Hour
	zitadelLoggedOutPage   = "signed out successfully" // DefaultLogoutRedirectURI /logged-out
)

// interopMargin makes an ID token due for refresh 5 to 6 s after it was
// issued (exp has whole seconds): long enough for the login to land on the
// page with the token it got on a machine that may stall for seconds,
// short enough that the test can wait for it.
const interopMargin = zitadelIDTokenLifetime - 6*time.Second

// TestInteropZitadelExample runs the proxy against an OpenID-certified
// provider: login with client_secret_basic and PKCE, Token injection, two
// refreshes (the provider rotates refresh tokens), RP-initiated sign-out and
// the provider's revocation of the grant on sign-out. The other client
// authentication methods get a login each: client_secret_post works,
// TWC's X-Auth-Secret is refused by a standard provider.
func TestInteropZitadelExample(t *testing.T) {
	bin := zitadelServer(t)
	basic, post, xAuth := interopListener(t), interopListener(t), interopListener(t)
	op := startZitadel(t, bin, callbackURL(basic), callbackURL(post), callbackURL(xAuth))

	t.Run("client_secret_basic", func(t *testing.T) {
		testInteropSession(t, startInteropProxy(t, basic, op, "client_secret_basic"), op)
	})
	t.Run("client_secret_post", func(t *testing.T) {
		p := startInteropProxy(t, post, op, "client_secret_post")
		b := newInteropBrowser(t)
		landed := interopLogin(t, b, p, op, "/")
		if landed.status != http.StatusOK || landed.body != "upstream saw /" {
			t.Fatalf("login ended with %d %q, want 200 from the upstream", landed.status, landed.body)
		}
		if got, want := p.metric(t, `twc_auth_proxy_logins_total{result="success"}`), 1.0; got != want {
			t.Errorf("got %v successful logins, want %v", got, want)
		}
	})
	t.Run("x-auth-secret is refused", func(t *testing.T) {
		p := startInteropProxy(t, xAuth, op, "x-auth-secret")
		b := newInteropBrowser(t)
		landed := interopLogin(t, b, p, op, "/")
		if landed.status != http.StatusUnauthorized || !strings.Contains(landed.body, "Sign-in failed") {
			t.Errorf("login ended with %d, want %d and the sign-in failed page; body:\n%s", landed.status, http.StatusUnauthorized, landed.body)
		}
		if got, want := landed.url.Path, "/oauth2/callback"; got != want {
			t.Errorf("login ended at %s, want the proxy's %s", landed.url, want)
		}
		if got, want := p.metric(t, `twc_auth_proxy_logins_total{result="exchange_rejected"}`), 1.0; got != want {
			t.Errorf("got %v exchange_rejected logins, want %v", got, want)
		}
		if n := len(p.upstream.requests()); n != 0 {
			t.Errorf("upstream got %d requests, want none", n)
		}
	})
}

// testInteropSession is the whole life of one session.
func testInteropSession(t *testing.T, p *interopProxy, op *zitadelOP) {
	b := newInteropBrowser(t)

	// Login: the page the user asked for, with the ID token the code
	// exchange returned (not yet due for refresh).
	landed := interopLogin(t, b, p, op, "/app/page?x=1")
	if landed.status != http.StatusOK || landed.url.String() != p.base+"/app/page?x=1" {
		t.Fatalf("login ended at %s with %d, want %s/app/page?x=1 with 200; body:\n%s", landed.url, landed.status, p.base, landed.body)
	}
	if got, want := landed.body, "upstream saw /app/page?x=1"; got != want {
		t.Errorf("got body %q, want %q", got, want)
	}
	first := p.lastToken(t, op, 1)
	if got, want := p.metric(t, `twc_auth_proxy_logins_total{result="success"}`), 1.0; got != want {
		t.Errorf("got %v successful logins, want %v", got, want)
	}
	if got := p.metric(t, `twc_auth_proxy_token_refreshes_total{result="success"}`); got != 0 {
		t.Fatalf("got %v refreshes on landing, want 0: the login took longer than the refresh margin allows (token issued %s, due %s)",
			got, first.IssuedAt.Format(time.RFC3339), first.Expiry.Add(-interopMargin).Format(time.RFC3339Nano))
	}

	// Refresh: once the token is due, a background request refreshes it
	// (refresh_token grant with client_secret_basic) and gets the new token.
	second := p.refreshWhenDue(t, b, op, first, 1)
	// The new token is not due yet: no second refresh, and a client's own
	// Authorization header never reaches the upstream.
	resp := b.do(http.MethodGet, p.base+"/app/api", nil, http.Header{
		"Accept": {"application/json"}, "Sec-Fetch-Mode": {"cors"}, "Authorization": {"Token forged"},
	})
	if resp.status != http.StatusOK {
		t.Fatalf("GET /app/api: got %d, want 200; body:\n%s", resp.status, resp.body)
	}
	if got := p.lastToken(t, op, 3); got.raw != second.raw {
		t.Errorf("upstream got another token than the refreshed one, want the same until it is due")
	}
	// The provider rotated the refresh token: the cookie must carry the new
	// one, or this second refresh is refused.
	third := p.refreshWhenDue(t, b, op, second, 2)
	for _, series := range []string{"rejected", "invalid", "unavailable", "shared"} {
		if got := p.metric(t, `twc_auth_proxy_token_refreshes_total{result="`+series+`"}`); got != 0 {
			t.Errorf("got %v %s refreshes, want 0", got, series)
		}
	}
	stolen := b.jar.Cookies(interopURL(t, p.base))

	// Sign-out: the session cookie goes, then the provider's end_session
	// endpoint (with id_token_hint) ends the grant and shows its page.
	out := b.do(http.MethodGet, p.base+"/oauth2/sign_out", nil, interopNavigation())
	endSession, ok := strings.CutPrefix(out.location(t), op.endSession+"?")
	if out.status != http.StatusFound || !ok {
		t.Fatalf("GET /oauth2/sign_out: got %d to %q, want %d to %s", out.status, out.header.Get("Location"), http.StatusFound, op.endSession)
	}
	q, _ := url.ParseQuery(endSession)
	if q.Get("client_id") != zitadelClientID || q.Get("id_token_hint") != third.raw || q.Has("post_logout_redirect_uri") {
		t.Errorf("end_session query has client_id %q, id_token_hint of the session: %t, post_logout_redirect_uri %q; want %q, true, none",
			q.Get("client_id"), q.Get("id_token_hint") == third.raw, q.Get("post_logout_redirect_uri"), zitadelClientID)
	}
	for _, c := range b.jar.Cookies(interopURL(t, p.base)) {
		if strings.HasPrefix(c.Name, "_twc_session") {
			t.Errorf("cookie %s survived sign-out", c.Name)
		}
	}
	bye, hops := b.navigate(http.MethodGet, out.location(t), nil)
	if bye.status != http.StatusOK || bye.body != zitadelLoggedOutPage {
		t.Errorf("provider's sign-out (%s) ended with %d %q, want 200 %q", strings.Join(hops, " -> "), bye.status, bye.body, zitadelLoggedOutPage)
	}

	// Signed out: a navigation goes to sign in again, a fetch gets 401.
	nav := b.do(http.MethodGet, p.base+"/app/page", nil, interopNavigation())
	if nav.status != http.StatusFound || !strings.HasPrefix(nav.location(t), op.authURL+"?") {
		t.Errorf("navigation after sign-out: got %d to %q, want %d to %s", nav.status, nav.header.Get("Location"), http.StatusFound, op.authURL)
	}
	if form, _ := b.navigate(http.MethodGet, nav.location(t), nil); form.url.Path != "/login/username" {
		t.Errorf("sign-in after sign-out ended at %s, want the provider's login form", form.url)
	}
	checkUnauthenticated(t, b, p.base+"/app/api")

	// The provider revoked the grant: a copy of the old cookie works only
	// until its token is due, then the refresh is refused and it is dead.
	replay := newInteropBrowser(t)
	replay.jar.SetCookies(interopURL(t, p.base), stolen)
	interopSleepUntil(t, third.due())
	checkUnauthenticated(t, replay, p.base+"/app/api")
	if got, want := p.metric(t, `twc_auth_proxy_token_refreshes_total{result="rejected"}`), 1.0; got != want {
		t.Errorf("got %v rejected refreshes for the revoked grant, want %v", got, want)
	}
	if got, want := p.metric(t, `twc_auth_proxy_unauthenticated_requests_total{reason="refresh_rejected"}`), 1.0; got != want {
		t.Errorf("got %v refresh_rejected requests, want %v", got, want)
	}
	if n := len(p.upstream.requests()); n != 4 {
		t.Errorf("upstream got %d requests, want 4 (none after sign-out)", n)
	}
}

// checkUnauthenticated fetches u as a page's script would and wants 401 JSON.
func checkUnauthenticated(t *testing.T, b *interopBrowser, u string) {
	t.Helper()
	resp := b.do(http.MethodGet, u, nil, http.Header{"Accept": {"application/json"}, "Sec-Fetch-Mode": {"cors"}})
	if resp.status != http.StatusUnauthorized || resp.header.Get("Content-Type") != "application/json" ||
		!strings.Contains(resp.body, `"error":"unauthenticated"`) {
		t.Errorf("fetch %s: got %d %s %q, want 401 JSON unauthenticated", u, resp.status, resp.header.Get("Content-Type"), resp.body)
	}
}

// interopLogin navigates to path on the proxy, checks the authorization
// request it redirects to, signs in on the provider's form and returns where
// the browser ends.
func interopLogin(t *testing.T, b *interopBrowser, p *interopProxy, op *zitadelOP, path string) *interopHop {
	t.Helper()
	first := b.do(http.MethodGet, p.base+path, nil, interopNavigation())
	authz, ok := strings.CutPrefix(first.location(t), op.authURL+"?")
	if first.status != http.StatusFound || !ok {
		t.Fatalf("GET %s: got %d to %q, want %d to the authorization endpoint %s", path, first.status, first.header.Get("Location"), http.StatusFound, op.authURL)
	}
	q, _ := url.ParseQuery(authz)
	for k, want := range map[string]string{
		"response_type":         "code",
		"client_id":             zitadelClientID,
		"redirect_uri":          p.base + "/oauth2/callback",
		"scope":                 "openid offline_access",
		"code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("authorization request has %s=%q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(k) == "" {
			t.Errorf("authorization request has no %s", k)
		}
	}

	page, hops := b.navigate(http.MethodGet, first.location(t), nil)
	action := regexp.MustCompile(`<form method="POST" action="([^"]+)"`).FindStringSubmatch(page.body)
	id := regexp.MustCompile(`<input type="hidden" name="id" value="([^"]*)">`).FindStringSubmatch(page.body)
	if page.status != http.StatusOK || action == nil || id == nil {
		t.Fatalf("authorization (%s) ended with %d, want the provider's login form; body:\n%s", strings.Join(hops, " -> "), page.status, page.body)
	}
	target := page.url.ResolveReference(interopURL(t, html.UnescapeString(action[1])))
	form := url.Values{"id": {html.UnescapeString(id[1])}, "username": {zitadelUsername}, "password": {zitadelPassword}}
	landed, hops := b.navigate(http.MethodPost, target.String(), form)
	if !strings.Contains(strings.Join(hops, " "), p.base+"/oauth2/callback?") {
		t.Errorf("sign-in went %s, want it through the proxy's callback; last body:\n%s", strings.Join(hops, " -> "), landed.body)
	}
	return landed
}

// zitadelServer returns the example provider's binary, from
// OIDC_EXAMPLE_SERVER. Without it the test is skipped, except on CI.
func zitadelServer(t *testing.T) string {
	t.Helper()
	howTo := "go install github.com/zitadel/oidc/v3/example/server@" + zitadelVersion +
		" and set OIDC_EXAMPLE_SERVER to the installed binary ($(go env GOPATH)/bin/server)"
	bin := os.Getenv("OIDC_EXAMPLE_SERVER")
	problem := "OIDC_EXAMPLE_SERVER is not set"
	if bin != "" {
		fi, err := os.Stat(bin)
		switch {
		case err != nil:
			problem = "OIDC_EXAMPLE_SERVER: " + err.Error()
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			problem = "OIDC_EXAMPLE_SERVER=" + bin + " is not an executable file"
		default:
			return bin
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: .ci/run must install the example OpenID provider (%s)", problem, howTo)
	}
	t.Skipf("%s; to run this interoperability test, %s", problem, howTo)
	return ""
}

// zitadelOP is a running example provider.
type zitadelOP struct {
	issuer     string
	authURL    string
	endSession string
	verifier   *oidc.IDTokenVerifier // independent of the proxy's
}

// startZitadel starts the provider on a free loopback port with the given
// redirect URIs registered for the client, and waits for its discovery
// document. Its output goes to the test log if the test fails.
func startZitadel(t *testing.T, bin string, redirectURIs ...string) *zitadelOP {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin)
	// Only what it reads: a USERS_FILE from the environment would replace
	// the test user.
	cmd.Env = []string{"PORT=" + port, "REDIRECT_URI=" + strings.Join(redirectURIs, ",")}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("example OpenID provider output:\n%s", out)
		}
	})

	// The issuer it states, and signs tokens with, is always localhost.
	issuer := "http://localhost:" + port + "/"
	poll := &http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("example OpenID provider exited early: %v", waitErr)
		default:
		}
		resp, err := poll.Get(issuer + ".well-known/openid-configuration")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("example OpenID provider: no discovery document at %s within 15s (last: %v)", issuer, err)
		}
	}
	// go-oidc checks that the document states exactly this issuer.
	provider, err := oidc.NewProvider(oidc.ClientContext(t.Context(), poll), issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	var doc struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := provider.Claims(&doc); err != nil || doc.EndSession == "" {
		t.Fatalf("discovery document has no end_session_endpoint (%v)", err)
	}
	return &zitadelOP{
		issuer:     issuer,
		authURL:    provider.Endpoint().AuthURL,
		endSession: doc.EndSession,
		verifier:   provider.Verifier(&oidc.Config{ClientID: zitadelClientID}),
	}
}

// interopListener is a loopback listener for a proxy, opened before the
// provider starts because the provider must know the callback URL.
func interopListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func callbackURL(ln net.Listener) string { return "http://" + ln.Addr().String() + "/oauth2/callback" }

// interopProxy is the binary's wiring (loadConfig, newApp, serve) running
// in front of a recording upstream.
type interopProxy struct {
	base     string
	metrics  string
	upstream *upstreamRecorder
}

// startInteropProxy serves the proxy on ln, configured through a YAML file
// for op with the given auth.client_auth, and waits until it is ready.
func startInteropProxy(t *testing.T, ln net.Listener, op *zitadelOP, clientAuth string) *interopProxy {
	t.Helper()
	up := &upstreamRecorder{}
	upstream := httptest.NewServer(up)
	t.Cleanup(upstream.Close)
	metricsLn := interopListener(t)
	p := &interopProxy{base: "http://" + ln.Addr().String(), metrics: "http://" + metricsLn.Addr().String(), upstream: up}

	// offline_access: the provider issues refresh tokens only for it.
	// No post_logout_redirect_url: the client registers none, and the
	// provider refuses any it is sent.
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: %s
redirect_url: %s
shutdown_timeout: 5s
auth:
  issuer_url: %s
  client_id: %s
  client_secret: %s
  client_auth: %s
  scopes: [openid, offline_access]
  refresh_margin: %s
  timeout: 5s
session:
  cookie_secure: false
  secret: %s
log:
  level: debug
`, ln.Addr(), metricsLn.Addr(), upstream.URL, callbackURL(ln), op.issuer,
		zitadelClientID, zitadelClientSecret, clientAuth, interopMargin, testSessionSecret))
	cfg, err := loadConfig(path, noEnv)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	serveApp(t, cfg, ln, metricsLn, cfg.logFormat, cfg.logLevel)
	return p
}

// metric returns the value of one series from /metrics, 0 when absent.
func (p *interopProxy) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(p.metrics + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("/metrics: %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// interopToken is an ID token the upstream received, verified by go-oidc
// against the provider.
type interopToken struct {
	*oidc.IDToken
	raw string
}

// due is when the proxy must refresh the token.
func (tok interopToken) due() time.Time { return tok.Expiry.Add(-interopMargin) }

// lastToken checks that the upstream got want requests, the last one with
// "Authorization: Token <id_token>" of the user and none of the proxy's
// cookies, and returns that token.
func (p *interopProxy) lastToken(t *testing.T, op *zitadelOP, want int) interopToken {
	t.Helper()
	reqs := p.upstream.requests()
	if len(reqs) != want {
		t.Fatalf("upstream got %d requests, want %d", len(reqs), want)
	}
	r := reqs[len(reqs)-1]
	for _, c := range r.Cookies() {
		if strings.HasPrefix(c.Name, "_twc_session") {
			t.Errorf("upstream got the proxy's cookie %s", c.Name)
		}
	}
	authz := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(authz, "Token ")
	if !ok {
		t.Fatalf("upstream got Authorization %q, want \"Token <id_token>\"", authz)
	}
	tok, err := op.verifier.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("upstream's token does not verify against the provider: %v", err)
	}
	if tok.Subject != zitadelSubject {
		t.Errorf("upstream's token has sub %q, want %q (%s)", tok.Subject, zitadelSubject, zitadelUsername)
	}
	return interopToken{tok, raw}
}

// refreshWhenDue waits until old is due, makes a background request and
// checks that it refreshed the token once (refreshes counts the successful
// refreshes so far), sent the new one upstream and stored it in the cookie.
func (p *interopProxy) refreshWhenDue(t *testing.T, b *interopBrowser, op *zitadelOP, old interopToken, refreshes int) interopToken {
	t.Helper()
	interopSleepUntil(t, old.due())
	before := len(p.upstream.requests())
	resp := b.do(http.MethodGet, p.base+"/app/api", nil, http.Header{"Accept": {"application/json"}, "Sec-Fetch-Mode": {"cors"}})
	if resp.status != http.StatusOK {
		t.Fatalf("GET /app/api with a token due for refresh: got %d, want 200; body:\n%s", resp.status, resp.body)
	}
	if got := p.metric(t, `twc_auth_proxy_token_refreshes_total{result="success"}`); got != float64(refreshes) {
		t.Errorf("got %v successful refreshes, want %d", got, refreshes)
	}
	if !strings.Contains(strings.Join(resp.header.Values("Set-Cookie"), "\n"), "_twc_session=") {
		t.Errorf("the refreshing response sets no session cookie")
	}
	tok := p.lastToken(t, op, before+1)
	if tok.raw == old.raw || !tok.Expiry.After(old.Expiry) {
		t.Errorf("upstream got the old token (expiry %s) after the refresh, want a new one", tok.Expiry)
	}
	return tok
}

// interopSleepUntil sleeps until just past when, which must be near.
func interopSleepUntil(t *testing.T, when time.Time) {
	t.Helper()
	d := time.Until(when) + 100*time.Millisecond
	if d > 10*time.Second {
		t.Fatalf("refusing to sleep %s", d)
	}
	time.Sleep(d)
}

// interopBrowser is a cookie-keeping client that does not follow redirects
// by itself, so that every hop can be checked.
type interopBrowser struct {
	t   *testing.T
	jar *cookiejar.Jar
	c   *http.Client
}

func newInteropBrowser(t *testing.T) *interopBrowser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.CloseIdleConnections)
	return &interopBrowser{t: t, jar: jar, c: c}
}

// interopNavigation is what a browser sends on a top-level navigation.
func interopNavigation() http.Header {
	return http.Header{"Accept": {"text/html,application/xhtml+xml"}, "Sec-Fetch-Mode": {"navigate"}}
}

// interopHop is one response.
type interopHop struct {
	url    *url.URL
	status int
	header http.Header
	body   string
}

// location is the hop's redirect target, resolved against its URL.
func (h *interopHop) location(t *testing.T) string {
	t.Helper()
	loc, err := h.url.Parse(h.header.Get("Location"))
	if err != nil {
		t.Fatalf("%s: bad Location %q: %v", h.url, h.header.Get("Location"), err)
	}
	return loc.String()
}

// do sends one request (a form, when given, as a POST body).
func (b *interopBrowser) do(method, u string, form url.Values, h http.Header) *interopHop {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(b.t.Context(), method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header = h.Clone()
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return &interopHop{url: req.URL, status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

// navigate is a browser navigation: it follows redirects (as GETs) and
// returns the last response and every URL visited.
func (b *interopBrowser) navigate(method, u string, form url.Values) (*interopHop, []string) {
	b.t.Helper()
	var visited []string
	for range 10 {
		visited = append(visited, u)
		h := b.do(method, u, form, interopNavigation())
		if h.status < 300 || h.status > 399 || h.header.Get("Location") == "" {
			return h, visited
		}
		method, u, form = http.MethodGet, h.location(b.t), nil
	}
	b.t.Fatalf("more than 10 redirects: %s", strings.Join(visited, " -> "))
	return nil, nil
}

func interopURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
