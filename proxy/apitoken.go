package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
)

// APITokens configures verification of tokens that callers send themselves.
type APITokens struct {
	Enabled bool
	// Audiences accepted in the token's aud claim; at least one must match.
	Audiences []string
}

// bearerToken returns the token of an "Authorization: Token <jwt>" or
// "Bearer <jwt>" header (scheme case-insensitive), and whether the request
// carried any Authorization header at all. Several Authorization headers,
// or another scheme, yield ("", true): present but unusable.
func bearerToken(r *http.Request) (string, bool) {
	v := r.Header.Values("Authorization")
	if len(v) == 0 {
		return "", false
	}
	if len(v) > 1 {
		return "", true
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v[0]), " ")
	if !ok || !(strings.EqualFold(scheme, "Token") || strings.EqualFold(scheme, "Bearer")) {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// apiVerifier caches the any-audience verifier of one discovery result.
type apiVerifier struct {
	ep *endpoints
	v  *oidc.IDTokenVerifier
}

// verifyAPIToken checks a caller's token like an ID token at login
// (signature via JWKS, issuer, expiry, asymmetric algorithms only, sub
// present, iat not in the future) with the audience in cfg.APITokens. A
// signature that no held key verifies refetches the JWKS at most once per
// callerKeyRefetch, so forged tokens cannot make the proxy hammer the auth
// server.
func (s *Server) verifyAPIToken(ctx context.Context, ep *endpoints, raw string) (*oidc.IDToken, error) {
	av := s.apiVerifier.Load()
	if av == nil || av.ep != ep {
		av = &apiVerifier{ep: ep, v: ep.callerVerifier(s.now)}
		s.apiVerifier.Store(av)
	}
	tok, err := s.auth.verify(ctx, av.v, raw, nil, "")
	if err != nil {
		return nil, err
	}
	for _, aud := range tok.Audience {
		if slices.Contains(s.cfg.APITokens.Audiences, aud) {
			return tok, nil
		}
	}
	return nil, fmt.Errorf("%w: audience %q not accepted", errInvalidToken, tok.Audience)
}

// serveAPIToken forwards a request that brought its own token, once the
// token is verified; an invalid one is answered 401 and never forwarded.
func (s *Server) serveAPIToken(w *recorder, r *http.Request, raw string) {
	ep := s.auth.endpoints()
	if ep == nil {
		w.outcome = "auth_server_not_ready"
		writeJSONError(w, http.StatusServiceUnavailable, "unavailable", "the auth server has not been reached yet; cannot verify tokens")
		return
	}
	if raw == "" {
		s.rejectAPIToken(w, "unsupported Authorization header: send exactly one \"Token <jwt>\" or \"Bearer <jwt>\"", nil)
		return
	}
	tok, err := s.verifyAPIToken(r.Context(), ep, raw)
	if errors.Is(err, errKeysUnavailable) {
		// The token may be good: say the auth server is unavailable, as
		// before discovery, and do not forward it.
		s.m.APITokens.WithLabelValues("unavailable").Inc()
		w.outcome = "api_token_unavailable"
		// The failed fetch is the warning (keySet); any caller can send
		// tokens that need one, so a line per request is info.
		s.log.Info("api token not verified: signing keys unavailable", zap.String("request_id", w.id), zap.Error(err))
		writeJSONError(w, http.StatusServiceUnavailable, "unavailable", "the auth server's signing keys could not be fetched; cannot verify tokens, try again later")
		return
	}
	if err != nil {
		s.rejectAPIToken(w, "the token is invalid or expired", err)
		return
	}
	s.m.APITokens.WithLabelValues("accepted").Inc()
	w.user, w.outcome = tok.Subject, "proxied_api_token"
	s.forward(w, r, "Token "+raw, false)
}

func (s *Server) rejectAPIToken(w *recorder, msg string, err error) {
	s.m.APITokens.WithLabelValues("rejected").Inc()
	w.outcome = "api_token_rejected"
	s.log.Info("api token rejected", zap.String("request_id", w.id), zap.Error(err))
	writeJSONError(w, http.StatusUnauthorized, "invalid_token", msg)
}
