package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// The browser cannot share a fake clock with the servers, so the refresh
// happens in real time: an ID token living 40s is due for refresh 30s
// before it expires, that is 10s after it was issued. Until then the
// sign-in lands and the page's fetch goes with the first token: the
// steps in between must fit, on a machine that may stall for seconds.
const (
	browserTokenTTL      = 40 * time.Second
	browserRefreshMargin = 30 * time.Second
	browserTestTimeout   = 90 * time.Second // the whole test, browser included
	browserStepTimeout   = 15 * time.Second // one navigation, click or read
)

// TestBrowserSignInRefreshSignOut drives headless Chromium through the life
// of a session: a protected page sends it to the TWC login form; signing in
// lands on that page with its query; the upstream sees the user's token;
// a reload after the refresh margin is still signed in with a new token;
// a fetch gets JSON with a session and 401 JSON without; after sign-out the
// protected page asks for the login form again.
func TestBrowserSignInRefreshSignOut(t *testing.T) {
	exe := browserExecPath(t)
	st := startBrowserStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTestTimeout)
	defer cancel()
	tab := startBrowser(t, ctx, exe, "main")

	// A protected page with a query sends the browser to the login form.
	requested := st.base + "/reports?week=48&sort=name%20desc"
	tab.do("open "+requested, chromedp.Navigate(requested), chromedp.WaitVisible(chromedp.ID("password")))
	if loc := tab.location(); !strings.HasPrefix(loc, st.issuer+"/authorize?") {
		tab.fatalf("the protected page led to %s, want the login form at %s/authorize", loc, st.issuer)
	}

	// Signing in lands on the requested page, query intact, and the
	// upstream shows the claims of the token the proxy injected.
	tab.do("sign in",
		chromedp.SendKeys(chromedp.ID("username"), demoUser),
		chromedp.SendKeys(chromedp.ID("password"), demoPassword),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("user")))
	if loc := tab.location(); loc != requested {
		tab.fatalf("signed in on %q, want %q", loc, requested)
	}
	if got, want := tab.text("user"), "Signed in as "+demoUser+"."; got != want {
		tab.fatalf("got %q, want %q", got, want)
	}
	if got, want := tab.text("path"), "/reports?week=48&sort=name%20desc"; got != want {
		tab.fatalf("the upstream was asked for %q, want %q", got, want)
	}
	first := tab.claims()
	if first.Sub != demoUser || first.Aud != demoClientID || first.Iss != st.issuer {
		tab.fatalf("got claims sub %q, aud %q, iss %q; want %q, %q, %q",
			first.Sub, first.Aud, first.Iss, demoUser, demoClientID, st.issuer)
	}
	if got := tab.text("refreshes"); got != "0" {
		tab.fatalf("got %s refreshes right after sign-in, want 0", got)
	}
	cookie := tab.sessionCookie(st.base)
	if !cookie.HTTPOnly {
		tab.fatalf("the session cookie is readable by scripts, want HttpOnly")
	}

	// The signed-in page's own scripts reach protected JSON.
	res := tab.fetch("/api/whoami")
	if res.Status != http.StatusOK {
		tab.fatalf("fetch /api/whoami: got %d %q (%s), want 200", res.Status, res.Body, res.Error)
	}
	var who struct {
		Sub       string `json:"sub"`
		Exp       int64  `json:"exp"`
		Refreshes int    `json:"refreshes"`
	}
	if err := json.Unmarshal([]byte(res.Body), &who); err != nil {
		tab.fatalf("fetch /api/whoami: got %q, want JSON: %v", res.Body, err)
	}
	if who.Sub != demoUser || who.Exp != first.Exp || who.Refreshes != 0 {
		tab.fatalf("fetch /api/whoami: got %+v, want sub %q, exp %d, 0 refreshes", who, demoUser, first.Exp)
	}

	// Past the refresh margin a reload stays signed in, on a new token, and
	// the response re-seals the session cookie.
	due := time.Unix(first.Exp, 0).Add(-browserRefreshMargin)
	wait := time.Until(due) + time.Second
	if wait > 15*time.Second {
		t.Fatalf("the token is due for refresh in %v, want a few seconds (TokenTTL %v, margin %v)", wait, browserTokenTTL, browserRefreshMargin)
	}
	t.Logf("waiting %v for the token to come within the refresh margin", wait.Round(time.Millisecond))
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	tab.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("user")))
	if loc := tab.location(); loc != requested {
		tab.fatalf("after the refresh the reload is on %q, want %q", loc, requested)
	}
	if got, want := tab.text("user"), "Signed in as "+demoUser+"."; got != want {
		tab.fatalf("after the refresh: got %q, want %q", got, want)
	}
	if got := tab.text("refreshes"); got != "1" {
		tab.fatalf("after the refresh the upstream has seen %s new tokens, want 1", got)
	}
	if second := tab.claims(); second.Exp <= first.Exp {
		tab.fatalf("after the refresh the token expires at %d, want later than %d", second.Exp, first.Exp)
	}
	if got := tab.sessionCookie(st.base); got.Value == cookie.Value {
		tab.fatalf("the reload that refreshed the token left the session cookie as it was, want a new one")
	}
	tab.screenshot("browser-signed-in.png")

	// Sign out in a second tab while the signed-in page stays open.
	other := tab.newTab("sign-out")
	other.do("open the dashboard", chromedp.Navigate(st.base+"/"), chromedp.WaitVisible(chromedp.ID("claims")))
	other.do("sign out",
		chromedp.Click(chromedp.CSS(`a[href="/oauth2/sign_out"]`)),
		chromedp.WaitVisible(chromedp.ID("message")))
	if got, want := other.text("message"), "You are signed out."; got != want {
		other.fatalf("after sign-out: got %q, want %q", got, want)
	}

	// The stale page's fetch now gets 401 JSON, not a redirect to the
	// login form.
	res = tab.fetch("/api/whoami")
	if res.Status != http.StatusUnauthorized || res.Redirected {
		tab.fatalf("fetch /api/whoami after sign-out: got %d (redirected %t) %q (%s), want 401",
			res.Status, res.Redirected, res.Body, res.Error)
	}
	if !strings.HasPrefix(res.ContentType, "application/json") {
		tab.fatalf("fetch /api/whoami after sign-out: got Content-Type %q, want application/json", res.ContentType)
	}
	var apiErr struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(res.Body), &apiErr); err != nil || apiErr.Error != "unauthenticated" {
		tab.fatalf("fetch /api/whoami after sign-out: got body %q, want JSON with error %q", res.Body, "unauthenticated")
	}

	// And the protected page asks for the password again: the auth
	// server's SSO session ended too.
	tab.do("open "+requested+" after sign-out", chromedp.Navigate(requested), chromedp.WaitVisible(chromedp.ID("password")))
	if loc := tab.location(); !strings.HasPrefix(loc, st.issuer+"/authorize?") {
		tab.fatalf("after sign-out the protected page led to %s, want the login form at %s/authorize", loc, st.issuer)
	}
}

// browserExecPath finds Chromium or Chrome. Without one the test is skipped
// on a workstation but fails in CI, which must install it.
func browserExecPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but no chromium: .ci/run must install it")
	}
	t.Skip("no chromium/chrome on PATH; install Debian's chromium to run the browser tests")
	return ""
}

// browserStack is the fake TWC auth server, the demo dashboard and the
// proxy in front of it, each on its own loopback port.
type browserStack struct {
	base   string // the proxy, as the browser sees it
	issuer string
}

// startBrowserStack wires the servers as runDemo does, with tokens that
// are due for refresh a few seconds after they are issued, and waits until
// the proxy is ready. Everything stops when the test ends; the proxy's log
// is printed if the test failed.
func startBrowserStack(t *testing.T) *browserStack {
	t.Helper()
	const secret = "browser-test-client-secret"
	idp, err := authtest.Start(authtest.Options{
		ClientIDs:           []string{demoClientID},
		Secret:              secret,
		Users:               map[string]string{demoUser: demoPassword},
		TokenTTL:            browserTokenTTL,
		RotateRefreshTokens: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	dash := httptest.NewServer(newDemoDashboard())
	t.Cleanup(dash.Close)

	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proxyLn.Close()
		t.Fatal(err)
	}
	base := "http://" + proxyLn.Addr().String()
	cfg := &settings{
		listen:          proxyLn.Addr().String(),
		metricsListen:   metricsLn.Addr().String(),
		shutdownTimeout: 5 * time.Second,
		proxy: proxy.Config{
			Upstream:        mustParseURL(dash.URL),
			RedirectURL:     mustParseURL(base + "/oauth2/callback"),
			RefreshMargin:   browserRefreshMargin,
			UpstreamTimeout: 10 * time.Second,
			LogRequests:     true,
		},
		auth: proxy.AuthConfig{
			IssuerURL:    idp.Issuer(),
			ClientID:     demoClientID,
			ClientSecret: secret,
			ClientAuth:   proxy.ClientAuthXAuthSecret,
			RedirectURL:  base + "/oauth2/callback",
			Timeout:      5 * time.Second,
		},
		session: session.Options{
			CookieName: defaultCookieName,
			Secrets:    [][]byte{[]byte("browser-test-session-key-0123456789abcdef")},
			Secure:     false, // plain http on loopback
			Path:       "/",
			MaxAge:     time.Hour,
		},
	}
	serveApp(t, cfg, proxyLn, metricsLn, "console", "debug")
	return &browserStack{base: base, issuer: idp.Issuer()}
}

// browserTab is one tab of the headless browser. Each step is bounded by
// browserStepTimeout, and a failing step saves a screenshot and logs where
// the tab is and what it shows.
type browserTab struct {
	t         *testing.T
	ctx       context.Context
	name      string
	artifacts string
}

// startBrowser starts headless Chromium on a fresh profile, closed when the
// test ends. Its output is logged if the test failed.
func startBrowser(t *testing.T, ctx context.Context, exe, name string) *browserTab {
	t.Helper()
	profile := t.TempDir() // removed after the browser has exited
	out := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser output:\n%s", out)
		}
	})
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true), // every server is on loopback
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1024, 900),
		chromedp.CombinedOutput(out),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	logf := func(format string, args ...any) { fmt.Fprintf(out, "chromedp: "+format+"\n", args...) }
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(logf), chromedp.WithErrorf(logf))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(bctx, 10*time.Second)
		defer ccancel()
		chromedp.Cancel(cctx) // a graceful close; the cancels below kill what is left
		bcancel()
		acancel() // waits for the browser process to exit
	})
	// The first Run starts the browser and ties it to the context it gets,
	// so it must be bctx itself, not a step's shorter one.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v\n%s", exe, err, out)
	}
	dir := os.Getenv("TWC_AUTH_PROXY_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browserTab{t: t, ctx: bctx, name: name, artifacts: dir}
}

// newTab opens another tab of the same browser, sharing its cookies.
func (b *browserTab) newTab(name string) *browserTab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // on ctx itself: see startBrowser
		b.fatalf("open a tab: %v", err)
	}
	return &browserTab{t: b.t, ctx: ctx, name: name, artifacts: b.artifacts}
}

// browserRun runs a, failing the test if it fails or takes longer than
// browserStepTimeout.
func browserRun[T any](b *browserTab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fatalf("%s: %v", what, err)
	}
	return v
}

func (b *browserTab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	browserRun(b, what, chromedp.Steps(steps...))
}

func (b *browserTab) location() string {
	b.t.Helper()
	return browserRun(b, "read the location", chromedp.Location())
}

// text is what the user sees of the element with this id.
func (b *browserTab) text(id string) string {
	b.t.Helper()
	return strings.TrimSpace(browserRun(b, "read #"+id, chromedp.Text(chromedp.ID(id))))
}

// tokenClaims are the claims the dashboard decoded from the Token header.
type tokenClaims struct {
	Sub string `json:"sub"`
	Aud string `json:"aud"` // TWC sends a plain string
	Iss string `json:"iss"`
	Exp int64  `json:"exp"`
}

func (b *browserTab) claims() tokenClaims {
	b.t.Helper()
	raw := b.text("claims")
	var c tokenClaims
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		b.fatalf("the dashboard shows claims %q, want JSON: %v", raw, err)
	}
	return c
}

// fetchResult is what a fetch from the page's own script saw.
type fetchResult struct {
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Redirected  bool   `json:"redirected"`
	Body        string `json:"body"`
	Error       string `json:"error"` // a network or CORS failure
}

// fetch GETs path with the page's fetch(), as a single-page app would.
func (b *browserTab) fetch(path string) fetchResult {
	b.t.Helper()
	js := fmt.Sprintf(`fetch(%s).then(
	async r => ({status: r.status, contentType: r.headers.get("Content-Type") || "", redirected: r.redirected, body: await r.text()}),
	e => ({status: 0, error: String(e)}))`, strconv.Quote(path))
	return browserRun(b, "fetch "+path, chromedp.Evaluate[fetchResult](js, chromedp.EvalAwaitPromise))
}

// sessionCookie returns the browser's session cookie for the proxy at base,
// failing the test if there is none.
func (b *browserTab) sessionCookie(base string) *network.Cookie {
	b.t.Helper()
	res := browserRun(b, "read cookies", func(ctx context.Context, _ *chromedp.Target) (network.GetCookiesResult, error) {
		return chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
	})
	var names []string
	for _, c := range res.Cookies {
		if c.Name == defaultCookieName {
			return c
		}
		names = append(names, c.Name)
	}
	b.fatalf("no %s cookie for %s; the browser has %q", defaultCookieName, base, names)
	return nil
}

// screenshot saves a PNG of the whole page in the artifacts directory.
func (b *browserTab) screenshot(name string) {
	b.t.Helper()
	png := browserRun(b, "screenshot", chromedp.FullScreenshot(100)) // 100: PNG, not JPEG
	path := filepath.Join(b.artifacts, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot of the %s tab: %s", b.name, path)
}

// fatalf ends the test with msg, where the tab is, the text it shows and a
// screenshot of it.
func (b *browserTab) fatalf(format string, args ...any) {
	b.t.Helper()
	msg := fmt.Sprintf(format, args...)
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(b.artifacts, "browser-failure-"+b.name+".png")
		if os.WriteFile(path, png, 0o644) == nil {
			msg += "\nscreenshot: " + path
		}
	}
	b.t.Fatalf("%s\nthe %s tab is at %s, showing:\n%s", msg, b.name, loc, text)
}
