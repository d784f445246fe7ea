package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestSignOut(t *testing.T) {
	h, c := signedIn(t)
	resp, _ := h.navigate(c, "/oauth2/sign_out")
	// TWC advertises signout_endpoint (no end_session_endpoint): go there.
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), h.idp.Issuer()+"/api/signout") {
		t.Fatalf("got %d to %q, want 302 to the TWC signout endpoint", resp.StatusCode, resp.Header.Get("Location"))
	}
	if strings.Contains(resp.Header.Get("Location"), "id_token_hint") {
		t.Error("token leaked into the TWC signout URL")
	}
	if h.hasSession(c) {
		t.Fatal("session cookie survives sign-out")
	}
	// Follow it like a browser: the auth server forgets the SSO login, so
	// the protected page now shows the login form again.
	h.do(c, http.MethodGet, resp.Header.Get("Location"), nil)
	resp, _ = h.navigate(c, "/dash")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("after sign-out: got %d, want 302 to sign in", resp.StatusCode)
	}
	page, body := h.do(c, http.MethodGet, resp.Header.Get("Location"), nil)
	if page.StatusCode != http.StatusOK || !strings.Contains(body, `id="password"`) {
		t.Fatalf("after sign-out the auth server did not show its login form: %d", page.StatusCode)
	}
	resp, _ = h.fetch(c, "/api/x")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fetch after sign-out: got %d, want 401", resp.StatusCode)
	}
}

func TestSignOutWithoutProviderEndpoint(t *testing.T) {
	h := newHarness(t)
	// Simulate a provider that advertises neither end-session endpoint.
	ep := *h.auth.endpoints()
	ep.twcSignout = ""
	h.auth.ep.Store(&ep)
	resp, body := h.navigate(h.browser(), "/oauth2/sign_out")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Fatalf("got %d %q, want the signed-out page", resp.StatusCode, body)
	}
}

func TestSignOutStandardEndSession(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.PostLogoutRedirectURL = "http://127.0.0.1/bye" }
	})
	ep := *h.auth.endpoints()
	ep.endSession = "http://idp.invalid/logout?x=1"
	h.auth.ep.Store(&ep)
	resp, _ := h.navigate(c, "/oauth2/sign_out")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if loc.Host != "idp.invalid" || q.Get("x") != "1" || q.Get("client_id") != testClientID ||
		q.Get("post_logout_redirect_uri") != "http://127.0.0.1/bye" || q.Get("id_token_hint") == "" {
		t.Fatalf("end-session redirect %q lacks the RP-initiated logout parameters", loc)
	}

	// TWC's signout_endpoint (no end_session_endpoint) gets the same
	// post_logout_redirect_url as redirect_uri, and no token.
	ep.endSession = ""
	h.auth.ep.Store(&ep)
	h.login(c, "/dash", testUser, testPassword)
	resp, _ = h.navigate(c, "/oauth2/sign_out")
	loc, _ = url.Parse(resp.Header.Get("Location"))
	q = loc.Query()
	if !strings.HasPrefix(loc.String(), h.idp.Issuer()+"/api/signout") || q.Get("redirect_uri") != "http://127.0.0.1/bye" || q.Has("id_token_hint") {
		t.Errorf("TWC signout redirect %q, want the signout endpoint with redirect_uri=http://127.0.0.1/bye and no token", loc)
	}
}

func TestUserInfo(t *testing.T) {
	h, c := signedIn(t)
	resp, body := h.fetch(c, "/oauth2/userinfo")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var claims map[string]any
	if err := json.Unmarshal([]byte(body), &claims); err != nil {
		t.Fatal(err)
	}
	if claims["sub"] != testUser || claims["aud"] != testClientID || claims["iss"] != h.idp.Issuer() {
		t.Errorf("claims = %v", claims)
	}
	// Without a session: 401 JSON, even for a navigation.
	resp, _ = h.navigate(h.browser(), "/oauth2/userinfo")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without session: got %d, want 401", resp.StatusCode)
	}
}

func TestAuthEndpoint(t *testing.T) {
	h, c := signedIn(t)
	resp, _ := h.navigate(c, "/oauth2/auth")
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Auth-Request-User") != testUser {
		t.Fatalf("with session: got %d user %q, want 202 %q", resp.StatusCode, resp.Header.Get("X-Auth-Request-User"), testUser)
	}
	// Only the user, never the token: a page's script could read it here.
	tok := h.sessionOf(c).IDToken
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, tok[strings.LastIndex(tok, ".")+1:]) {
				t.Errorf("the 202 carries the ID token in %s", k)
			}
		}
	}
	resp, _ = h.navigate(h.browser(), "/oauth2/auth")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without session: got %d, want 401 (never a redirect)", resp.StatusCode)
	}
}

// TestAuthEndpointRefreshes: /oauth2/auth refreshes a due token and sends
// the refreshed session back with its 202, which README tells nginx
// auth_request users to pass on; the next check with that cookie needs no
// refresh.
func TestAuthEndpointRefreshes(t *testing.T) {
	h, c := signedIn(t)
	h.clock.Advance(4*time.Minute + 40*time.Second) // inside the 30 s margin
	resp, _ := h.navigate(c, "/oauth2/auth")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("got %d, want 202", resp.StatusCode)
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls = %d, want 1", n)
	}
	if !setsCookie(resp, "_twc_session") {
		t.Fatal("the 202 does not carry the refreshed session")
	}
	h.clock.Advance(time.Minute) // past the refresh memo's 30 s
	if resp, _ = h.navigate(c, "/oauth2/auth"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("with the refreshed cookie: got %d, want 202", resp.StatusCode)
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Errorf("refresh calls = %d after the second check, want still 1", n)
	}
}

func TestStartValidatesReturnPath(t *testing.T) {
	h := newHarness(t)
	tests := []struct{ rd, want string }{
		{"/dash?tab=2", "/dash?tab=2"},
		{"/a/b%20c", "/a/b%20c"},
		{"", "/"},
		{"//evil.example", "/"},
		{"/\\evil.example", "/"},
		{"/\\/evil.example", "/"},
		{"https://evil.example", "/"},
		{"https:evil.example", "/"},
		{"http:/evil.example", "/"},
		{"/%2F%2Fevil.example", "/"},
		{"/%5Cevil.example", "/"},
		{"/\tevil", "/"},
		{"/\n/evil.example", "/"},
		{"javascript:alert(1)", "/"},
		{"evil.example", "/"},
		{"/\u2215evil.example", "/"},
		{"/" + strings.Repeat("a", 5000), "/"},
	}
	for _, tt := range tests {
		t.Run(tt.rd, func(t *testing.T) {
			c := h.browser()
			resp, _ := h.navigate(c, "/oauth2/start?rd="+url.QueryEscape(tt.rd))
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, _ = h.navigate(c, cb.String())
			if got := resp.Header.Get("Location"); got != tt.want {
				t.Errorf("Location after login = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSafeReturnPath(t *testing.T) {
	for _, rd := range []string{"/", "/a", "/a?b=c&d=/e", "/a#frag", "/a/../b"} {
		if got, ok := safeReturnPath(rd); !ok || got != rd {
			t.Errorf("safeReturnPath(%q) = %q, %v; want accepted", rd, got, ok)
		}
	}
	for _, rd := range []string{"//x", "/\\x", "x", "http://x/", "/\x00", "/ x", "/%2f%2fx", "/é"} {
		if _, ok := safeReturnPath(rd); ok {
			t.Errorf("safeReturnPath(%q) accepted", rd)
		}
	}
}

func TestDiscoveryRetriesUntilAuthServerUp(t *testing.T) {
	h := newHarness(t)
	// An auth server that drops connections until it is switched on.
	var up atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		h.idp.ServeHTTP(w, r)
	}))
	defer front.Close()

	a := NewAuthServer(AuthConfig{IssuerURL: front.URL + "/authentication", ClientID: testClientID, Timeout: 10 * time.Second},
		&http.Client{Timeout: 10 * time.Second}, h.server.log, h.server.m)
	h.server.auth = a
	done := make(chan struct{})
	go func() { a.Run(t.Context()); close(done) }()

	resp, body := h.navigate(h.browser(), "/x")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "not reachable") {
		t.Fatalf("before discovery: got %d, want 503 page", resp.StatusCode)
	}
	if a.Ready() {
		t.Fatal("ready with no auth server")
	}
	// At least one attempt fails before the auth server comes up.
	if !waitFor(10*time.Second, func() bool { return h.metric("twc_auth_proxy_discovery_failures_total", nil) > 0 }) {
		t.Fatal("no failed discovery attempt within 10s")
	}
	up.Store(true)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("discovery did not succeed within 10s of the auth server coming up")
	}
	if !a.Ready() {
		t.Fatal("Run returned but not ready")
	}
	resp, _ = h.navigate(h.browser(), "/x")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("after discovery: got %d, want 302 to sign in", resp.StatusCode)
	}
}

// TestDiscoveryEndpointsChecked: a relative endpoint would send the browser
// to the proxy itself and every token call nowhere: a failed discovery that
// names the key, not a ready proxy whose logins then fail. A document
// fetched over https that names an endpoint on plain http (X-Auth-Secret,
// codes and refresh tokens, or the user's password, in clear) works, with
// a warning naming the key.
func TestDiscoveryEndpointsChecked(t *testing.T) {
	for _, tt := range []struct {
		key, value string // value: %s is the front's https base URL
		ok         bool
	}{
		{"token_endpoint", "http://%s/authentication/api/token", true},
		{"jwks_uri", "http://%s/authentication/jwks.json", true},
		{"authorization_endpoint", "http://%s/authentication/authorize", true},
		{"token_endpoint", "/authentication/api/token", false},
		{"authorization_endpoint", "/authentication/authorize", false},
		{"jwks_uri", "jwks.json", false},
		{"token_endpoint", "https://%s/authentication/api/token", true},
	} {
		t.Run(tt.key+" "+tt.value, func(t *testing.T) {
			h := newHarness(t)
			var front *httptest.Server
			front = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				base := front.URL + "/authentication"
				doc := map[string]any{
					"issuer":                                base,
					"authorization_endpoint":                base + "/authorize",
					"token_endpoint":                        base + "/api/token",
					"jwks_uri":                              base + "/jwks.json",
					"id_token_signing_alg_values_supported": []string{"RS256"},
				}
				v := tt.value
				if strings.Contains(v, "%s") {
					v = fmt.Sprintf(v, strings.TrimPrefix(front.URL, "https://"))
				}
				doc[tt.key] = v
				w.Header().Set("Content-Type", "application/json")
				json.NewEncoder(w).Encode(doc)
			}))
			defer front.Close()

			a := NewAuthServer(AuthConfig{IssuerURL: front.URL + "/authentication", ClientID: testClientID, Timeout: 10 * time.Second},
				front.Client(), h.server.log, NewMetrics(newRegistry()))
			h.server.auth = a
			err := a.Discover(t.Context())
			if tt.ok {
				if err != nil || !a.Ready() {
					t.Fatalf("Discover: %v, want success", err)
				}
				// Plain http under an https document works, with a warning
				// naming the key; https gets none.
				warned := h.logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("plain http").FilterField(zap.String("key", tt.key)).Len() > 0
				if plain := strings.HasPrefix(tt.value, "http:"); warned != plain {
					t.Fatalf("warned about %s: %t, want %t", tt.key, warned, plain)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("Discover: %v, want an error naming %s", err, tt.key)
			}
			if a.Ready() {
				t.Fatal("ready after a discovery document with an unusable endpoint")
			}
			if resp, body := h.navigate(h.browser(), "/x"); resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("got %d %s, want 503: no login may start", resp.StatusCode, body)
			}
		})
	}
}
