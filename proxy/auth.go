package proxy

import (
	"errors"
	"net/http"
	"strings"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// serveProxy is the catch-all route. In order: skip_auth requests pass as
// they are; a caller's own token (api_tokens) is verified and forwarded; a
// user session is used (refreshed when due); on service-account routes a
// request without a session gets the service identity; anything else is
// unauthenticated.
func (s *Server) serveProxy(w *recorder, r *http.Request) {
	if s.skipAuth(r) {
		w.outcome = "skip_auth"
		s.forward(w, r, "", false)
		return
	}
	if s.cfg.APITokens.Enabled {
		if raw, present := bearerToken(r); present {
			s.serveAPIToken(w, r, raw)
			return
		}
	}
	loaded, err := s.store.Load(r)
	if sa := s.cfg.ServiceAccount; err != nil && sa != nil && sa.matches(r) {
		s.serveServiceAccount(w, r, sa)
		return
	}
	sess, ok := s.checkSession(w, r, loaded, err, true)
	if !ok {
		return
	}
	w.outcome = "proxied"
	s.forward(w, r, sess.TokenHeader(), false)
}

// serveServiceAccount forwards r with the service identity's token, in the
// service identity's TWC session: while there is none, r waits for the
// request that opens it (or is that request). The token is taken after the
// wait, so that a wait cannot outlast it.
func (s *Server) serveServiceAccount(w *recorder, r *http.Request, sa *ServiceAccount) {
	w.user = sa.cfg.Username
	if isTWCLogout(r.URL.Path) {
		// The TWC session is the proxy's, shared by every service caller:
		// a script that ends "its" session as TWC's docs advise would end
		// everyone's, and the next request would open another. It is
		// logged out at shutdown (ReleaseServiceSession).
		w.outcome = "service_logout_kept"
		w.WriteHeader(http.StatusNoContent)
		return
	}
	opener, err := sa.session.wait(r.Context(), s.cfg.UpstreamTimeout, r.Body == http.NoBody)
	switch {
	case errors.Is(err, errSessionWait):
		w.outcome = "service_session_timeout"
		s.fail(w, r, http.StatusGatewayTimeout, "Upstream unavailable",
			"The application behind the proxy did not answer in time.")
		return
	case err != nil: // the caller went away
		w.outcome = "service_session_canceled"
		w.WriteHeader(499) // nginx's "client closed request", for the log line only
		return
	case opener:
		// ModifyResponse or ErrorHandler ends the turn as soon as the
		// answer's headers are in; this is for a request that got neither.
		w.opensSession = true
		defer sa.endTurn(w, 0)
	}
	tok, err := sa.Token(r.Context())
	if err != nil {
		w.outcome = "service_account_unavailable"
		writeJSONError(w, http.StatusServiceUnavailable, "service_account_unavailable",
			"the proxy's service account could not get a token from the auth server; try again later")
		return
	}
	w.outcome = "proxied_service_account"
	s.forward(w, r, "Token "+tok, true)
}

// requireSession returns the request's valid session, refreshing its ID
// token first when it is due. When there is none it answers the request
// (login redirect when login is set and r is a navigation, else 401; 503
// when the auth server is out of reach) and returns false.
func (s *Server) requireSession(w *recorder, r *http.Request, login bool) (*session.Session, bool) {
	sess, err := s.store.Load(r)
	return s.checkSession(w, r, sess, err, login)
}

// checkSession is requireSession for a session the caller already loaded
// (sess and err are store.Load's results), so no request opens it twice.
func (s *Server) checkSession(w *recorder, r *http.Request, sess *session.Session, err error, login bool) (*session.Session, bool) {
	ep := s.auth.endpoints()
	if ep == nil {
		w.outcome = "auth_server_not_ready"
		s.fail(w, r, http.StatusServiceUnavailable, "The sign-in service is not reachable yet",
			"The proxy has not been able to reach the TWC Authentication server since it started. Try again in a moment.")
		return nil, false
	}
	if err != nil {
		reason := "no_session"
		if _, cerr := r.Cookie(s.store.CookieName()); cerr == nil {
			reason = "invalid_session"
			s.log.Debug("session cookie unusable", zap.String("request_id", w.id), zap.Error(err))
		}
		s.unauthenticated(w, r, ep, reason, login)
		return nil, false
	}
	w.user = sess.Subject
	now := s.now()
	if !refreshDue(sess, now, s.cfg.RefreshMargin) {
		return sess, true
	}
	if sess.RefreshToken == "" {
		if now.Before(sess.Expiry) {
			return sess, true
		}
		s.store.Clear(w, r)
		s.unauthenticated(w, r, ep, "expired", login)
		return nil, false
	}
	return s.refreshSession(w, r, ep, sess, login)
}

// refreshSession replaces sess by a refreshed one and writes its cookie in
// this very response.
func (s *Server) refreshSession(w *recorder, r *http.Request, ep *endpoints, old *session.Session, login bool) (*session.Session, bool) {
	sess, outcome, shared, err := s.refresher.refresh(r.Context(), ep, old)
	log := s.log.With(zap.String("request_id", w.id), zap.String("user", old.Subject))
	switch outcome {
	case refreshOK:
		if shared {
			s.m.Refreshes.WithLabelValues("shared").Inc()
		} else {
			s.m.Refreshes.WithLabelValues("success").Inc()
			log.Info("token refreshed", zap.Time("expiry", sess.Expiry))
		}
		if err := s.store.Save(w, r, sess); err != nil {
			// The token is good for this request; the next one refreshes
			// again from the memo.
			log.Error("save refreshed session", zap.Error(err))
		}
		return sess, true
	case refreshRejected:
		if !shared {
			s.m.Refreshes.WithLabelValues(rejectedLabel(err)).Inc()
			// A refresh token refused as invalid_grant is this session's
			// end. Any other refusal (of the proxy's client), or an answer
			// that fails verification (the auth server's keys or issuer
			// changed), ends every session that refreshes: the
			// operator's to act on.
			level := zapcore.WarnLevel
			if grantRefused(err) {
				level = zapcore.InfoLevel
			}
			if ce := log.Check(level, "refresh rejected; session ended"); ce != nil {
				ce.Write(zap.Error(err))
			}
		}
		s.store.Clear(w, r)
		s.unauthenticated(w, r, ep, "refresh_rejected", login)
		return nil, false
	default:
		if !shared {
			s.m.Refreshes.WithLabelValues("unavailable").Inc()
			log.Warn("refresh failed; auth server unavailable", zap.Error(err))
		}
		if s.now().Before(old.Expiry) {
			return old, true
		}
		w.outcome = "refresh_unavailable"
		s.fail(w, r, http.StatusServiceUnavailable, "The sign-in service is not responding",
			"Your sign-in expired and the TWC Authentication server could not renew it. Try again in a moment.")
		return nil, false
	}
}

func rejectedLabel(err error) string {
	if isInvalidAnswer(err) {
		return "invalid"
	}
	return "rejected"
}

// unauthenticated answers a request that has no valid session. A browser
// navigation is sent to sign in; anything else (XHR, fetch, API clients,
// POSTs) gets 401 JSON, so the background requests of an expired page do
// not each start a login flow and pile up state cookies.
func (s *Server) unauthenticated(w *recorder, r *http.Request, ep *endpoints, reason string, login bool) {
	s.m.Unauthenticated.WithLabelValues(reason).Inc()
	if login && isNavigation(r) {
		w.outcome = "login"
		s.redirectToLogin(w, r, ep, r.URL.RequestURI())
		return
	}
	w.outcome = "unauthenticated"
	writeJSONError(w, http.StatusUnauthorized, "unauthenticated", "a valid session is required; sign in at "+pathStart)
}

// isNavigation reports whether r is a top-level browser navigation: GET or
// HEAD, not marked as XHR, and either Sec-Fetch-Mode: navigate or, from
// browsers that send no Sec-Fetch headers, an Accept that wants HTML.
func isNavigation(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if r.Header.Get("X-Requested-With") != "" {
		return false
	}
	if mode := r.Header.Get("Sec-Fetch-Mode"); mode != "" {
		return mode == "navigate"
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// authCheck serves /oauth2/auth for nginx auth_request and forward-auth:
// 202 with a valid session, 401 without; never a redirect.
func (s *Server) authCheck(w *recorder, r *http.Request) {
	ep := s.auth.endpoints()
	if ep == nil {
		w.outcome = "auth_server_not_ready"
		writeJSONError(w, http.StatusServiceUnavailable, "not_ready", "auth server not reachable yet")
		return
	}
	sess, ok := s.requireSession(w, r, false)
	if !ok {
		return
	}
	w.outcome = "authorized"
	w.Header().Set("X-Auth-Request-User", sess.Subject)
	w.WriteHeader(http.StatusAccepted)
}
