package authtest

import (
	"crypto/rand"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ssoSession is a signed-in browser, found through the SSO cookie.
type ssoSession struct {
	username string
	expires  time.Time
}

// authRequest holds the authorize parameters that the login form carries
// through its hidden fields and that an issued code is bound to.
type authRequest struct {
	ClientID, RedirectURI, State, Nonce, Scope string
	CodeChallenge, CodeChallengeMethod         string
}

func readAuthRequest(form url.Values) authRequest {
	return authRequest{
		ClientID:            form.Get("client_id"),
		RedirectURI:         form.Get("redirect_uri"),
		State:               form.Get("state"),
		Nonce:               form.Get("nonce"),
		Scope:               form.Get("scope"),
		CodeChallenge:       form.Get("code_challenge"),
		CodeChallengeMethod: form.Get("code_challenge_method"),
	}
}

// loginPage is the form shown by GET /authorize. Element ids are stable so
// browser-driving tests can fill it in.
var loginPage = template.Must(template.New("login").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Teamwork Cloud - Sign in</title></head>
<body>
<h1>Teamwork Cloud</h1>
{{if .Error}}<p id="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="{{.Action}}">
<label for="username">Username</label> <input id="username" name="username" type="text" autocomplete="username" value="{{.Username}}" required>
<label for="password">Password</label> <input id="password" name="password" type="password" autocomplete="current-password" required>
{{with .Req}}<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="redirect_uri" value="{{.RedirectURI}}">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="nonce" value="{{.Nonce}}">
<input type="hidden" name="scope" value="{{.Scope}}">
<input type="hidden" name="code_challenge" value="{{.CodeChallenge}}">
<input type="hidden" name="code_challenge_method" value="{{.CodeChallengeMethod}}">{{end}}
<button id="login" type="submit">Sign in</button>
</form>
</body></html>
`))

// messagePage is every other page: authorize errors and the signout notice.
var messagePage = template.Must(template.New("message").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p id="message">{{.Message}}</p></body></html>
`))

// handleAuthorize is GET /authorize: it validates the request, then either
// issues a code at once for a browser with a live SSO session or shows the
// login form.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	req := readAuthRequest(r.URL.Query())
	if !s.checkAuthRequest(w, req, r.URL.Query().Get("response_type")) {
		return
	}
	if user, ok := s.ssoUser(r); ok {
		s.issueCode(w, r, req, user)
		return
	}
	s.renderLogin(w, http.StatusOK, req, "", "")
}

// handleLogin is POST /authorize, the login form's submission. The hidden
// fields come back from the browser, so they are validated again.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Teamwork Cloud - Error", "invalid_request: cannot parse the form")
		return
	}
	req := readAuthRequest(r.Form)
	if !s.checkAuthRequest(w, req, "code") {
		return
	}
	user := r.Form.Get("username")
	if !s.checkPassword(user, r.Form.Get("password")) {
		s.renderLogin(w, http.StatusUnauthorized, req, user, "Invalid username or password")
		return
	}
	id := rand.Text()
	expires := s.now().Add(ssoTTL)
	s.mu.Lock()
	s.sso[id] = ssoSession{username: user, expires: expires}
	s.mu.Unlock()
	http.SetCookie(w, s.ssoCookie(id, int(ssoTTL/time.Second)))
	s.issueCode(w, r, req, user)
}

// checkAuthRequest validates an authorize request and, when it is bad,
// answers it. Client and redirect_uri errors get an error page: redirecting
// to an unvalidated redirect_uri would make the server an open redirector
// (RFC 6749 §4.1.2.1). Later errors go back to the client as ?error=.
func (s *Server) checkAuthRequest(w http.ResponseWriter, req authRequest, responseType string) bool {
	const title = "Teamwork Cloud - Error"
	if !slices.Contains(s.clients, req.ClientID) {
		s.renderMessage(w, http.StatusBadRequest, title, "unauthorized_client: client_id is not in authentication.client.ids")
		return false
	}
	if !s.redirectAllowed(req.RedirectURI) {
		s.renderMessage(w, http.StatusBadRequest, title, "invalid_request: redirect_uri is not in authentication.redirect.uri.whitelist")
		return false
	}
	var code, desc string
	switch {
	case responseType != "code":
		code, desc = "unsupported_response_type", "response_type must be code"
	case !slices.Contains(strings.Fields(req.Scope), "openid"):
		code, desc = "invalid_request", "scope must contain openid"
	case req.CodeChallenge == "" && s.opts.AdvertisePKCE:
		code, desc = "invalid_request", "code_challenge is required"
	case req.CodeChallenge != "" && req.CodeChallengeMethod != "S256":
		code, desc = "invalid_request", "code_challenge_method must be S256"
	default:
		return true
	}
	v := url.Values{"error": {code}, "error_description": {desc}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	redirectWith(w, req.RedirectURI, v)
	return false
}

// redirectAllowed matches uri against the whitelist by prefix, as TWC does:
// "either full URL ... or just the beginning of it". Note that prefix
// matching accepts "http://127.0.0.1.evil.example" for "http://127.0.0.1",
// just like the real server.
func (s *Server) redirectAllowed(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		return false // RFC 6749 §3.1.2: absolute, without fragment
	}
	for _, prefix := range s.opts.RedirectWhitelist {
		if strings.HasPrefix(uri, prefix) {
			return true
		}
	}
	return false
}

// issueCode binds a fresh single-use code to the request and user and sends
// the browser back to the client.
func (s *Server) issueCode(w http.ResponseWriter, r *http.Request, req authRequest, user string) {
	code := rand.Text()
	c := &authCode{
		clientID: req.ClientID, redirectURI: req.RedirectURI, nonce: req.Nonce, scope: req.Scope,
		challenge: req.CodeChallenge, username: user, expires: s.now().Add(s.opts.CodeTTL),
	}
	s.mu.Lock()
	s.purgeLocked(s.now())
	s.codes[code] = c
	s.mu.Unlock()
	v := url.Values{"code": {code}}
	if req.State != "" {
		v.Set("state", req.State)
	}
	redirectWith(w, req.RedirectURI, v)
}

// redirectWith sends a 302 to uri with v appended to its query. Appending
// keeps the client's own query byte for byte.
func redirectWith(w http.ResponseWriter, uri string, v url.Values) {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", uri+sep+v.Encode())
	w.WriteHeader(http.StatusFound)
}

// ssoUser returns the user of the browser's SSO session, if it is live and
// the user may still sign in.
func (s *Server) ssoUser(r *http.Request) (string, bool) {
	c, err := r.Cookie(SSOCookieName)
	if err != nil {
		return "", false
	}
	now := s.now()
	s.mu.Lock()
	sess, ok := s.sso[c.Value]
	s.mu.Unlock()
	if !ok || !now.Before(sess.expires) {
		return "", false
	}
	if _, exists := s.users[sess.username]; !exists || slices.Contains(s.disabled, sess.username) {
		return "", false
	}
	return sess.username, true
}

// ssoCookie scopes the cookie to the issuer path, where only this server
// reads it; maxAge < 0 deletes it.
func (s *Server) ssoCookie(value string, maxAge int) *http.Cookie {
	p := s.issuerPath
	if p == "" {
		p = "/"
	}
	return &http.Cookie{
		Name: SSOCookieName, Value: value, Path: p, MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	}
}

// handleSignout is GET /api/signout: it ends the SSO session, then returns to
// a whitelisted redirect_uri or shows a notice.
func (s *Server) handleSignout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SSOCookieName); err == nil {
		s.mu.Lock()
		delete(s.sso, c.Value)
		s.mu.Unlock()
	}
	http.SetCookie(w, s.ssoCookie("", -1))
	if uri := r.URL.Query().Get("redirect_uri"); uri != "" && s.redirectAllowed(uri) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Location", uri)
		w.WriteHeader(http.StatusFound)
		return
	}
	s.renderMessage(w, http.StatusOK, "Teamwork Cloud - Signed out", "You are signed out.")
}

func (s *Server) renderLogin(w http.ResponseWriter, status int, req authRequest, user, msg string) {
	data := struct {
		Action, Username, Error string
		Req                     authRequest
	}{s.issuerPath + "/authorize", user, msg, req}
	render(w, status, loginPage, data)
}

func (s *Server) renderMessage(w http.ResponseWriter, status int, title, msg string) {
	render(w, status, messagePage, struct{ Title, Message string }{title, msg})
}

// render executes t into memory first, so a template error becomes a clean
// 500 instead of a half-written page.
func render(w http.ResponseWriter, status int, t *template.Template, data any) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		http.Error(w, "authtest: render page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	// No form-action directive: browsers apply it to the redirect that
	// follows the login POST, which leads to the client's origin.
	h.Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}
