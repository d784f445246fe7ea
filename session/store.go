// Package session keeps a signed-in user's ID and refresh tokens in
// encrypted, authenticated cookies, so that the proxy itself holds no state,
// and the short-lived state of logins in progress in cookies of their own.
//
// Cookies are sealed by gorilla/securecookie (AES-256-CTR, then
// HMAC-SHA256 over the cookie name, a timestamp and the ciphertext) with keys
// derived from Options.Secrets. Values too long for one cookie are split
// across several; see chunk.go.
package session

import (
	"cmp"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

// ErrNoSession is returned by Load when the request carries no usable
// session: no cookie, or one that is tampered with, truncated, sealed with an
// unknown key, expired, or missing chunks. The wrapping error says which, for
// logs; callers should treat every case alike and start a login.
var ErrNoSession = errors.New("session: no session")

// ErrTooLarge is returned by Save and SaveFlow when the value would not fit
// in the cookies a browser keeps.
var ErrTooLarge = errors.New("session: too large for cookies")

const (
	defaultCookieName = "_twc_session"
	defaultMaxAge     = 14 * 24 * time.Hour

	// minSecretLen is the least key material accepted per secret: HKDF
	// cannot add entropy, and 32 bytes is the AES-256 key it derives.
	minSecretLen = 32

	// Distinct HKDF info strings make the HMAC and AES keys independent
	// even though both come from one secret.
	infoHashKey  = "twc-auth-proxy session cookie hmac-sha256 v1"
	infoBlockKey = "twc-auth-proxy session cookie aes-256 v1"
)

// Options configures a Store.
type Options struct {
	// CookieName names the session cookie; chunk cookies are named
	// CookieName_1 ... and login-flow cookies CookieName_flow_<id>.
	// Default "_twc_session".
	CookieName string

	// Secrets is raw key material of at least 32 bytes each. The first
	// seals new cookies and all of them open cookies, so that a secret can
	// be rotated in front of the old one without signing everyone out.
	Secrets [][]byte `json:"-" yaml:"-"`

	// Secure sets the cookies' Secure attribute.
	Secure bool

	// Domain sets the cookies' Domain attribute; empty means host-only.
	Domain string

	// Path sets the cookies' Path attribute. Default "/".
	Path string

	// MaxAge is how long a session cookie lives after its last Save, both in
	// the browser (Max-Age) and as the oldest sealed timestamp Load accepts.
	// Default 14 days.
	MaxAge time.Duration
}

// Session is what the proxy knows about a signed-in user.
type Session struct {
	Subject      string    // the ID token's sub: the TWC username
	IDToken      string    // the raw JWT
	RefreshToken string    // may be empty
	Expiry       time.Time // the ID token's exp; whole seconds survive Save
	Created      time.Time // login time; whole seconds survive Save

	// tokenHeader is tokenScheme + IDToken when Load built both in one
	// string (IDToken is then its suffix); see TokenHeader.
	tokenHeader string
}

// tokenScheme is how TWC REST wants the ID token presented:
// "Authorization: Token <id_token>".
const tokenScheme = "Token "

// TokenHeader returns the Authorization header value for the session's ID
// token, "Token <id_token>". A session opened by Store.Load has it ready,
// built once with the token, so the requests that reuse that decoded
// session (see the decode cache) do not build a 500-byte string each.
func (s *Session) TokenHeader() string {
	// Same bytes as IDToken: in the usual case a suffix sharing IDToken's
	// memory, which the runtime sees as equal without reading the bytes.
	// Else IDToken was replaced after Load and the value is built afresh.
	if len(s.tokenHeader) == len(tokenScheme)+len(s.IDToken) && s.tokenHeader[len(tokenScheme):] == s.IDToken {
		return s.tokenHeader
	}
	return tokenScheme + s.IDToken
}

// Store reads and writes sessions and login flows as cookies. It is safe for
// concurrent use and holds no per-request state.
type Store struct {
	name       string
	chunkNames [maxChunks]string // chunkNames[k] is <name>_k; [0] is name
	flowPrefix string            // <name>_flow_
	cookie     sessions.Options  // attributes of the session and chunk cookies
	codecs     []securecookie.Codec
	flowCodecs []securecookie.Codec
	cache      *decodeCache
}

// NewStore validates opts, applies defaults and derives the cookie keys.
func NewStore(opts Options) (*Store, error) {
	name := cmp.Or(opts.CookieName, defaultCookieName)
	path := cmp.Or(opts.Path, "/")
	maxAge := cmp.Or(opts.MaxAge, defaultMaxAge)

	var errs []error
	if !validCookieName(name) {
		errs = append(errs, fmt.Errorf("cookie name %q is not a valid cookie name", name))
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, ";\x00\r\n") {
		errs = append(errs, fmt.Errorf("path %q must be an absolute URL path", path))
	}
	if strings.ContainsAny(opts.Domain, "; \t\r\n\x00") {
		errs = append(errs, fmt.Errorf("domain %q is not a valid cookie domain", opts.Domain))
	}
	if err := CheckNamePrefix(name, opts.Secure, path, opts.Domain); err != nil {
		errs = append(errs, fmt.Errorf("cookie name %q: %w", name, err))
	}
	if maxAge < time.Second {
		errs = append(errs, fmt.Errorf("max age %v is less than a second", maxAge))
	}
	if len(opts.Secrets) == 0 {
		errs = append(errs, errors.New("no secrets"))
	}
	for i, sec := range opts.Secrets {
		if len(sec) < minSecretLen {
			errs = append(errs, fmt.Errorf("secret %d is %d bytes, want at least %d", i, len(sec), minSecretLen))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("session: options: %w", err)
	}

	pairs := make([][]byte, 0, 2*len(opts.Secrets))
	for _, sec := range opts.Secrets {
		hashKey, blockKey, err := deriveKeys(sec)
		if err != nil {
			return nil, fmt.Errorf("session: derive keys: %w", err)
		}
		pairs = append(pairs, hashKey, blockKey)
	}
	s := &Store{
		name:       name,
		flowPrefix: name + "_flow_",
		cookie: sessions.Options{
			Path:     path,
			Domain:   opts.Domain,
			MaxAge:   int(maxAge / time.Second),
			Secure:   opts.Secure,
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		},
		codecs:     newCodecs(pairs, maxAge),
		flowCodecs: newCodecs(pairs, flowMaxAge),
		cache:      newDecodeCache(time.Now),
	}
	s.chunkNames[0] = name
	for k := 1; k < maxChunks; k++ {
		s.chunkNames[k] = name + "_" + strconv.Itoa(k)
	}
	return s, nil
}

// deriveKeys expands one secret into an HMAC key and an AES-256 key.
func deriveKeys(secret []byte) (hashKey, blockKey []byte, err error) {
	if hashKey, err = hkdf.Key(sha256.New, secret, nil, infoHashKey, 32); err != nil {
		return nil, nil, err
	}
	if blockKey, err = hkdf.Key(sha256.New, secret, nil, infoBlockKey, 32); err != nil {
		return nil, nil, err
	}
	return hashKey, blockKey, nil
}

// newCodecs builds one securecookie codec per key pair. The serializer is
// NopEncoder because values are already bytes (codec.go, flow.go). The
// length limit is off because split and join bound lengths themselves, before
// any decoding, and because a limit hit in Encode is an untyped error where
// Save owes its caller ErrTooLarge.
func newCodecs(pairs [][]byte, maxAge time.Duration) []securecookie.Codec {
	codecs := securecookie.CodecsFromPairs(pairs...)
	for _, c := range codecs {
		c.(*securecookie.SecureCookie).
			MaxAge(int(maxAge / time.Second)).
			MaxLength(0).
			SetSerializer(securecookie.NopEncoder{})
	}
	return codecs
}

// CookieName returns the name of the session cookie.
func (s *Store) CookieName() string { return s.name }

// IsOwnCookie reports whether name is one of the store's cookies: the session
// cookie, a chunk cookie (<name>_<digits>) or a login-flow cookie
// (<name>_flow_<id>). The proxy strips these from requests it forwards and
// from upstream Set-Cookie headers, so it is called for every cookie of
// every request and does not allocate.
func (s *Store) IsOwnCookie(name string) bool {
	rest, ok := strings.CutPrefix(name, s.name)
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	if id, ok := strings.CutPrefix(rest, "_flow_"); ok {
		return id != ""
	}
	digits, ok := strings.CutPrefix(rest, "_")
	return ok && digits != "" && strings.Trim(digits, "0123456789") == ""
}

// Load returns the session the request carries. Every unusable cookie, and
// the absence of one, is an error wrapping ErrNoSession. The session may be
// shared with other requests carrying the same cookie (see decodeCache):
// callers must not modify it.
func (s *Store) Load(r *http.Request) (*Session, error) {
	c := s.scan(r)
	v, err := c.join()
	if err != nil {
		return nil, err
	}
	if sess, ok := s.cache.get(v); ok {
		return sess, nil
	}
	var plain []byte
	if err := securecookie.DecodeMulti(s.name, v, &plain, s.codecs...); err != nil {
		return nil, fmt.Errorf("%w: decode cookie: %v", ErrNoSession, err)
	}
	sess, err := decodeSession(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: decode session: %v", ErrNoSession, err)
	}
	s.cache.put(v, sess)
	return sess, nil
}

// Save writes sess as the session cookie, split into chunks if need be, and
// expires the chunk cookies r carried that the new value no longer uses, so
// a shrinking session leaves nothing stale behind. r may be nil.
func (s *Store) Save(w http.ResponseWriter, r *http.Request, sess *Session) error {
	if sess == nil {
		return errors.New("session: save: nil session")
	}
	plain, err := encodeSession(make([]byte, 0, encodedSessionLen(sess)), sess)
	if err != nil {
		return err // ErrTooLarge, which names the package already
	}
	v, err := securecookie.EncodeMulti(s.name, plain, s.codecs...)
	if err != nil {
		return fmt.Errorf("session: encode cookie: %w", err)
	}
	parts, err := split(v)
	if err != nil {
		return err // ErrTooLarge
	}
	for k, p := range parts {
		http.SetCookie(w, s.newCookie(s.chunkNames[k], p, s.cookie.MaxAge))
	}
	c := s.scan(r)
	for k := len(parts); k < maxChunks; k++ {
		if c.carriedChunk(k) {
			http.SetCookie(w, s.newCookie(s.chunkNames[k], "", -1))
		}
	}
	return nil
}

// Clear expires the session cookie and every chunk cookie r carried. r may
// be nil, in which case only the session cookie is expired.
func (s *Store) Clear(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.newCookie(s.name, "", -1))
	c := s.scan(r)
	for k := 1; k < maxChunks; k++ {
		if c.carriedChunk(k) {
			http.SetCookie(w, s.newCookie(s.chunkNames[k], "", -1))
		}
	}
}

// newCookie returns a cookie with the store's attributes and the given
// Max-Age in seconds; negative expires it.
func (s *Store) newCookie(name, value string, maxAge int) *http.Cookie {
	o := s.cookie
	o.MaxAge = maxAge
	return sessions.NewCookie(name, value, &o)
}

// CheckNamePrefix checks a cookie name's prefix against the attributes the
// store would give its cookies. Browsers enforce two prefixes (RFC 6265bis
// §4.1.3, matched regardless of case): a "__Secure-" cookie must be Secure,
// and a "__Host-" cookie must also have Path=/ and no Domain, so that
// neither a plain-http page nor a sibling subdomain can set it. A browser
// drops a cookie that breaks its prefix's rule, which would sign nobody in,
// so such a configuration is refused.
func CheckNamePrefix(name string, secure bool, path, domain string) error {
	switch {
	case hasPrefixFold(name, "__Host-"):
		if !secure || path != "/" || domain != "" {
			return errors.New("browsers keep a __Host- cookie only when it is Secure, with path / and no domain")
		}
	case hasPrefixFold(name, "__Secure-"):
		if !secure {
			return errors.New("browsers keep a __Secure- cookie only when it is Secure")
		}
	}
	return nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// validCookieName reports whether name is an RFC 6265 cookie-name token.
// http.SetCookie silently drops a cookie whose name is not, which would make
// every Save a no-op.
func validCookieName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
