// Package authtest is a faithful fake of the Teamwork Cloud (TWC)
// Authentication server, legacy "Token-based authentication" generation.
//
// It serves the legacy discovery document, a JWKS with one RSA key, the
// authorize endpoint with a login form and an SSO cookie, the token endpoint
// (authorization_code, refresh_token and client_credentials grants, guarded by
// the non-standard X-Auth-Secret header), the validation endpoint and the
// signout endpoint. ID tokens have the exact shape of the vendor's documented
// sample: header {"alg":"RS256"} and claims sub, aud (a plain string), iss,
// exp and iat, nothing else.
//
// The fake is used both by tests and by the demo subcommand of the proxy, so
// it does not import "testing" and every method is safe for concurrent use.
// Faults can be switched on at run time to exercise a client's error paths.
package authtest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// Server is the fake auth server. It is an http.Handler serving every
// endpoint under the issuer URL's path; Start also runs it on a listener.
type Server struct {
	issuer     string
	issuerPath string // "" or e.g. "/authentication"; also the SSO cookie path
	secure     bool   // issuer is https: the SSO cookie is Secure
	opts       Options
	clients    []string
	disabled   []string
	unlimited  []string
	users      map[string]string // read-only after New
	now        func() time.Time
	handler    http.Handler

	httpSrv *http.Server  // nil unless Start
	baseURL string        // "http://host:port" when started
	served  chan struct{} // closed when Serve returns

	mu        sync.Mutex
	key       *rsa.PrivateKey
	kid       string
	faults    Faults
	codes     map[string]*authCode
	refresh   map[string]*refreshToken
	sso       map[string]ssoSession
	requests  []TokenRequest
	callCount map[string]int
}

// New returns a Server whose discovery document and tokens name issuer, for
// example "http://127.0.0.1:8555/authentication" (no trailing slash). It
// generates a fresh RSA-2048 signing key. New copies the slices and the map
// of opts, so later changes by the caller have no effect.
func New(issuer string, opts Options) (*Server, error) {
	u, err := parseIssuer(issuer)
	if err != nil {
		return nil, err
	}
	opts, err = withDefaults(opts)
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return nil, fmt.Errorf("authtest: generate signing key: %w", err)
	}
	s := &Server{
		issuer:     issuer,
		issuerPath: u.Path,
		secure:     u.Scheme == "https",
		opts:       opts,
		clients:    slices.Clone(opts.ClientIDs),
		disabled:   slices.Clone(opts.DisabledUsers),
		unlimited:  slices.Clone(opts.UnlimitedClients),
		users:      make(map[string]string, len(opts.Users)),
		now:        opts.Now,
		key:        key,
		kid:        thumbprint(&key.PublicKey),
		codes:      make(map[string]*authCode),
		refresh:    make(map[string]*refreshToken),
		sso:        make(map[string]ssoSession),
		callCount:  make(map[string]int),
	}
	for name, pw := range opts.Users {
		s.users[name] = pw
	}
	s.handler = s.routes()
	return s, nil
}

// parseIssuer checks that issuer can serve as both the iss claim and the
// prefix of ServeMux patterns.
func parseIssuer(issuer string) (*url.URL, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("authtest: parse issuer: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("authtest: issuer %q: scheme must be http or https", issuer)
	case u.Host == "":
		return nil, fmt.Errorf("authtest: issuer %q: missing host", issuer)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("authtest: issuer %q: must not carry userinfo, query or fragment", issuer)
	case strings.HasSuffix(u.Path, "/"):
		return nil, fmt.Errorf("authtest: issuer %q: must not end with a slash", issuer)
	case u.Path != "" && (u.Path != path.Clean(u.Path) || strings.Trim(u.Path, issuerPathChars) != "" || u.RawPath != ""):
		return nil, fmt.Errorf("authtest: issuer %q: path must be clean and use only letters, digits and %q", issuer, "/-._~")
	}
	return u, nil
}

// routes is the one table of every endpoint, relative to the issuer path.
func (s *Server) routes() http.Handler {
	p := s.issuerPath
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+p+"/.well-known/openid-configuration", s.handleDiscovery)
	mux.HandleFunc("GET "+p+"/jwks.json", s.handleJWKS)
	mux.HandleFunc("GET "+p+"/authorize", s.handleAuthorize)
	mux.HandleFunc("POST "+p+"/authorize", s.handleLogin)
	mux.HandleFunc("POST "+p+"/api/token", s.handleToken)
	mux.HandleFunc("GET "+p+"/api/validate", s.handleValidate)
	mux.HandleFunc("POST "+p+"/api/validate", s.handleValidate)
	mux.HandleFunc("GET "+p+"/api/signout", s.handleSignout)
	return mux
}

// Start runs a new Server on opts.Addr, which must be a loopback address, with
// issuer "http://<addr>/authentication". Stop it with Close.
func Start(opts Options) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("authtest: listen: %w", err)
	}
	base := "http://" + ln.Addr().String()
	s, err := New(base+"/authentication", opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.baseURL = base
	s.served = make(chan struct{})
	s.httpSrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      5 * time.Minute, // above any sane Faults.TokenDelay
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    maxBodyBytes,
	}
	go func() {
		defer close(s.served)
		s.httpSrv.Serve(ln) // always non-nil; ErrServerClosed after Close
	}()
	return s, nil
}

// checkLoopback refuses to expose the default Administrator password beyond
// this machine.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("authtest: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("authtest: listen address %q is not loopback", addr)
}

// Close stops a server started with Start, giving in-flight requests a short
// grace period. It is a no-op for a Server made with New.
func (s *Server) Close() error {
	if s.httpSrv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := s.httpSrv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.httpSrv.Close()
	}
	<-s.served
	if err != nil {
		return fmt.Errorf("authtest: close: %w", err)
	}
	return nil
}

// URL is the base URL of a started server, "http://127.0.0.1:port", or ""
// for a Server made with New.
func (s *Server) URL() string { return s.baseURL }

// Issuer is the issuer URL, the iss claim of every token.
func (s *Server) Issuer() string { return s.issuer }

// ServeHTTP serves every endpoint under the issuer path. Request bodies are
// capped, since every legitimate body is a small form.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
	s.handler.ServeHTTP(w, r)
}

// SetFaults replaces the current faults; requests already running keep the
// faults they started with.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the current faults.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// TokenRequests returns a copy of the token-endpoint requests seen so far,
// oldest first, including rejected ones. Only the most recent 10000 are kept.
func (s *Server) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenRequest, len(s.requests))
	for i, r := range s.requests {
		out[i] = TokenRequest{GrantType: r.GrantType, Header: r.Header.Clone(), Form: cloneValues(r.Form), Query: cloneValues(r.Query), At: r.At}
	}
	return out
}

// TokenCalls counts token-endpoint requests with the given grant_type, or
// all of them when grantType is "".
func (s *Server) TokenCalls(grantType string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if grantType == "" {
		n := 0
		for _, c := range s.callCount {
			n += c
		}
		return n
	}
	return s.callCount[grantType]
}

// RevokeRefreshTokens invalidates every refresh token issued so far, as an
// administrator revoking sessions would. Later sign-ins get working tokens.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.refresh)
}

// RotateKey replaces the signing key. From now on tokens are signed with the
// new key and the JWKS publishes only the new key, so tokens signed before no
// longer verify: clients must refetch the JWKS and refresh.
func (s *Server) RotateKey() error {
	key, err := rsa.GenerateKey(rand.Reader, keyBits)
	if err != nil {
		return fmt.Errorf("authtest: rotate signing key: %w", err)
	}
	kid := thumbprint(&key.PublicKey)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key, s.kid = key, kid
	return nil
}

// PublicKey returns the current signing key's public half.
func (s *Server) PublicKey() *rsa.PublicKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &s.key.PublicKey
}

// signingKey returns the current key and its kid together, so a token and
// its header never mix two keys across a concurrent RotateKey.
func (s *Server) signingKey() (*rsa.PrivateKey, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key, s.kid
}

func (s *Server) endpoint(rel string) string { return s.issuer + rel }

// discovery is the legacy TWC discovery document, with keys in the order of
// the vendor's sample and nothing the sample lacks.
type discovery struct {
	Issuer                           string   `json:"issuer"`
	AuthorizationEndpoint            string   `json:"authorization_endpoint"`
	TokenEndpoint                    string   `json:"token_endpoint"`
	JWKSURI                          string   `json:"jwks_uri"`
	ValidationEndpoint               string   `json:"validation_endpoint"`
	SignoutEndpoint                  string   `json:"signout_endpoint"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	CodeChallengeMethodsSupported    []string `json:"code_challenge_methods_supported,omitempty"`
}

func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	d := discovery{
		Issuer:                           s.issuer,
		AuthorizationEndpoint:            s.endpoint("/authorize"),
		TokenEndpoint:                    s.endpoint("/api/token"),
		JWKSURI:                          s.endpoint("/jwks.json"),
		ValidationEndpoint:               s.endpoint("/api/validate"),
		SignoutEndpoint:                  s.endpoint("/api/signout"),
		ResponseTypesSupported:           []string{"id_token", "code"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"RS256"},
	}
	if s.opts.AdvertisePKCE {
		d.CodeChallengeMethodsSupported = []string{"S256"}
	}
	writeJSON(w, http.StatusOK, d)
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	f := s.Faults()
	if f.JWKSStatus != 0 {
		writeJSON(w, f.JWKSStatus, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	key, kid := s.signingKey()
	if !f.IncludeKid {
		kid = ""
	}
	writeJSON(w, http.StatusOK, map[string][]jwk{"keys": {publicJWK(&key.PublicKey, kid)}})
}

func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}
