package proxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// ServiceAccountConfig is a TWC identity used, without user interaction,
// for requests that carry no user session (the vendor page's
// "Authentication without user interaction").
type ServiceAccountConfig struct {
	Username string
	Password string
	// ClientID the token is requested for; "" means the proxy's own.
	// Listing it in authentication.client.unlimited gives long-lived tokens.
	ClientID string
	// Routes are path regexes served with the service token; none means
	// every request.
	Routes []*regexp.Regexp
	// RefreshMargin: renew the token this long before it expires, or
	// halfway through its life if it lives no longer than that.
	RefreshMargin time.Duration
}

// ErrServiceAccountUnavailable is returned while the service token cannot be
// had (bad credentials, auth server down) and the retry backoff runs.
var ErrServiceAccountUnavailable = errors.New("service account token unavailable")

// Retry backoff after a failed fetch, and the hold between two tokens
// dropped because the upstream rejected them: doubling from the first to
// the cap, so wrong credentials or an upstream that rejects every token
// never turn into a tight loop against the auth server.
const (
	serviceBackoffFirst = time.Second
	serviceBackoffMax   = 5 * time.Minute
)

// serviceBackoff is the wait after the nth failure in a row, jittered over
// its upper half.
func serviceBackoff(n int) time.Duration {
	b := min(serviceBackoffFirst<<min(n-1, 20), serviceBackoffMax)
	return b/2 + rand.N(b/2+1)
}

// ServiceAccount holds the service identity's ID token in memory, shared by
// all requests, and renews it before expiry with one call to the auth
// server however many requests wait; a token the upstream rejects is
// dropped. It also keeps the service identity's TWC session (see
// serviceSession), so service traffic shares one TWC session instead of
// opening one per request. It is safe for concurrent use.
type ServiceAccount struct {
	cfg     ServiceAccountConfig
	auth    *AuthServer
	log     *zap.Logger
	m       *Metrics
	now     func() time.Time
	group   singleflight.Group
	session *serviceSession

	mu       sync.Mutex
	tok      *serviceToken
	failures int
	retryAt  time.Time
	lastErr  error
	drops    int       // tokens dropped on upstream 401s in a row
	dropHold time.Time // no token is dropped before then
}

type serviceToken struct {
	idToken      string
	refreshToken string
	expiry       time.Time
	margin       time.Duration // renew this long before expiry
}

// due reports whether t should be renewed at now.
func (t *serviceToken) due(now time.Time) bool {
	return needsRefresh(t.expiry, now, t.margin)
}

// NewServiceAccount returns a service account that gets its tokens from auth.
func NewServiceAccount(cfg ServiceAccountConfig, auth *AuthServer, log *zap.Logger, m *Metrics) *ServiceAccount {
	if cfg.ClientID == "" {
		cfg.ClientID = auth.cfg.ClientID
	}
	return &ServiceAccount{cfg: cfg, auth: auth, log: log, m: m, now: time.Now, session: newServiceSession(log)}
}

// matches reports whether path is served with the service token. Like
// skip_auth, only canonical paths qualify.
func (sa *ServiceAccount) matches(r *http.Request) bool {
	if len(sa.cfg.Routes) == 0 {
		return true
	}
	if !canonicalPath(r.URL.Path, r.URL.RawPath) {
		return false
	}
	for _, re := range sa.cfg.Routes {
		if re.MatchString(r.URL.Path) {
			return true
		}
	}
	return false
}

// Token returns a valid service ID token, fetching or renewing it when due.
// While a renewal fails, the token held, if it has not expired (nor been
// dropped on a 401), is still served.
func (sa *ServiceAccount) Token(ctx context.Context) (string, error) {
	now := sa.now()
	sa.mu.Lock()
	tok, retryAt, lastErr := sa.tok, sa.retryAt, sa.lastErr
	sa.mu.Unlock()
	if tok != nil && !tok.due(now) {
		return tok.idToken, nil
	}
	stillValid := tok != nil && now.Before(tok.expiry)
	if now.Before(retryAt) {
		if stillValid {
			return tok.idToken, nil
		}
		return "", fmt.Errorf("%w (retry in %s): %w", ErrServiceAccountUnavailable, retryAt.Sub(now).Round(time.Second), lastErr)
	}
	v, err, _ := sa.group.Do("token", func() (any, error) {
		return sa.renew(context.WithoutCancel(ctx))
	})
	if err != nil {
		// The renewal can take up to two auth.timeout: the old token may
		// have expired meanwhile, or been dropped on TWC's 401, so the
		// token held now is judged, not the one read before.
		if held := sa.heldToken(); held != "" {
			return held, nil
		}
		return "", fmt.Errorf("%w: %w", ErrServiceAccountUnavailable, err)
	}
	return v.(string), nil
}

// heldToken returns the token held now if it has not expired, else "". It
// never fetches one, and a token dropped on a 401 is no longer held.
func (sa *ServiceAccount) heldToken() string {
	now := sa.now()
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if sa.tok == nil || !now.Before(sa.tok.expiry) {
		return ""
	}
	return sa.tok.idToken
}

// renew gets a new token: the refresh grant when a refresh token came back,
// else (or when that fails) a new client_credentials request.
func (sa *ServiceAccount) renew(ctx context.Context) (string, error) {
	sa.mu.Lock()
	old := sa.tok
	sa.mu.Unlock()
	if old != nil && !old.due(sa.now()) {
		return old.idToken, nil // another flight just renewed it
	}
	ep := sa.auth.endpoints()
	if ep == nil {
		return "", errors.New("auth server not discovered yet")
	}
	var tok *serviceToken
	var err error
	if old != nil && old.refreshToken != "" {
		if tok, err = sa.refresh(ctx, ep, old); err != nil {
			sa.log.Info("service account refresh failed; requesting a new token", zap.String("username", sa.cfg.Username), zap.Error(err))
		}
	}
	if tok == nil {
		tok, err = sa.fetch(ctx, ep)
	}
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if err != nil {
		sa.failures++
		backoff := serviceBackoff(sa.failures)
		sa.retryAt, sa.lastErr = sa.now().Add(backoff), err
		result := "error"
		var te *TokenError
		if errors.As(err, &te) && te.Rejected() {
			result = "rejected"
		}
		sa.m.ServiceTokenFetches.WithLabelValues(result).Inc()
		sa.log.Error("service account token fetch failed",
			zap.String("username", sa.cfg.Username), zap.String("client_id", sa.cfg.ClientID),
			zap.String("result", result), zap.Duration("retry_in", backoff), zap.Error(err))
		return "", err
	}
	sa.failures, sa.retryAt, sa.lastErr = 0, time.Time{}, nil
	sa.tok = tok
	sa.m.serviceExpiry.Store(tok.expiry.UnixNano())
	sa.m.ServiceTokenFetches.WithLabelValues("success").Inc()
	sa.log.Info("service account token fetched",
		zap.String("username", sa.cfg.Username), zap.String("client_id", sa.cfg.ClientID), zap.Time("expiry", tok.expiry))
	return tok.idToken, nil
}

// fetch is the vendor's request: X-Auth-Secret (the proxy's client
// authentication), Basic base64(username:password), grant_type and client_id.
// The vendor's page gives grant_type and client_id as query parameters,
// while its other grants (and the public clients of the other grants) use
// a form body; they are sent both ways, so a server that reads either
// finds them.
func (sa *ServiceAccount) fetch(ctx context.Context, ep *endpoints) (*serviceToken, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {sa.cfg.ClientID}}
	tr, err := sa.auth.postToken(ctx, ep, form, func(r *http.Request) {
		q := r.URL.Query()
		q.Set("grant_type", "client_credentials")
		q.Set("client_id", sa.cfg.ClientID)
		r.URL.RawQuery = q.Encode()
		r.SetBasicAuth(sa.cfg.Username, sa.cfg.Password)
	})
	if err != nil {
		return nil, err
	}
	return sa.verified(ctx, ep, tr, "")
}

func (sa *ServiceAccount) refresh(ctx context.Context, ep *endpoints, old *serviceToken) (*serviceToken, error) {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {old.refreshToken},
		"client_id":     {sa.cfg.ClientID},
		"redirect_uri":  {sa.auth.cfg.RedirectURL},
		"scope":         {strings.Join(ep.oauth.Scopes, " ")},
	}
	tr, err := sa.auth.postToken(ctx, ep, form, nil)
	if err != nil {
		return nil, err
	}
	return sa.verified(ctx, ep, tr, old.refreshToken)
}

// verified checks the ID token like any other (audience: the service
// account's client id) and that it names the configured user.
func (sa *ServiceAccount) verified(ctx context.Context, ep *endpoints, tr *tokenResponse, oldRefresh string) (*serviceToken, error) {
	idt, err := sa.auth.verify(ctx, ep.verifierFor(sa.cfg.ClientID, sa.auth.now), tr.IDToken, nil, sa.cfg.ClientID)
	if err != nil {
		return nil, err
	}
	if idt.Subject != sa.cfg.Username {
		return nil, fmt.Errorf("%w: token is for %q, not the service account %q", errInvalidToken, idt.Subject, sa.cfg.Username)
	}
	rt := tr.RefreshToken
	if rt == "" {
		rt = oldRefresh
	}
	margin := max(0, tokenMargin(sa.cfg.RefreshMargin, tokenLifetime(idt, sa.now())))
	return &serviceToken{idToken: tr.IDToken, refreshToken: rt, expiry: idt.Expiry, margin: margin}, nil
}

// answered looks at the upstream's answer to a service request (requestID)
// that carried idToken and went with the jar sent: it keeps the cookies and
// drops the token on a 401, naming the request in its warning. It reports
// whether the token was dropped.
func (sa *ServiceAccount) answered(res *http.Response, idToken string, sent *cookiejar.Jar, requestID string) (dropped bool) {
	sa.session.keepCookies(res, sent)
	return res.StatusCode == http.StatusUnauthorized && sa.rejected(idToken, requestID)
}

// endTurn ends w's turn at the TWC session gate, if w opens the session:
// status is the upstream's answer, 0 when none came or when it made the
// proxy drop the token (the waiting requests then go with a new one, so
// one of them opens the session as after no answer). The first call wins.
func (sa *ServiceAccount) endTurn(w *recorder, status int) {
	if w.opensSession {
		w.opensSession = false
		sa.session.opened(status)
	}
}

// rejected drops idToken, which the upstream answered with 401, together
// with the TWC session opened for it, so that the next request fetches a
// new token (client_credentials) and opens a new session: TWC REST stops
// accepting a token that was revoked or signed with a replaced key, and an
// unlimited token would otherwise be rejected until restart. A 401 to a
// token that is no longer the current one changes nothing, nor does one
// within the hold after a drop, which grows like the fetch backoff: an
// upstream that rejects every token costs one token call per hold, not one
// per request. The hold starts over once a drop comes a full backoff cap
// after the previous hold ended. It reports whether idToken was dropped.
func (sa *ServiceAccount) rejected(idToken, requestID string) (dropped bool) {
	now := sa.now()
	sa.mu.Lock()
	if sa.tok == nil || sa.tok.idToken != idToken || now.Before(sa.dropHold) {
		sa.mu.Unlock()
		return false
	}
	if now.Sub(sa.dropHold) > serviceBackoffMax {
		sa.drops = 0
	}
	sa.drops++
	hold := serviceBackoff(sa.drops)
	sa.tok, sa.dropHold = nil, now.Add(hold)
	sa.session.drop()
	sa.m.serviceExpiry.Store(0)
	sa.m.ServiceTokenDrops.Inc()
	sa.mu.Unlock()
	sa.log.Warn("upstream rejected the service account token; dropped it and its TWC session",
		zap.String("request_id", requestID), zap.String("username", sa.cfg.Username), zap.String("client_id", sa.cfg.ClientID),
		zap.Int("status", http.StatusUnauthorized), zap.Duration("next_drop_after", hold))
	return true
}
