package authtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

// authCode is an issued authorization code and what it was issued for.
type authCode struct {
	clientID, redirectURI, nonce, scope string
	challenge, username                 string
	expires                             time.Time
	used                                bool // kept until expiry so reuse is told apart from an unknown code
}

// refreshToken is an issued refresh token. Tokens rotated from one sign-in
// share a family, so reuse of a rotated-out token can revoke them all.
type refreshToken struct {
	clientID, username string
	expires            time.Time
	used               bool // rotated out; presenting it again is reuse
	family             *tokenFamily
}

type tokenFamily struct{ revoked bool }

// tokenResponse is the token endpoint's success body. TWC's is undocumented;
// clients read id_token, refresh_token and expires_in.
type tokenResponse struct {
	IDToken      string `json:"id_token,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresIn    int64  `json:"expires_in"`
	TokenType    string `json:"token_type"`
}

// tokenError is an RFC 6749 §5.2 error; it doubles as the error value of the
// grant handlers.
type tokenError struct {
	status      int
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *tokenError) Error() string { return e.Code + ": " + e.Description }

func errGrant(desc string) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_grant", desc}
}

func errRequest(desc string) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_request", desc}
}

// handleToken is POST /api/token. Faults apply before any validation: they
// model failures in front of the auth server, so nothing is consumed.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	parseErr := r.ParseForm() // body values precede query values in r.Form
	f := s.record(r)
	if f.TokenDelay > 0 {
		t := time.NewTimer(f.TokenDelay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client gave up; nobody reads an answer
		}
	}
	switch {
	case f.TokenStatus != 0:
		status := f.TokenStatus
		if status < 100 || status > 999 {
			status = http.StatusInternalServerError
		}
		code := f.TokenErrorCode
		if code == "" {
			code = "temporarily_unavailable"
		}
		writeJSON(w, status, tokenError{Code: code, Description: "authtest: injected fault"})
		return
	case f.MalformedJSON:
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"id_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIi`))
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Auth-Secret")), []byte(s.opts.Secret)) != 1 {
		writeJSON(w, http.StatusUnauthorized, tokenError{Code: "invalid_client", Description: "missing or wrong X-Auth-Secret header"})
		return
	}
	if parseErr != nil {
		writeJSON(w, http.StatusBadRequest, errRequest("cannot parse parameters: "+parseErr.Error()))
		return
	}
	resp, err := s.grant(r, f)
	if err != nil {
		writeJSON(w, err.status, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// record stores the request for TokenRequests and returns the faults it is
// served with.
func (s *Server) record(r *http.Request) Faults {
	grant := r.Form.Get("grant_type")
	tr := TokenRequest{GrantType: grant, Header: r.Header.Clone(), Form: cloneValues(r.Form), Query: r.URL.Query(), At: s.now()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == maxRecorded {
		s.requests = slices.Delete(s.requests, 0, 1)
	}
	s.requests = append(s.requests, tr)
	s.callCount[grant]++
	return s.faults
}

// grant dispatches on grant_type after the checks common to every grant.
func (s *Server) grant(r *http.Request, f Faults) (*tokenResponse, *tokenError) {
	grantType, clientID := r.Form.Get("grant_type"), r.Form.Get("client_id")
	var do func(*http.Request, string) (tokenSpec, string, *tokenError)
	switch grantType {
	case "":
		return nil, errRequest("missing grant_type")
	case "authorization_code":
		do = s.codeGrant
	case "refresh_token":
		do = s.refreshGrant
	case "client_credentials":
		do = s.clientCredentialsGrant
	default:
		return nil, &tokenError{http.StatusBadRequest, "unsupported_grant_type", "grant_type " + grantType + " is not supported"}
	}
	if clientID == "" {
		return nil, errRequest("missing client_id")
	}
	if !slices.Contains(s.clients, clientID) {
		return nil, &tokenError{http.StatusBadRequest, "unauthorized_client", "client_id is not in authentication.client.ids"}
	}
	spec, refresh, terr := do(r, clientID)
	if terr != nil {
		return nil, terr
	}
	resp := &tokenResponse{RefreshToken: refresh, ExpiresIn: int64(spec.ttl / time.Second), TokenType: "Bearer"}
	switch {
	case f.OmitIDToken || grantType == "refresh_token" && f.OmitIDTokenOnRefresh:
	case f.IDToken != nil:
		resp.IDToken = f.IDToken(spec.sub, spec.aud, spec.nonce)
	default:
		resp.IDToken = s.mintIDToken(spec, f)
	}
	if f.IncludeAccessToken {
		resp.AccessToken = "at-" + rand.Text()
	}
	return resp, nil
}

// ttl is the ID-token lifetime for a client (authentication.client.unlimited).
func (s *Server) ttl(clientID string) time.Duration {
	if slices.Contains(s.unlimited, clientID) {
		return s.opts.UnlimitedTTL
	}
	return s.opts.TokenTTL
}

// codeGrant redeems an authorization code. A code is burnt by its first
// redemption attempt, successful or not (RFC 6749 §4.1.2: single use).
func (s *Server) codeGrant(r *http.Request, clientID string) (tokenSpec, string, *tokenError) {
	code := r.Form.Get("code")
	if code == "" {
		return tokenSpec{}, "", errRequest("missing code")
	}
	now := s.now()
	s.mu.Lock()
	s.purgeLocked(now)
	c, ok := s.codes[code]
	var used bool
	if ok {
		used, c.used = c.used, true
	}
	s.mu.Unlock()
	switch {
	case !ok || !now.Before(c.expires):
		return tokenSpec{}, "", errGrant("unknown or expired code")
	case used:
		return tokenSpec{}, "", errGrant("code already used")
	case c.clientID != clientID:
		return tokenSpec{}, "", errGrant("code was issued to another client_id")
	case c.redirectURI != r.Form.Get("redirect_uri"):
		return tokenSpec{}, "", errGrant("redirect_uri differs from the authorize request")
	case c.challenge != "" && !verifyPKCE(c.challenge, r.Form.Get("code_verifier")):
		return tokenSpec{}, "", errGrant("code_verifier does not match code_challenge")
	}
	refresh := s.issueRefresh(clientID, c.username, &tokenFamily{})
	return tokenSpec{sub: c.username, aud: clientID, ttl: s.ttl(clientID), fromCode: true, nonce: c.nonce}, refresh, nil
}

// verifyPKCE checks an S256 challenge (RFC 7636 §4.6).
func verifyPKCE(challenge, verifier string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(b64.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// refreshGrant issues a new ID token for the refresh token's user. Refreshed
// ID tokens carry no nonce (OpenID Connect Core §12.2).
func (s *Server) refreshGrant(r *http.Request, clientID string) (tokenSpec, string, *tokenError) {
	tok := r.Form.Get("refresh_token")
	if tok == "" {
		return tokenSpec{}, "", errRequest("missing refresh_token")
	}
	now := s.now()
	s.mu.Lock()
	s.purgeLocked(now)
	rt, ok := s.refresh[tok]
	switch {
	case !ok || !now.Before(rt.expires) || rt.family.revoked:
		s.mu.Unlock()
		return tokenSpec{}, "", errGrant("unknown, expired or revoked refresh token")
	case rt.used:
		rt.family.revoked = true // reuse of a rotated-out token: assume theft
		s.mu.Unlock()
		return tokenSpec{}, "", errGrant("refresh token already used; its grant is revoked")
	case rt.clientID != clientID:
		s.mu.Unlock()
		return tokenSpec{}, "", errGrant("refresh token was issued to another client_id")
	}
	rotate := s.opts.RotateRefreshTokens
	if rotate {
		rt.used = true
	}
	s.mu.Unlock()
	var next string
	if rotate {
		next = s.issueRefresh(clientID, rt.username, rt.family)
	}
	return tokenSpec{sub: rt.username, aud: clientID, ttl: s.ttl(clientID)}, next, nil
}

// clientCredentialsGrant signs in the user named by the Basic credentials,
// TWC's "authentication without user interaction".
func (s *Server) clientCredentialsGrant(r *http.Request, clientID string) (tokenSpec, string, *tokenError) {
	user, pass, ok := r.BasicAuth()
	if !ok || !s.checkPassword(user, pass) {
		return tokenSpec{}, "", &tokenError{http.StatusUnauthorized, "invalid_grant", "invalid username or password"}
	}
	refresh := s.issueRefresh(clientID, user, &tokenFamily{})
	return tokenSpec{sub: user, aud: clientID, ttl: s.ttl(clientID)}, refresh, nil
}

// checkPassword reports whether user exists, is enabled and has password
// pass.
func (s *Server) checkPassword(user, pass string) bool {
	want, ok := s.users[user]
	if !ok || slices.Contains(s.disabled, user) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
}

func (s *Server) issueRefresh(clientID, username string, fam *tokenFamily) string {
	tok := rand.Text() + rand.Text()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh[tok] = &refreshToken{clientID: clientID, username: username, expires: s.now().Add(s.opts.RefreshTTL), family: fam}
	return tok
}

// purgeLocked drops expired codes, refresh tokens and SSO sessions. It runs
// lazily on use, so an idle server holds no timer.
func (s *Server) purgeLocked(now time.Time) {
	for k, c := range s.codes {
		if !now.Before(c.expires) {
			delete(s.codes, k)
		}
	}
	for k, t := range s.refresh {
		if !now.Before(t.expires) || t.family.revoked {
			delete(s.refresh, k)
		}
	}
	for k, v := range s.sso {
		if !now.Before(v.expires) {
			delete(s.sso, k)
		}
	}
}

// handleValidate is /api/validate: it accepts "Authorization: Token <jwt>",
// the header TWC REST takes, and says whether the token is currently valid.
func (s *Server) handleValidate(w http.ResponseWriter, r *http.Request) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if scheme != "Token" || tok == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"valid": false, "error": "invalid_request", "error_description": `expected "Authorization: Token <jwt>"`})
		return
	}
	sub, err := s.verifyIDToken(tok)
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"valid": false, "error": "invalid_token", "error_description": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"valid": true, "sub": sub})
}

// writeJSON answers v as JSON. Token material must never be cached (RFC 6749
// §5.1), and nothing here is worth caching.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "authtest: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
