package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// hitRecorder is a server that keeps a line for every request it gets.
type hitRecorder struct {
	mu   sync.Mutex
	hits []string
}

func (h *hitRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.hits = append(h.hits, fmt.Sprintf("%s %s X-Auth-Secret=%q Authorization=%q body=%q",
		r.Method, r.URL.Path, r.Header.Get("X-Auth-Secret"), r.Header.Get("Authorization"), body))
	h.mu.Unlock()
	http.Error(w, "not here", http.StatusNotFound)
}

func (h *hitRecorder) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hits...)
}

// TestAuthClientRedirects drives `token` (discovery, then the
// client_credentials POST with X-Auth-Secret and the service account's
// Basic credentials) against the fake auth server behind a front that
// redirects some of its routes. A token POST must never follow a redirect,
// to another host least of all; discovery may follow one on its own host.
func TestAuthClientRedirects(t *testing.T) {
	elsewhere := &hitRecorder{}
	other := httptest.NewServer(elsewhere) // another port: another origin
	defer other.Close()
	moved := &hitRecorder{}

	var idp *authtest.Server
	var tokenRedirect string // Location for the token endpoint; "" serves it
	var mu sync.Mutex
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		loc := tokenRedirect
		mu.Unlock()
		switch {
		case r.URL.Path == "/old-discovery":
			http.Redirect(w, r, "/authentication/.well-known/openid-configuration", http.StatusMovedPermanently)
		case r.URL.Path == "/moved-discovery":
			http.Redirect(w, r, other.URL+"/discovery", http.StatusFound)
		case r.URL.Path == "/authentication/api/token" && loc != "":
			http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
		case r.URL.Path == "/authentication/api/token-moved":
			moved.ServeHTTP(w, r)
		default:
			idp.ServeHTTP(w, r)
		}
	}))
	defer front.Close()
	var err error
	idp, err = authtest.New(front.URL+"/authentication", authtest.Options{
		ClientIDs: []string{"dashboard"},
		Secret:    "x-auth-secret-4e1d",
		Users:     map[string]string{testServiceUser: testServicePassword},
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{"x-auth-secret-4e1d", testServicePassword}

	tokenRun := func(t *testing.T, clientAuth, discovery, location string) (string, error) {
		t.Helper()
		mu.Lock()
		tokenRedirect = location
		mu.Unlock()
		cfg := conf(append([]string{
			"redirect_url: http://127.0.0.1:4180/oauth2/callback",
			"auth.issuer_url: " + idp.Issuer(),
			fmt.Sprintf("auth.discovery_url: %q", discovery),
			"auth.client_secret: x-auth-secret-4e1d",
			"auth.client_auth: " + clientAuth,
			"auth.timeout: 10s",
		}, serviceAccountEdits...)...)
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), []string{"token", "--config", writeFile(t, t.TempDir(), "c.yaml", cfg)}, noEnv, &stdout, &stderr)
		return stdout.String(), err
	}

	for _, clientAuth := range []string{"x-auth-secret", "client_secret_post"} {
		t.Run("token endpoint 307 to another host/"+clientAuth, func(t *testing.T) {
			out, err := tokenRun(t, clientAuth, "", other.URL+"/token")
			if err == nil || out != "" {
				t.Errorf("got stdout %q, error %v; want no token and an error", out, err)
			}
			if hits := elsewhere.all(); len(hits) != 0 {
				t.Errorf("the other host received %q", hits)
			}
			for _, s := range secrets {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("error %q reveals a secret", err)
				}
			}
		})
	}
	t.Run("token endpoint 307 on its own host", func(t *testing.T) {
		_, err := tokenRun(t, "x-auth-secret", "", front.URL+"/authentication/api/token-moved")
		if err == nil || !strings.Contains(err.Error(), "307") {
			t.Errorf("got %v, want the 307 as the token endpoint's answer", err)
		}
		if hits := moved.all(); len(hits) != 0 {
			t.Errorf("the redirect was followed: %q", hits)
		}
	})
	t.Run("discovery redirected to another host", func(t *testing.T) {
		_, err := tokenRun(t, "x-auth-secret", front.URL+"/moved-discovery", "")
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("got %v, want the redirect refused", err)
		}
		if hits := elsewhere.all(); len(hits) != 0 {
			t.Errorf("the other host received %q", hits)
		}
	})
	t.Run("discovery redirected on its own host", func(t *testing.T) {
		out, err := tokenRun(t, "x-auth-secret", front.URL+"/old-discovery", "")
		if err != nil || strings.Count(out, ".") != 2 {
			t.Errorf("got stdout %q, error %v; want a token", out, err)
		}
	})
}

func TestCheckAuthRedirect(t *testing.T) {
	req := func(method, u string) *http.Request {
		r, err := http.NewRequest(method, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const follow, answer, refuse = "follow", "answer with the 3xx", "refuse"
	for _, c := range []struct {
		name, method, from, to, want string
	}{
		{"GET same origin", "GET", "https://twc:8443/a", "https://twc:8443/b", follow},
		{"GET host name case", "GET", "https://twc:8443/a", "https://TWC:8443/b", follow},
		{"GET http to https", "GET", "http://twc:8443/a", "https://twc:8443/b", follow},
		{"GET https to http", "GET", "https://twc:8443/a", "http://twc:8443/b", refuse},
		{"GET other port", "GET", "https://twc:8443/a", "https://twc:9443/b", refuse},
		{"GET other host", "GET", "https://twc:8443/a", "https://evil:8443/b", refuse},
		{"POST same origin", "POST", "https://twc:8443/token", "https://twc:8443/token2", answer},
		{"POST other host", "POST", "https://twc:8443/token", "https://evil/token", answer},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkAuthRedirect(req(c.method, c.to), []*http.Request{req(c.method, c.from)})
			got := refuse
			switch {
			case err == nil:
				got = follow
			case errors.Is(err, http.ErrUseLastResponse):
				got = answer
			}
			if got != c.want {
				t.Errorf("got %s (%v), want %s", got, err, c.want)
			}
		})
	}
	many := make([]*http.Request, 10)
	for i := range many {
		many[i] = req("GET", "https://twc/a")
	}
	if checkAuthRedirect(req("GET", "https://twc/b"), many) == nil {
		t.Error("an 11th redirect was followed")
	}
}
