package proxy

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestTokenMargin(t *testing.T) {
	tests := []struct {
		margin, lifetime, want time.Duration
	}{
		{30 * time.Second, 0, 30 * time.Second},                           // unknown lifetime
		{30 * time.Second, 15 * time.Minute, 30 * time.Second},            // the usual case
		{time.Hour - 4*time.Second, time.Hour, time.Hour - 4*time.Second}, // just short: as configured
		{time.Hour, time.Hour, 30 * time.Minute},                          // due at issue: halfway
		{10 * time.Minute, 5 * time.Minute, 150 * time.Second},
		{0, 5 * time.Minute, 0},
	}
	for _, tt := range tests {
		if got := tokenMargin(tt.margin, tt.lifetime); got != tt.want {
			t.Errorf("tokenMargin(%v, %v) = %v, want %v", tt.margin, tt.lifetime, got, tt.want)
		}
	}
}

func TestIssuedAt(t *testing.T) {
	jws := func(payload string) string {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(payload)) + ".c2ln"
	}
	tests := []struct {
		raw    string
		want   time.Time
		wantOK bool
	}{
		{jws(`{"sub":"a","iat":1606298877,"exp":1606299777}`), time.Unix(1606298877, 0), true},
		{jws(`{"iat":1606298877.5}`), time.Unix(1606298877, 5e8), true},
		{jws(`{"sub":"a"}`), time.Time{}, false},
		{jws(`{"iat":"1606298877"}`), time.Unix(1606298877, 0), true}, // as go-oidc reads it
		{jws(`{"iat":true}`), time.Time{}, false},
		{jws(`{"iat":-5}`), time.Time{}, false},
		{jws(`{"iat":1e300}`), time.Time{}, false},
		{jws(`not json`), time.Time{}, false},
		{"a.b", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := issuedAt(tt.raw)
		if ok != tt.wantOK || !got.Equal(tt.want) {
			t.Errorf("issuedAt(%q) = %v, %v; want %v, %v", tt.raw, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestTokenLifetime(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	exp := now.Add(5 * time.Minute)
	tests := []struct {
		name string
		iat  time.Time
		want time.Duration
	}{
		{"issued just now", now.Add(-time.Second), 5 * time.Minute},
		// Our clock 3 min ahead of the auth server's (or a slow answer):
		// what counts is the life left now, not exp - iat.
		{"our clock ahead", now.Add(-3 * time.Minute), 5 * time.Minute},
		{"auth server's clock ahead", now.Add(time.Minute), 4 * time.Minute},
		{"no iat", time.Time{}, 5 * time.Minute},
		{"iat after exp", exp.Add(time.Minute), 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := tokenLifetime(&oidc.IDToken{IssuedAt: tt.iat, Expiry: exp}, now); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := tokenLifetime(&oidc.IDToken{Expiry: now.Add(-time.Second)}, now); got != 0 {
		t.Errorf("expired token: got %v, want 0", got)
	}
}

func TestNeedsRefresh(t *testing.T) {
	exp := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		now    time.Time
		margin time.Duration
		want   bool
	}{
		{exp.Add(-time.Minute), 30 * time.Second, false},
		{exp.Add(-31 * time.Second), 30 * time.Second, false},
		{exp.Add(-30 * time.Second), 30 * time.Second, true},
		{exp.Add(-time.Second), 30 * time.Second, true},
		{exp.Add(time.Hour), 30 * time.Second, true},
		{exp.Add(-time.Second), 0, false},
		{exp, 0, true},
	}
	for _, tt := range tests {
		if got := needsRefresh(exp, tt.now, tt.margin); got != tt.want {
			t.Errorf("needsRefresh(exp, exp%+v, %v) = %v, want %v", tt.now.Sub(exp), tt.margin, got, tt.want)
		}
	}
}

// signedIn returns a harness and a browser with a session whose ID token
// lives 5 minutes.
func signedIn(t *testing.T, mods ...func(*harnessOpts)) (*harness, *http.Client) {
	t.Helper()
	h := newHarness(t, mods...)
	c := h.browser()
	if resp, body := h.login(c, "/", testUser, testPassword); resp.StatusCode >= 300 {
		t.Fatalf("login: %d %s", resp.StatusCode, body)
	}
	return h, c
}

func TestRefreshBeforeExpiry(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		name := map[bool]string{false: "no rotation", true: "rotation"}[rotate]
		t.Run(name, func(t *testing.T) {
			h, c := signedIn(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = rotate })
			first := tokenOf(t, h.lastUpstream())

			// Still outside the margin: no refresh.
			h.clock.Advance(4 * time.Minute)
			h.fetch(c, "/a")
			if n := h.idp.TokenCalls("refresh_token"); n != 0 {
				t.Fatalf("refreshed %d times outside the margin", n)
			}
			// Inside the 30 s margin: refreshed before proxying, cookie
			// rewritten in the same response.
			h.clock.Advance(40 * time.Second)
			resp, _ := h.fetch(c, "/b")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d, want 200", resp.StatusCode)
			}
			if n := h.idp.TokenCalls("refresh_token"); n != 1 {
				t.Fatalf("refresh calls = %d, want 1", n)
			}
			second := tokenOf(t, h.lastUpstream())
			if second == first {
				t.Fatal("upstream got the old token after refresh")
			}
			if !setsCookie(resp, "_twc_session") {
				t.Error("refreshed session not written in the same response")
			}
			r := h.idp.TokenRequests()[1]
			if r.Header.Get("X-Auth-Secret") != testSecret {
				t.Error("refresh without X-Auth-Secret")
			}
			for _, k := range []string{"refresh_token", "client_id", "redirect_uri", "scope"} {
				if r.Form.Get(k) == "" {
					t.Errorf("refresh request lacks %s", k)
				}
			}
			// Past the old token's expiry the session lives on, twice over.
			h.clock.Advance(5 * time.Minute)
			h.fetch(c, "/c")
			h.clock.Advance(5 * time.Minute)
			resp, _ = h.fetch(c, "/d")
			if resp.StatusCode != http.StatusOK || h.idp.TokenCalls("refresh_token") != 3 {
				t.Fatalf("got %d after %d refreshes, want 200 after 3", resp.StatusCode, h.idp.TokenCalls("refresh_token"))
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "success"}); got != 3 {
				t.Errorf("token_refreshes_total{success} = %v, want 3", got)
			}
		})
	}
}

// TestRefreshMarginLongerThanToken: with refresh_margin at or above the ID
// tokens' lifetime every token would be due the moment it is issued, and
// each request would spend a refresh; the token is renewed halfway through
// its life instead. (A margin just short of the lifetime is kept as it is:
// TestRefreshBeforeExpiry's 30 s of 5 min, and the browser and interop
// tests, which make tokens due a few seconds after issue.)
func TestRefreshMarginLongerThanToken(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(cfg *Config) { cfg.RefreshMargin = 10 * time.Minute } // the tokens live 5
	})
	for range 3 {
		h.clock.Advance(time.Minute)
		if resp, _ := h.fetch(c, "/a"); resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d, want 200", resp.StatusCode)
		}
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls after 3 requests over 3 min = %d, want 1 (at 2.5 min)", n)
	}
	// The refreshed token is renewed halfway through its life too, not on
	// the next request.
	for range 2 {
		h.clock.Advance(time.Minute)
		h.fetch(c, "/b")
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls = %d, want still 1", n)
	}
	h.clock.Advance(time.Minute)
	h.fetch(c, "/c")
	if n := h.idp.TokenCalls("refresh_token"); n != 2 {
		t.Fatalf("refresh calls = %d, want 2", n)
	}
}

func setsCookie(resp *http.Response, name string) bool {
	for _, c := range resp.Cookies() {
		if c.Name == name && c.MaxAge >= 0 && c.Value != "" {
			return true
		}
	}
	return false
}

func TestConcurrentRefreshSpendsTokenOnce(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = true })
	u := mustURL(h.proxy.URL)
	oldCookies := c.Jar.Cookies(u)
	h.clock.Advance(4*time.Minute + 45*time.Second)

	// 20 requests at once carrying the same cookie, each with its own jar
	// snapshot so none sees another's refreshed cookie.
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", h.proxy.URL+"/tile", nil)
			for _, ck := range oldCookies {
				req.AddCookie(ck)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Errorf("request %d: got %d, want 200", i, code)
		}
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Fatalf("refresh calls = %d, want 1", n)
	}
	// A straggler with the old cookie, seconds later, reuses the result
	// instead of replaying the spent (rotated) refresh token.
	h.clock.Advance(5 * time.Second)
	req, _ := http.NewRequest("GET", h.proxy.URL+"/late", nil)
	for _, ck := range oldCookies {
		req.AddCookie(ck)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || h.idp.TokenCalls("refresh_token") != 1 {
		t.Fatalf("straggler: got %d with %d refresh calls, want 200 with 1", resp.StatusCode, h.idp.TokenCalls("refresh_token"))
	}
	if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "shared"}); got != 20 {
		t.Errorf("token_refreshes_total{shared} = %v, want 20 (19 waiters + 1 straggler)", got)
	}
}

func TestRefreshRejectedEndsSession(t *testing.T) {
	h, c := signedIn(t)
	h.idp.RevokeRefreshTokens()
	h.clock.Advance(4*time.Minute + 45*time.Second)

	resp, body := h.fetch(c, "/api")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "unauthenticated") {
		t.Fatalf("fetch: got %d %s, want 401 JSON", resp.StatusCode, body)
	}
	if h.hasSession(c) {
		t.Error("session cookie kept after the refresh was rejected")
	}
	// The session is gone: a navigation now goes to sign in, and no second
	// refresh is attempted.
	resp, _ = h.navigate(c, "/page")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), h.idp.Issuer()) {
		t.Fatalf("navigation: got %d to %q, want 302 to sign in", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Errorf("refresh calls = %d, want 1", n)
	}
	if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "rejected"}); got != 1 {
		t.Errorf("token_refreshes_total{rejected} = %v, want 1", got)
	}
}

// TestRefreshEndingSessionsLogLevel: a refresh that ends the session is a
// warning when the operator has to act, and only then. A refresh token
// refused as invalid_grant (expired, revoked, spent elsewhere) is one
// user's session ending: info. A refusal of the proxy's client (a client
// secret that no longer matches), or an answer whose ID token fails
// verification (keys or issuer changed at the auth server) comes from the
// auth server's side and ends every session that refreshes: a warning,
// with the request_id and the user.
func TestRefreshEndingSessionsLogLevel(t *testing.T) {
	tests := []struct {
		name   string
		breaks func(h *harness)
		result string
		level  zapcore.Level
	}{
		{"refresh token revoked", func(h *harness) { h.idp.RevokeRefreshTokens() }, "rejected", zap.InfoLevel},
		{"client refused", func(h *harness) {
			h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusUnauthorized, TokenErrorCode: "invalid_client"})
		}, "rejected", zap.WarnLevel},
		{"token fails verification", func(h *harness) { h.idp.SetFaults(authtest.Faults{WrongIssuer: true}) }, "invalid", zap.WarnLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, c := signedIn(t)
			tt.breaks(h)
			h.clock.Advance(4*time.Minute + 45*time.Second)
			if resp, _ := h.fetch(c, "/api"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", resp.StatusCode)
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": tt.result}); got != 1 {
				t.Errorf("token_refreshes_total{%s} = %v, want 1", tt.result, got)
			}
			id := h.requestLine("/api")["request_id"]
			lines := h.logs.FilterMessageSnippet("refresh").FilterField(zap.Any("request_id", id)).All()
			if len(lines) != 1 || lines[0].Level != tt.level || lines[0].ContextMap()["user"] != testUser {
				t.Fatalf("refresh lines %v, want one at %s naming the user", lines, tt.level)
			}
		})
	}
}

// TestTokenEndpointFailuresNameIt: when the token endpoint answers with an
// error status, or with something that is not a token answer, the lines
// about it (a user's refresh, the service account's token) say which URL
// answered, as a transport error's text already does: the operator paged at
// night learns where to look from the line itself.
func TestTokenEndpointFailuresNameIt(t *testing.T) {
	for name, f := range map[string]authtest.Faults{
		"500":            {TokenStatus: http.StatusInternalServerError},
		"malformed JSON": {MalformedJSON: true},
		"no id_token":    {OmitIDToken: true},
	} {
		t.Run(name, func(t *testing.T) {
			h, c := signedIn(t, withService(nil))
			tokenURL := h.idp.Issuer() + "/api/token"
			h.idp.SetFaults(f)
			h.clock.Advance(4*time.Minute + 45*time.Second)
			h.fetch(c, "/api")
			h.do(&http.Client{}, "GET", "/api/reports/x", nil)
			lines := append(h.logs.FilterMessageSnippet("refresh").All(), h.logs.FilterMessage("service account token fetch failed").All()...)
			if len(lines) != 2 {
				t.Fatalf("got %d lines about the failed token calls, want 2: %v", len(lines), lines)
			}
			for _, e := range lines {
				if msg := fmt.Sprint(e.ContextMap()["error"]); !strings.Contains(msg, tokenURL) {
					t.Errorf("%q: error %q does not name %s", e.Message, msg, tokenURL)
				}
			}
		})
	}
}

func TestRefreshWithoutIDTokenIsAFailure(t *testing.T) {
	h, c := signedIn(t)
	h.idp.SetFaults(authtest.Faults{OmitIDTokenOnRefresh: true})
	h.clock.Advance(4*time.Minute + 45*time.Second)
	for range 5 {
		resp, _ := h.fetch(c, "/api")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %d, want 401", resp.StatusCode)
		}
	}
	if n := h.idp.TokenCalls("refresh_token"); n != 1 {
		t.Errorf("refresh calls = %d, want 1: a useless answer must not loop", n)
	}
	if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "invalid"}); got != 1 {
		t.Errorf("token_refreshes_total{invalid} = %v, want 1", got)
	}
}

// TestRefreshedTokenIsVerified: a refresh answer is verified as a login's is
// and must keep the session's sub; a token for another user or with a broken
// signature is a failed refresh, and never reaches the upstream.
func TestRefreshedTokenIsVerified(t *testing.T) {
	for _, tt := range []struct {
		name string
		mint func(h *harness, sub, aud string) string
		ok   bool
	}{
		{"another sub", func(h *harness, _, aud string) string { return h.idp.MintIDToken("bob", aud, 5*time.Minute) }, false},
		{"bad signature", func(h *harness, sub, aud string) string {
			tok := h.idp.MintIDToken(sub, aud, 5*time.Minute)
			return tok[:len(tok)-6] + "AAAAAA"
		}, false},
		// The same shape of answer, well formed, refreshes: the failures
		// above are the flaws'.
		{"control: same sub", func(h *harness, sub, aud string) string { return h.idp.MintIDToken(sub, aud, 5*time.Minute) }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, c := signedIn(t)
			before := len(h.upstreamSeen())
			h.idp.SetFaults(authtest.Faults{IDToken: func(sub, aud, _ string) string { return tt.mint(h, sub, aud) }})
			h.clock.Advance(4*time.Minute + 45*time.Second)
			resp, _ := h.fetch(c, "/api")
			if n := h.idp.TokenCalls("refresh_token"); n != 1 {
				t.Fatalf("refresh calls = %d, want 1", n)
			}
			if tt.ok {
				if resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) == "" {
					t.Fatalf("got %d, want 200 with the refreshed token", resp.StatusCode)
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", resp.StatusCode)
			}
			if n := len(h.upstreamSeen()); n != before {
				t.Errorf("upstream reached %d times after the refresh, want 0", n-before)
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "invalid"}); got != 1 {
				t.Errorf("token_refreshes_total{invalid} = %v, want 1", got)
			}
		})
	}
}

func TestRefreshWhileAuthServerDown(t *testing.T) {
	for _, tt := range []struct {
		name   string
		faults authtest.Faults
	}{
		{"503", authtest.Faults{TokenStatus: http.StatusServiceUnavailable}},
		{"malformed JSON", authtest.Faults{MalformedJSON: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, c := signedIn(t)
			first := tokenOf(t, h.lastUpstream())
			h.idp.SetFaults(tt.faults)

			// Within the margin, the old token is still good: keep serving.
			h.clock.Advance(4*time.Minute + 45*time.Second)
			resp, _ := h.fetch(c, "/a")
			if resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) != first {
				t.Fatalf("got %d, want 200 with the old token", resp.StatusCode)
			}
			// A burst inside the failure memo does not hammer the server.
			h.fetch(c, "/b")
			h.fetch(c, "/c")
			if n := h.idp.TokenCalls("refresh_token"); n != 1 {
				t.Errorf("refresh calls = %d, want 1 within the failure memo", n)
			}
			// Past expiry: a clear 503, and the session is kept for later.
			h.clock.Advance(time.Minute)
			resp, body := h.fetch(c, "/d")
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "could not renew") {
				t.Fatalf("got %d %s, want 503 with a clear message", resp.StatusCode, body)
			}
			if !h.hasSession(c) {
				t.Fatal("session dropped because the auth server was down")
			}
			// The server recovers: the same session refreshes and works.
			h.idp.SetFaults(authtest.Faults{})
			h.clock.Advance(10 * time.Second)
			resp, _ = h.fetch(c, "/e")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("after recovery: got %d, want 200", resp.StatusCode)
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "unavailable"}); got < 1 {
				t.Errorf("token_refreshes_total{unavailable} = %v, want >= 1", got)
			}
		})
	}
}

// TestRefreshWhileKeysUnavailable: the token endpoint answers but jwks.json
// does not, right after the provider rotated its key, so the new token
// cannot be checked. That is the auth server being unwell, not a bad token:
// the session is kept. The answer's refresh token is already spent (and the
// fake rotates, revoking the grant on reuse), so once the keys are back the
// proxy verifies the answer it kept instead of refreshing again; if that
// answer expired meanwhile, it spends the answer's new refresh token.
func TestRefreshWhileKeysUnavailable(t *testing.T) {
	for _, tt := range []struct {
		name      string
		outage    time.Duration // after the old token expired
		refreshes int
	}{
		{"keys back while the answer is valid", 0, 1},
		{"keys back after the answer expired", 5 * time.Minute, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, c := signedIn(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = true })
			first := tokenOf(t, h.lastUpstream())
			if err := h.idp.RotateKey(); err != nil {
				t.Fatal(err)
			}
			h.idp.SetFaults(authtest.Faults{JWKSStatus: http.StatusServiceUnavailable})

			h.clock.Advance(4*time.Minute + 45*time.Second)
			resp, body := h.fetch(c, "/a")
			if resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) != first {
				t.Fatalf("got %d %s, want 200 with the old token", resp.StatusCode, body)
			}
			h.clock.Advance(time.Minute)
			resp, body = h.fetch(c, "/b")
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "could not renew") {
				t.Fatalf("past expiry: got %d %s, want 503", resp.StatusCode, body)
			}
			if !h.hasSession(c) {
				t.Fatal("session dropped because jwks.json was unavailable")
			}

			h.clock.Advance(tt.outage)
			h.idp.SetFaults(authtest.Faults{})
			h.clock.Advance(10 * time.Second)
			resp, body = h.fetch(c, "/c")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("keys back: got %d %s, want 200", resp.StatusCode, body)
			}
			if tokenOf(t, h.lastUpstream()) == first {
				t.Error("upstream got the old token after the keys came back")
			}
			if n := h.idp.TokenCalls("refresh_token"); n != tt.refreshes {
				t.Errorf("refresh calls = %d, want %d", n, tt.refreshes)
			}
			for result, want := range map[string]float64{"success": 1, "rejected": 0, "invalid": 0} {
				if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": result}); got != want {
					t.Errorf("token_refreshes_total{%s} = %v, want %v", result, got, want)
				}
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "unavailable"}); got < 1 {
				t.Errorf("token_refreshes_total{unavailable} = %v, want >= 1", got)
			}
		})
	}
}

// TestRefreshTransientTokenErrors: a token-endpoint answer that means "not
// now" rather than "no" keeps the session like a 5xx does. TWC documents
// temporarily_unavailable and system_error (keystore problems); fronts
// answer 408 and 429.
func TestRefreshTransientTokenErrors(t *testing.T) {
	for _, tt := range []struct {
		status int
		code   string
	}{
		{http.StatusBadRequest, "temporarily_unavailable"},
		{http.StatusBadRequest, "server_error"},
		{http.StatusBadRequest, "system_error"},
		{http.StatusUnauthorized, "temporarily_unavailable"},
		{http.StatusTooManyRequests, ""},
		{http.StatusRequestTimeout, ""},
	} {
		t.Run(fmt.Sprint(tt.status, tt.code), func(t *testing.T) {
			h, c := signedIn(t)
			first := tokenOf(t, h.lastUpstream())
			h.idp.SetFaults(authtest.Faults{TokenStatus: tt.status, TokenErrorCode: tt.code})
			h.clock.Advance(4*time.Minute + 45*time.Second)
			resp, body := h.fetch(c, "/a")
			if resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) != first || !h.hasSession(c) {
				t.Fatalf("got %d %s (session kept: %v), want 200 with the old token", resp.StatusCode, body, h.hasSession(c))
			}
			if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "unavailable"}); got != 1 {
				t.Errorf("token_refreshes_total{unavailable} = %v, want 1", got)
			}
			h.idp.SetFaults(authtest.Faults{})
			h.clock.Advance(10 * time.Second)
			if resp, body := h.fetch(c, "/b"); resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) == first {
				t.Fatalf("after recovery: got %d %s, want 200 with a new token", resp.StatusCode, body)
			}
		})
	}
}

// TestRefreshErrorAnsweredWith200: some servers answer a token-endpoint
// error with 200 and an OAuth error body. The body decides, as it would
// with a 4xx: temporarily_unavailable keeps the session (old token while
// valid), invalid_grant ends it; either way the log names the error code.
func TestRefreshErrorAnsweredWith200(t *testing.T) {
	for _, tt := range []struct {
		code string
		keep bool
	}{
		{"temporarily_unavailable", true},
		{"system_error", true},
		{"invalid_grant", false},
	} {
		t.Run(tt.code, func(t *testing.T) {
			h, c := signedIn(t)
			first := tokenOf(t, h.lastUpstream())
			h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusOK, TokenErrorCode: tt.code})
			h.clock.Advance(4*time.Minute + 45*time.Second)
			resp, body := h.fetch(c, "/a")
			if tt.keep {
				if resp.StatusCode != http.StatusOK || tokenOf(t, h.lastUpstream()) != first || !h.hasSession(c) {
					t.Fatalf("got %d %s (session kept: %v), want 200 with the old token", resp.StatusCode, body, h.hasSession(c))
				}
				if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "unavailable"}); got != 1 {
					t.Errorf("token_refreshes_total{unavailable} = %v, want 1", got)
				}
			} else {
				if resp.StatusCode != http.StatusUnauthorized || h.hasSession(c) {
					t.Fatalf("got %d %s (session kept: %v), want 401 and the session ended", resp.StatusCode, body, h.hasSession(c))
				}
				if got := h.metric("twc_auth_proxy_token_refreshes_total", map[string]string{"result": "rejected"}); got != 1 {
					t.Errorf("token_refreshes_total{rejected} = %v, want 1", got)
				}
			}
			logged := false
			for _, e := range h.logs.All() {
				if err, ok := e.ContextMap()["error"].(string); ok && strings.Contains(err, tt.code) {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no log line names the error code %q", tt.code)
			}
		})
	}
}

func TestTokenErrorRejected(t *testing.T) {
	for _, tt := range []struct {
		status int
		code   string
		want   bool
	}{
		{http.StatusBadRequest, "invalid_grant", true},
		{http.StatusBadRequest, "invalid_request", true},
		{http.StatusUnauthorized, "invalid_client", true},
		{http.StatusBadRequest, "unauthorized_client", true},
		{http.StatusBadRequest, "", true},
		{http.StatusForbidden, "", true},
		{http.StatusBadRequest, "temporarily_unavailable", false},
		{http.StatusBadRequest, "server_error", false},
		{http.StatusBadRequest, "system_error", false},
		{http.StatusTooManyRequests, "", false},
		{http.StatusTooManyRequests, "invalid_request", false},
		{http.StatusRequestTimeout, "", false},
		{http.StatusInternalServerError, "invalid_grant", false},
		{http.StatusServiceUnavailable, "", false},
		{http.StatusOK, "invalid_grant", true},
		{http.StatusOK, "temporarily_unavailable", false},
		{http.StatusFound, "", false},
	} {
		te := &TokenError{Status: tt.status, Code: tt.code}
		if got := te.Rejected(); got != tt.want {
			t.Errorf("TokenError{%d %q}.Rejected() = %v, want %v", tt.status, tt.code, got, tt.want)
		}
	}
}

// TestRefreshMemoNeverServesExpiredToken: with ID tokens that live less
// than the 30 s refresh memo, a remembered refresh can expire before a
// request with the same cookie comes; it must be refreshed, not forwarded.
// The straggler still carries the cookie from before the first refresh.
func TestRefreshMemoNeverServesExpiredToken(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		t.Run(map[bool]string{false: "no rotation", true: "rotation"}[rotate], func(t *testing.T) {
			h, c := signedIn(t, func(o *harnessOpts) {
				o.idp.TokenTTL = 20 * time.Second
				o.idp.RotateRefreshTokens = rotate
			})
			straggler := h.browser()
			u := mustURL(h.proxy.URL)
			straggler.Jar.SetCookies(u, c.Jar.Cookies(u))
			// The 20 s token is inside the 30 s margin at once.
			if resp, _ := h.fetch(c, "/a"); resp.StatusCode != http.StatusOK {
				t.Fatalf("refresh: got %d", resp.StatusCode)
			}
			before := h.idp.TokenCalls("refresh_token")
			h.clock.Advance(25 * time.Second) // that refresh is remembered, its token expired
			for _, b := range []*http.Client{straggler, c} {
				resp, body := h.fetch(b, "/b")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("got %d %s, want 200", resp.StatusCode, body)
				}
				if exp := tokenExpiry(t, tokenOf(t, h.lastUpstream())); !h.clock.Now().Before(exp) {
					t.Fatalf("forwarded a token that expired at %v (now %v)", exp, h.clock.Now())
				}
			}
			if n := h.idp.TokenCalls("refresh_token") - before; n != 1 {
				t.Errorf("refresh calls for both = %d, want 1", n)
			}
		})
	}
}

// tokenExpiry reads the exp claim of a JWT.
func tokenExpiry(t *testing.T, raw string) time.Time {
	t.Helper()
	var c struct {
		Exp int64 `json:"exp"`
	}
	if err := json.Unmarshal(mustPayload(t, raw), &c); err != nil {
		t.Fatal(err)
	}
	return time.Unix(c.Exp, 0)
}

// A kept answer whose ID token expired before the keys came back holds the
// live (rotated) refresh token. When spending that token meets a passing
// failure of the token endpoint, the answer stays kept: forgetting it would
// spend the original, already spent, token next time, and a rotating
// provider would revoke the grant.
func TestRefreshKeepsPendingAnswerThroughTransientFailure(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = true })
	if err := h.idp.RotateKey(); err != nil {
		t.Fatal(err)
	}
	h.idp.SetFaults(authtest.Faults{JWKSStatus: http.StatusServiceUnavailable})
	h.clock.Advance(4*time.Minute + 45*time.Second)
	h.fetch(c, "/a")                 // the first refresh token is spent, the answer kept
	h.clock.Advance(6 * time.Minute) // the kept answer's ID token expires
	h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusServiceUnavailable})
	h.fetch(c, "/b") // keys back; spending the kept answer's token fails for now
	h.idp.SetFaults(authtest.Faults{})
	h.clock.Advance(10 * time.Second)
	if resp, body := h.fetch(c, "/c"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after the auth server recovered: got %d %s, want 200 (session kept: %v)", resp.StatusCode, body, h.hasSession(c))
	}
}

// When a flood of sessions fills the memo, a kept answer is the last thing
// dropped: forgetting an outcome costs an extra refresh, forgetting a kept
// answer would spend its refresh token again.
func TestRefreshMemoFullKeepsPendingAnswers(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRefresher(nil, clk.Now)
	kept := refreshKey("kept")
	r.store(kept, memoEntry{outcome: refreshUnavailable, until: clk.Now().Add(refreshFailMemoTTL),
		pending: &tokenResponse{IDToken: "x"}, pendingUntil: clk.Now().Add(refreshPendingTTL)})
	for i := range refreshMemoMax + 1 {
		r.store(refreshKey(strconv.Itoa(i)), memoEntry{outcome: refreshOK, until: clk.Now().Add(refreshMemoTTL)})
	}
	if len(r.memo) >= refreshMemoMax {
		t.Fatalf("memo holds %d entries, want fewer than %d", len(r.memo), refreshMemoMax)
	}
	clk.Advance(refreshFailMemoTTL) // past the entry's own TTL, inside the kept answer's
	if e, _ := r.lookup(kept); e.pending == nil {
		t.Fatal("the kept answer was dropped with the flood")
	}
}
