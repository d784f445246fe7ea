package authtest_test

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

func TestDiscovery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		pkce bool
	}{{"legacy", false}, {"pkce", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, authtest.Options{AdvertisePKCE: tc.pkce})
			resp, body := get(t, http.DefaultClient, s.Issuer()+"/.well-known/openid-configuration")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want %d", resp.StatusCode, http.StatusOK)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("unmarshal %s: %v", body, err)
			}
			iss := s.Issuer()
			want := map[string]any{
				"issuer":                                iss,
				"authorization_endpoint":                iss + "/authorize",
				"token_endpoint":                        iss + "/api/token",
				"jwks_uri":                              iss + "/jwks.json",
				"validation_endpoint":                   iss + "/api/validate",
				"signout_endpoint":                      iss + "/api/signout",
				"response_types_supported":              []any{"id_token", "code"},
				"subject_types_supported":               []any{"public"},
				"id_token_signing_alg_values_supported": []any{"RS256"},
			}
			if tc.pkce {
				want["code_challenge_methods_supported"] = []any{"S256"}
			}
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("got %s, want %s", gotJSON, wantJSON)
			}
			if want := s.URL() + "/authentication"; iss != want {
				t.Errorf("got issuer %q, want %q", iss, want)
			}
		})
	}
}

func TestJWKS(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	keys := func() []map[string]any {
		t.Helper()
		_, body := get(t, http.DefaultClient, s.Issuer()+"/jwks.json")
		var set struct{ Keys []map[string]any }
		if err := json.Unmarshal([]byte(body), &set); err != nil {
			t.Fatalf("unmarshal %s: %v", body, err)
		}
		if len(set.Keys) != 1 {
			t.Fatalf("got %d keys, want 1: %s", len(set.Keys), body)
		}
		return set.Keys
	}
	k := keys()[0]
	for field, want := range map[string]string{"kty": "RSA", "alg": "RS256", "use": "sig", "e": "AQAB"} {
		if got := k[field]; got != want {
			t.Errorf("got %s %v, want %q", field, got, want)
		}
	}
	n, err := base64.RawURLEncoding.DecodeString(k["n"].(string))
	if err != nil {
		t.Fatalf("decode n: %v", err)
	}
	if new(big.Int).SetBytes(n).Cmp(s.PublicKey().N) != 0 {
		t.Error("JWKS modulus differs from PublicKey")
	}
	if _, ok := k["kid"]; ok {
		t.Errorf("got kid %v without IncludeKid, want none", k["kid"])
	}

	s.SetFaults(authtest.Faults{IncludeKid: true})
	kid, _ := keys()[0]["kid"].(string)
	hdr := segment(t, s.MintIDToken("u", clientID, time.Minute), 0)
	if kid == "" || hdr["kid"] != kid {
		t.Errorf("got JWKS kid %q and token kid %v, want equal and non-empty", kid, hdr["kid"])
	}

	if err := s.RotateKey(); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if got, _ := keys()[0]["kid"].(string); got == kid {
		t.Errorf("got kid %q after RotateKey, want a new one", got)
	}
}

func TestNewIssuer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		issuer string
		ok     bool
	}{
		{"http://127.0.0.1:8555/authentication", true},
		{"https://twc.example:8443/authentication", true},
		{"http://127.0.0.1:8555", true},
		{"http://127.0.0.1:8555/authentication/", false},
		{"ftp://127.0.0.1/authentication", false},
		{"/authentication", false},
		{"http://127.0.0.1/auth?x=1", false},
		{"http://127.0.0.1/auth#x", false},
		{"http://127.0.0.1/a/../b", false},
		{"http://127.0.0.1/{x}", false},
		{"http://127.0.0.1/a%2Fb", false},
		{"http://u:p@127.0.0.1/a", false},
		{"http://%zz", false},
	} {
		_, err := authtest.New(tc.issuer, authtest.Options{})
		if (err == nil) != tc.ok {
			t.Errorf("New(%q): got error %v, want ok=%v", tc.issuer, err, tc.ok)
		}
	}
}

func TestNewOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts authtest.Options
	}{
		{"negative TokenTTL", authtest.Options{TokenTTL: -time.Second}},
		{"negative CodeTTL", authtest.Options{CodeTTL: -time.Second}},
		{"negative RefreshTTL", authtest.Options{RefreshTTL: -time.Second}},
		{"negative UnlimitedTTL", authtest.Options{UnlimitedTTL: -time.Second}},
		{"empty whitelist entry", authtest.Options{RedirectWhitelist: []string{"http://localhost", ""}}},
	} {
		if _, err := authtest.New("http://127.0.0.1/authentication", tc.opts); err == nil {
			t.Errorf("%s: got no error, want one", tc.name)
		}
	}
}

func TestStartAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"", true},
		{"localhost:0", true},
		{"[::1]:0", true},
		{"0.0.0.0:0", false},
		{":0", false},
		{"127.0.0.1", false},
	} {
		s, err := authtest.Start(authtest.Options{Addr: tc.addr})
		if (err == nil) != tc.ok {
			t.Errorf("Start(%q): got error %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err == nil {
			if !strings.HasPrefix(s.URL(), "http://") {
				t.Errorf("Start(%q): got URL %q, want http://...", tc.addr, s.URL())
			}
			for range 2 {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			if _, err := http.Get(s.URL()); err == nil {
				t.Errorf("Start(%q): still serving after Close", tc.addr)
			}
		}
	}
}

// TestHandler checks the Server as a plain http.Handler mounted elsewhere,
// as the demo subcommand may do.
func TestHandler(t *testing.T) {
	t.Parallel()
	ts := httptest.NewUnstartedServer(nil)
	issuer := "http://" + ts.Listener.Addr().String() + "/authentication"
	s, err := authtest.New(issuer, authtest.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ts.Config.Handler = s
	ts.Start()
	defer ts.Close()
	if s.URL() != "" {
		t.Errorf("got URL %q for an unstarted Server, want empty", s.URL())
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close of an unstarted Server: %v", err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/authentication/jwks.json", http.StatusOK},
		{http.MethodHead, "/authentication/.well-known/openid-configuration", http.StatusOK},
		{http.MethodGet, "/jwks.json", http.StatusNotFound},
		{http.MethodGet, "/authenticationX/jwks.json", http.StatusNotFound},
		{http.MethodGet, "/authentication/api/token", http.StatusMethodNotAllowed},
		{http.MethodPost, "/authentication/jwks.json", http.StatusMethodNotAllowed},
		{http.MethodGet, "/authentication/userinfo", http.StatusNotFound},
	} {
		req, err := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp, _ := do(t, http.DefaultClient, req); resp.StatusCode != tc.want {
			t.Errorf("%s %s: got status %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
	}
}

func TestValidateEndpoint(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := start(t, authtest.Options{Now: clk.Now})
	good := s.MintIDToken("Administrator", clientID, time.Minute)
	now := clk.Now().Unix()
	claims := map[string]any{"sub": "Administrator", "aud": clientID, "iss": s.Issuer(), "iat": now, "exp": now + 60}
	wrongIss := map[string]any{"sub": "x", "iss": s.Issuer() + "/", "exp": now + 60}
	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"valid", "Token " + good, http.StatusOK},
		{"signed claims", "Token " + s.SignJWT(nil, claims), http.StatusOK},
		{"missing header", "", http.StatusUnauthorized},
		{"bearer scheme", "Bearer " + good, http.StatusUnauthorized},
		{"garbage", "Token abc", http.StatusUnauthorized},
		{"alg none", "Token " + s.SignJWT(map[string]any{"alg": "none"}, claims), http.StatusUnauthorized},
		{"hs256 key confusion", "Token " + s.SignJWT(map[string]any{"alg": "HS256"}, claims), http.StatusUnauthorized},
		{"header lies about alg", "Token " + s.SignJWT(map[string]any{"alg": "RS512"}, claims), http.StatusUnauthorized},
		{"wrong issuer", "Token " + s.SignJWT(nil, wrongIss), http.StatusUnauthorized},
		{"expired", "Token " + s.MintIDToken("Administrator", clientID, -time.Second), http.StatusUnauthorized},
		{"tampered", "Token " + good[:len(good)-4] + "AAAA", http.StatusUnauthorized},
	} {
		req, err := http.NewRequest(http.MethodGet, s.Issuer()+"/api/validate", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, body := do(t, http.DefaultClient, req)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: got status %d, want %d; body: %s", tc.name, resp.StatusCode, tc.want, body)
		}
		if tc.want == http.StatusOK && !strings.Contains(body, `"sub":"Administrator"`) {
			t.Errorf("%s: got body %s, want sub Administrator", tc.name, body)
		}
	}

	if err := s.RotateKey(); err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.Issuer()+"/api/validate", nil)
	req.Header.Set("Authorization", "Token "+good)
	if resp, _ := do(t, http.DefaultClient, req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token of the old key after RotateKey: got status %d, want %d", resp.StatusCode, http.StatusUnauthorized)
	}
}

// TestConcurrentUse is for the race detector: every mutating entry point at
// once.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{RotateRefreshTokens: true})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r := postToken(t, s, url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}},
				http.Header{"X-Auth-Secret": {secret}, "Authorization": {"Basic QWRtaW5pc3RyYXRvcjpBZG1pbmlzdHJhdG9y"}})
			if r.status == http.StatusOK {
				refresh(t, s, r.str("refresh_token"))
			}
			s.SetFaults(authtest.Faults{IncludeKid: i%2 == 0})
			_ = s.Faults()
			_ = s.TokenRequests()
			_ = s.TokenCalls("")
			_ = s.MintIDToken("u", clientID, time.Minute)
			if i == 0 {
				if err := s.RotateKey(); err != nil {
					t.Errorf("RotateKey: %v", err)
				}
				s.RevokeRefreshTokens()
			}
			get(t, http.DefaultClient, s.Issuer()+"/jwks.json")
		})
	}
	wg.Wait()
	if got := s.TokenCalls("client_credentials"); got != 8 {
		t.Errorf("got %d client_credentials calls, want 8", got)
	}
	if got := slices.IndexFunc(s.TokenRequests(), func(r authtest.TokenRequest) bool { return r.GrantType == "" }); got != -1 {
		t.Errorf("got a request without grant_type at %d, want none", got)
	}
}
