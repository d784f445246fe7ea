package authtest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// verify checks an ID token with go-oidc, as the proxy would.
func verify(t *testing.T, s *authtest.Server, clk *clock, idToken string) error {
	t.Helper()
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, s.Issuer())
	if err != nil {
		t.Fatalf("oidc.NewProvider: %v", err)
	}
	_, err = p.Verifier(&oidc.Config{ClientID: clientID, Now: clk.Now}).Verify(ctx, idToken)
	return err
}

// TestFaults exercises each fault against the same code flow and checks
// that it changes what a client observes; the first case is the baseline.
func TestFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults authtest.Faults
		check  func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult)
	}{
		{"none", authtest.Faults{}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			wantOK(t, r)
			if err := verify(t, s, clk, r.str("id_token")); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if h, c := segment(t, r.str("id_token"), 0), segment(t, r.str("id_token"), 1); h["kid"] != nil || c["nonce"] != nil {
				t.Errorf("got kid %v nonce %v, want neither", h["kid"], c["nonce"])
			}
			if _, ok := r.body["access_token"]; ok {
				t.Error("got access_token, want none")
			}
		}},
		{"BadSignature", authtest.Faults{BadSignature: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if err := verify(t, s, clk, r.str("id_token")); err == nil || !strings.Contains(err.Error(), "signature") {
				t.Errorf("got Verify error %v, want a signature failure", err)
			}
		}},
		{"WrongIssuer", authtest.Faults{WrongIssuer: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if got, want := segment(t, r.str("id_token"), 1)["iss"], s.Issuer()+"-wrong"; got != want {
				t.Errorf("got iss %v, want %q", got, want)
			}
			if err := verify(t, s, clk, r.str("id_token")); err == nil {
				t.Error("got Verify success, want an issuer error")
			}
		}},
		{"WrongAudience", authtest.Faults{WrongAudience: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if got := segment(t, r.str("id_token"), 1)["aud"]; got != "someone-else" {
				t.Errorf("got aud %v, want someone-else", got)
			}
			if err := verify(t, s, clk, r.str("id_token")); err == nil {
				t.Error("got Verify success, want an audience error")
			}
		}},
		{"Expired", authtest.Faults{Expired: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			var expired *oidc.TokenExpiredError
			if err := verify(t, s, clk, r.str("id_token")); !errors.As(err, &expired) {
				t.Fatalf("got Verify error %v, want TokenExpiredError", err)
			}
			if want := clk.Now().Add(-time.Hour); !expired.Expiry.Equal(want) {
				t.Errorf("got expiry %v, want %v", expired.Expiry, want)
			}
		}},
		{"IncludeKid", authtest.Faults{IncludeKid: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if kid, _ := segment(t, r.str("id_token"), 0)["kid"].(string); kid == "" {
				t.Error("got no kid, want one")
			}
			if err := verify(t, s, clk, r.str("id_token")); err != nil {
				t.Errorf("Verify: %v", err)
			}
		}},
		{"EchoNonce", authtest.Faults{EchoNonce: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if got := segment(t, r.str("id_token"), 1)["nonce"]; got != "n-1" {
				t.Errorf("got nonce %v, want %q", got, "n-1")
			}
			rr := refresh(t, s, r.str("refresh_token"))
			if got := segment(t, rr.str("id_token"), 1)["nonce"]; got != nil {
				t.Errorf("got nonce %v after refresh, want none (OIDC Core 12.2)", got)
			}
		}},
		{"WrongNonce", authtest.Faults{WrongNonce: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if got, _ := segment(t, r.str("id_token"), 1)["nonce"].(string); got == "" || got == "n-1" {
				t.Errorf("got nonce %q, want one other than %q", got, "n-1")
			}
			rr := refresh(t, s, r.str("refresh_token"))
			if got := segment(t, rr.str("id_token"), 1)["nonce"]; got != nil {
				t.Errorf("got nonce %v after refresh, want none (OIDC Core 12.2)", got)
			}
		}},
		{"IncludeAccessToken", authtest.Faults{IncludeAccessToken: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if at := r.str("access_token"); at == "" || at == r.str("id_token") {
				t.Errorf("got access_token %q, want an opaque one", at)
			}
		}},
		{"OmitIDToken", authtest.Faults{OmitIDToken: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			wantOK(t, r)
			if _, ok := r.body["id_token"]; ok || r.str("refresh_token") == "" {
				t.Errorf("got %s, want a refresh_token and no id_token", r.raw)
			}
		}},
		{"OmitIDTokenOnRefresh", authtest.Faults{OmitIDTokenOnRefresh: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if r.str("id_token") == "" {
				t.Fatalf("got %s from the code grant, want an id_token", r.raw)
			}
			rr := refresh(t, s, r.str("refresh_token"))
			wantOK(t, rr)
			if _, ok := rr.body["id_token"]; ok {
				t.Errorf("got %s from the refresh grant, want no id_token", rr.raw)
			}
		}},
		{"TokenStatus", authtest.Faults{TokenStatus: http.StatusServiceUnavailable}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
		}},
		{"TokenStatus invalid", authtest.Faults{TokenStatus: 42}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			wantError(t, r, http.StatusInternalServerError, "temporarily_unavailable")
		}},
		{"TokenErrorCode", authtest.Faults{TokenStatus: http.StatusBadRequest, TokenErrorCode: "system_error"}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			wantError(t, r, http.StatusBadRequest, "system_error")
		}},
		{"MalformedJSON", authtest.Faults{MalformedJSON: true}, func(t *testing.T, s *authtest.Server, clk *clock, r tokenResult) {
			if r.status != http.StatusOK || r.body != nil || r.raw == "" {
				t.Errorf("got %d %q, want 200 with a truncated JSON body", r.status, r.raw)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			s := start(t, authtest.Options{Now: clk.Now})
			code := signIn(t, s, nil)
			s.SetFaults(tc.faults)
			if got := s.Faults(); !reflect.DeepEqual(got, tc.faults) {
				t.Fatalf("got Faults %+v, want %+v", got, tc.faults)
			}
			tc.check(t, s, clk, exchange(t, s, code))
			if tc.faults.TokenStatus != 0 || tc.faults.MalformedJSON {
				// Injected failures happen before the code is looked at,
				// so the client can retry with it.
				s.SetFaults(authtest.Faults{})
				wantOK(t, exchange(t, s, code))
			}
		})
	}
}

func TestFaultTokenDelay(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	const delay = 200 * time.Millisecond
	s.SetFaults(authtest.Faults{TokenDelay: delay})
	begin := time.Now()
	wantOK(t, exchange(t, s, signIn(t, s, nil)))
	if got := time.Since(begin); got < delay {
		t.Errorf("got answer after %v, want at least %v", got, delay)
	}
}

// TestFaultTokenDelayCancel checks that a delayed handler returns as soon as
// the client gives up, so no goroutine outlives the request.
func TestFaultTokenDelayCancel(t *testing.T) {
	t.Parallel()
	s, err := authtest.New("http://127.0.0.1:8555/authentication", authtest.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.SetFaults(authtest.Faults{TokenDelay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/authentication/api/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeHTTP(httptest.NewRecorder(), req)
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("handler still running 5s after the request was cancelled")
	}
	if got := s.TokenCalls("client_credentials"); got != 1 {
		t.Errorf("got %d recorded calls, want 1", got)
	}
}
