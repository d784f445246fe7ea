package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"go.uber.org/zap"
)

func TestLoginFlowInjectsToken(t *testing.T) {
	h := newHarness(t)
	c := h.browser()

	// A navigation without a session goes to the authorize endpoint with
	// the vendor's parameters.
	resp, _ := h.navigate(c, "/dash/report?x=1&y=two")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("got status %d, want 302", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	for k, want := range map[string]string{
		"scope": "openid", "client_id": testClientID, "response_type": "code",
		"redirect_uri": h.proxy.URL + "/oauth2/callback",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("authorize %s = %q, want %q", k, got, want)
		}
	}
	if q.Get("state") == "" || q.Get("nonce") == "" {
		t.Errorf("authorize request lacks state or nonce: %v", q)
	}
	if q.Get("code_challenge") != "" {
		t.Errorf("PKCE sent to a provider that does not advertise it")
	}

	cb := h.signInAt(c, resp, testUser, testPassword)
	resp, _ = h.navigate(c, cb.String())
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/dash/report?x=1&y=two" {
		t.Fatalf("callback: got %d to %q, want 302 to the original page with its query", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == "_twc_session" && (!ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode) {
			t.Errorf("session cookie attributes: HttpOnly=%v SameSite=%v", ck.HttpOnly, ck.SameSite)
		}
	}
	resp, body := h.navigate(c, "/dash/report?x=1&y=two")
	if resp.StatusCode != http.StatusOK || body != "upstream:/dash/report?x=1&y=two" {
		t.Fatalf("got %d %q, want the upstream page", resp.StatusCode, body)
	}

	// The upstream got the ID token as TWC REST wants it, and it verifies.
	tok := tokenOf(t, h.lastUpstream())
	keys := oidc.NewRemoteKeySet(context.Background(), h.idp.Issuer()+"/jwks.json")
	idt, err := oidc.NewVerifier(h.idp.Issuer(), keys, &oidc.Config{ClientID: testClientID, Now: h.clock.Now}).Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("upstream token does not verify: %v", err)
	}
	if idt.Subject != testUser {
		t.Errorf("token sub = %q, want %q", idt.Subject, testUser)
	}

	// The code exchange is exactly the vendor's request.
	reqs := h.idp.TokenRequests()
	if len(reqs) != 1 {
		t.Fatalf("token endpoint calls = %d, want 1", len(reqs))
	}
	r := reqs[0]
	if got := r.Header.Get("X-Auth-Secret"); got != testSecret {
		t.Errorf("X-Auth-Secret = %q, want the client secret", got)
	}
	for k, want := range map[string]string{
		"grant_type": "authorization_code", "client_id": testClientID, "scope": "openid",
		"redirect_uri": h.proxy.URL + "/oauth2/callback", "code": cb.Query().Get("code"),
	} {
		if got := r.Form.Get(k); got != want {
			t.Errorf("token request %s = %q, want %q", k, got, want)
		}
	}
	if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("logins_total{success} = %v, want 1", got)
	}
	if got := h.metric("twc_auth_proxy_token_endpoint_duration_seconds", map[string]string{"grant_type": "authorization_code"}); got != 1 {
		t.Errorf("token_endpoint_duration_seconds{authorization_code} count = %v, want 1", got)
	}
	if got := h.metric("twc_auth_proxy_upstream_duration_seconds", nil); got != 1 {
		t.Errorf("upstream_duration_seconds count = %v, want 1", got)
	}
	h.assertNoSecretsLogged(tok, testSecret, testPassword, cb.Query().Get("code"))
}

func TestUnauthenticatedRequests(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name     string
		method   string
		hdr      http.Header
		redirect bool
	}{
		{"navigation", "GET", http.Header{"Sec-Fetch-Mode": {"navigate"}, "Accept": {"text/html"}}, true},
		{"HEAD navigation", "HEAD", http.Header{"Sec-Fetch-Mode": {"navigate"}}, true},
		{"old browser wants html", "GET", http.Header{"Accept": {"text/html,*/*"}}, true},
		{"fetch", "GET", http.Header{"Sec-Fetch-Mode": {"cors"}, "Accept": {"text/html"}}, false},
		{"xhr", "GET", http.Header{"X-Requested-With": {"XMLHttpRequest"}, "Accept": {"text/html"}}, false},
		{"json client", "GET", http.Header{"Accept": {"application/json"}}, false},
		{"no accept", "GET", nil, false},
		{"post form", "POST", http.Header{"Accept": {"text/html"}}, false},
		{"lower-case method", "get", http.Header{"Accept": {"text/html"}}, false},
		{"propfind", "PROPFIND", http.Header{"Accept": {"text/html"}}, false},
		{"websocket", "GET", http.Header{"Sec-Fetch-Mode": {"websocket"}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.browser()
			resp, body := h.do(c, tt.method, "/private", tt.hdr)
			if tt.redirect {
				if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), h.idp.Issuer()+"/authorize") {
					t.Fatalf("got %d to %q, want 302 to authorize", resp.StatusCode, resp.Header.Get("Location"))
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "unauthenticated" {
				t.Errorf("body %q, want JSON error unauthenticated", body)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("a non-navigation set cookies %v: it must not start a login flow", resp.Cookies())
			}
		})
	}
	if n := len(h.upstreamSeen()); n != 0 {
		t.Errorf("upstream saw %d unauthenticated requests, want 0", n)
	}
}

func TestSeveralTabsLogInAtOnce(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	var starts []*http.Response
	for _, p := range []string{"/one", "/two", "/three"} {
		resp, _ := h.navigate(c, p)
		starts = append(starts, resp)
	}
	// Complete them in reverse order; every one must land on its page.
	for i := len(starts) - 1; i >= 0; i-- {
		cb := h.signInAt(c, starts[i], testUser, testPassword)
		resp, body := h.navigate(c, cb.String())
		want := []string{"/one", "/two", "/three"}[i]
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
			t.Fatalf("tab %d: got %d to %q, want 302 to %q; %s", i, resp.StatusCode, resp.Header.Get("Location"), want, body)
		}
	}
}

func TestCallbackRejects(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	resp, _ := h.navigate(c, "/x")
	cb := h.signInAt(c, resp, testUser, testPassword)
	state, code := cb.Query().Get("state"), cb.Query().Get("code")

	tests := []struct {
		name   string
		query  string
		status int
		result string
	}{
		{"unknown state", url.Values{"state": {"forged"}, "code": {code}}.Encode(), http.StatusBadRequest, "state_mismatch"},
		{"duplicate state", "state=" + url.QueryEscape(state) + "&state=other&code=" + code, http.StatusBadRequest, "bad_request"},
		{"duplicate code", "state=" + url.QueryEscape(state) + "&code=" + code + "&code=x", http.StatusBadRequest, "bad_request"},
		{"no code", "state=" + url.QueryEscape(state), http.StatusBadRequest, "bad_request"},
		// Another state: a provider error for this browser's sign-in
		// ends it (TestCallbackProviderErrorText), and the genuine
		// callback below still needs it.
		{"provider error", "error=access_denied&error_description=no%0Away&state=forged", http.StatusUnauthorized, "provider_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": tt.result})
			resp, body := h.navigate(c, "/oauth2/callback?"+tt.query)
			if resp.StatusCode != tt.status {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.status)
			}
			if !strings.Contains(body, "Sign in again") || strings.Contains(body, "goroutine") {
				t.Errorf("error page is not the readable one: %s", body)
			}
			if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": tt.result}); got != before+1 {
				t.Errorf("logins_total{%s} = %v, want %v", tt.result, got, before+1)
			}
			if h.hasSession(c) {
				t.Error("a failed callback created a session")
			}
		})
	}
	// The genuine callback still works after all that.
	resp, _ = h.navigate(c, cb.String())
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/x" {
		t.Fatalf("genuine callback: got %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// And a replay of it (state already spent) fails.
	resp, _ = h.navigate(c, cb.String())
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("replayed callback: got %d, want 400", resp.StatusCode)
	}
}

// TestCallbackProviderErrorText: a provider error on the callback shows a
// registered error code, never text the link brought along (anyone can send
// a browser to the callback with words of their choosing); the description
// goes to the log, and only for a sign-in this browser started.
func TestCallbackProviderErrorText(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	resp, _ := h.navigate(c, "/x") // a sign-in under way: its state
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("state") == "" {
		t.Fatalf("no sign-in started: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	state := loc.Query().Get("state")
	bait := "Your account is locked. Call the help desk at 555-0100"
	tests := []struct {
		query, shown, hidden string
		logged               bool // the description is in the log line
	}{
		{url.Values{"error": {"access_denied"}, "error_description": {bait}}.Encode(), "(access_denied)", bait, false},
		{url.Values{"error": {"locked: call 555-0199"}}.Encode(), "(unknown error)", "555-0199", false},
		{url.Values{"error": {"<b>x</b>"}}.Encode(), "(unknown error)", "&lt;b&gt;", false},
		{url.Values{"error": {"system_error"}, "error_description": {"keystore\nbroken 555-0100"}, "state": {state}}.Encode(), "(system_error)", "keystore", true},
	}
	for _, tt := range tests {
		resp, body := h.navigate(c, "/oauth2/callback?"+tt.query)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: got %d, want 401", tt.query, resp.StatusCode)
		}
		if !strings.Contains(body, tt.shown) || strings.Contains(body, tt.hidden) || strings.Contains(body, "555-0100") {
			t.Errorf("%s: page should show %q and nothing of the link's text; got:\n%s", tt.query, tt.shown, body)
		}
	}
	logged := h.logs.FilterMessage("login failed").FilterField(zap.String("result", "provider_error")).All()
	if len(logged) != len(tests) {
		t.Fatalf("got %d provider_error log lines, want %d", len(logged), len(tests))
	}
	for i, tt := range tests {
		line, _ := logged[i].ContextMap()["error"].(string)
		if got := strings.Contains(line, "555-0100"); got != tt.logged {
			t.Errorf("%s: log line %q: description logged = %v, want %v", tt.query, line, got, tt.logged)
		}
		if strings.ContainsAny(line, "\n\r") {
			t.Errorf("log line with a control character: %q", line)
		}
	}
	if h.hasSession(c) {
		t.Error("a provider error created a session")
	}
	// The error ended that sign-in: its state is spent.
	before := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "state_mismatch"})
	resp, _ = h.navigate(c, "/oauth2/callback?"+url.Values{"state": {state}, "code": {"whatever"}}.Encode())
	if resp.StatusCode != http.StatusBadRequest || h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "state_mismatch"}) != before+1 {
		t.Errorf("a callback with the state of the sign-in the error ended: got %d, want 400 state_mismatch", resp.StatusCode)
	}
}

func TestInvalidIDTokensFailLogin(t *testing.T) {
	tests := []struct {
		name   string
		faults authtest.Faults
		auth   func(*AuthConfig)
	}{
		{"bad signature", authtest.Faults{BadSignature: true}, nil},
		{"wrong issuer", authtest.Faults{WrongIssuer: true}, nil},
		{"wrong audience", authtest.Faults{WrongAudience: true}, nil},
		{"expired", authtest.Faults{Expired: true}, nil},
		{"wrong nonce", authtest.Faults{WrongNonce: true}, nil},
		{"nonce required but absent", authtest.Faults{}, func(c *AuthConfig) { c.RequireNonce = true }},
		{"no id_token", authtest.Faults{OmitIDToken: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *harnessOpts) { o.authCfg = tt.auth })
			h.idp.SetFaults(tt.faults)
			c := h.browser()
			resp, _ := h.navigate(c, "/secret")
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, body := h.navigate(c, cb.String())
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401; %s", resp.StatusCode, body)
			}
			if !strings.Contains(body, "Sign-in failed") {
				t.Errorf("page does not say what failed: %s", body)
			}
			if h.hasSession(c) {
				t.Error("session created from an invalid token")
			}
			if n := len(h.upstreamSeen()); n != 0 {
				t.Errorf("upstream reached %d times", n)
			}
		})
	}
}

func TestProviderVariantsLogIn(t *testing.T) {
	tests := []struct {
		name   string
		idp    func(*authtest.Options)
		faults authtest.Faults
		auth   func(*AuthConfig)
	}{
		{"twc legacy: no kid, no nonce, no access_token", nil, authtest.Faults{}, nil},
		{"kid in header and JWKS", nil, authtest.Faults{IncludeKid: true}, nil},
		{"nonce echoed", nil, authtest.Faults{EchoNonce: true}, nil},
		{"nonce echoed and required", nil, authtest.Faults{EchoNonce: true}, func(c *AuthConfig) { c.RequireNonce = true }},
		{"access_token present", nil, authtest.Faults{IncludeAccessToken: true}, nil},
		{"PKCE advertised", func(o *authtest.Options) { o.AdvertisePKCE = true }, authtest.Faults{}, nil},
		{"explicit discovery_url", nil, authtest.Faults{}, func(c *AuthConfig) {
			c.DiscoveryURL = c.IssuerURL + "/.well-known/openid-configuration"
			c.IssuerURL = "http://twc.invalid:8443/authentication" // only the document's issuer counts
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *harnessOpts) {
				if tt.idp != nil {
					tt.idp(&o.idp)
				}
				o.authCfg = tt.auth
			})
			h.idp.SetFaults(tt.faults)
			c := h.browser()
			resp, body := h.login(c, "/page", testUser, testPassword)
			if resp.StatusCode != http.StatusOK || body != "upstream:/page" {
				t.Fatalf("got %d %q, want the upstream page", resp.StatusCode, body)
			}
			tokenOf(t, h.lastUpstream())
			if tt.idp != nil {
				if v := h.idp.TokenRequests()[0].Form.Get("code_verifier"); v == "" {
					t.Error("no code_verifier sent with PKCE")
				}
			}
		})
	}
}

func TestLoginReplacesSession(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	h.login(c, "/", testUser, testPassword)
	// A second login as someone else (the auth server's SSO is cleared)
	// must not keep anything of the first session.
	if _, err := http.Get(h.idp.Issuer() + "/api/signout"); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(h.idp.URL())
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "twc_auth_sso", Value: "", MaxAge: -1, Path: "/authentication"}})
	resp, _ := h.navigate(c, "/oauth2/start?rd=/again")
	cb := h.signInAt(c, resp, "bob", "bob-pw")
	h.navigate(c, cb.String())
	_, body := h.fetch(c, "/oauth2/userinfo")
	var claims struct{ Sub string }
	json.Unmarshal([]byte(body), &claims)
	if claims.Sub != "bob" {
		t.Fatalf("userinfo sub = %q after second login, want bob; body %s", claims.Sub, body)
	}
}

// A local return path longer than the flow cookie can hold (safeReturnPath
// takes up to 2 KiB) still signs the user in, landing on "/"; a long path
// that fits is kept.
func TestLongReturnPath(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.idp.AdvertisePKCE = true })
	for _, tt := range []struct {
		n    int
		want string // Location after the callback; "" means the path itself
	}{
		{1500, ""},
		{2040, "/"},
	} {
		t.Run(strconv.Itoa(tt.n), func(t *testing.T) {
			c := h.browser()
			target := "/" + strings.Repeat("a", tt.n-1)
			resp, _ := h.navigate(c, target)
			if resp.StatusCode != http.StatusFound {
				t.Fatalf("navigation to a %d-byte path: got %d, want 302 to sign in", tt.n, resp.StatusCode)
			}
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, _ = h.navigate(c, cb.String())
			want := tt.want
			if want == "" {
				want = target
			}
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != want {
				t.Fatalf("after the callback: %d to a %d-byte Location, want 302 to %d bytes", resp.StatusCode, len(loc), len(want))
			}
		})
	}
}

// TestReturnPathKeptAsSent: after the callback the browser goes back to
// the very path it asked for. Paths with "//" or dot segments are real
// (a URL carried in a path, as some dashboards do), and cleaning them
// sends the user to another page: /view/https://x/p is not /view/https:/x/p.
func TestReturnPathKeptAsSent(t *testing.T) {
	h := newHarness(t)
	for _, target := range []string{
		"/view/https://twc.example/osmc/workspaces?x=1",
		"/files//model.mdzip",
		"/a/./b/",
	} {
		t.Run(target, func(t *testing.T) {
			c := h.browser()
			resp, _ := h.navigate(c, target)
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, _ = h.navigate(c, cb.String())
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || loc != target {
				t.Fatalf("after the callback: %d to %q, want 302 to %q", resp.StatusCode, loc, target)
			}
			h.navigate(c, target)
			if got := h.lastUpstream().URI; got != target {
				t.Errorf("upstream got %q, want %q", got, target)
			}
		})
	}
}

// TestReturnPathWithBackslashInQuery: browsers send a backslash in a query
// as it is (a Windows path in a link, say); the page is still the one the
// user comes back to, with the backslash percent-encoded. In the path a
// backslash is still refused.
func TestReturnPathWithBackslashInQuery(t *testing.T) {
	h := newHarness(t)
	for _, tt := range []struct{ target, want string }{
		{`/models?file=C:\twc\model.mdzip&v=2`, `/models?file=C:%5Ctwc%5Cmodel.mdzip&v=2`},
		{`/?\evil.example`, `/?%5Cevil.example`},
		{`/oauth2/start?rd=` + url.QueryEscape(`/a?b=\\evil.example`), `/a?b=%5C%5Cevil.example`},
		{`/oauth2/start?rd=` + url.QueryEscape(`/\evil.example?x=\`), `/`},
	} {
		t.Run(tt.target, func(t *testing.T) {
			c := h.browser()
			resp, _ := h.navigate(c, tt.target)
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, _ = h.navigate(c, cb.String())
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusFound || loc != tt.want || !localLocation(loc) {
				t.Fatalf("after the callback: %d to %q, want 302 to %q", resp.StatusCode, loc, tt.want)
			}
		})
	}
}
