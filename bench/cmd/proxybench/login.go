package main

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// sessionCookieName is our proxy's default session cookie name.
const sessionCookieName = "_twc_session"

var (
	formActionRE  = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	hiddenInputRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
)

// login signs user in through our proxy at base the way a browser does: a
// navigation to the proxy, the redirect to the fake's login form, the form
// posted back, the callback, and the page proxied with the new session. It
// returns the session cookies (the chunks, never the login-flow cookies or
// the auth server's own SSO cookie).
func login(ctx context.Context, base, user, pass string) ([]*http.Cookie, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Transport: &http.Transport{Proxy: nil}}
	defer c.CloseIdleConnections()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
	req.Header.Set("Accept", "text/html")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	page, formURL, err := fetch(c, req)
	if err != nil {
		return nil, fmt.Errorf("login: open form: %w", err)
	}
	m := formActionRE.FindStringSubmatch(page)
	if m == nil {
		return nil, fmt.Errorf("login: no login form at %s", formURL)
	}
	action, err := formURL.Parse(html.UnescapeString(m[1]))
	if err != nil {
		return nil, fmt.Errorf("login: form action: %w", err)
	}
	form := url.Values{"username": {user}, "password": {pass}}
	for _, f := range hiddenInputRE.FindAllStringSubmatch(page, -1) {
		form.Set(f[1], html.UnescapeString(f[2]))
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, _, err := fetch(c, req); err != nil {
		return nil, fmt.Errorf("login: sign in: %w", err)
	}
	u, _ := url.Parse(base)
	var cookies []*http.Cookie
	for _, ck := range jar.Cookies(u) {
		if (ck.Name == sessionCookieName || strings.HasPrefix(ck.Name, sessionCookieName+"_")) &&
			!strings.HasPrefix(ck.Name, sessionCookieName+"_flow_") {
			cookies = append(cookies, ck)
		}
	}
	if len(cookies) == 0 {
		return nil, fmt.Errorf("login: no %s cookie after signing in", sessionCookieName)
	}
	return cookies, nil
}

// fetch follows redirects and wants a 200 at the end.
func fetch(c *http.Client, req *http.Request) (string, *url.URL, error) {
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("%s %s: %s: %.200s", req.Method, resp.Request.URL, resp.Status, b)
	}
	return string(b), resp.Request.URL, nil
}

// cookieHeader is the Cookie header value carrying cookies.
func cookieHeader(cookies []*http.Cookie) string {
	parts := make([]string, len(cookies))
	for i, c := range cookies {
		parts[i] = c.Name + "=" + c.Value
	}
	return strings.Join(parts, "; ")
}
