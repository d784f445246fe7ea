package authtest_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// TestCodeFlowInteroperates runs the whole user flow the way a browser and
// the proxy would, and verifies the ID token with go-oidc, the verifier the
// proxy uses.
func TestCodeFlowInteroperates(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := start(t, authtest.Options{Now: clk.Now})

	var mu sync.Mutex
	var got url.Values
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got = r.URL.Query()
	}))
	defer target.Close()
	cb := target.URL + "/oauth2/callback?keep=me"

	c := browser(t)
	c.CheckRedirect = nil // follow, as a browser does, to the capturing target
	resp, body := login(t, s, c, authorizeURL(s, func(v url.Values) { v.Set("redirect_uri", cb) }), "Administrator", "Administrator")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Host != strings.TrimPrefix(target.URL, "http://") {
		t.Fatalf("got status %d at %s, want 200 at the target; body:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	mu.Lock()
	q := got
	mu.Unlock()
	if q.Get("state") != "st-1" || q.Get("keep") != "me" || q.Get("code") == "" {
		t.Fatalf("got callback query %v, want code, state st-1 and keep=me", q)
	}

	r := postToken(t, s, url.Values{
		"grant_type": {"authorization_code"}, "code": {q.Get("code")},
		"client_id": {clientID}, "redirect_uri": {cb}, "scope": {"openid"},
	}, nil)
	wantOK(t, r)
	var keys []string
	for k := range r.body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if got, want := strings.Join(keys, ","), "expires_in,id_token,refresh_token,token_type"; got != want {
		t.Errorf("got response keys %q, want %q", got, want)
	}
	if r.body["expires_in"] != 900.0 || r.str("token_type") != "Bearer" {
		t.Errorf("got expires_in %v token_type %q, want 900 Bearer", r.body["expires_in"], r.str("token_type"))
	}

	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, s.Issuer())
	if err != nil {
		t.Fatalf("oidc.NewProvider: %v", err)
	}
	tok, err := p.Verifier(&oidc.Config{ClientID: clientID, Now: clk.Now}).Verify(ctx, r.str("id_token"))
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if tok.Subject != "Administrator" || tok.Nonce != "" || !tok.Expiry.Equal(clk.Now().Add(900*time.Second)) {
		t.Errorf("got sub %q nonce %q exp %v, want Administrator, no nonce, now+900s", tok.Subject, tok.Nonce, tok.Expiry)
	}

	// The exact shape of TWC's documented sample, byte for byte where it
	// matters: header {"alg":"RS256"}, and the claims in sample order.
	parts := strings.Split(r.str("id_token"), ".")
	if got, want := parts[0], "eyJhbGciOiJSUzI1NiJ9"; got != want {
		t.Errorf("got header %q, want %q ({\"alg\":\"RS256\"})", got, want)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode claims: %v", err)
	}
	// TWC's Java serializer escapes "/" in the issuer; parsers must not care.
	if want := `{"sub":"Administrator","aud":"dashboard","iss":"` + strings.ReplaceAll(s.Issuer(), "/", `\/`) + `","exp":`; !strings.HasPrefix(string(raw), want) {
		t.Errorf("got claims %s, want prefix %s", raw, want)
	}
	claims := segment(t, r.str("id_token"), 1)
	if len(claims) != 5 || claims["aud"] != clientID || claims["iss"] != s.Issuer() {
		t.Errorf("got claims %v, want exactly sub, aud %q, iss, exp, iat", claims, clientID)
	}
}

func TestTokenSecret(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{Secret: "s3cret"})
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}}
	basic := "Basic QWRtaW5pc3RyYXRvcjpBZG1pbmlzdHJhdG9y" // Administrator:Administrator
	for _, tc := range []struct {
		name   string
		hdr    http.Header
		status int
	}{
		{"missing", http.Header{"Authorization": {basic}}, http.StatusUnauthorized},
		{"wrong", http.Header{"Authorization": {basic}, "X-Auth-Secret": {"CHANGE_ME"}}, http.StatusUnauthorized},
		{"prefix", http.Header{"Authorization": {basic}, "X-Auth-Secret": {"s3cre"}}, http.StatusUnauthorized},
		{"right", http.Header{"Authorization": {basic}, "X-Auth-Secret": {"s3cret"}}, http.StatusOK},
	} {
		r := postToken(t, s, form, tc.hdr)
		if r.status != tc.status {
			t.Errorf("%s: got status %d, want %d; body %s", tc.name, r.status, tc.status, r.raw)
		}
		if tc.status == http.StatusUnauthorized && r.str("error") != "invalid_client" {
			t.Errorf("%s: got error %q, want invalid_client", tc.name, r.str("error"))
		}
	}
	reqs := s.TokenRequests()
	if len(reqs) != 4 || s.TokenCalls("client_credentials") != 4 || s.TokenCalls("") != 4 {
		t.Fatalf("got %d recorded requests, want all 4 including rejected ones", len(reqs))
	}
	if got := reqs[1].Header.Get("X-Auth-Secret"); got != "CHANGE_ME" {
		t.Errorf("got recorded secret %q, want %q", got, "CHANGE_ME")
	}
	if reqs[0].GrantType != "client_credentials" || reqs[0].Form.Get("client_id") != clientID || reqs[0].At.IsZero() {
		t.Errorf("got recorded request %+v, want grant, form and time", reqs[0])
	}
	reqs[0].Form.Set("client_id", "mutated")
	if got := s.TokenRequests()[0].Form.Get("client_id"); got != clientID {
		t.Errorf("got client_id %q after mutating a copy, want %q", got, clientID)
	}
}

func TestCodeGrantErrors(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := start(t, authtest.Options{Now: clk.Now, ClientIDs: []string{clientID, "other"}})
	form := func(code string, mod func(url.Values)) url.Values {
		v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {clientID}, "redirect_uri": {redirect}}
		if mod != nil {
			mod(v)
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		mod    func(url.Values)
		status int
		code   string
	}{
		{"unknown code", func(v url.Values) { v.Set("code", "nope") }, http.StatusBadRequest, "invalid_grant"},
		{"missing code", func(v url.Values) { v.Del("code") }, http.StatusBadRequest, "invalid_request"},
		{"other client", func(v url.Values) { v.Set("client_id", "other") }, http.StatusBadRequest, "invalid_grant"},
		{"unknown client", func(v url.Values) { v.Set("client_id", "evil") }, http.StatusBadRequest, "unauthorized_client"},
		{"missing client", func(v url.Values) { v.Del("client_id") }, http.StatusBadRequest, "invalid_request"},
		{"other redirect_uri", func(v url.Values) { v.Set("redirect_uri", redirect+"x") }, http.StatusBadRequest, "invalid_grant"},
		{"missing redirect_uri", func(v url.Values) { v.Del("redirect_uri") }, http.StatusBadRequest, "invalid_grant"},
		{"missing grant_type", func(v url.Values) { v.Del("grant_type") }, http.StatusBadRequest, "invalid_request"},
		{"password grant", func(v url.Values) { v.Set("grant_type", "password") }, http.StatusBadRequest, "unsupported_grant_type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, postToken(t, s, form(signIn(t, s, nil), tc.mod), nil), tc.status, tc.code)
		})
	}

	t.Run("reuse", func(t *testing.T) {
		code := signIn(t, s, nil)
		wantOK(t, exchange(t, s, code))
		wantError(t, exchange(t, s, code), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("burnt by a failed attempt", func(t *testing.T) {
		code := signIn(t, s, nil)
		wantError(t, postToken(t, s, form(code, func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1/x") }), nil), http.StatusBadRequest, "invalid_grant")
		wantError(t, exchange(t, s, code), http.StatusBadRequest, "invalid_grant")
	})
	t.Run("expiry", func(t *testing.T) {
		fresh, stale := signIn(t, s, nil), signIn(t, s, nil)
		clk.Advance(14 * time.Second)
		wantOK(t, exchange(t, s, fresh))
		clk.Advance(time.Second)
		wantError(t, exchange(t, s, stale), http.StatusBadRequest, "invalid_grant")
	})
}

// TestParameters checks that parameters are read from the query string too,
// as the vendor's client_credentials example sends them, and that the body
// wins over the query.
func TestParameters(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	hdr := http.Header{"X-Auth-Secret": {secret}, "Authorization": {"Basic QWRtaW5pc3RyYXRvcjpBZG1pbmlzdHJhdG9y"}}
	for _, tc := range []struct {
		name, query string
		body        url.Values
		status      int
	}{
		{"query only", "grant_type=client_credentials&client_id=dashboard", nil, http.StatusOK},
		{"body wins", "grant_type=password&client_id=evil", url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}}, http.StatusOK},
		{"query fills gaps", "client_id=dashboard", url.Values{"grant_type": {"client_credentials"}}, http.StatusOK},
		{"body wins, badly", "grant_type=client_credentials&client_id=dashboard", url.Values{"client_id": {"evil"}}, http.StatusBadRequest},
	} {
		resp, body := postForm(t, http.DefaultClient, s.Issuer()+"/api/token?"+tc.query, tc.body, hdr)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: got status %d, want %d; body %s", tc.name, resp.StatusCode, tc.status, body)
		}
	}
	big := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "pad": {strings.Repeat("x", 1<<20)}}
	if resp, _ := postForm(t, http.DefaultClient, s.Issuer()+"/api/token", big, hdr); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("1 MiB body: got status %d, want %d", resp.StatusCode, http.StatusBadRequest)
	}
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		rotate bool
	}{{"no rotation", false}, {"rotation", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			s := start(t, authtest.Options{Now: clk.Now, RotateRefreshTokens: tc.rotate, ClientIDs: []string{clientID, "other"}})
			first := exchange(t, s, signIn(t, s, func(v url.Values) { v.Set("nonce", "n-42") }))
			wantOK(t, first)
			rt := first.str("refresh_token")
			clk.Advance(time.Minute)
			other := postToken(t, s, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"other"}}, nil)
			wantError(t, other, http.StatusBadRequest, "invalid_grant")

			r := refresh(t, s, rt)
			wantOK(t, r)
			claims := segment(t, r.str("id_token"), 1)
			if claims["sub"] != "Administrator" || claims["iat"] != float64(clk.Now().Unix()) || claims["nonce"] != nil {
				t.Errorf("got refreshed claims %v, want sub Administrator, iat now, no nonce", claims)
			}
			next := r.str("refresh_token")
			_, hasRT := r.body["refresh_token"]
			if hasRT != tc.rotate || (tc.rotate && next == rt) {
				t.Fatalf("got refresh_token %q (present %v), want a new one only with rotation", next, hasRT)
			}

			if !tc.rotate {
				wantOK(t, refresh(t, s, rt)) // the old token stays valid
			} else {
				newest := refresh(t, s, next)
				wantOK(t, newest)
				// Reusing a rotated-out token revokes the whole family,
				// including the newest token.
				wantError(t, refresh(t, s, rt), http.StatusBadRequest, "invalid_grant")
				wantError(t, refresh(t, s, newest.str("refresh_token")), http.StatusBadRequest, "invalid_grant")
				fresh := exchange(t, s, signIn(t, s, nil)).str("refresh_token") // other sign-ins live on
				wantOK(t, refresh(t, s, fresh))
			}
			wantError(t, refresh(t, s, "made-up"), http.StatusBadRequest, "invalid_grant")
			wantError(t, postToken(t, s, url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}}, nil), http.StatusBadRequest, "invalid_request")

			rt = exchange(t, s, signIn(t, s, nil)).str("refresh_token")
			s.RevokeRefreshTokens()
			wantError(t, refresh(t, s, rt), http.StatusBadRequest, "invalid_grant")

			rt = exchange(t, s, signIn(t, s, nil)).str("refresh_token")
			clk.Advance(authtest.DefaultRefreshTTL)
			wantError(t, refresh(t, s, rt), http.StatusBadRequest, "invalid_grant")
		})
	}
}

func TestClientCredentials(t *testing.T) {
	t.Parallel()
	clk := newClock()
	s := start(t, authtest.Options{
		Now:              clk.Now,
		ClientIDs:        []string{clientID, "twcSynchronizationManager"},
		Users:            map[string]string{"alice": "pw-a", "bob": "pw-b"},
		DisabledUsers:    []string{"bob"},
		UnlimitedClients: []string{"twcSynchronizationManager"},
		TokenTTL:         10 * time.Minute,
	})
	for _, tc := range []struct {
		name, client, user, pass string
		noBasic                  bool
		status                   int
		code                     string
		ttl                      time.Duration
	}{
		{name: "good", client: clientID, user: "alice", pass: "pw-a", status: 200, ttl: 10 * time.Minute},
		{name: "unlimited", client: "twcSynchronizationManager", user: "alice", pass: "pw-a", status: 200, ttl: authtest.DefaultUnlimitedTTL},
		{name: "bad password", client: clientID, user: "alice", pass: "pw-b", status: 401, code: "invalid_grant"},
		{name: "unknown user", client: clientID, user: "carol", pass: "pw-a", status: 401, code: "invalid_grant"},
		{name: "disabled", client: clientID, user: "bob", pass: "pw-b", status: 401, code: "invalid_grant"},
		{name: "no basic", client: clientID, noBasic: true, status: 401, code: "invalid_grant"},
		{name: "unknown client", client: "evil", user: "alice", pass: "pw-a", status: 400, code: "unauthorized_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, s.Issuer()+"/api/token?"+url.Values{"grant_type": {"client_credentials"}, "client_id": {tc.client}}.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Auth-Secret", secret)
			if !tc.noBasic {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, raw := do(t, http.DefaultClient, req)
			r := postTokenResult(resp, raw)
			if tc.status != http.StatusOK {
				wantError(t, r, tc.status, tc.code)
				if tc.code == "invalid_grant" && r.str("error_description") != "invalid username or password" {
					t.Errorf("got description %q, want %q", r.str("error_description"), "invalid username or password")
				}
				return
			}
			wantOK(t, r)
			c := segment(t, r.str("id_token"), 1)
			if c["sub"] != tc.user || c["aud"] != tc.client {
				t.Errorf("got sub %v aud %v, want %q %q", c["sub"], c["aud"], tc.user, tc.client)
			}
			exp, iat := c["exp"].(float64), c["iat"].(float64)
			if got := time.Duration(exp-iat) * time.Second; got != tc.ttl || r.body["expires_in"] != tc.ttl.Seconds() {
				t.Errorf("got lifetime %v expires_in %v, want %v", got, r.body["expires_in"], tc.ttl)
			}
			if r.str("refresh_token") == "" {
				t.Error("got no refresh_token, want one")
			}
		})
	}
}
