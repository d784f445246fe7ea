package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/oauth2"
)

// start serves /oauth2/start?rd=PATH: begin a login that returns to PATH.
// An rd that is not a plain local path is replaced by "/".
func (s *Server) start(w *recorder, r *http.Request) {
	ep := s.auth.endpoints()
	if ep == nil {
		w.outcome = "auth_server_not_ready"
		s.fail(w, r, http.StatusServiceUnavailable, "The sign-in service is not reachable yet",
			"The proxy has not been able to reach the TWC Authentication server since it started. Try again in a moment.")
		return
	}
	w.outcome = "login"
	s.redirectToLogin(w, r, ep, r.URL.Query().Get("rd"))
}

// redirectToLogin starts an authorization-code flow: a fresh state, nonce
// and PKCE verifier (when the provider advertises S256) go into a flow
// cookie of their own, so logins begun in several tabs all complete.
func (s *Server) redirectToLogin(w *recorder, r *http.Request, ep *endpoints, returnTo string) {
	rd, ok := safeReturnPath(escapeQueryBackslashes(returnTo))
	if !ok {
		rd = "/"
	}
	flow := &session.Flow{
		State:    randomString(),
		Nonce:    randomString(),
		ReturnTo: rd,
		Created:  s.now(),
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(flow.Nonce)}
	if ep.pkce {
		flow.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(flow.Verifier))
	}
	err := s.store.SaveFlow(w, r, flow)
	if errors.Is(err, session.ErrTooLarge) && flow.ReturnTo != "/" {
		// A local path too long for the flow cookie (safeReturnPath
		// allows 2 KiB; the sealed cookie holds a little less): sign in
		// all the same, and land on "/".
		s.log.Info("return path too long to keep through sign-in; the user lands on /",
			zap.String("request_id", w.id), zap.Int("length", len(flow.ReturnTo)))
		flow.ReturnTo = "/"
		err = s.store.SaveFlow(w, r, flow)
	}
	if err != nil {
		s.log.Error("save login flow", zap.String("request_id", w.id), zap.Error(err))
		s.fail(w, r, http.StatusInternalServerError, "Could not start sign-in", "The proxy could not store the sign-in state.")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, ep.oauth.AuthCodeURL(flow.State, opts...), http.StatusFound)
}

// callback serves the redirect_url path: the auth server sends the browser
// back here with code and state.
func (s *Server) callback(w *recorder, r *http.Request) {
	w.outcome = "login_failed"
	ep := s.auth.endpoints()
	if ep == nil {
		s.loginFailed(w, r, "auth_server_not_ready", http.StatusServiceUnavailable, "The sign-in service is not reachable", nil)
		return
	}
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		// The auth server refused the login (denied, unknown client, ...).
		// Anyone can send a browser here with words of their choosing, which
		// the page would show on this origin ("call the help desk at ..."):
		// it names the error only when it is a registered code. The
		// description is logged only for a sign-in this browser started
		// (the state matches its flow cookie, which is then used up); from
		// any other link it is somebody's words, not the provider's.
		code := "unknown error"
		if authorizationError(e) {
			code = e
		}
		cause := fmt.Errorf("authorization response: error %q, not for a sign-in this browser started", truncate(e, 64))
		if _, ferr := s.store.TakeFlow(w, r, q.Get("state")); ferr == nil {
			cause = fmt.Errorf("authorization response: error %q, error_description %q", truncate(e, 64), truncate(q.Get("error_description"), 200))
		}
		s.loginFailed(w, r, "provider_error", http.StatusUnauthorized,
			"The sign-in service refused the sign-in ("+code+"). Try again; if it keeps failing, your administrator can find the reason in the proxy's log.",
			cause)
		return
	}
	// Exactly one state and one code: duplicates are a sign of parameter
	// pollution, and which one "wins" differs between parsers.
	if len(q["state"]) != 1 || len(q["code"]) != 1 || q.Get("state") == "" || q.Get("code") == "" {
		s.loginFailed(w, r, "bad_request", http.StatusBadRequest, "The sign-in response is malformed.", nil)
		return
	}
	flow, err := s.store.TakeFlow(w, r, q.Get("state"))
	if err != nil {
		s.loginFailed(w, r, "state_mismatch", http.StatusBadRequest,
			"This sign-in was not started in this browser, took too long, or the browser did not keep the proxy's cookies.", err)
		return
	}
	// The exchange runs to the auth server's answer (auth.timeout bounds
	// it) even when the browser hangs up meanwhile: the code is spent
	// either way, and the answer, not the hang-up, is what logins_total
	// and the log report. Cut short, it would read as the auth server
	// failing (auth_server_error), which any client could then raise.
	sess, err := s.auth.redeem(context.WithoutCancel(r.Context()), ep, q.Get("code"), flow.Verifier, flow.Nonce)
	if err != nil {
		status, result, msg := classifyLoginError(err)
		s.loginFailed(w, r, result, status, msg, err)
		return
	}
	// The new session replaces whatever the browser had: no fixation.
	if err := s.store.Save(w, r, sess); err != nil {
		s.loginFailed(w, r, "session_error", http.StatusInternalServerError, "The proxy could not store the session.", err)
		return
	}
	w.user = sess.Subject
	w.outcome = "login"
	s.m.Logins.WithLabelValues("success").Inc()
	s.log.Info("login", zap.String("request_id", w.id), zap.String("user", sess.Subject), zap.Time("expiry", sess.Expiry))
	rd, ok := safeReturnPath(flow.ReturnTo)
	if !ok {
		rd = "/"
	}
	// Not http.Redirect: it runs path.Clean over a local target, so a
	// return path such as /view/https://host/x would land on
	// /view/https:/host/x. safeReturnPath has already made sure that rd,
	// as it is, stays on this origin.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", rd)
	w.WriteHeader(http.StatusFound)
}

// classifyLoginError maps a failed code exchange to a status, a metric
// result and a message for the user. Signing keys that could not be fetched
// (errKeysUnavailable) are the auth server failing, not an invalid token:
// they fall through to the timeout and error cases.
func classifyLoginError(err error) (status int, result, msg string) {
	var te *TokenError
	var ne net.Error
	switch {
	case isInvalidAnswer(err):
		return http.StatusUnauthorized, "invalid_token", "The sign-in service returned an identity token that could not be verified."
	case errors.As(err, &te) && te.Rejected():
		return http.StatusUnauthorized, "exchange_rejected", "The sign-in service did not accept the sign-in code. It may have expired."
	case errors.As(err, &te):
		return http.StatusBadGateway, "exchange_failed", "The sign-in service failed to complete the sign-in."
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, "auth_server_timeout", "The sign-in service did not answer in time."
	default:
		return http.StatusBadGateway, "auth_server_error", "The sign-in service could not be reached or answered nonsense."
	}
}

// authorizationError reports whether code is one of the error codes of an
// authorization response: RFC 6749 §4.1.2.1, OpenID Connect Core §3.1.2.6,
// and TWC's system_error.
func authorizationError(code string) bool {
	switch code {
	case "invalid_request", "unauthorized_client", "access_denied", "unsupported_response_type",
		"invalid_scope", "server_error", "temporarily_unavailable",
		"system_error", // TWC's: keystore problems
		"interaction_required", "login_required", "account_selection_required", "consent_required",
		"invalid_request_uri", "invalid_request_object", "request_not_supported",
		"request_uri_not_supported", "registration_not_supported":
		return true
	}
	return false
}

func (s *Server) loginFailed(w *recorder, r *http.Request, result string, status int, msg string, err error) {
	s.m.Logins.WithLabelValues(result).Inc()
	if ce := s.log.Check(loginFailureLevel(result, err), "login failed"); ce != nil {
		ce.Write(zap.String("request_id", w.id), zap.String("result", result), zap.Error(err))
	}
	s.fail(w, r, status, "Sign-in failed", msg)
}

// loginFailureLevel is the level of a failed login's log line: warn when
// the operator may have to act (the auth server failing, or refusing the
// proxy's own client), info when it is down to what the callback request
// brought, which anyone can forge or replay in a loop: a malformed
// request, a state of no sign-in of this browser, an error in the
// authorization response (the browser carries it, whatever the auth
// server said), a code the token endpoint refuses as invalid_grant
// (expired, spent, made up). Before discovery the retrying discovery warns
// already. logins_total counts them all by result.
func loginFailureLevel(result string, err error) zapcore.Level {
	switch result {
	case "bad_request", "state_mismatch", "provider_error", "auth_server_not_ready":
		return zapcore.InfoLevel
	case "exchange_rejected":
		if grantRefused(err) {
			return zapcore.InfoLevel
		}
	}
	return zapcore.WarnLevel
}

// signOut serves /oauth2/sign_out: clear the session, then leave through the
// provider's end_session_endpoint (OIDC RP-initiated logout) or TWC's
// signout_endpoint when discovery advertised one, else a signed-out page.
func (s *Server) signOut(w *recorder, r *http.Request) {
	w.outcome = "sign_out"
	var idToken string
	if sess, err := s.store.Load(r); err == nil {
		idToken = sess.IDToken
		w.user = sess.Subject
	}
	s.store.Clear(w, r)
	w.Header().Set("Cache-Control", "no-store")
	if target := s.signOutURL(idToken); target != "" {
		http.Redirect(w, r, target, http.StatusFound)
		return
	}
	s.page(w, http.StatusOK, "Signed out", "You are signed out.")
}

func (s *Server) signOutURL(idToken string) string {
	ep := s.auth.endpoints()
	if ep == nil {
		return ""
	}
	base, std := ep.endSession, true
	if base == "" {
		base, std = ep.twcSignout, false
	}
	u, err := url.Parse(base)
	if base == "" || err != nil {
		return ""
	}
	q := u.Query()
	if std {
		q.Set("client_id", s.auth.cfg.ClientID)
		if idToken != "" {
			q.Set("id_token_hint", idToken)
		}
		if s.cfg.PostLogoutRedirectURL != "" {
			q.Set("post_logout_redirect_uri", s.cfg.PostLogoutRedirectURL)
		}
	} else if s.cfg.PostLogoutRedirectURL != "" {
		q.Set("redirect_uri", s.cfg.PostLogoutRedirectURL)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// userInfo serves /oauth2/userinfo: the session's ID-token claims as JSON.
func (s *Server) userInfo(w *recorder, r *http.Request) {
	sess, ok := s.requireSession(w, r, false)
	if !ok {
		return
	}
	claims, err := jwtPayload(sess.IDToken)
	if err != nil {
		// The token was verified before it was sealed into the cookie.
		s.log.Error("decode session ID token", zap.String("request_id", w.id), zap.Error(err))
		writeJSONError(w, http.StatusInternalServerError, "internal", "session token unreadable")
		return
	}
	w.outcome = "userinfo"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(claims)
}

// jwtPayload returns the JSON payload of a compact JWS.
func jwtPayload(raw string) (json.RawMessage, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	if !json.Valid(b) {
		return nil, errors.New("payload is not JSON")
	}
	return b, nil
}

// randomString returns 256 random bits, base64url-encoded.
func randomString() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
