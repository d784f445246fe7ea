package authtest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// secretTransport adds X-Auth-Secret, TWC's deviation from OAuth 2.0.
type secretTransport struct{ base http.RoundTripper }

func (t secretTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Auth-Secret", secret)
	return t.base.RoundTrip(r)
}

// TestOAuth2Exchange pins a trap for the proxy: golang.org/x/oauth2 refuses a
// token response without access_token, and TWC's legacy server sends none.
// Only with Faults.IncludeAccessToken does Exchange succeed.
func TestOAuth2Exchange(t *testing.T) {
	t.Parallel()
	s := start(t, authtest.Options{})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: secretTransport{http.DefaultTransport}})
	cfg := oauth2.Config{
		ClientID:    clientID,
		Endpoint:    oauth2.Endpoint{AuthURL: s.Issuer() + "/authorize", TokenURL: s.Issuer() + "/api/token", AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: redirect,
		Scopes:      []string{"openid"},
	}
	_, err := cfg.Exchange(ctx, signIn(t, s, nil))
	if err == nil || !strings.Contains(err.Error(), "missing access_token") {
		t.Errorf("got Exchange error %v, want missing access_token", err)
	}

	s.SetFaults(authtest.Faults{IncludeAccessToken: true})
	tok, err := cfg.Exchange(ctx, signIn(t, s, nil))
	if err != nil {
		t.Fatalf("Exchange with access_token: %v", err)
	}
	if id, _ := tok.Extra("id_token").(string); id == "" || tok.RefreshToken == "" {
		t.Errorf("got id_token %q refresh_token %q, want both", id, tok.RefreshToken)
	}
}
