package authtest_test

import (
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

const (
	clientID = "dashboard"
	secret   = "CHANGE_ME"
	// redirect is whitelisted by the default "http://127.0.0.1" prefix. The
	// test browsers do not follow redirects, so nothing listens there.
	redirect = "http://127.0.0.1:9/callback"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts at the iat of TWC's documented sample token.
func newClock() *clock { return &clock{t: time.Unix(1606298877, 0)} }

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

func start(t *testing.T, opts authtest.Options) *authtest.Server {
	t.Helper()
	s, err := authtest.Start(opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// browser keeps cookies but stops at every redirect, so tests see each 302.
func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// authorizeURL is a valid authorize request, changed by mod if not nil.
func authorizeURL(s *authtest.Server, mod func(url.Values)) string {
	v := url.Values{
		"response_type": {"code"},
		"client_id":     {clientID},
		"redirect_uri":  {redirect},
		"scope":         {"openid"},
		"state":         {"st-1"},
		"nonce":         {"n-1"},
	}
	if mod != nil {
		mod(v)
	}
	return s.Issuer() + "/authorize?" + v.Encode()
}

// do sends req and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, c, req)
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values, hdr http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	return do(t, c, req)
}

var (
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	actionRE = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
)

// fillLogin does what a user does with the login page: it keeps the hidden
// fields, types the credentials and returns the form and where it posts.
func fillLogin(t *testing.T, s *authtest.Server, page, user, pass string) (string, url.Values) {
	t.Helper()
	m := actionRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no login form in page:\n%s", page)
	}
	action, err := url.Parse(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	action.Path = html.UnescapeString(m[1])
	form := url.Values{"username": {user}, "password": {pass}}
	for _, f := range hiddenRE.FindAllStringSubmatch(page, -1) {
		form.Set(f[1], html.UnescapeString(f[2]))
	}
	return action.String(), form
}

// login shows the login form to browser c and submits the credentials.
func login(t *testing.T, s *authtest.Server, c *http.Client, authURL, user, pass string) (*http.Response, string) {
	t.Helper()
	resp, page := get(t, c, authURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET authorize: got status %d, want %d; body:\n%s", resp.StatusCode, http.StatusOK, page)
	}
	action, form := fillLogin(t, s, page, user, pass)
	return postForm(t, c, action, form, nil)
}

// redirected checks that resp is a 302 and returns its Location's query.
func redirected(t *testing.T, resp *http.Response, body string) url.Values {
	t.Helper()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("got status %d, want %d; body:\n%s", resp.StatusCode, http.StatusFound, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("parse Location: %v", err)
	}
	return loc.Query()
}

// signIn runs the browser part of the code flow as Administrator and returns
// the authorization code.
func signIn(t *testing.T, s *authtest.Server, mod func(url.Values)) string {
	t.Helper()
	resp, body := login(t, s, browser(t), authorizeURL(s, mod), "Administrator", "Administrator")
	q := redirected(t, resp, body)
	code := q.Get("code")
	if code == "" {
		t.Fatalf("no code in redirect query %v", q)
	}
	return code
}

// tokenResult is a token-endpoint answer.
type tokenResult struct {
	status int
	body   map[string]any
	raw    string
}

func (r tokenResult) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// postToken calls the token endpoint with form and the given headers; a nil
// hdr means just the right X-Auth-Secret.
func postToken(t *testing.T, s *authtest.Server, form url.Values, hdr http.Header) tokenResult {
	t.Helper()
	if hdr == nil {
		hdr = http.Header{"X-Auth-Secret": {secret}}
	}
	resp, raw := postForm(t, http.DefaultClient, s.Issuer()+"/api/token", form, hdr)
	return postTokenResult(resp, raw)
}

// postTokenResult decodes a token-endpoint answer; body is nil unless it is
// a JSON object.
func postTokenResult(resp *http.Response, raw string) tokenResult {
	r := tokenResult{status: resp.StatusCode, raw: raw}
	if err := json.Unmarshal([]byte(raw), &r.body); err != nil {
		r.body = nil
	}
	return r
}

func exchange(t *testing.T, s *authtest.Server, code string) tokenResult {
	t.Helper()
	return postToken(t, s, url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"client_id":    {clientID},
		"redirect_uri": {redirect},
		"scope":        {"openid"},
	}, nil)
}

func refresh(t *testing.T, s *authtest.Server, rt string) tokenResult {
	t.Helper()
	return postToken(t, s, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {rt},
		"client_id":     {clientID},
		"redirect_uri":  {redirect},
		"scope":         {"openid"},
	}, nil)
}

// wantOK fails unless r is a 200 token response.
func wantOK(t *testing.T, r tokenResult) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("got status %d, want %d; body: %s", r.status, http.StatusOK, r.raw)
	}
}

// wantError fails unless r is an OAuth error with the given status and code.
func wantError(t *testing.T, r tokenResult, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Errorf("got %d %q, want %d %q; body: %s", r.status, r.str("error"), status, code, r.raw)
	}
}

// segment decodes part i (0 header, 1 claims) of a compact JWT.
func segment(t *testing.T, jwt string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("got %d JWT segments, want 3: %q", len(parts), jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("decode segment %d: %v", i, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal segment %d %s: %v", i, b, err)
	}
	return m
}
