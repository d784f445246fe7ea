package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"go.uber.org/zap"
)

// localLocation reports whether a Location header stays on the proxy's
// origin however a browser reads it.
func localLocation(loc string) bool {
	if loc == "" || loc[0] != '/' || len(loc) > 1 && (loc[1] == '/' || loc[1] == '\\') {
		return false
	}
	for i := 0; i < len(loc); i++ {
		if c := loc[i]; c <= 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	u, err := url.Parse(loc)
	return err == nil && u.Scheme == "" && u.Host == "" && !strings.HasPrefix(u.Path, "//")
}

func openRedirectCorpus(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("testdata/openredirects.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := strconv.Unquote(line)
		if err != nil {
			t.Fatalf("testdata/openredirects.txt:%d: %v", i+1, err)
		}
		out = append(out, s)
	}
	if len(out) < 40 {
		t.Fatalf("corpus has %d payloads, want at least 40", len(out))
	}
	return out
}

// TestOpenRedirectCorpus sends every payload through /oauth2/start?rd= and
// the state of a real login: the Location after the callback is local.
func TestOpenRedirectCorpus(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	for _, payload := range openRedirectCorpus(t) {
		t.Run(strconv.Quote(payload), func(t *testing.T) {
			if got, ok := safeReturnPath(payload); ok && !localLocation(got) {
				t.Fatalf("safeReturnPath accepted %q", payload)
			}
			resp, _ := h.navigate(c, "/oauth2/start?rd="+url.QueryEscape(payload))
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, _ = h.navigate(c, cb.String())
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !localLocation(loc) {
				t.Fatalf("got %d to %q, want 302 to a local path", resp.StatusCode, loc)
			}
		})
	}
	// The automatic login of a navigation keeps its request path: a
	// request line of //evil must not come back as Location //evil.
	resp := rawNavigation(t, h.proxy.URL, "//evil.example/x")
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("got %d, want 302 to sign in", resp.StatusCode)
	}
	c.Jar.SetCookies(mustURL(h.proxy.URL), resp.Cookies())
	cb := h.signInAt(c, resp, testUser, testPassword)
	resp, _ = h.navigate(c, cb.String())
	if loc := resp.Header.Get("Location"); loc != "/" {
		t.Fatalf("Location after login = %q, want /", loc)
	}
}

// rawNavigation sends a browser navigation with the target as written.
func rawNavigation(t *testing.T, base, target string, headers ...string) *http.Response {
	t.Helper()
	return rawRequest(t, base, "GET", target, append([]string{"Accept: text/html", "Sec-Fetch-Mode: navigate"}, headers...)...)
}

func TestHostHeadersCannotMoveRedirects(t *testing.T) {
	h := newHarness(t)
	resp := rawNavigation(t, h.proxy.URL, "/dash", "Host: evil.example", "X-Forwarded-Host: evil.example", "X-Forwarded-Uri: //evil.example/", "X-Forwarded-Proto: https")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("got %d %v", resp.StatusCode, err)
	}
	if got := loc.Query().Get("redirect_uri"); got != h.proxy.URL+"/oauth2/callback" {
		t.Errorf("redirect_uri = %q, want the configured one", got)
	}
}

// TestHostileIDTokens is in the spirit of the OpenID relying-party
// certification: each token must fail the login with a clear page, create
// no session and never reach the upstream.
func TestHostileIDTokens(t *testing.T) {
	type mint func(h *harness, sub, aud, nonce string) string
	claims := func(h *harness, sub, aud string, mods map[string]any) map[string]any {
		now := h.clock.Now()
		c := map[string]any{"sub": sub, "aud": aud, "iss": h.idp.Issuer(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
		for k, v := range mods {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	rs := map[string]any{"alg": "RS256"}
	tests := []struct {
		name string
		mint mint
		auth func(*AuthConfig)
	}{
		{"bad signature", func(h *harness, sub, aud, _ string) string {
			tok := h.idp.SignJWT(rs, claims(h, sub, aud, nil))
			return tok[:len(tok)-6] + "AAAAAA"
		}, nil},
		{"alg none", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(map[string]any{"alg": "none"}, claims(h, sub, aud, nil))
		}, nil},
		{"HS256 keyed with the public key", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(map[string]any{"alg": "HS256"}, claims(h, sub, aud, nil))
		}, nil},
		{"unknown kid", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(map[string]any{"alg": "RS256", "kid": "not-a-key"}, claims(h, sub, aud, nil))
		}, nil},
		{"wrong issuer", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"iss": "https://evil.example/authentication"}))
		}, nil},
		{"wrong audience", func(h *harness, sub, _, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, "someone-else", nil))
		}, nil},
		{"extra audience, azp of another client", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"aud": []string{aud, "other"}, "azp": "other"}))
		}, nil},
		{"extra audience, no azp", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"aud": []string{aud, "other"}}))
		}, nil},
		{"expired", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"exp": h.clock.Now().Add(-time.Second).Unix()}))
		}, nil},
		{"issued in the future beyond skew", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"iat": h.clock.Now().Add(10 * time.Minute).Unix(), "exp": h.clock.Now().Add(time.Hour).Unix()}))
		}, nil},
		{"wrong nonce", func(h *harness, sub, aud, nonce string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"nonce": nonce + "x"}))
		}, nil},
		{"missing nonce when required", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, nil))
		}, func(c *AuthConfig) { c.RequireNonce = true }},
		{"missing sub", func(h *harness, sub, aud, _ string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"sub": nil}))
		}, nil},
		{"not a JWT", func(*harness, string, string, string) string { return "garbage" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(o *harnessOpts) { o.authCfg = tt.auth })
			h.idp.SetFaults(authtest.Faults{IDToken: func(sub, aud, nonce string) string { return tt.mint(h, sub, aud, nonce) }})
			c := h.browser()
			resp, _ := h.navigate(c, "/secret")
			cb := h.signInAt(c, resp, testUser, testPassword)
			resp, body := h.navigate(c, cb.String())
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "could not be verified") {
				t.Fatalf("got %d, want 401 with a clear page; %s", resp.StatusCode, body)
			}
			if h.hasSession(c) || len(h.upstreamSeen()) != 0 {
				t.Fatal("hostile token created a session or reached the upstream")
			}
			if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "invalid_token"}); got != 1 {
				t.Errorf("logins_total{invalid_token} = %v, want 1", got)
			}
		})
	}
	// The same harness shape accepts a well-formed token minted the same
	// way, so the failures above are the flaws', not the harness's.
	t.Run("control: well-formed token", func(t *testing.T) {
		h := newHarness(t)
		h.idp.SetFaults(authtest.Faults{IDToken: func(sub, aud, nonce string) string {
			return h.idp.SignJWT(rs, claims(h, sub, aud, map[string]any{"nonce": nonce, "aud": []string{aud, "other"}, "azp": aud}))
		}})
		if resp, body := h.login(h.browser(), "/ok", testUser, testPassword); resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d %s", resp.StatusCode, body)
		}
	})
}

func TestProviderKeyRotation(t *testing.T) {
	h, _ := signedIn(t, func(o *harnessOpts) {})
	if err := h.idp.RotateKey(); err != nil {
		t.Fatal(err)
	}
	// A login with a token signed by the new key succeeds without restart.
	if resp, body := h.login(h.browser(), "/after-rotation", "bob", "bob-pw"); resp.StatusCode != http.StatusOK {
		t.Fatalf("login after key rotation: got %d %s", resp.StatusCode, body)
	}
}

func TestJWKSUnreachableWithCachedKeys(t *testing.T) {
	h, _ := signedIn(t) // the first login cached the key
	h.idp.SetFaults(authtest.Faults{JWKSStatus: http.StatusServiceUnavailable})
	if resp, body := h.login(h.browser(), "/cached", "bob", "bob-pw"); resp.StatusCode != http.StatusOK {
		t.Fatalf("login with cached keys while JWKS is down: got %d %s", resp.StatusCode, body)
	}
}

func TestLoginWhileAuthServerFails(t *testing.T) {
	tests := []struct {
		name   string
		faults authtest.Faults
		stop   bool
		status int
	}{
		{"token endpoint 500", authtest.Faults{TokenStatus: http.StatusInternalServerError}, false, http.StatusBadGateway},
		{"token endpoint 429", authtest.Faults{TokenStatus: http.StatusTooManyRequests}, false, http.StatusBadGateway},
		{"jwks.json 503", authtest.Faults{JWKSStatus: http.StatusServiceUnavailable}, false, http.StatusBadGateway},
		{"malformed JSON", authtest.Faults{MalformedJSON: true}, false, http.StatusBadGateway},
		{"slow token endpoint", authtest.Faults{TokenDelay: 10 * time.Second}, false, http.StatusGatewayTimeout},
		{"auth server gone", authtest.Faults{}, true, http.StatusBadGateway},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t)
			if tt.faults.TokenDelay > 0 {
				// Once discovery is done, which on a loaded machine may
				// take longer. The other faults keep the harness's 10 s:
				// their answers (a 500, a token before the JWKS fails)
				// must come within it.
				h.auth.cfg.Timeout = 300 * time.Millisecond
			}
			c := h.browser()
			resp, _ := h.navigate(c, "/x")
			cb := h.signInAt(c, resp, testUser, testPassword)
			h.idp.SetFaults(tt.faults)
			if tt.stop {
				h.idp.Close()
			}
			start := time.Now()
			resp, body := h.navigate(c, cb.String())
			if resp.StatusCode != tt.status || !strings.Contains(body, "Sign-in failed") {
				t.Fatalf("got %d, want %d with a clear page; %s", resp.StatusCode, tt.status, body)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answer took %v; the auth timeout is 300ms", d)
			}
			if h.hasSession(c) {
				t.Error("session created")
			}
			h.idp.SetFaults(authtest.Faults{})
			h.proxy.CloseClientConnections()
			h.upstream.CloseClientConnections()
			c.CloseIdleConnections()
			http.DefaultClient.CloseIdleConnections()
			h.server.rp.Transport.(*http.Transport).CloseIdleConnections()
			h.auth.client.CloseIdleConnections()
		})
	}
}

// TestReusedRefreshTokenEndsSession: another replica (or a thief) spent the
// session's refresh token first; the rotating auth server calls our use a
// reuse and revokes the grant. The session ends cleanly.
func TestReusedRefreshTokenEndsSession(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = true })
	// Spend the refresh token behind the proxy's back.
	rt := h.sessionOf(c).RefreshToken
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {testClientID}}
	req, _ := http.NewRequest("POST", h.idp.Issuer()+"/api/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Auth-Secret", testSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("out-of-band refresh: %v %v", resp, err)
	}
	h.clock.Advance(4*time.Minute + 45*time.Second)
	resp, _ := h.fetch(c, "/after")
	if resp.StatusCode != http.StatusUnauthorized || h.hasSession(c) {
		t.Fatalf("got %d (session kept: %v), want 401 and the session cleared", resp.StatusCode, h.hasSession(c))
	}
}

func TestRefusedUpgradeLeavesNoOpenTunnel(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "" {
				http.Error(w, "no websockets here", http.StatusForbidden)
				return
			}
			io.WriteString(w, "auth="+r.Header.Get("Authorization"))
		}
	})
	u := mustURL(h.proxy.URL)
	cookies := h.cookieHeader(c)
	conn := h.dialProxy()
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+u.Host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: "+cookies+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade: got %d, want the upstream's 403", resp.StatusCode)
	}
	// The same connection, no cookie: this request must be judged afresh.
	io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		return // the proxy closed the connection: also fine
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow-up request on the refused-upgrade connection: got %d %q, want 401", resp.StatusCode, b)
	}
}

// FuzzSafeReturnPath: whatever it accepts stays on the proxy's origin.
func FuzzSafeReturnPath(f *testing.F) {
	for _, s := range []string{"/", "/a?b=c", "//evil", "/\\evil", "/%2F%2Fevil", "https:evil", "/\t/evil", "/\u3031evil", "/?\\evil", "/a\\b?c\\d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rd string) {
		got, ok := safeReturnPath(rd)
		if ok && (got != rd || !localLocation(got)) {
			t.Fatalf("safeReturnPath(%q) accepted %q", rd, got)
		}
		if got, ok := safeReturnPath(escapeQueryBackslashes(rd)); ok && !localLocation(got) {
			t.Fatalf("safeReturnPath(escapeQueryBackslashes(%q)) accepted %q", rd, got)
		}
	})
}

// TestMalformedRequestBodyIsTheClientsError: a request body the proxy
// cannot read (a chunk size that overflows, is negative, or has an
// extension longer than Go allows) is the client's fault. It gets a 400,
// not a 502 saying the application could not be reached, and it is not
// counted or logged as an upstream failure, which the README says to alert
// on: any signed-in user (or anyone on a skip_auth path) could otherwise
// raise that alert at will. The proxy keeps serving the next request.
func TestMalformedRequestBodyIsTheClientsError(t *testing.T) {
	h, c := signedIn(t)
	u := mustURL(h.proxy.URL)
	cookies := h.cookieHeader(c)
	for name, body := range map[string]string{
		"size overflows": "FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n",
		"negative size":  "-1\r\nabc\r\n0\r\n\r\n",
		"huge extension": "3;" + strings.Repeat("x", 100<<10) + "\r\nabc\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			conn := h.dialProxy()
			io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\n"+
				"Transfer-Encoding: chunked\r\nCookie: "+cookies+"\r\n\r\n"+body)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"bad_request"`) {
				t.Errorf("got %d %s, want 400 bad_request", resp.StatusCode, b)
			}
		})
	}
	if got := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "unreachable"}); got != 0 {
		t.Errorf("upstream_errors_total{unreachable} = %v, want 0: the upstream did nothing wrong", got)
	}
	if n := h.logs.FilterMessage("upstream request failed").Len(); n != 0 {
		t.Errorf("%d \"upstream request failed\" lines for the client's bad bodies", n)
	}
	if resp, body := h.fetch(c, "/after"); resp.StatusCode != http.StatusOK {
		t.Errorf("next request: %d %s", resp.StatusCode, body)
	}
}

// TestHostileCallbacksLogNoWarnings: anyone can send a browser, or a
// script, to the callback with a made-up state or code, an error of their
// choosing, or a real sign-in's state and a forged code. Each such request
// is one client's mistake: counted in logins_total by its result and logged
// at info with its request_id, never at warn, where a loop of them would
// bury what the operator must act on. A failure only the proxy's own set-up
// or the auth server can cause (the token endpoint refusing the proxy's
// client, or failing) is still a warning.
func TestHostileCallbacksLogNoWarnings(t *testing.T) {
	h := newHarness(t)
	c := h.browser()
	const rounds = 10
	for range rounds {
		// A sign-in this client started, for the callbacks that need its state.
		resp, _ := h.navigate(c, "/oauth2/start?rd=/")
		state := mustURL(resp.Header.Get("Location")).Query().Get("state")
		for _, q := range []url.Values{
			{"state": {"forged"}, "code": {"x"}},                    // state_mismatch
			{"state": {"a", "b"}, "code": {"x"}},                    // bad_request
			{"error": {"access_denied"}, "state": {"forged"}},       // provider_error, not its sign-in
			{"state": {state}, "code": {"forged-or-replayed-code"}}, // exchange_rejected: invalid_grant
		} {
			h.navigate(c, "/oauth2/callback?"+q.Encode())
		}
		resp, _ = h.navigate(c, "/oauth2/start?rd=/")
		state = mustURL(resp.Header.Get("Location")).Query().Get("state")
		h.navigate(c, "/oauth2/callback?"+url.Values{"error": {"system_error"}, "state": {state}}.Encode()) // provider_error
	}
	for result, want := range map[string]float64{"state_mismatch": rounds, "bad_request": rounds, "provider_error": 2 * rounds, "exchange_rejected": rounds} {
		if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": result}); got != want {
			t.Errorf("logins_total{result=%q} = %v, want %v", result, got, want)
		}
	}
	for _, e := range h.logs.FilterLevelExact(zap.WarnLevel).All() {
		t.Errorf("warning for a client's callback: %s %v", e.Message, e.ContextMap())
	}
	for _, e := range h.logs.FilterLevelExact(zap.ErrorLevel).All() {
		t.Errorf("error for a client's callback: %s %v", e.Message, e.ContextMap())
	}
	failed := h.logs.FilterMessage("login failed").All()
	if len(failed) != 5*rounds {
		t.Fatalf("got %d \"login failed\" lines, want %d", len(failed), 5*rounds)
	}
	for _, e := range failed {
		if id, _ := e.ContextMap()["request_id"].(string); e.Level != zap.InfoLevel || id == "" {
			t.Errorf("login failed at %s with request_id %q, want info with one", e.Level, id)
		}
	}

	// The token endpoint refusing the proxy itself (its client secret) is
	// for the operator: a warning, with the request's id.
	h.idp.SetFaults(authtest.Faults{TokenStatus: http.StatusUnauthorized, TokenErrorCode: "invalid_client"})
	resp, _ := h.navigate(c, "/x")
	cb := h.signInAt(c, resp, testUser, testPassword)
	if resp, _ := h.navigate(c, cb.String()); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("callback with the client refused: got %d, want 401", resp.StatusCode)
	}
	warned := h.logs.FilterLevelExact(zap.WarnLevel).FilterMessage("login failed").FilterField(zap.String("result", "exchange_rejected")).All()
	if len(warned) != 1 || warned[0].ContextMap()["request_id"] == "" {
		t.Errorf("token endpoint refusing the client: warnings %v, want one with the request_id", warned)
	}
}

// TestCallbackClientGoneIsNotAnAuthServerError: a flow cookie can be sent
// again for its whole life, so a client can fire callbacks with a made-up
// code and hang up at once, in a loop. The hang-up must not cancel the code
// exchange halfway and so turn into "the auth server failed": that is
// auth_server_error, which the operator alerts on, with a warning each.
// The exchange runs to the auth server's answer (the code is spent either
// way), and that answer is what is counted and logged: here an
// invalid_grant, at info.
func TestCallbackClientGoneIsNotAnAuthServerError(t *testing.T) {
	noLeaks(t)
	h := newHarness(t)
	c := h.browser()
	resp, _ := h.navigate(c, "/oauth2/start?rd=/")
	state := mustURL(resp.Header.Get("Location")).Query().Get("state")
	u := mustURL(h.proxy.URL)
	cookies := h.cookieHeader(c)
	const calls = 20
	for range calls {
		conn := h.dialProxy()
		io.WriteString(conn, "GET /oauth2/callback?"+url.Values{"state": {state}, "code": {"made-up"}}.Encode()+
			" HTTP/1.1\r\nHost: "+u.Host+"\r\nCookie: "+cookies+"\r\n\r\n")
		conn.Close()
	}
	if !waitFor(10*time.Second, func() bool { return h.logs.FilterMessage("login failed").Len() >= calls }) {
		t.Fatalf("%d of %d callbacks logged", h.logs.FilterMessage("login failed").Len(), calls)
	}
	if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "auth_server_error"}); got != 0 {
		t.Errorf("logins_total{auth_server_error} = %v for clients that hung up, want 0", got)
	}
	if got := h.metric("twc_auth_proxy_logins_total", map[string]string{"result": "exchange_rejected"}); got != calls {
		t.Errorf("logins_total{exchange_rejected} = %v, want %d", got, calls)
	}
	for _, e := range h.logs.FilterLevelExact(zap.WarnLevel).All() {
		t.Errorf("warning for a client that hung up: %s %v", e.Message, e.ContextMap())
	}
}
