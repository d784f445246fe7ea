package authtest_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

func TestAuthorizeRejects(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	pkce := start(t, authtest.Options{AdvertisePKCE: true})
	for _, tc := range []struct {
		name     string
		s        *authtest.Server
		mod      func(url.Values)
		status   int
		page     string // for 400: text the error page must show
		redirErr string // for 302: the error= sent back to the client
	}{
		{"unknown client", s, func(v url.Values) { v.Set("client_id", "evil") }, 400, "unauthorized_client", ""},
		{"missing client", s, func(v url.Values) { v.Del("client_id") }, 400, "unauthorized_client", ""},
		{"foreign redirect", s, func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }, 400, "redirect_uri", ""},
		{"scheme-relative redirect", s, func(v url.Values) { v.Set("redirect_uri", "//127.0.0.1/cb") }, 400, "redirect_uri", ""},
		{"redirect with fragment", s, func(v url.Values) { v.Set("redirect_uri", redirect+"#x") }, 400, "redirect_uri", ""},
		{"missing redirect", s, func(v url.Values) { v.Del("redirect_uri") }, 400, "redirect_uri", ""},
		{"unknown client, foreign redirect", s, func(v url.Values) { v.Set("client_id", "evil"); v.Set("redirect_uri", "https://evil.example/") }, 400, "unauthorized_client", ""},
		{"response_type token", s, func(v url.Values) { v.Set("response_type", "token") }, 302, "", "unsupported_response_type"},
		{"missing response_type", s, func(v url.Values) { v.Del("response_type") }, 302, "", "unsupported_response_type"},
		{"no openid scope", s, func(v url.Values) { v.Set("scope", "profile") }, 302, "", "invalid_request"},
		{"pkce missing", pkce, nil, 302, "", "invalid_request"},
		{"pkce plain", pkce, func(v url.Values) { v.Set("code_challenge", "abc"); v.Set("code_challenge_method", "plain") }, 302, "", "invalid_request"},
		{"pkce method missing", s, func(v url.Values) { v.Set("code_challenge", "abc") }, 302, "", "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, browser(t), authorizeURL(tc.s, tc.mod))
			if resp.StatusCode != tc.status {
				t.Fatalf("got status %d, want %d; body:\n%s", resp.StatusCode, tc.status, body)
			}
			if tc.status == http.StatusBadRequest {
				if loc := resp.Header.Get("Location"); loc != "" || !strings.Contains(body, tc.page) {
					t.Errorf("got Location %q and page %q, want no Location and a page mentioning %q", loc, body, tc.page)
				}
				return
			}
			q := redirected(t, resp, body)
			if !strings.HasPrefix(resp.Header.Get("Location"), redirect+"?") || q.Get("error") != tc.redirErr || q.Get("state") != "st-1" || q.Get("code") != "" {
				t.Errorf("got Location %q, want %s?error=%s&state=st-1", resp.Header.Get("Location"), redirect, tc.redirErr)
			}
		})
	}
}

func TestLoginForm(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	resp, page := get(t, browser(t), authorizeURL(s, func(v url.Values) { v.Set("state", `"><script>x</script>`) }))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got status %d, want %d", resp.StatusCode, http.StatusOK)
	}
	for _, want := range []string{
		"<title>Teamwork Cloud - Sign in</title>",
		`id="username" name="username"`,
		`id="password" name="password" type="password"`,
		`<button id="login"`,
		`action="/authentication/authorize"`,
		`name="client_id" value="dashboard"`,
		`name="nonce" value="n-1"`,
		`name="scope" value="openid"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("login page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Errorf("state was not escaped:\n%s", page)
	}
	if _, form := fillLogin(t, s, page, "u", "p"); form.Get("state") != `"><script>x</script>` || form.Get("redirect_uri") != redirect {
		t.Errorf("got hidden fields %v, want the authorize parameters", form)
	}
}

func TestLoginCredentials(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{
		Users:         map[string]string{"alice": "pw-a", "bob": "pw-b"},
		DisabledUsers: []string{"bob"},
	})
	for _, tc := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"good", "alice", "pw-a", true},
		{"bad password", "alice", "pw-b", false},
		{"empty password", "alice", "", false},
		{"unknown user", "carol", "pw-a", false},
		{"disabled", "bob", "pw-b", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := login(t, s, browser(t), authorizeURL(s, nil), tc.user, tc.pass)
			if tc.ok {
				q := redirected(t, resp, body)
				if q.Get("code") == "" || q.Get("state") != "st-1" {
					t.Errorf("got redirect query %v, want code and state", q)
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid username or password") {
				t.Errorf("got %d, want %d with the form and an error:\n%s", resp.StatusCode, http.StatusUnauthorized, body)
			}
			if len(resp.Cookies()) != 0 || resp.Header.Get("Location") != "" {
				t.Errorf("got cookies %v Location %q, want none", resp.Cookies(), resp.Header.Get("Location"))
			}
		})
	}
}

// TestLoginRevalidates checks that the hidden fields of the form cannot be
// edited to escape the checks of GET /authorize.
func TestLoginRevalidates(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	c := browser(t)
	_, page := get(t, c, authorizeURL(s, nil))
	action, form := fillLogin(t, s, page, "Administrator", "Administrator")
	form.Set("redirect_uri", "https://evil.example/cb")
	resp, body := postForm(t, c, action, form, nil)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Errorf("got %d Location %q, want %d and no redirect:\n%s", resp.StatusCode, resp.Header.Get("Location"), http.StatusBadRequest, body)
	}
}

func TestRedirectKeepsQuery(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{RedirectWhitelist: []string{"http://localhost:8080/cb"}})
	uri := "http://localhost:8080/cb?rd=%2Fa%3Fb&x=1"
	resp, body := login(t, s, browser(t), authorizeURL(s, func(v url.Values) { v.Set("redirect_uri", uri) }), "Administrator", "Administrator")
	q := redirected(t, resp, body)
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, uri+"&") || q.Get("rd") != "/a?b" || q.Get("code") == "" {
		t.Errorf("got Location %q, want %q followed by code and state", loc, uri)
	}
}

func TestSSOCookieAndSignout(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := start(t, authtest.Options{Now: clk.Now})
	c := browser(t)
	resp, body := login(t, s, c, authorizeURL(s, nil), "Administrator", "Administrator")
	redirected(t, resp, body)
	var sso *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == authtest.SSOCookieName {
			sso = ck
		}
	}
	if sso == nil || sso.Path != "/authentication" || !sso.HttpOnly || sso.MaxAge != 7*24*3600 || sso.Value == "" {
		t.Fatalf("got SSO cookie %v, want Path=/authentication HttpOnly Max-Age=604800", sso)
	}

	// Signed in: the form is skipped and a code comes at once, and it works.
	resp, body = get(t, c, authorizeURL(s, func(v url.Values) { v.Set("state", "st-2") }))
	if q := redirected(t, resp, body); q.Get("state") != "st-2" {
		t.Errorf("got state %q, want st-2", q.Get("state"))
	} else {
		wantOK(t, exchange(t, s, q.Get("code")))
	}

	// Signout to a foreign URL shows a page instead of redirecting.
	resp, body = get(t, c, s.Issuer()+"/api/signout?redirect_uri="+url.QueryEscape("https://evil.example/"))
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "You are signed out") {
		t.Errorf("got %d, want %d and a signed-out page:\n%s", resp.StatusCode, http.StatusOK, body)
	}
	if resp, _ := get(t, c, authorizeURL(s, nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("after signout: got status %d, want the login form (200)", resp.StatusCode)
	}

	// A stolen copy of the old cookie is forgotten server-side.
	stale := browser(t)
	stale.Jar.SetCookies(mustURL(t, s.Issuer()+"/"), []*http.Cookie{{Name: authtest.SSOCookieName, Value: sso.Value, Path: "/authentication"}})
	if resp, _ := get(t, stale, authorizeURL(s, nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("replayed cookie: got status %d, want the login form (200)", resp.StatusCode)
	}

	// Signout to a whitelisted URL redirects there and deletes the cookie.
	resp, body = login(t, s, c, authorizeURL(s, nil), "Administrator", "Administrator")
	redirected(t, resp, body)
	resp, body = get(t, c, s.Issuer()+"/api/signout?redirect_uri="+url.QueryEscape(redirect))
	redirected(t, resp, body)
	if loc := resp.Header.Get("Location"); loc != redirect {
		t.Errorf("got Location %q, want %q", loc, redirect)
	}
	if ck := resp.Cookies(); len(ck) != 1 || ck[0].Name != authtest.SSOCookieName || ck[0].MaxAge >= 0 {
		t.Errorf("got cookies %v, want %s deleted", ck, authtest.SSOCookieName)
	}

	// SSO sessions expire after 7 days.
	resp, body = login(t, s, c, authorizeURL(s, nil), "Administrator", "Administrator")
	redirected(t, resp, body)
	clk.Advance(7*24*time.Hour + time.Second)
	if resp, _ := get(t, c, authorizeURL(s, nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("after 7 days: got status %d, want the login form (200)", resp.StatusCode)
	}
}

func TestPKCE(t *testing.T) {
	t.Parallel()
	s256 := func(verifier string) string {
		sum := sha256.Sum256([]byte(verifier))
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	verifier := strings.Repeat("v", 43)
	short := verifier[:42] // RFC 7636 §4.1: at least 43 characters
	for _, tc := range []struct {
		name                  string
		advertise             bool
		challengeOf, verifier string
		ok                    bool
	}{
		{"right verifier", true, verifier, verifier, true},
		{"missing verifier", true, verifier, "", false},
		{"wrong verifier", true, verifier, strings.Repeat("w", 43), false},
		{"challenge as verifier", true, verifier, s256(verifier), false},
		{"short verifier", true, short, short, false},
		{"not advertised, still verified", false, verifier, "", false},
		{"not advertised, right verifier", false, verifier, verifier, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, authtest.Options{AdvertisePKCE: tc.advertise})
			withChallenge := func(v url.Values) {
				v.Set("code_challenge", s256(tc.challengeOf))
				v.Set("code_challenge_method", "S256")
			}
			form := url.Values{
				"grant_type": {"authorization_code"}, "code": {signIn(t, s, withChallenge)},
				"client_id": {clientID}, "redirect_uri": {redirect},
			}
			if tc.verifier != "" {
				form.Set("code_verifier", tc.verifier)
			}
			r := postToken(t, s, form, nil)
			if tc.ok {
				wantOK(t, r)
			} else {
				wantError(t, r, http.StatusBadRequest, "invalid_grant")
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
