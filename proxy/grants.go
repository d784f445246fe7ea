package proxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// errInvalidToken marks an ID token that failed verification. Wrapping it
// lets callers tell a bad token from an unreachable auth server.
var errInvalidToken = errors.New("invalid ID token")

// redeem exchanges an authorization code for tokens (the vendor's step 3:
// scope, redirect_uri, client_id, grant_type, code, plus the PKCE verifier
// when one was sent) and returns a new, verified session.
func (a *AuthServer) redeem(ctx context.Context, ep *endpoints, code, verifier, nonce string) (*session.Session, error) {
	form := url.Values{
		"grant_type":   {"authorization_code"},
		"code":         {code},
		"redirect_uri": {a.cfg.RedirectURL},
		"scope":        {strings.Join(ep.oauth.Scopes, " ")},
	}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	tr, err := a.postToken(ctx, ep, form, nil)
	if err != nil {
		return nil, fmt.Errorf("exchange code: %w", err)
	}
	tok, err := a.verify(ctx, ep.verifier, tr.IDToken, &nonce, a.cfg.ClientID)
	if err != nil {
		return nil, fmt.Errorf("exchange code: %w", err)
	}
	now := a.now()
	return &session.Session{
		Subject:      tok.Subject,
		IDToken:      tr.IDToken,
		RefreshToken: tr.RefreshToken,
		Expiry:       tok.Expiry,
		Created:      now,
	}, nil
}

// refresh trades old's refresh token for a new ID token (the vendor's step
// 5) and verifies it. When the answer came but the provider's keys could
// not be had to check it (errKeysUnavailable), the answer is returned too:
// the refresh token is spent, so the caller keeps the answer to verify later
// with refreshed instead of spending the token again.
func (a *AuthServer) refresh(ctx context.Context, ep *endpoints, old *session.Session) (*session.Session, *tokenResponse, error) {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {old.RefreshToken},
		"redirect_uri":  {a.cfg.RedirectURL},
		"scope":         {strings.Join(ep.oauth.Scopes, " ")},
	}
	tr, err := a.postToken(ctx, ep, form, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("refresh: %w", err)
	}
	sess, err := a.refreshed(ctx, ep, old, tr)
	if errors.Is(err, errKeysUnavailable) {
		return nil, tr, err
	}
	return sess, nil, err
}

// refreshed verifies tr, the token endpoint's answer to refreshing old, and
// returns the session it makes. A provider that does not rotate refresh
// tokens answers without one; the old one then stays in use.
func (a *AuthServer) refreshed(ctx context.Context, ep *endpoints, old *session.Session, tr *tokenResponse) (*session.Session, error) {
	// OIDC Core §12.2: a refreshed ID token should carry no nonce, and if it
	// does it is the login's, which the session does not keep; skip the check.
	tok, err := a.verify(ctx, ep.verifier, tr.IDToken, nil, a.cfg.ClientID)
	if err != nil {
		return nil, fmt.Errorf("refresh: %w", err)
	}
	if tok.Subject != old.Subject {
		return nil, fmt.Errorf("refresh: %w: subject changed from %q to %q", errInvalidToken, old.Subject, tok.Subject)
	}
	rt := tr.RefreshToken
	if rt == "" {
		rt = old.RefreshToken
	}
	return &session.Session{
		Subject:      tok.Subject,
		IDToken:      tr.IDToken,
		RefreshToken: rt,
		Expiry:       tok.Expiry,
		Created:      old.Created,
	}, nil
}

// verify checks an ID token: signature against the provider's JWKS, issuer,
// audience, expiry and algorithm (go-oidc), then what go-oidc leaves to the
// caller: the nonce, an iat in the future and a missing sub. A failure is
// errInvalidToken, except when the signature could not be checked for want
// of the provider's keys: that is errKeysUnavailable, the auth server being
// unwell rather than the token being bad.
//
// nonce is the login request's nonce, or nil when there was none to check
// against. TWC never puts a nonce in its tokens, so an absent nonce passes
// unless RequireNonce is set; a present one must match.
//
// clientID, when set, is the client the token must have been issued to:
// OIDC Core §3.1.3.7 says a token with several audiences should carry azp,
// and an azp naming another client means the token was not issued to us.
func (a *AuthServer) verify(ctx context.Context, v *oidc.IDTokenVerifier, raw string, nonce *string, clientID string) (*oidc.IDToken, error) {
	vctx, probe := withKeysProbe(ctx)
	tok, err := v.Verify(vctx, raw)
	if err != nil {
		if probe.err != nil {
			return nil, probe.err
		}
		return nil, fmt.Errorf("%w: %w", errInvalidToken, err)
	}
	if tok.Subject == "" {
		return nil, fmt.Errorf("%w: no sub claim", errInvalidToken)
	}
	switch {
	case nonce == nil:
	case tok.Nonce == "" && a.cfg.RequireNonce:
		return nil, fmt.Errorf("%w: no nonce claim and auth.require_nonce is set", errInvalidToken)
	case tok.Nonce != "" && subtle.ConstantTimeCompare([]byte(tok.Nonce), []byte(*nonce)) != 1:
		return nil, fmt.Errorf("%w: nonce does not match the login request", errInvalidToken)
	}
	if clientID != "" {
		var c struct {
			AZP string `json:"azp"`
		}
		if err := tok.Claims(&c); err != nil {
			return nil, fmt.Errorf("%w: %w", errInvalidToken, err)
		}
		if (c.AZP != "" || len(tok.Audience) > 1) && c.AZP != clientID {
			return nil, fmt.Errorf("%w: authorized party %q is not this client", errInvalidToken, c.AZP)
		}
	}
	if !tok.IssuedAt.IsZero() && tok.IssuedAt.After(a.now().Add(maxClockSkew)) {
		return nil, fmt.Errorf("%w: issued in the future (iat %s)", errInvalidToken, tok.IssuedAt.UTC().Format(time.RFC3339))
	}
	return tok, nil
}
