package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// errKeysUnavailable marks a signature that could not be checked because
// the provider's signing keys (its jwks_uri) could not be had: the auth
// server is unwell, and the token may well be good. verify never wraps it
// in errInvalidToken.
var errKeysUnavailable = errors.New("signing keys unavailable")

// errNoKeyVerifies is a signature that none of the provider's keys, fetched
// recently enough, verifies.
var errNoKeyVerifies = errors.New("no key of the provider verifies the signature")

// callerKeyRefetch is the shortest time between two fetches of the JWKS
// that callers' own tokens (api_tokens) cause. TWC's tokens carry no kid, so
// a signature that fails cannot tell a rotated key from a forged token, and
// anyone can send forged tokens: unbounded, each would cost a request to
// the auth server. 15 s caps that at four a minute per replica whatever the
// traffic, and still accepts callers' tokens signed with a rotated key (a
// keystore change and a restart of the auth server, rare and slower than
// that) at most 15 s after the first one arrives.
const callerKeyRefetch = 15 * time.Second

// keyFetchRetry is the shortest time between a failed fetch of the JWKS and
// the next, whatever the token: during a jwks.json outage a replica asks at
// most every 2 s however many logins and refreshes wait, and the first one
// after the outage waits at most that long.
const keyFetchRetry = 2 * time.Second

// joseAlgs are asymmetricAlgs as go-jose names them.
var joseAlgs = func() []jose.SignatureAlgorithm {
	algs := make([]jose.SignatureAlgorithm, len(asymmetricAlgs))
	for i, a := range asymmetricAlgs {
		algs[i] = jose.SignatureAlgorithm(a)
	}
	return algs
}()

// keySet is the provider's JSON Web Key Set, the oidc.KeySet of go-oidc's
// verifier, which checks the algorithm before and the claims after it. It
// replaces oidc.RemoteKeySet, which fetches the set again for every
// signature that fails and reports a failed fetch only as text, so that a
// jwks.json outage looked like an invalid token.
//
// Keys are fetched at first use and again when no held key verifies a
// signature (the provider may have rotated its key, OIDC Core §10.1.1).
// Concurrent fetches are collapsed into one, and a failed fetch keeps the
// keys held. Used as it is, the set serves tokens from the token endpoint:
// they come from the auth server itself, one per login or refresh, so a
// failure refetches at once (keyFetchRetry after a failed fetch). Callers'
// tokens go through forCallers.
type keySet struct {
	url     string
	client  *http.Client
	timeout time.Duration
	now     func() time.Time
	log     *zap.Logger // warns of each failed fetch; nil: no log
	group   singleflight.Group

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetched time.Time // when the last fetch ended; zero before the first
	err     error     // the last fetch's error; nil after a success
}

// newKeySet returns the key set published at url, fetched with client,
// each fetch bounded by timeout; log (nil: none) gets a warning per failed
// fetch.
func newKeySet(url string, client *http.Client, timeout time.Duration, now func() time.Time, log *zap.Logger) *keySet {
	return &keySet{url: url, client: client, timeout: timeout, now: now, log: log}
}

// VerifySignature implements oidc.KeySet for tokens from the token endpoint.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	return k.verify(ctx, jwt, 0)
}

// callerKeys is the key set for tokens that callers bring: a signature no
// held key verifies refetches the set only when the last fetch ended at
// least callerKeyRefetch ago.
type callerKeys struct{ k *keySet }

func (c callerKeys) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	return c.k.verify(ctx, jwt, callerKeyRefetch)
}

// forCallers returns the throttled view of k for callers' tokens.
func (k *keySet) forCallers() callerKeys { return callerKeys{k} }

// verify returns jwt's payload if a key of the set verifies its signature.
// When no held key does, the set is fetched again unless the last fetch
// ended less than minAge (keyFetchRetry at least, if it failed) ago; then
// the last fetch's failure, if it failed, is the answer. Failures to get keys are errKeysUnavailable, also reported
// to the keysProbe in ctx.
func (k *keySet) verify(ctx context.Context, jwt string, minAge time.Duration) ([]byte, error) {
	// go-oidc's verifier has already parsed jwt with the allowed
	// algorithms; this parse reads the signature and its kid.
	jws, err := jose.ParseSigned(jwt, joseAlgs)
	if err != nil {
		return nil, fmt.Errorf("malformed jwt: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("jwt must carry exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID

	k.mu.Lock()
	keys, fetched, lastErr := k.keys, k.fetched, k.err
	k.mu.Unlock()
	if payload, ok := verifyWith(jws, kid, keys); ok {
		return payload, nil
	}
	if lastErr != nil {
		minAge = max(minAge, keyFetchRetry)
	}
	if !fetched.IsZero() && k.now().Sub(fetched) < minAge {
		if lastErr != nil {
			return nil, reportKeysUnavailable(ctx, lastErr)
		}
		return nil, errNoKeyVerifies
	}
	if keys, err = k.refetch(ctx, minAge); err != nil {
		return nil, reportKeysUnavailable(ctx, err)
	}
	if payload, ok := verifyWith(jws, kid, keys); ok {
		return payload, nil
	}
	return nil, errNoKeyVerifies
}

// verifyWith returns jws's payload if one of keys verifies it. Like
// oidc.RemoteKeySet, a kid in the token limits the candidates to the keys
// of that kid; without one (TWC's tokens) every key is tried.
func verifyWith(jws *jose.JSONWebSignature, kid string, keys []jose.JSONWebKey) ([]byte, bool) {
	for i := range keys {
		if kid != "" && keys[i].KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(&keys[i]); err == nil {
			return payload, true
		}
	}
	return nil, false
}

// refetch fetches the set, one fetch for however many callers wait, and
// keeps the result when it succeeds. A caller that decided to fetch on a
// stale reading finds, inside the flight, the outcome of a fetch that
// ended meanwhile (less than minAge ago, keyFetchRetry after a failure)
// and takes it instead of fetching again.
func (k *keySet) refetch(ctx context.Context, minAge time.Duration) ([]jose.JSONWebKey, error) {
	// One flight per interval: a token-endpoint check (minAge 0) must not
	// join a caller's flight and be handed keys that flight judged fresh
	// enough for callers.
	v, err, _ := k.group.Do(strconv.FormatInt(int64(minAge), 10), func() (any, error) {
		k.mu.Lock()
		keys, fetched, lastErr := k.keys, k.fetched, k.err
		k.mu.Unlock()
		age := minAge
		if lastErr != nil {
			age = max(age, keyFetchRetry)
		}
		if !fetched.IsZero() && k.now().Sub(fetched) < age {
			if lastErr != nil {
				return nil, lastErr
			}
			return keys, nil
		}
		// The fetch serves every waiting verification, so one caller going
		// away must not cancel it; the timeout still bounds it.
		keys, err := k.fetch(context.WithoutCancel(ctx))
		if err != nil && k.log != nil {
			// Once per failed fetch, at most one per keyFetchRetry,
			// however many logins, refreshes or callers' tokens wait.
			k.log.Warn("could not fetch the auth server's signing keys: tokens cannot be checked until it can; keys held are kept",
				zap.String("jwks_uri", k.url), zap.Error(err))
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		k.fetched, k.err = k.now(), err
		if err != nil {
			return nil, err
		}
		k.keys = keys
		return keys, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]jose.JSONWebKey), nil
}

// fetch GETs the key set. Every failure (transport, status, body, a set
// without a usable key) is errKeysUnavailable.
func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	req.Header.Set("Accept", "application/json")
	// A fetch means the keys held are not enough: ask caches on the way for
	// the current set, as oidc.RemoteKeySet does.
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", errKeysUnavailable, k.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %s", errKeysUnavailable, k.url, resp.Status)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errKeysUnavailable, k.url, err)
	}
	return keys, nil
}

// parseJWKS decodes a JWK Set (RFC 7517 §5). Like oidc.RemoteKeySet it
// skips keys of an algorithm or key type it cannot use instead of failing
// the whole set ("implementations SHOULD ignore JWKs ... not understood");
// a set left without any key is an error.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode key set: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var meta struct {
			Alg string `json:"alg"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("decode key: %w", err)
		}
		if meta.Alg != "" && !slices.Contains(asymmetricAlgs, meta.Alg) {
			continue
		}
		var key jose.JSONWebKey
		if err := json.Unmarshal(raw, &key); err != nil {
			if errors.Is(err, jose.ErrUnsupportedKeyType) {
				continue
			}
			return nil, fmt.Errorf("decode key: %w", err)
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("key set has no usable key")
	}
	return keys, nil
}

// keysProbe carries a key set's errKeysUnavailable past go-oidc's
// verifier, which turns every key-set error into text.
type keysProbe struct{ err error }

type keysProbeKey struct{}

// withKeysProbe returns ctx with a probe that the key set fills when it
// cannot get keys during a verification with that ctx.
func withKeysProbe(ctx context.Context) (context.Context, *keysProbe) {
	p := &keysProbe{}
	return context.WithValue(ctx, keysProbeKey{}, p), p
}

// reportKeysUnavailable records err in ctx's probe, if any, and returns it.
func reportKeysUnavailable(ctx context.Context, err error) error {
	if p, ok := ctx.Value(keysProbeKey{}).(*keysProbe); ok {
		p.err = err
	}
	return err
}
