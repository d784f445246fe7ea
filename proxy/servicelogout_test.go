package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

const logoutPath = "/osmc/logout"

// twcWithLogout answers like TWC REST (fakeTWCREST): a request with a
// session cookie it issued is served in that session, any other opens a
// session and sets twc-rest-session-id and twc-rest-current-user with
// cookiePath and maxAge (0: none). A GET ending in /osmc/logout answers
// logout.
func twcWithLogout(cookiePath string, maxAge, logout int) http.HandlerFunc {
	return (&fakeTWCREST{path: cookiePath, maxAge: maxAge, logout: logout, user: svcUser}).serve
}

// withTWC serves every route with the service account in front of
// twcWithLogout.
func withTWC(cookiePath string, maxAge, logout int) []func(*harnessOpts) {
	return []func(*harnessOpts){
		withService(func(c *ServiceAccountConfig) { c.Routes = nil }),
		func(o *harnessOpts) { o.upstream = twcWithLogout(cookiePath, maxAge, logout) },
	}
}

// serviceGet sends a service-account request and returns the token the
// upstream got with it.
func (h *harness) serviceGet(path string, want int) string {
	h.t.Helper()
	if resp, body := h.do(&http.Client{Timeout: 10 * time.Second}, http.MethodGet, path, nil); resp.StatusCode != want {
		h.t.Fatalf("GET %s: got %d %s, want %d", path, resp.StatusCode, body, want)
	}
	return tokenOf(h.t, h.lastUpstream())
}

// logouts returns the logout requests the upstream saw.
func (h *harness) logouts() []upstreamRequest {
	var out []upstreamRequest
	for _, u := range h.upstreamSeen() {
		if strings.HasSuffix(strings.SplitN(u.URI, "?", 2)[0], logoutPath) {
			out = append(out, u)
		}
	}
	return out
}

// release calls ReleaseServiceSession as serve does after Shutdown.
func (h *harness) release() error {
	ctx, cancel := contextWithTimeout(h.t, 10*time.Second)
	defer cancel()
	return h.server.ReleaseServiceSession(ctx)
}

// checkJarEmpty fails unless the service session's jar sends nothing.
func (h *harness) checkJarEmpty() {
	h.t.Helper()
	s := h.server.cfg.ServiceAccount.session
	if s.active() {
		h.t.Error("the jar still holds a TWC session after the release")
	}
	if c := s.jar.Load().Cookies(mustURL(h.server.cfg.Upstream.String() + "/osmc/workspaces")); len(c) != 0 {
		h.t.Errorf("the jar still holds %d cookies after the release", len(c))
	}
}

// TestReleaseServiceSession: after a service request whose answer opened a
// TWC session, the release sends one GET /osmc/logout with the session's
// cookies and the service token, logs it without either, and empties the
// jar, so a second release sends nothing.
func TestReleaseServiceSession(t *testing.T) {
	h := newHarness(t, withTWC("/osmc", 0, http.StatusNoContent)...)
	tok := h.serviceGet("/osmc/workspaces", http.StatusOK)
	h.serviceGet("/osmc/workspaces", http.StatusOK) // in the session: nothing to set
	if err := h.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	lo := h.logouts()
	if len(lo) != 1 {
		t.Fatalf("upstream saw %d logouts, want 1", len(lo))
	}
	if lo[0].Method != http.MethodGet || lo[0].URI != logoutPath {
		t.Errorf("logout request %s %s, want GET %s", lo[0].Method, lo[0].URI, logoutPath)
	}
	cookie := lo[0].Header.Values("Cookie")
	if len(cookie) != 1 || !strings.Contains(cookie[0], "twc-rest-session-id=seat-1") || !strings.Contains(cookie[0], "twc-rest-current-user="+svcUser) {
		t.Errorf("logout Cookie = %q, want the jar's twc-rest-session-id=seat-1 and twc-rest-current-user", cookie)
	}
	if got := tokenOf(t, lo[0]); got != tok {
		t.Error("the logout did not carry the service account's token")
	}
	e := h.logs.FilterMessage("released the service account's TWC session").All()
	if len(e) != 1 || e[0].ContextMap()["username"] != svcUser || e[0].ContextMap()["status"] != int64(http.StatusNoContent) {
		t.Errorf("want one info line with username %q and status 204, got %v", svcUser, e)
	}
	h.assertNoSecretsLogged(tok, "seat-1")
	h.checkJarEmpty()

	if err := h.release(); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if n := len(h.logouts()); n != 1 {
		t.Errorf("upstream saw %d logouts after a second release, want still 1", n)
	}
	if n := len(h.idp.TokenRequests()); n != 1 {
		t.Errorf("token calls = %d, want the one for the service request", n)
	}
}

// TestReleaseServiceSessionNone: without a session the jar would send to
// /osmc/logout, no request goes (TWC would open a session for it).
func TestReleaseServiceSessionNone(t *testing.T) {
	tests := []struct {
		name string
		opts []func(*harnessOpts)
		// before runs service traffic, if any, before the release.
		before func(h *harness)
	}{
		{
			name: "no service account",
			opts: []func(*harnessOpts){func(o *harnessOpts) { o.upstream = twcWithLogout("/osmc", 0, http.StatusNoContent) }},
		},
		{
			name: "never opened",
			opts: withTWC("/osmc", 0, http.StatusNoContent),
		},
		{
			name: "upstream sets no session (dashboard)",
			opts: []func(*harnessOpts){withService(nil)},
			before: func(h *harness) {
				h.serviceGet("/api/reports/x", http.StatusOK)
			},
		},
		{
			name: "session cookie for another path",
			opts: withTWC("/api", 0, http.StatusNoContent),
			before: func(h *harness) {
				h.serviceGet("/api/reports/x", http.StatusOK)
				if !h.server.cfg.ServiceAccount.session.active() {
					h.t.Fatal("the jar keeps no session for /api: the case tests nothing")
				}
			},
		},
		{
			name: "expired",
			opts: withTWC("/osmc", 1, http.StatusNoContent),
			before: func(h *harness) {
				h.serviceGet("/osmc/workspaces", http.StatusOK)
				time.Sleep(1100 * time.Millisecond) // Max-Age=1 runs out (the jar keeps real time)
			},
		},
		{
			name: "dropped after a 401",
			opts: append(withTWC("/osmc", 0, http.StatusNoContent), func(o *harnessOpts) {
				twc := o.upstream
				o.upstream = func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/osmc/revoked" {
						w.WriteHeader(http.StatusUnauthorized)
						return
					}
					twc(w, r)
				}
			}),
			before: func(h *harness) {
				h.serviceGet("/osmc/workspaces", http.StatusOK)
				h.serviceGet("/osmc/revoked", http.StatusUnauthorized)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts...)
			if tt.before != nil {
				tt.before(h)
			}
			if err := h.release(); err != nil {
				t.Errorf("release: %v, want nil", err)
			}
			if lo := h.logouts(); len(lo) != 0 {
				t.Errorf("upstream saw %d logouts (Cookie %q), want none", len(lo), lo[0].Header.Get("Cookie"))
			}
		})
	}
}

// TestReleaseServiceSessionFails: an answer other than 2xx, a redirect
// (never followed), an unreachable upstream or a spent shutdown grace
// return an error and log a warning, and the jar is emptied all the same.
func TestReleaseServiceSessionFails(t *testing.T) {
	tests := []struct {
		name   string
		logout int
		// breakUpstream runs after the session is open.
		breakUpstream func(h *harness)
		expired       bool // the shutdown context is done
		status        int64
		sent          int // logouts the upstream sees
	}{
		{name: "500", logout: http.StatusInternalServerError, status: 500, sent: 1},
		{name: "401", logout: http.StatusUnauthorized, status: 401, sent: 1},
		{name: "redirect", logout: http.StatusFound, status: 302, sent: 1},
		{name: "unreachable", logout: http.StatusNoContent, breakUpstream: func(h *harness) { h.upstream.Close() }},
		{name: "shutdown grace spent", logout: http.StatusNoContent, expired: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			twc := twcWithLogout("/osmc", 0, tt.logout)
			h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) {
				o.upstream = func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == logoutPath && tt.logout == http.StatusFound {
						w.Header().Set("Location", "/osmc/moved-logout")
					}
					twc(w, r)
				}
			})
			tok := h.serviceGet("/osmc/workspaces", http.StatusOK)
			if tt.breakUpstream != nil {
				tt.breakUpstream(h)
			}
			ctx, cancel := contextWithTimeout(t, 10*time.Second)
			if tt.expired {
				cancel()
			}
			err := h.server.ReleaseServiceSession(ctx)
			cancel()
			if err == nil {
				t.Fatal("release returned nil, want an error")
			}
			if tt.expired && !errors.Is(err, ctx.Err()) {
				t.Errorf("release: %v, want the context's error", err)
			}
			if n := len(h.logouts()); n != tt.sent {
				t.Errorf("upstream saw %d logouts, want %d", n, tt.sent)
			}
			for _, u := range h.upstreamSeen() {
				if u.URI == "/osmc/moved-logout" {
					t.Error("the logout's redirect was followed")
				}
			}
			e := h.logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("could not release the service account's TWC session").All()
			if len(e) != 1 || e[0].ContextMap()["username"] != svcUser || e[0].ContextMap()["status"] != tt.status {
				t.Errorf("want one warning with username %q and status %d, got %v", svcUser, tt.status, e)
			}
			if n := len(h.logs.FilterMessage("released the service account's TWC session").All()); n != 0 {
				t.Error("a failed release was logged as released")
			}
			h.assertNoSecretsLogged(tok, "seat-1")
			h.checkJarEmpty()
		})
	}
}

// TestReleaseServiceSessionExpiredToken: a session whose token has expired
// is still ended with its cookie, but the expired token is not sent, nor
// is a new one fetched for it.
func TestReleaseServiceSessionExpiredToken(t *testing.T) {
	h := newHarness(t, withTWC("/osmc", 0, http.StatusNoContent)...)
	h.serviceGet("/osmc/workspaces", http.StatusOK)
	h.clock.Advance(5*time.Minute + time.Second) // the token lives 5 min; the cookie has no expiry
	if err := h.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	lo := h.logouts()
	if len(lo) != 1 {
		t.Fatalf("upstream saw %d logouts, want 1", len(lo))
	}
	if v := lo[0].Header.Values("Authorization"); len(v) != 0 {
		t.Errorf("logout Authorization = %q, want none for an expired token", v)
	}
	if !strings.Contains(lo[0].Header.Get("Cookie"), "twc-rest-session-id=seat-1") {
		t.Errorf("logout Cookie = %q, want the session", lo[0].Header.Get("Cookie"))
	}
	if n := len(h.idp.TokenRequests()); n != 1 {
		t.Errorf("token calls = %d, want 1: the release must not fetch a token", n)
	}
}

// TestReleaseServiceSessionUpstreamPath: an upstream with a path prefix
// (TWC REST behind a path-routing front, whose cookies carry the prefix)
// gets the logout under that prefix, as the proxy forwards a caller's
// GET /osmc/logout.
func TestReleaseServiceSessionUpstreamPath(t *testing.T) {
	h := newHarness(t, append(withTWC("/twc/osmc", 0, http.StatusNoContent), func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.Upstream = mustURL(c.Upstream.String() + "/twc") }
	})...)
	h.serviceGet("/osmc/workspaces", http.StatusOK)
	if err := h.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	lo := h.logouts()
	if len(lo) != 1 || lo[0].URI != "/twc"+logoutPath {
		t.Fatalf("logouts %v, want one GET /twc%s", lo, logoutPath)
	}
	if !strings.Contains(lo[0].Header.Get("Cookie"), "twc-rest-session-id=seat-1") {
		t.Errorf("logout Cookie = %q, want the session", lo[0].Header.Get("Cookie"))
	}
}

// TestReleaseServiceSessionOverTLS: the logout goes through the upstream
// transport, so an upstream whose certificate chains only to the
// configured roots (upstream_ca_file) is reached.
func TestReleaseServiceSessionOverTLS(t *testing.T) {
	var hp atomic.Pointer[harness]
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hp.Load().upstream.Config.Handler.ServeHTTP(w, r) // the harness's recording upstream
	}))
	defer up.Close()
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	h := newHarness(t, append(withTWC("/osmc", 0, http.StatusNoContent), func(o *harnessOpts) {
		o.cfg = func(c *Config) {
			c.Upstream = mustURL(up.URL)
			c.UpstreamTLS = &tls.Config{RootCAs: roots}
		}
	})...)
	hp.Store(h)
	h.serviceGet("/osmc/workspaces", http.StatusOK)
	if err := h.release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if n := len(h.logouts()); n != 1 {
		t.Fatalf("upstream saw %d logouts, want 1", n)
	}
}

// TestServiceCallerLogoutIsKept: a service caller's /osmc/logout, however
// spelled, is answered 204 by the proxy and never reaches TWC, which would
// end the session every service caller shares; the next service request
// goes on in the same session. A signed-in user's logout goes upstream.
func TestServiceCallerLogoutIsKept(t *testing.T) {
	twc := &fakeTWCREST{logout: http.StatusNoContent}
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) { o.upstream = twc.serve })
	if resp, _ := h.fetch(h.browser(), "/osmc/workspaces"); resp.StatusCode != http.StatusOK {
		t.Fatalf("first service request: got %d, want 200", resp.StatusCode)
	}
	seen := len(h.upstreamSeen())
	for _, p := range []string{"/osmc/logout", "/osmc/logout/", "/OSMC/Logout", "/osmc/logout;jsessionid=1", "//osmc/./logout", "/osmc/x/../logout", "/osmc/logou%74"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			resp, _ := h.do(h.browser(), method, p, nil)
			if resp.StatusCode != http.StatusNoContent {
				t.Errorf("%s %s: got %d, want the proxy's 204", method, p, resp.StatusCode)
			}
		}
	}
	if n := len(h.upstreamSeen()); n != seen {
		t.Fatalf("%d logout requests reached TWC", n-seen)
	}
	if resp, _ := h.fetch(h.browser(), "/osmc/workspaces"); resp.StatusCode != http.StatusOK {
		t.Fatalf("service request after the logouts: got %d, want 200", resp.StatusCode)
	}
	if n := twc.sessions.Load(); n != 1 {
		t.Errorf("TWC sessions opened = %d, want 1: the shared session was ended", n)
	}
	for _, p := range []string{"/osmc/logouts", "/osmc/logout/x", "/api/logout"} {
		h.fetch(h.browser(), p)
		if got := h.lastUpstream().URI; got != p {
			t.Errorf("%s: upstream saw %q, want it forwarded", p, got)
		}
	}

	user := h.browser()
	if resp, body := h.login(user, "/oauth2/start", testUser, testPassword); resp.StatusCode >= 400 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	h.fetch(user, "/osmc/logout")
	if got := h.lastUpstream(); got.URI != "/osmc/logout" || got.Header.Get("Authorization") == "" {
		t.Errorf("a signed-in user's logout: upstream saw %q with Authorization %t, want it forwarded with the user's token",
			got.URI, got.Header.Get("Authorization") != "")
	}
}
