package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"go.uber.org/zap"
)

// jwksCounter is the auth-server client's transport, counting the requests
// for jwks.json.
type jwksCounter struct {
	n atomic.Int32
}

func (c *jwksCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/jwks.json") {
		c.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func withAPITokens(o *harnessOpts) {
	o.cfg = func(c *Config) { c.APITokens = APITokens{Enabled: true, Audiences: []string{testClientID}} }
}

// apiCall sends one request with the caller's own token and returns the
// status and the JSON error, if any.
func (h *harness) apiCall(tok string) (int, string) {
	h.t.Helper()
	resp, body := h.do(&http.Client{}, http.MethodGet, "/osmc/workspaces", http.Header{"Authorization": {"Token " + tok}})
	return resp.StatusCode, body
}

// TestForgedAPITokensDoNotRefetchKeys: TWC's tokens have no kid, so a
// signature that fails cannot tell a forged token from a rotated key. A
// caller's token refetches jwks.json at most once per callerKeyRefetch,
// so unauthenticated callers cannot turn the proxy into a request
// amplifier against the auth server; a rotated key is still picked up.
func TestForgedAPITokensDoNotRefetchKeys(t *testing.T) {
	h := newHarness(t, withAPITokens)
	jwks := &jwksCounter{}
	h.auth.client.Transport = jwks
	good := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	forged := good[:len(good)-4] + "AAAA"

	if code, body := h.apiCall(good); code != http.StatusOK {
		t.Fatalf("good token: got %d %s", code, body)
	}
	for range 50 {
		if code, body := h.apiCall(forged); code != http.StatusUnauthorized || !strings.Contains(body, "invalid_token") {
			t.Fatalf("forged token: got %d %s, want 401 invalid_token", code, body)
		}
	}
	if n := jwks.n.Load(); n != 1 {
		t.Fatalf("jwks.json fetched %d times for 1 good and 50 forged tokens, want 1", n)
	}

	// The provider rotates its key: the new key's tokens are accepted once
	// the interval since the last fetch has passed, with one fetch.
	if err := h.idp.RotateKey(); err != nil {
		t.Fatal(err)
	}
	rotated := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	if code, _ := h.apiCall(rotated); code != http.StatusUnauthorized {
		t.Fatalf("new key within the interval: got %d, want 401", code)
	}
	h.clock.Advance(callerKeyRefetch)
	for range 10 {
		if code, body := h.apiCall(rotated); code != http.StatusOK {
			t.Fatalf("new key after the interval: got %d %s, want 200", code, body)
		}
	}
	if n := jwks.n.Load(); n != 2 {
		t.Errorf("jwks.json fetched %d times, want 2", n)
	}
}

// TestAPITokensWhileKeysUnavailable: a caller's token that cannot be
// checked because jwks.json fails gets 503, not 401 and not forwarded, and
// the failed fetch is not retried for every caller.
func TestAPITokensWhileKeysUnavailable(t *testing.T) {
	h := newHarness(t, withAPITokens)
	jwks := &jwksCounter{}
	h.auth.client.Transport = jwks
	h.idp.SetFaults(authtest.Faults{JWKSStatus: http.StatusServiceUnavailable})
	good := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	for range 5 {
		if code, body := h.apiCall(good); code != http.StatusServiceUnavailable || !strings.Contains(body, `"unavailable"`) {
			t.Fatalf("got %d %s, want 503 unavailable", code, body)
		}
	}
	if len(h.upstreamSeen()) != 0 {
		t.Fatal("an unverified token reached the upstream")
	}
	if n := jwks.n.Load(); n != 1 {
		t.Errorf("jwks.json fetched %d times, want 1", n)
	}
	if got := h.metric("twc_auth_proxy_api_tokens_total", map[string]string{"result": "unavailable"}); got != 5 {
		t.Errorf("api_tokens_total{unavailable} = %v, want 5", got)
	}
	h.idp.SetFaults(authtest.Faults{})
	h.clock.Advance(callerKeyRefetch)
	if code, body := h.apiCall(good); code != http.StatusOK {
		t.Fatalf("keys back: got %d %s, want 200", code, body)
	}
}

// TestAPITokensWhileKeysUnavailableWarnPerFetch: during a jwks.json
// outage any caller can send tokens the proxy cannot check (a made-up
// signature is enough). The warning is for the failed fetch, naming
// jwks.json, once per fetch (fetches are at least keyFetchRetry apart);
// each refused request is an info line with its request_id, not one
// warning more per request.
func TestAPITokensWhileKeysUnavailableWarnPerFetch(t *testing.T) {
	h := newHarness(t, withAPITokens)
	h.idp.SetFaults(authtest.Faults{JWKSStatus: http.StatusServiceUnavailable})
	good := h.idp.MintIDToken(testUser, testClientID, time.Hour)
	forged := good[:len(good)-4] + "AAAA"
	const calls = 20
	for range calls {
		if code, _ := h.apiCall(forged); code != http.StatusServiceUnavailable {
			t.Fatalf("got %d, want 503", code)
		}
	}
	warned := h.logs.FilterLevelExact(zap.WarnLevel).All()
	if len(warned) != 1 || !strings.Contains(fmt.Sprint(warned[0].ContextMap()), h.idp.Issuer()+"/jwks.json") {
		t.Errorf("warnings %v, want one naming jwks.json", warned)
	}
	lines := h.logs.FilterMessageSnippet("api token").All()
	if len(lines) != calls {
		t.Fatalf("got %d api token lines, want %d", len(lines), calls)
	}
	for _, e := range lines {
		if e.Level != zap.InfoLevel || e.ContextMap()["request_id"] == "" {
			t.Errorf("%q at %s, %v: want info with the request_id", e.Message, e.Level, e.ContextMap())
		}
	}
}

// TestKeySetFetchFailures: every way of not getting usable keys is
// errKeysUnavailable, and a failed fetch keeps the keys already held.
func TestKeySetFetchFailures(t *testing.T) {
	idp, err := authtest.New("http://127.0.0.1:8555/authentication", authtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok := idp.MintIDToken("alice", "dashboard", time.Hour)
	other, err := authtest.New("http://127.0.0.1:8555/authentication", authtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreign := other.MintIDToken("alice", "dashboard", time.Hour)

	var answer atomic.Pointer[http.HandlerFunc]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*answer.Load())(w, r) }))
	defer srv.Close()
	good := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = "/authentication/jwks.json"
		idp.ServeHTTP(w, r)
	})
	body := func(status int, s string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, s)
		}
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()

	for _, tt := range []struct {
		name  string
		url   string
		serve http.HandlerFunc
	}{
		{"503", srv.URL, body(http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)},
		{"not JSON", srv.URL, body(http.StatusOK, "<html>maintenance</html>")},
		{"empty set", srv.URL, body(http.StatusOK, `{"keys":[]}`)},
		{"only keys of other algorithms", srv.URL, body(http.StatusOK, `{"keys":[{"kty":"RSA","alg":"RSA-OAEP","n":"sXch","e":"AQAB"}]}`)},
		{"unreachable", gone.URL, good},
	} {
		t.Run(tt.name, func(t *testing.T) {
			answer.Store(&tt.serve)
			k := newKeySet(tt.url, srv.Client(), time.Second, time.Now, nil)
			if _, err := k.VerifySignature(t.Context(), tok); !errors.Is(err, errKeysUnavailable) {
				t.Errorf("got %v, want errKeysUnavailable", err)
			}
		})
	}

	t.Run("failed fetch not retried at once", func(t *testing.T) {
		var fetches atomic.Int32
		fail := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fetches.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		answer.Store(&fail)
		clk := &clock{t: time.Now()}
		k := newKeySet(srv.URL, srv.Client(), time.Second, clk.Now, nil)
		for range 5 {
			if _, err := k.VerifySignature(t.Context(), tok); !errors.Is(err, errKeysUnavailable) {
				t.Fatalf("got %v, want errKeysUnavailable", err)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("jwks.json fetched %d times within %v of a failure, want 1", n, keyFetchRetry)
		}
		answer.Store(&good)
		clk.Advance(keyFetchRetry)
		if _, err := k.VerifySignature(t.Context(), tok); err != nil {
			t.Fatalf("after %v: %v", keyFetchRetry, err)
		}
	})

	t.Run("keys held", func(t *testing.T) {
		answer.Store(&good)
		k := newKeySet(srv.URL, srv.Client(), time.Second, time.Now, nil)
		if _, err := k.VerifySignature(t.Context(), tok); err != nil {
			t.Fatalf("good key set: %v", err)
		}
		if _, err := k.VerifySignature(t.Context(), foreign); err == nil || errors.Is(err, errKeysUnavailable) {
			t.Errorf("foreign key with fresh keys: got %v, want an invalid signature", err)
		}
		fail := body(http.StatusBadGateway, "")
		answer.Store(&fail)
		if _, err := k.VerifySignature(t.Context(), tok); err != nil {
			t.Errorf("held key while jwks.json fails: %v", err)
		}
		if _, err := k.VerifySignature(t.Context(), foreign); !errors.Is(err, errKeysUnavailable) {
			t.Errorf("unknown key while jwks.json fails: got %v, want errKeysUnavailable", err)
		}
	})
}

// countedKeySet returns a fake auth server, a key set fetching its
// jwks.json on a clock the test moves, and the number of fetches so far.
func countedKeySet(t *testing.T) (*authtest.Server, *keySet, *clock, *atomic.Int32) {
	t.Helper()
	idp, err := authtest.New("http://127.0.0.1:8555/authentication", authtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fetches := new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		r.URL.Path = "/authentication/jwks.json"
		idp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	clk := &clock{t: time.Now()}
	return idp, newKeySet(srv.URL, srv.Client(), time.Second, clk.Now, nil), clk, fetches
}

// A caller that decided to fetch on a reading taken before another fetch
// ended takes that fetch's outcome inside the flight: a flood of forged
// callers' tokens costs one fetch per callerKeyRefetch, not one per
// flight that happened to start late.
func TestKeySetRefetchRechecksInsideFlight(t *testing.T) {
	_, k, clk, fetches := countedKeySet(t)
	if _, err := k.refetch(t.Context(), callerKeyRefetch); err != nil {
		t.Fatal(err)
	}
	// What a late caller does: it read the state before that fetch ended.
	clk.Advance(callerKeyRefetch / 2)
	keys, err := k.refetch(t.Context(), callerKeyRefetch)
	if err != nil || len(keys) == 0 {
		t.Fatalf("got %d keys, %v; want the held keys", len(keys), err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("fetches = %d within callerKeyRefetch, want 1", n)
	}
	// Token-endpoint tokens (minAge 0) still fetch at once.
	if _, err := k.refetch(t.Context(), 0); err != nil || fetches.Load() != 2 {
		t.Fatalf("fetches = %d (err %v) for a token-endpoint token, want 2", fetches.Load(), err)
	}
}

// A token-endpoint check (refetch at once) never joins a caller-token
// flight (refetch at most every callerKeyRefetch): handed the keys that
// flight judged fresh enough, it would fail a token signed with a key the
// provider just rotated in, and a refresh would count as rejected.
func TestKeySetTokenEndpointCheckFetchesOwnFlight(t *testing.T) {
	idp, k, clk, fetches := countedKeySet(t)
	if _, err := k.refetch(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if err := idp.RotateKey(); err != nil {
		t.Fatal(err)
	}
	tok := idp.MintIDToken("alice", "dashboard", time.Hour)
	jws, err := jose.ParseSigned(tok, joseAlgs)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)

	// A caller's flight starts and stops at its re-check (k.mu held); a
	// token-endpoint check comes meanwhile.
	k.mu.Lock()
	callerDone := make(chan struct{})
	go func() {
		defer close(callerDone)
		k.refetch(context.Background(), callerKeyRefetch)
	}()
	time.Sleep(50 * time.Millisecond)
	got := make(chan []jose.JSONWebKey, 1)
	go func() {
		keys, _ := k.refetch(context.Background(), 0)
		got <- keys
	}()
	time.Sleep(50 * time.Millisecond)
	k.mu.Unlock()
	<-callerDone
	if _, ok := verifyWith(jws, "", <-got); !ok {
		t.Fatalf("the token-endpoint check got keys that do not verify the rotated key's token (fetches %d)", fetches.Load())
	}
}
