package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// ClientAuth names how the proxy authenticates itself to the token endpoint.
type ClientAuth string

// Supported token-endpoint client authentication methods.
const (
	// ClientAuthXAuthSecret is TWC's deviation: the client secret travels in
	// an X-Auth-Secret header and client_id in the form.
	ClientAuthXAuthSecret ClientAuth = "x-auth-secret"
	// ClientAuthBasic is RFC 6749 §2.3.1 HTTP Basic (client_secret_basic).
	ClientAuthBasic ClientAuth = "client_secret_basic"
	// ClientAuthPost sends client_id and client_secret in the form body.
	ClientAuthPost ClientAuth = "client_secret_post"
)

// AuthConfig is what the proxy needs to know about the auth server.
type AuthConfig struct {
	// IssuerURL is where the auth server lives, e.g.
	// https://twc.example.com:8443/authentication.
	IssuerURL string
	// DiscoveryURL overrides IssuerURL + "/.well-known/openid-configuration";
	// newer TWC releases publish .../oidc-configuration instead.
	DiscoveryURL string
	ClientID     string
	ClientSecret string
	ClientAuth   ClientAuth
	// Scopes requested in addition to openid, on login and on refresh.
	Scopes []string
	// RedirectURL is the proxy's callback, whitelisted at the auth server.
	RedirectURL string
	// RequireNonce makes an ID token without a nonce claim an error. TWC
	// never echoes the nonce, so the default accepts its absence.
	RequireNonce bool
	// Timeout bounds every call to the auth server.
	Timeout time.Duration
}

// asymmetricAlgs are the only ID-token algorithms accepted. Symmetric ones
// (HS256, ...) would let anyone holding the client secret, or a public key
// misused as an HMAC key, mint tokens.
var asymmetricAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// maxClockSkew is how far in the future an iat claim may lie.
const maxClockSkew = 5 * time.Minute

// discoveryDoc holds the keys the proxy reads from the discovery document.
// signout_endpoint is TWC's non-standard key for end_session_endpoint.
type discoveryDoc struct {
	Issuer                string   `json:"issuer"`
	AuthURL               string   `json:"authorization_endpoint"`
	TokenURL              string   `json:"token_endpoint"`
	JWKSURL               string   `json:"jwks_uri"`
	EndSessionURL         string   `json:"end_session_endpoint"`
	SignoutURL            string   `json:"signout_endpoint"`
	Algorithms            []string `json:"id_token_signing_alg_values_supported"`
	CodeChallengeMethods  []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMeth []string `json:"token_endpoint_auth_methods_supported"`
}

// endpoints is the outcome of discovery; it never changes once published.
type endpoints struct {
	issuer     string
	tokenURL   string
	endSession string // standard end_session_endpoint
	twcSignout string // TWC signout_endpoint, used when endSession is empty
	pkce       bool
	oauth      *oauth2.Config
	verifier   *oidc.IDTokenVerifier // audience = the proxy's client_id
	keys       *keySet               // shared by every verifier of this provider
	algs       []string
}

// verifierFor returns a verifier for ID tokens from the token endpoint
// issued to clientID. It shares the provider's cached JWKS.
func (ep *endpoints) verifierFor(clientID string, now func() time.Time) *oidc.IDTokenVerifier {
	return ep.newVerifier(ep.keys, clientID, now)
}

// callerVerifier returns a verifier for tokens that callers bring, issued to
// any audience (the caller checks it). It shares the provider's cached JWKS
// but refetches it at most once per callerKeyRefetch.
func (ep *endpoints) callerVerifier(now func() time.Time) *oidc.IDTokenVerifier {
	return ep.newVerifier(ep.keys.forCallers(), "", now)
}

func (ep *endpoints) newVerifier(keys oidc.KeySet, clientID string, now func() time.Time) *oidc.IDTokenVerifier {
	return oidc.NewVerifier(ep.issuer, keys, &oidc.Config{
		ClientID:             clientID,
		SkipClientIDCheck:    clientID == "",
		SupportedSigningAlgs: ep.algs,
		Now:                  now,
	})
}

// AuthServer talks to the OpenID Connect provider: discovery, the token
// endpoint and ID-token verification. It is safe for concurrent use.
type AuthServer struct {
	cfg    AuthConfig
	client *http.Client
	log    *zap.Logger
	m      *Metrics
	now    func() time.Time
	ep     atomic.Pointer[endpoints]
}

// NewAuthServer returns a client for the auth server described by cfg.
// client carries transport settings (TLS, proxies); every call is also
// bounded by cfg.Timeout. Discovery happens in Run or Discover.
func NewAuthServer(cfg AuthConfig, client *http.Client, log *zap.Logger, m *Metrics) *AuthServer {
	if cfg.DiscoveryURL == "" {
		cfg.DiscoveryURL = strings.TrimSuffix(cfg.IssuerURL, "/") + "/.well-known/openid-configuration"
	}
	if cfg.ClientAuth == "" {
		cfg.ClientAuth = ClientAuthXAuthSecret
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if client == nil {
		client = &http.Client{}
	}
	return &AuthServer{cfg: cfg, client: client, log: log, m: m, now: time.Now}
}

// Ready reports whether discovery has succeeded.
func (a *AuthServer) Ready() bool { return a.ep.Load() != nil }

// endpoints returns the discovered endpoints, or nil before discovery.
func (a *AuthServer) endpoints() *endpoints { return a.ep.Load() }

// Run retries discovery with capped exponential backoff until it succeeds
// or ctx ends. The process keeps serving meanwhile: /readyz says not ready
// and protected routes answer 503, so a TWC outage at start does not make
// the pod crash-loop.
func (a *AuthServer) Run(ctx context.Context) {
	const maxDelay = 30 * time.Second
	delay := 500 * time.Millisecond
	for {
		err := a.Discover(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.m.DiscoveryFailures.Inc()
		a.log.Warn("auth server discovery failed; retrying",
			zap.String("discovery_url", a.cfg.DiscoveryURL), zap.Duration("retry_in", delay), zap.Error(err))
		// Full jitter keeps a fleet of sidecars from retrying in lockstep.
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay = min(delay*2, maxDelay)
	}
}

// Discover fetches the discovery document once and, on success, publishes
// the endpoints and a verifier.
func (a *AuthServer) Discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.DiscoveryURL, nil)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("discovery: read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("discovery: %s answered %s", a.cfg.DiscoveryURL, resp.Status)
	}
	var doc discoveryDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("discovery: decode document: %w", err)
	}
	ep, err := a.newEndpoints(&doc)
	if err != nil {
		return err
	}
	a.ep.Store(ep)
	a.m.AuthServerUp.Set(1)
	a.log.Info("auth server discovered",
		zap.String("issuer", ep.issuer), zap.String("token_endpoint", ep.tokenURL), zap.Bool("pkce", ep.pkce))
	return nil
}

// newEndpoints validates a discovery document and builds what the flows use.
//
// The issuer is taken from the document, not from the configured URL: in a
// cluster the sidecar reaches TWC by a Service name while TWC states its
// public https://<host>:8443/authentication, and that is what its tokens'
// iss claim carries.
func (a *AuthServer) newEndpoints(doc *discoveryDoc) (*endpoints, error) {
	var missing []string
	for _, kv := range [][2]string{{"issuer", doc.Issuer}, {"authorization_endpoint", doc.AuthURL}, {"token_endpoint", doc.TokenURL}, {"jwks_uri", doc.JWKSURL}} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("discovery: document lacks %s", strings.Join(missing, ", "))
	}
	// Endpoints must be absolute: a relative one would send browsers to
	// the proxy itself and fail every token and key call. A document
	// fetched over https that moves a flow to plain http is warned about,
	// not refused (no other OIDC client refuses it, and a TWC behind a
	// TLS front may publish its own http address): the token endpoint
	// gets X-Auth-Secret, codes and refresh tokens, the authorize page the
	// user's password, and jwks.json the keys every token is checked
	// against, all in clear.
	secure := strings.HasPrefix(strings.ToLower(a.cfg.DiscoveryURL), "https:")
	for _, kv := range [][2]string{{"authorization_endpoint", doc.AuthURL}, {"token_endpoint", doc.TokenURL}, {"jwks_uri", doc.JWKSURL}} {
		u, err := url.Parse(kv[1])
		switch {
		case err != nil:
			return nil, fmt.Errorf("discovery: %s: %w", kv[0], err)
		case u.Scheme != "https" && u.Scheme != "http" || u.Host == "":
			return nil, fmt.Errorf("discovery: %s %q is not an absolute http(s) URL", kv[0], kv[1])
		case secure && u.Scheme != "https":
			a.log.Warn("discovery: an endpoint is plain http in a document served over https: secrets and tokens to it travel in clear; fix the auth server's advertised URL",
				zap.String("key", kv[0]), zap.String("url", kv[1]))
		}
	}
	algs := asymmetricAlgs
	if len(doc.Algorithms) > 0 {
		algs = nil
		for _, alg := range doc.Algorithms {
			if slices.Contains(asymmetricAlgs, alg) {
				algs = append(algs, alg)
			}
		}
		if len(algs) == 0 {
			return nil, fmt.Errorf("discovery: provider signs ID tokens only with %v; only asymmetric algorithms are accepted", doc.Algorithms)
		}
	}
	keys := newKeySet(doc.JWKSURL, a.client, a.cfg.Timeout, func() time.Time { return a.now() }, a.log)
	scopes := append([]string{oidc.ScopeOpenID}, a.cfg.Scopes...)
	scopes = slices.Compact(scopes)
	ep := &endpoints{
		issuer:     doc.Issuer,
		tokenURL:   doc.TokenURL,
		endSession: doc.EndSessionURL,
		twcSignout: doc.SignoutURL,
		pkce:       slices.Contains(doc.CodeChallengeMethods, "S256"),
		keys:       keys,
		algs:       algs,
		oauth: &oauth2.Config{
			ClientID:    a.cfg.ClientID,
			RedirectURL: a.cfg.RedirectURL,
			Scopes:      scopes,
			Endpoint:    oauth2.Endpoint{AuthURL: doc.AuthURL, TokenURL: doc.TokenURL},
		},
	}
	ep.verifier = ep.verifierFor(a.cfg.ClientID, a.now)
	return ep, nil
}

// TokenError is an error answer from the token endpoint.
type TokenError struct {
	URL         string // the token endpoint, for the log line that reports it
	Status      int    // HTTP status
	Code        string // RFC 6749 §5.2 "error", when the body had one
	Description string // "error_description", cut to a sane length
}

func (e *TokenError) Error() string {
	msg := "token endpoint"
	if e.URL != "" {
		msg += " " + e.URL
	}
	msg += fmt.Sprintf(" answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// Rejected reports whether the auth server refused the grant itself, as
// opposed to failing. Providers differ on the error code for a dead refresh
// token (invalid_grant, invalid_request, ...), so a 4xx is a refusal
// whatever its code, except the answers that say "not now": 408 and 429
// (often from a front, not the auth server), and the codes
// temporarily_unavailable and server_error (RFC 6749 §4.1.2.1) and TWC's
// system_error (keystore problems), which TWC documents. Retrying those
// later with the same grant can succeed; a 5xx is never a refusal. Some
// servers answer an error with 200 and an OAuth error body: its code
// decides as it would with a 4xx. A 3xx (a redirect, not followed) is not
// a refusal.
func (e *TokenError) Rejected() bool {
	switch {
	case e.Status >= 500 || e.Status >= 300 && e.Status < 400:
		return false
	case e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests:
		return false
	case e.Code == "temporarily_unavailable" || e.Code == "server_error" || e.Code == "system_error":
		return false
	case e.Status < 300:
		return e.Code != ""
	}
	return true
}

// grantRefused reports whether err is the token endpoint refusing the
// grant itself as invalid_grant (RFC 6749 §5.2: a code or refresh token
// that is expired, spent, revoked or made up): one user's or one client's
// matter. Any other refusal is of the proxy's client or request (a wrong
// secret, an unknown client id), which the operator has to fix.
func grantRefused(err error) bool {
	var te *TokenError
	return errors.As(err, &te) && te.Rejected() && te.Code == "invalid_grant"
}

// errNoIDToken marks a token response that carried no id_token: for TWC the
// ID token is the credential, so such an answer is useless.
var errNoIDToken = errors.New("token response has no id_token")

// tokenResponse is the token endpoint's JSON. TWC's legacy endpoint sends no
// access_token, which is why x/oauth2's Exchange cannot be used.
type tokenResponse struct {
	IDToken      string          `json:"id_token"`
	RefreshToken string          `json:"refresh_token"`
	AccessToken  string          `json:"access_token"`
	ExpiresIn    json.RawMessage `json:"expires_in"` // number, or a string on some servers
	Error        string          `json:"error"`
	ErrorDesc    string          `json:"error_description"`
}

// postToken calls the token endpoint with the configured client
// authentication. setAuth, when set, adds request-specific authentication
// (the client_credentials grant's Basic user credentials).
func (a *AuthServer) postToken(ctx context.Context, ep *endpoints, form url.Values, setAuth func(*http.Request)) (*tokenResponse, error) {
	grant := form.Get("grant_type")
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()

	// A grant may name its own client (a service account's); else ours.
	if a.cfg.ClientAuth != ClientAuthBasic && !form.Has("client_id") {
		form.Set("client_id", a.cfg.ClientID)
	}
	if a.cfg.ClientAuth == ClientAuthPost {
		form.Set("client_secret", a.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%s grant: %w", grant, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	switch a.cfg.ClientAuth {
	case ClientAuthXAuthSecret:
		req.Header.Set("X-Auth-Secret", a.cfg.ClientSecret)
	case ClientAuthBasic:
		// RFC 6749 §2.3.1: both parts are form-urlencoded before Basic.
		req.SetBasicAuth(url.QueryEscape(a.cfg.ClientID), url.QueryEscape(a.cfg.ClientSecret))
	}
	if setAuth != nil {
		setAuth(req)
	}

	start := time.Now()
	resp, err := a.client.Do(req)
	a.m.TokenEndpoint.WithLabelValues(grant).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("%s grant: %w", grant, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s grant: read response: %w", grant, err)
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(raw, &tr)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		te := &TokenError{URL: ep.tokenURL, Status: resp.StatusCode}
		if jsonErr == nil {
			te.Code = truncate(tr.Error, 64)
			te.Description = truncate(tr.ErrorDesc, 200)
		}
		return nil, fmt.Errorf("%s grant: %w", grant, te)
	}
	if jsonErr != nil {
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		return nil, fmt.Errorf("%s grant: %s: malformed response (content type %q): %w", grant, ep.tokenURL, ct, jsonErr)
	}
	if tr.Error != "" {
		// An error answered with 200: the body, not the status, says what
		// went wrong (and whether it is worth retrying).
		return nil, fmt.Errorf("%s grant: %w", grant, &TokenError{
			URL: ep.tokenURL, Status: resp.StatusCode, Code: truncate(tr.Error, 64), Description: truncate(tr.ErrorDesc, 200),
		})
	}
	if tr.IDToken == "" {
		return nil, fmt.Errorf("%s grant: %s: %w", grant, ep.tokenURL, errNoIDToken)
	}
	return &tr, nil
}

// truncate cuts s to n bytes and strips control characters, so that a
// hostile error_description cannot forge log lines.
func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
