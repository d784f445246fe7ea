package authtest

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// Defaults of Options, from authserver.properties where TWC documents a value
// (shared/twc-facts.md, section 2).
const (
	DefaultAddr         = "127.0.0.1:0"
	DefaultSecret       = "CHANGE_ME"             // authentication.client.secret
	DefaultTokenTTL     = 900 * time.Second       // authentication.token.expirity of 19.0-2021x and 2026x
	DefaultCodeTTL      = 15 * time.Second        // authentication.code.token.expirity
	DefaultRefreshTTL   = 14 * 24 * time.Hour     // authentication.refresh.token.expirity
	DefaultUnlimitedTTL = 630720000 * time.Second // authentication.unlimited.token.expirity, 20 years
)

// SSOCookieName is the cookie that keeps a browser signed in to the fake, so
// a second authorize request skips the login form.
const SSOCookieName = "twc_auth_sso"

const (
	ssoTTL        = 7 * 24 * time.Hour // authentication.sso.token.expirity
	maxBodyBytes  = 64 << 10           // every legitimate body is a small form
	maxRecorded   = 10000              // bounds TokenRequests in long demo runs
	shutdownGrace = 2 * time.Second    // Close waits this long for handlers
	keyBits       = 2048
	// issuerPathChars are the characters allowed in the issuer path, which
	// becomes part of ServeMux patterns.
	issuerPathChars = "/-._~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// Options configures a Server. The zero value is usable: every zero field
// takes the default documented on it, mirroring authserver.properties.
type Options struct {
	// Addr is the listen address used by Start. It must be a loopback
	// address, because the fake accepts well-known default credentials.
	// Default "127.0.0.1:0".
	Addr string
	// ClientIDs is authentication.client.ids: the authorize and token
	// endpoints refuse any other client_id. Default ["dashboard"].
	ClientIDs []string
	// Secret is authentication.client.secret, which every token-endpoint
	// call must carry in the X-Auth-Secret header. Default "CHANGE_ME".
	Secret string
	// RedirectWhitelist is authentication.redirect.uri.whitelist. Like
	// TWC, a redirect_uri is accepted when it starts with any entry.
	// Default ["http://127.0.0.1", "http://localhost"].
	RedirectWhitelist []string
	// Users maps usernames to passwords. Default {"Administrator":
	// "Administrator"}.
	Users map[string]string
	// DisabledUsers exist in Users but may not sign in, neither through
	// the form nor through client_credentials.
	DisabledUsers []string
	// TokenTTL is the ID-token lifetime (authentication.token.expirity).
	// Default 900s.
	TokenTTL time.Duration
	// CodeTTL is the authorization-code lifetime. Default 15s.
	CodeTTL time.Duration
	// RefreshTTL is the refresh-token lifetime. Default 14 days.
	RefreshTTL time.Duration
	// UnlimitedClients is authentication.client.unlimited: every ID token
	// issued to these clients lives UnlimitedTTL instead of TokenTTL.
	UnlimitedClients []string
	// UnlimitedTTL is authentication.unlimited.token.expirity. Default 20
	// years.
	UnlimitedTTL time.Duration
	// RotateRefreshTokens makes the refresh grant return a new refresh
	// token and invalidate the presented one; presenting an invalidated
	// one again is treated as theft and revokes every refresh token
	// descended from the same sign-in. When false the refresh response has
	// no refresh_token field and the old token stays valid. Whether TWC
	// rotates is not documented, so clients must cope with both.
	RotateRefreshTokens bool
	// AdvertisePKCE adds code_challenge_methods_supported ["S256"] to the
	// discovery document and makes an S256 code_challenge mandatory on
	// the authorize endpoint. The legacy TWC server advertises no PKCE.
	// Without it a code_challenge that a client sends anyway is still
	// bound to the code and verified, so a client that sends a challenge
	// but forgets the verifier fails either way. Only S256 is accepted.
	AdvertisePKCE bool
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Faults are run-time switches that make the server misbehave in the ways a
// client must survive. The zero value is a well-behaved server.
//
// TokenDelay, TokenStatus and MalformedJSON model failures in front of the
// auth server (a proxy, an overloaded JVM): they act before any validation,
// even of X-Auth-Secret, and consume no code or refresh token, so a client
// may retry with the same one. TokenErrorCode picks the error code of such
// an answer among those TWC documents (temporarily_unavailable, system_error
// for keystore problems, ...) or RFC 6749's. The ID-token faults apply to
// every token endpoint response; the nonce faults only to the
// authorization_code grant, because refreshed ID tokens carry no nonce
// (OpenID Connect Core §12.2).
type Faults struct {
	BadSignature         bool          // ID-token signature bytes are corrupted
	WrongIssuer          bool          // iss is the issuer + "-wrong"
	WrongAudience        bool          // aud is "someone-else"
	Expired              bool          // exp is now-1h, iat now-2h
	IncludeKid           bool          // JOSE header and JWKS key carry a kid (TWC sends none)
	EchoNonce            bool          // ID token from the code grant carries the authorize nonce
	WrongNonce           bool          // ID token from the code grant carries a different nonce
	IncludeAccessToken   bool          // token responses carry an opaque access_token (TWC legacy sends none)
	OmitIDToken          bool          // token responses carry no id_token
	OmitIDTokenOnRefresh bool          // refresh-grant responses carry no id_token
	TokenStatus          int           // non-zero: token endpoint answers this status, error TokenErrorCode
	TokenErrorCode       string        // the error of a TokenStatus answer; default temporarily_unavailable
	TokenDelay           time.Duration // token endpoint waits this long (or until the client gives up)
	MalformedJSON        bool          // token endpoint answers 200 with truncated JSON
	JWKSStatus           int           // non-zero: jwks.json answers this status (keys unreachable)
	// IDToken, when set, replaces the ID token the token endpoint would
	// issue: it gets the claims the server would have used (sub, aud,
	// nonce of the request) and returns the raw token to send, e.g. one
	// built with SignJWT. For hostile-token tests.
	IDToken func(sub, aud, nonce string) string
}

// TokenRequest is one request seen by the token endpoint, kept so tests can
// assert what a client sent (headers, grant, parameters).
type TokenRequest struct {
	GrantType string
	Header    http.Header
	Form      url.Values // query and body parameters, body values first
	Query     url.Values // the query parameters alone
	At        time.Time
}

// withDefaults fills zero fields and rejects values that cannot work.
func withDefaults(o Options) (Options, error) {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if len(o.ClientIDs) == 0 {
		o.ClientIDs = []string{"dashboard"}
	}
	if o.Secret == "" {
		o.Secret = DefaultSecret
	}
	if len(o.RedirectWhitelist) == 0 {
		o.RedirectWhitelist = []string{"http://127.0.0.1", "http://localhost"}
	}
	o.RedirectWhitelist = slices.Clone(o.RedirectWhitelist)
	if len(o.Users) == 0 {
		o.Users = map[string]string{"Administrator": "Administrator"} // TWC's built-in account
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TokenTTL", &o.TokenTTL, DefaultTokenTTL},
		{"CodeTTL", &o.CodeTTL, DefaultCodeTTL},
		{"RefreshTTL", &o.RefreshTTL, DefaultRefreshTTL},
		{"UnlimitedTTL", &o.UnlimitedTTL, DefaultUnlimitedTTL},
	} {
		if *d.v < 0 {
			return o, fmt.Errorf("authtest: %s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if slices.Contains(o.RedirectWhitelist, "") {
		return o, errors.New("authtest: RedirectWhitelist has an empty entry, which would match every URL")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}
