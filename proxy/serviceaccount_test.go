package proxy

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

const (
	svcUser     = "svc-reports"
	svcPassword = "svc-Pa55:word"
	svcClient   = "reports-bot"
)

// withService enables a service account for ^/api/reports/.
func withService(mod func(*ServiceAccountConfig)) func(*harnessOpts) {
	return func(o *harnessOpts) {
		o.idp.ClientIDs = append(o.idp.ClientIDs, svcClient)
		o.idp.Users[svcUser] = svcPassword
		cfg := &ServiceAccountConfig{
			Username:      svcUser,
			Password:      svcPassword,
			ClientID:      svcClient,
			Routes:        []*regexp.Regexp{regexp.MustCompile("^/api/reports/")},
			RefreshMargin: 30 * time.Second,
		}
		if mod != nil {
			mod(cfg)
		}
		o.service = cfg
	}
}

func TestServiceAccountRequestShapeAndReuse(t *testing.T) {
	h := newHarness(t, withService(nil))
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := h.do(&http.Client{}, "GET", fmt.Sprintf("/api/reports/%d", i), http.Header{"Accept": {"application/json"}})
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 50 service requests failed", n)
	}
	reqs := h.idp.TokenRequests()
	if len(reqs) != 1 {
		t.Fatalf("token endpoint calls = %d, want 1 for 50 concurrent requests", len(reqs))
	}
	r := reqs[0]
	wantBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(svcUser+":"+svcPassword))
	if got := r.Header.Get("Authorization"); got != wantBasic {
		t.Errorf("Authorization = %q, want %q", got, wantBasic)
	}
	if got := r.Header.Get("X-Auth-Secret"); got != testSecret {
		t.Errorf("X-Auth-Secret = %q, want the client secret", got)
	}
	if r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("client_id") != svcClient {
		t.Errorf("form = %v, want grant_type=client_credentials client_id=%s", r.Form, svcClient)
	}
	// The vendor's page gives them as query parameters.
	if r.Query.Get("grant_type") != "client_credentials" || r.Query.Get("client_id") != svcClient {
		t.Errorf("query = %v, want grant_type=client_credentials client_id=%s", r.Query, svcClient)
	}
	for _, u := range h.upstreamSeen() {
		if tok := tokenOf(t, u); !strings.Contains(string(mustPayload(t, tok)), `"sub":"`+svcUser+`"`) {
			t.Fatalf("upstream token is not the service account's: %s", mustPayload(t, tok))
		}
	}
	if got := h.metric("twc_auth_proxy_service_token_fetches_total", map[string]string{"result": "success"}); got != 1 {
		t.Errorf("service_token_fetches_total{success} = %v, want 1", got)
	}
	if got := h.metric("twc_auth_proxy_service_token_remaining_seconds", nil); got < 200 || got > 300 {
		t.Errorf("service_token_remaining_seconds = %v, want about 300", got)
	}
	h.assertNoSecretsLogged(svcPassword, base64.StdEncoding.EncodeToString([]byte(svcUser+":"+svcPassword)))
}

func mustPayload(t *testing.T, tok string) []byte {
	t.Helper()
	p, err := jwtPayload(tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServiceAccountRefreshesBeforeExpiry(t *testing.T) {
	h := newHarness(t, withService(nil))
	get := func() upstreamRequest {
		t.Helper()
		if resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		return h.lastUpstream()
	}
	first := tokenOf(t, get())
	h.clock.Advance(4*time.Minute + 40*time.Second) // inside the 30 s margin of a 5 min token
	second := tokenOf(t, get())
	if second == first || h.idp.TokenCalls("refresh_token") != 1 {
		t.Fatalf("no refresh before expiry (refresh calls %d)", h.idp.TokenCalls("refresh_token"))
	}
	// When the refresh token is dead, a new client_credentials request
	// takes over without failing the caller.
	h.idp.RevokeRefreshTokens()
	h.clock.Advance(4*time.Minute + 40*time.Second)
	third := tokenOf(t, get())
	if third == second || h.idp.TokenCalls("client_credentials") != 2 {
		t.Fatalf("no new client_credentials token after the refresh failed (calls %d)", h.idp.TokenCalls("client_credentials"))
	}
}

func TestServiceAccountBadCredentials(t *testing.T) {
	t.Run("wrong password", func(t *testing.T) {
		testServiceAccountRefused(t, newHarness(t, withService(func(c *ServiceAccountConfig) { c.Password = "wrong-secret-pw" })), "wrong-secret-pw")
	})
	t.Run("disabled account", func(t *testing.T) {
		h := newHarness(t, withService(nil), func(o *harnessOpts) { o.idp.DisabledUsers = []string{svcUser} })
		testServiceAccountRefused(t, h, svcPassword)
	})
}

// testServiceAccountRefused checks what callers, the auth server, metrics
// and logs see when the auth server refuses the service account.
func testServiceAccountRefused(t *testing.T, h *harness, password string) {
	t.Helper()
	resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "service_account_unavailable") {
		t.Fatalf("got %d %s, want 503 JSON", resp.StatusCode, body)
	}
	// Within the backoff no request reaches the auth server.
	for range 20 {
		h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	}
	if n := h.idp.TokenCalls("client_credentials"); n != 1 {
		t.Fatalf("token calls = %d during backoff, want 1", n)
	}
	// After it, one retry; the backoff then grows.
	h.clock.Advance(2 * time.Second)
	h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	if n := h.idp.TokenCalls("client_credentials"); n != 2 {
		t.Fatalf("token calls = %d after the first backoff, want 2", n)
	}
	if got := h.metric("twc_auth_proxy_service_token_fetches_total", map[string]string{"result": "rejected"}); got != 2 {
		t.Errorf("service_token_fetches_total{rejected} = %v, want 2", got)
	}
	if len(h.upstreamSeen()) != 0 {
		t.Error("a request reached the upstream without a token")
	}
	var logged bool
	for _, e := range h.logs.FilterMessage("service account token fetch failed").All() {
		logged = e.ContextMap()["username"] == svcUser
	}
	if !logged {
		t.Error("no log line names the failing service account")
	}
	h.assertNoSecretsLogged(password, base64.StdEncoding.EncodeToString([]byte(svcUser+":"+password)))
}

func TestServiceAccountPermanentToken(t *testing.T) {
	h := newHarness(t, withService(nil), func(o *harnessOpts) { o.idp.UnlimitedClients = []string{svcClient} })
	h.do(&http.Client{}, "GET", "/api/reports/a", nil)
	h.clock.Advance(400 * 24 * time.Hour)
	h.do(&http.Client{}, "GET", "/api/reports/b", nil)
	if n := len(h.idp.TokenRequests()); n != 1 {
		t.Fatalf("token calls = %d for a 20-year token, want 1", n)
	}
	if got := h.metric("twc_auth_proxy_service_token_remaining_seconds", nil); got < 19*365*24*3600 {
		t.Errorf("remaining_seconds = %v, want about 20 years", got)
	}
}

func TestServiceAccountRoutesAndUserPrecedence(t *testing.T) {
	h := newHarness(t, withService(nil))
	// Outside its routes the service account does nothing.
	resp, _ := h.fetch(&http.Client{}, "/api/other")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("non-service route: got %d, want 401", resp.StatusCode)
	}
	resp, _ = h.fetch(&http.Client{}, "/api/reports/../other")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("dot-dot path: got %d, want 401", resp.StatusCode)
	}
	// A signed-in user on a service route is served as the user.
	c := h.browser()
	h.login(c, "/", testUser, testPassword)
	h.fetch(c, "/api/reports/mine")
	if p := mustPayload(t, tokenOf(t, h.lastUpstream())); !strings.Contains(string(p), `"sub":"`+testUser+`"`) {
		t.Fatalf("user session did not win: %s", p)
	}
}

// TestServiceAccountKeepsOneTWCSession checks the license-seat rule: TWC
// REST opens a session (and takes a seat) for a token it has not seen with
// a session cookie; service traffic must reuse one session.
func TestServiceAccountKeepsOneTWCSession(t *testing.T) {
	var sessions atomic.Int32
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if c, err := r.Cookie("twc-rest-session-id"); err == nil && strings.HasPrefix(c.Value, "seat-") {
				w.WriteHeader(http.StatusOK)
				return
			}
			n := sessions.Add(1)
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", n), Path: "/osmc"})
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-current-user", Value: svcUser, Path: "/osmc"})
			w.WriteHeader(http.StatusNoContent)
		}
	})
	for i := range 20 {
		resp, _ := h.do(&http.Client{}, "GET", "/osmc/workspaces", http.Header{"Cookie": {fmt.Sprintf("caller=%d", i)}})
		if resp.StatusCode >= 300 {
			t.Fatalf("request %d: got %d", i, resp.StatusCode)
		}
		if sc := resp.Header.Values("Set-Cookie"); len(sc) != 0 {
			t.Fatalf("service identity's cookies handed to a caller: %q", sc)
		}
	}
	if n := sessions.Load(); n != 1 {
		t.Fatalf("TWC sessions opened = %d for 20 service requests, want 1", n)
	}
	last := h.lastUpstream().Header.Get("Cookie")
	if !strings.Contains(last, "caller=19") || !strings.Contains(last, "twc-rest-session-id=seat-1") {
		t.Errorf("upstream Cookie = %q, want the caller's cookie plus the service session", last)
	}
	// An HTTP/1.1 caller may send several Cookie lines: all of them go on,
	// in the one line that carries the service session.
	h.do(&http.Client{}, "GET", "/osmc/workspaces", http.Header{"Cookie": {"a=1", "b=2"}})
	if got := h.lastUpstream().Header["Cookie"]; len(got) != 1 || got[0] != "a=1; b=2; twc-rest-session-id=seat-1; twc-rest-current-user="+svcUser {
		t.Errorf("upstream Cookie lines = %q, want one: the caller's two cookies, then the service session's", got)
	}
}

// A caller's own TWC REST cookies never go upstream with the service
// token: TWC could run the request in the caller's session, and the jar
// would keep that session as the service identity's.
func TestServiceAccountDropsCallersTWCCookies(t *testing.T) {
	var sessions atomic.Int32
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if c, err := r.Cookie("twc-rest-session-id"); err == nil {
				w.Write([]byte(c.Value))
				return
			}
			n := sessions.Add(1)
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", n), Path: "/osmc"})
			w.Write([]byte("new"))
		}
	})
	callers := http.Header{"Cookie": {"twc-rest-session-id=mallory-seat; twc-rest-current-user=mallory; pref=1"}}
	for i, want := range []string{"new", "seat-1", "seat-1"} {
		_, body := h.do(&http.Client{}, "GET", "/osmc/workspaces", callers)
		if body != want {
			t.Fatalf("request %d: upstream saw session %q, want %q", i, body, want)
		}
		cookie := h.lastUpstream().Header.Get("Cookie")
		if strings.Contains(cookie, "mallory") || !strings.Contains(cookie, "pref=1") {
			t.Fatalf("request %d: upstream Cookie %q: want the caller's other cookies, none of its TWC ones", i, cookie)
		}
	}
}

func TestAPITokens(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) {
		o.idp.ClientIDs = append(o.idp.ClientIDs, "twc-rest-api")
		o.cfg = func(c *Config) {
			c.APITokens = APITokens{Enabled: true, Audiences: []string{testClientID, "twc-rest-api"}}
		}
	})
	good := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	restAud := h.idp.MintIDToken(testUser, "twc-rest-api", time.Hour)
	now := h.clock.Now()
	claims := func(aud string, exp time.Time) map[string]any {
		return map[string]any{"sub": testUser, "aud": aud, "iss": h.idp.Issuer(), "iat": now.Unix(), "exp": exp.Unix()}
	}
	tests := []struct {
		name   string
		header []string
		ok     bool
	}{
		{"Token", []string{"Token " + good}, true},
		{"Bearer", []string{"Bearer " + good}, true},
		{"lower-case scheme", []string{"token " + good}, true},
		{"second audience", []string{"Token " + restAud}, true},
		{"bad signature", []string{"Token " + good[:len(good)-4] + "AAAA"}, false},
		{"other audience", []string{"Token " + h.idp.SignJWT(map[string]any{"alg": "RS256"}, claims("someone-else", now.Add(time.Hour)))}, false},
		{"wrong issuer", []string{"Token " + h.idp.SignJWT(map[string]any{"alg": "RS256"}, map[string]any{"sub": testUser, "aud": testClientID, "iss": "https://evil.example/authentication", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})}, false},
		{"expired", []string{"Token " + h.idp.SignJWT(map[string]any{"alg": "RS256"}, claims(testClientID, now.Add(-time.Minute)))}, false},
		{"alg none", []string{"Token " + h.idp.SignJWT(map[string]any{"alg": "none"}, claims(testClientID, now.Add(time.Hour)))}, false},
		{"HS256 with the public key", []string{"Token " + h.idp.SignJWT(map[string]any{"alg": "HS256"}, claims(testClientID, now.Add(time.Hour)))}, false},
		{"garbage", []string{"Token not-a-jwt"}, false},
		{"basic", []string{"Basic YTpi"}, false},
		{"two headers", []string{"Token " + good, "Token " + good}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.upstreamSeen())
			resp, body := h.do(&http.Client{}, "GET", "/osmc/login", http.Header{"Authorization": tt.header})
			reached := len(h.upstreamSeen()) > before
			if !tt.ok {
				if resp.StatusCode != http.StatusUnauthorized || reached || !strings.Contains(body, "invalid_token") {
					t.Fatalf("got %d (reached upstream: %v) %s, want 401 JSON and no forwarding", resp.StatusCode, reached, body)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || !reached {
				t.Fatalf("got %d %s, want the token accepted", resp.StatusCode, body)
			}
			want := strings.TrimSpace(tt.header[0][strings.Index(tt.header[0], " "):])
			if got := tokenOf(t, h.lastUpstream()); got != want {
				t.Error("upstream did not get the caller's token as Token")
			}
		})
	}
}

func TestAPITokensDisabledStripsAuthorization(t *testing.T) {
	h := newHarness(t)
	good := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	resp, _ := h.do(&http.Client{}, "GET", "/osmc/login", http.Header{"Authorization": {"Token " + good}})
	if resp.StatusCode != http.StatusUnauthorized || len(h.upstreamSeen()) != 0 {
		t.Fatalf("got %d, want 401 without forwarding", resp.StatusCode)
	}
	c := h.browser()
	h.login(c, "/", testUser, testPassword)
	h.do(c, "GET", "/x", http.Header{"Authorization": {"Token " + good}})
	if got := tokenOf(t, h.lastUpstream()); got == good {
		t.Error("a caller's Authorization passed through while api_tokens is disabled")
	}
}

// TestServiceAccountTokenRejectedUpstream: TWC REST stops accepting a
// long-lived service token (revoked, keystore changed). The 401 drops the
// token and the TWC session it opened; the next request gets a new token.
func TestServiceAccountTokenRejectedUpstream(t *testing.T) {
	var revoked atomic.Value // the token TWC no longer accepts
	revoked.Store("")
	var sessions atomic.Int32
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.idp.UnlimitedClients = []string{svcClient}
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if strings.TrimPrefix(r.Header.Get("Authorization"), "Token ") == revoked.Load() {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if _, err := r.Cookie("twc-rest-session-id"); err != nil {
				http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", sessions.Add(1)), Path: "/"})
			}
			w.WriteHeader(http.StatusOK)
		}
	})
	get := func(want int) upstreamRequest {
		t.Helper()
		if resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != want {
			t.Fatalf("got %d %s, want %d", resp.StatusCode, body, want)
		}
		return h.lastUpstream()
	}
	first := tokenOf(t, get(http.StatusOK))
	get(http.StatusOK)
	revoked.Store(first)
	h.clock.Advance(24 * time.Hour)
	get(http.StatusUnauthorized) // TWC's answer reaches the caller
	next := get(http.StatusOK)
	if tokenOf(t, next) == first || h.idp.TokenCalls("client_credentials") != 2 {
		t.Fatalf("the rejected token was not replaced (client_credentials calls %d)", h.idp.TokenCalls("client_credentials"))
	}
	if c := next.Header.Get("Cookie"); strings.Contains(c, "seat-1") {
		t.Errorf("the rejected token's TWC session was sent with the new token: Cookie %q", c)
	}
	if c := get(http.StatusOK).Header.Get("Cookie"); !strings.Contains(c, "twc-rest-session-id=seat-2") {
		t.Errorf("the new token's TWC session is not kept: Cookie %q", c)
	}
	if len(h.logs.FilterMessage("upstream rejected the service account token; dropped it and its TWC session").All()) != 1 {
		t.Error("no log line for the dropped token")
	}
}

// An answer that comes back after its token (and TWC session) was dropped
// belongs to the dropped session: a session cookie it sets must not land in
// the new jar, or the new token would go with the rejected token's session.
func TestServiceAccountLateAnswerAfterDrop(t *testing.T) {
	release := make(chan struct{})
	var sessions atomic.Int32
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.idp.UnlimitedClients = []string{svcClient}
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/api/reports/slow":
				<-release
				http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: "seat-late", Path: "/"})
			case "/api/reports/reject":
				w.WriteHeader(http.StatusUnauthorized)
				return
			default:
				if c, err := r.Cookie("twc-rest-session-id"); err == nil {
					io.WriteString(w, c.Value)
					return
				}
				http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", sessions.Add(1)), Path: "/"})
			}
			io.WriteString(w, "new")
		}
	})
	if _, body := h.do(&http.Client{}, "GET", "/api/reports/first", nil); body != "new" {
		t.Fatalf("first request: %q", body)
	}
	slow := make(chan struct{})
	go func() {
		defer close(slow)
		h.do(&http.Client{}, "GET", "/api/reports/slow", nil)
	}()
	for len(h.upstreamSeen()) < 2 { // the slow request is upstream
		time.Sleep(5 * time.Millisecond)
	}
	if resp, _ := h.do(&http.Client{}, "GET", "/api/reports/reject", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("got %d, want the upstream's 401", resp.StatusCode)
	}
	close(release)
	<-slow
	if _, body := h.do(&http.Client{}, "GET", "/api/reports/check", nil); body != "new" {
		t.Fatalf("after the drop the upstream saw session %q, want none (a new one opened)", body)
	}
}

// TestServiceAccountUpstreamAlways401: an upstream that rejects every token
// (twc-rest-api not allowed, say) must not turn requests into token-endpoint
// calls: a rejected token is dropped at most once per backoff step.
func TestServiceAccountUpstreamAlways401(t *testing.T) {
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }
	})
	for range 30 {
		if resp, _ := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("got %d, want the upstream's 401", resp.StatusCode)
		}
	}
	// The first token, and the one that replaced it at the first 401.
	if n := len(h.idp.TokenRequests()); n != 2 {
		t.Fatalf("token calls = %d for 30 requests within the first backoff, want 2", n)
	}
	h.clock.Advance(serviceBackoffFirst)
	for range 30 {
		h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	}
	if n := len(h.idp.TokenRequests()); n != 3 {
		t.Fatalf("token calls = %d after the first backoff, want 3", n)
	}
}

// TestServiceAccountTokenDropsAreCounted: an upstream that refuses the
// service account's tokens (TWC REST without twc-rest-api among its
// clients, a replaced keystore) makes every service request fail with 401.
// Each token the proxy drops for it is counted in
// twc_auth_proxy_service_token_drops_total, once per drop (not per
// request), so that an alert can see what the 401s of requests_total,
// mixed with every unauthenticated caller's, cannot tell.
func TestServiceAccountTokenDropsAreCounted(t *testing.T) {
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusUnauthorized) }
	})
	if got := h.metric("twc_auth_proxy_service_token_drops_total", nil); got != 0 {
		t.Fatalf("service_token_drops_total = %v at start, want 0", got)
	}
	for range 10 {
		h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	}
	if got := h.metric("twc_auth_proxy_service_token_drops_total", nil); got != 1 {
		t.Errorf("service_token_drops_total = %v after 10 refused requests within the hold, want 1", got)
	}
	h.clock.Advance(serviceBackoffFirst)
	for range 10 {
		h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	}
	if got := h.metric("twc_auth_proxy_service_token_drops_total", nil); got != 2 {
		t.Errorf("service_token_drops_total = %v after the hold, want 2", got)
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "twc_auth_proxy_service_token_drops_total" && len(mf.GetMetric()[0].GetLabel()) != 0 {
			t.Errorf("service_token_drops_total has labels %v, want none", mf.GetMetric()[0].GetLabel())
		}
	}
}

// TestServiceAccountDropNamesTheRequest: the warning that the upstream
// refused the service token names the request whose 401 made the proxy
// drop it, so that the operator finds its request line (path, caller).
func TestServiceAccountDropNamesTheRequest(t *testing.T) {
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/reports/refused" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		}
	})
	h.do(&http.Client{}, "GET", "/api/reports/fine", nil)
	h.do(&http.Client{}, "GET", "/api/reports/refused", nil)
	warned := h.logs.FilterMessage("upstream rejected the service account token; dropped it and its TWC session").All()
	if id := h.requestLine("/api/reports/refused")["request_id"]; len(warned) != 1 || warned[0].ContextMap()["request_id"] != id {
		t.Errorf("drop warnings %v, want one with request_id %v", warned, id)
	}
}

// TestServiceAccountShortLivedToken: a token that lives no longer than
// refresh_margin is still reused for half its life, not fetched anew for
// every request.
func TestServiceAccountShortLivedToken(t *testing.T) {
	h := newHarness(t, withService(nil), func(o *harnessOpts) { o.idp.TokenTTL = 20 * time.Second }) // margin 30 s
	get := func() string {
		t.Helper()
		if resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
		return tokenOf(t, h.lastUpstream())
	}
	first := get()
	for range 9 {
		if get() != first {
			t.Fatal("a 20 s token was not reused")
		}
	}
	h.clock.Advance(9 * time.Second)
	if get() != first || len(h.idp.TokenRequests()) != 1 {
		t.Fatalf("token calls = %d within the first half of a 20 s token, want 1", len(h.idp.TokenRequests()))
	}
	h.clock.Advance(2 * time.Second) // 11 s: past half its life
	if get() == first || h.idp.TokenCalls("refresh_token") != 1 {
		t.Fatalf("the token was not renewed past half its life (refresh calls %d)", h.idp.TokenCalls("refresh_token"))
	}
}

// TestServiceAccountNoExpiredTokenAfterFailedRenewal: a renewal that fails
// after the token it was to replace expired (a slow auth server, up to two
// auth.timeout) must not hand that token to the upstream: a token is served
// while a renewal fails only as long as it is still valid.
func TestServiceAccountNoExpiredTokenAfterFailedRenewal(t *testing.T) {
	h := newHarness(t, withService(nil)) // 5 min tokens, 30 s margin
	if resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	first := tokenOf(t, h.lastUpstream())
	h.clock.Advance(4*time.Minute + 40*time.Second) // due, 20 s left
	h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusServiceUnavailable})
	// The token expires while the renewal waits for the auth server: the
	// clock moves on before its first answer reaches the proxy.
	var advance sync.Once
	h.auth.client.Transport = afterTokenCall(func() { advance.Do(func() { h.clock.Advance(30 * time.Second) }) })
	before := len(h.upstreamSeen())
	resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil)
	if h.idp.TokenCalls("refresh_token") == 0 {
		t.Fatal("no renewal was attempted: the case tests nothing")
	}
	for _, u := range h.upstreamSeen()[before:] {
		if tokenOf(t, u) == first {
			t.Fatal("the upstream got the service token after it expired")
		}
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "service_account_unavailable") {
		t.Fatalf("got %d %s, want 503 service_account_unavailable", resp.StatusCode, body)
	}
}

// TestServiceAccountDroppedTokenNotServedAfterFailedRenewal: a token that
// TWC rejected (401) while a renewal was under way is dropped; when that
// renewal then fails, the requests that waited for it must not go with the
// dropped token (each would get TWC's 401 again), but get the 503 of an
// unavailable service account, as requests after the drop do.
func TestServiceAccountDroppedTokenNotServedAfterFailedRenewal(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	h := newHarness(t, withService(nil), func(o *harnessOpts) { // 5 min tokens, 30 s margin
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/reports/slow" {
				close(arrived)
				<-release
				w.WriteHeader(http.StatusUnauthorized) // TWC: this token is revoked
			}
		}
	})
	if resp, body := h.do(&http.Client{}, "GET", "/api/reports/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
	first := tokenOf(t, h.lastUpstream())
	slow := make(chan int)
	go func() {
		resp, _ := h.do(&http.Client{}, "GET", "/api/reports/slow", nil)
		slow <- resp.StatusCode
	}()
	<-arrived
	h.clock.Advance(4*time.Minute + 40*time.Second) // due, 20 s left
	h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusServiceUnavailable})
	// While the renewal waits for the auth server, TWC rejects the token:
	// the auth server's first answer reaches the proxy only once the slow
	// request has had TWC's 401, which the proxy answers after the drop.
	slowCode := make(chan int, 1)
	var reject sync.Once
	h.auth.client.Transport = afterTokenCall(func() {
		reject.Do(func() {
			close(release)
			slowCode <- <-slow
		})
	})
	before := len(h.upstreamSeen())
	resp, body := h.do(&http.Client{}, "GET", "/api/reports/y", nil)
	if h.idp.TokenCalls("refresh_token") == 0 {
		t.Fatal("no renewal was attempted: the case tests nothing")
	}
	if code := <-slowCode; code != http.StatusUnauthorized {
		t.Fatalf("the slow request: got %d, want TWC's 401", code)
	}
	for _, u := range h.upstreamSeen()[before:] {
		if u.URI == "/api/reports/y" && tokenOf(t, u) == first {
			t.Error("the upstream got the service token after it was dropped on TWC's 401")
		}
	}
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "service_account_unavailable") {
		t.Errorf("got %d %s, want 503 service_account_unavailable", resp.StatusCode, body)
	}
}

// afterTokenCall is a transport for the auth server's client that runs
// hook once the token endpoint has answered, before the proxy reads the
// answer: what hook does happens while a token call is under way, however
// slow the machine.
type afterTokenCall func()

func (hook afterTokenCall) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if strings.HasSuffix(r.URL.Path, "/api/token") {
		hook()
	}
	return resp, err
}
