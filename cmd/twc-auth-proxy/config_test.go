package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
)

// Secrets of the test configs. They are distinctive so that a test can tell
// when one leaks into an error message.
const (
	testClientSecret = "client-secret-7f3a9c"
	testKeyOne       = "session-key-one-0123456789abcdef" // 32 bytes
	testKeyTwo       = "session-key-two-0123456789abcdef"
)

var (
	testSessionSecret  = base64.StdEncoding.EncodeToString([]byte(testKeyOne))
	testSessionSecret2 = base64.StdEncoding.EncodeToString([]byte(testKeyTwo))
)

// minimalConfig is the smallest valid config, as key-value pairs in order;
// dotted keys are nested under their section.
func minimalConfig() []string {
	return []string{
		"upstream: http://127.0.0.1:8111",
		"redirect_url: https://dash.example.com/oauth2/callback",
		"auth.issuer_url: https://twc.example.com:8443/authentication",
		"auth.client_id: dashboard",
		"auth.client_secret: " + testClientSecret,
		"session.secret: " + testSessionSecret,
	}
}

// conf renders minimalConfig changed by edits: "key: value" replaces key or
// adds it, "+key: value" adds key even if it is there (a duplicate) and
// "-key" removes key and, for a section, everything under it.
func conf(edits ...string) string {
	type entry struct{ key, val string }
	var entries []entry
	set := func(e string, dup bool) {
		k, v, _ := strings.Cut(e, ": ")
		if !dup {
			for i := range entries {
				if entries[i].key == k {
					entries[i].val = v
					return
				}
			}
		}
		entries = append(entries, entry{k, v})
	}
	for _, e := range minimalConfig() {
		set(e, false)
	}
	for _, e := range edits {
		switch {
		case strings.HasPrefix(e, "-"):
			k := e[1:]
			kept := entries[:0]
			for _, en := range entries {
				if en.key != k && !strings.HasPrefix(en.key, k+".") {
					kept = append(kept, en)
				}
			}
			entries = kept
		case strings.HasPrefix(e, "+"):
			set(e[1:], true)
		default:
			set(e, false)
		}
	}
	var b strings.Builder
	var sections []string
	for _, en := range entries {
		if sec, _, ok := strings.Cut(en.key, "."); ok {
			if !slices.Contains(sections, sec) {
				sections = append(sections, sec)
			}
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", en.key, en.val)
	}
	for _, sec := range sections {
		fmt.Fprintf(&b, "%s:\n", sec)
		for _, en := range entries {
			if k, ok := strings.CutPrefix(en.key, sec+"."); ok {
				fmt.Fprintf(&b, "  %s: %s\n", k, en.val)
			}
		}
	}
	return b.String()
}

// env is a getenv backed by a map.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var noEnv = env()

func mustParse(t *testing.T, raw string, getenv func(string) string) *settings {
	t.Helper()
	s, err := parseConfig([]byte(raw), getenv)
	if err != nil {
		t.Fatalf("parseConfig: %v\nconfig:\n%s", err, raw)
	}
	if s == nil {
		t.Fatal("parseConfig returned nil settings and no error")
	}
	return s
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testCAPEM is a self-signed CA certificate in PEM, for auth.ca_file.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "twc-auth-proxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestParseConfigDefaults(t *testing.T) {
	s := mustParse(t, conf(), noEnv)
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"listen", s.listen, "127.0.0.1:4180"},
		{"metrics_listen", s.metricsListen, "127.0.0.1:9100"},
		{"shutdown_timeout", s.shutdownTimeout, 20 * time.Second},
		{"upstream_timeout", s.proxy.UpstreamTimeout, 60 * time.Second},
		{"auth.refresh_margin", s.proxy.RefreshMargin, 30 * time.Second},
		{"auth.client_auth", s.auth.ClientAuth, proxy.ClientAuthXAuthSecret},
		{"auth.timeout", s.auth.Timeout, 10 * time.Second},
		{"auth.require_nonce", s.auth.RequireNonce, false},
		{"auth.scopes", len(s.auth.Scopes), 0},
		{"auth.discovery_url", s.auth.DiscoveryURL, ""},
		{"auth.insecure_skip_verify", s.authTLS.insecureSkipVerify, false},
		{"upstream_ca_file", s.upstreamTLS.caFile, ""},
		{"upstream_insecure_skip_verify", s.upstreamTLS.insecureSkipVerify, false},
		{"session.cookie_name", s.session.CookieName, "_twc_session"},
		{"session.cookie_secure", s.session.Secure, true},
		{"session.cookie_domain", s.session.Domain, ""},
		{"session.lifetime", s.session.MaxAge, 14 * 24 * time.Hour},
		{"session path", s.session.Path, "/"},
		{"skip_auth", len(s.proxy.SkipAuth), 0},
		{"trusted_proxies", len(s.proxy.TrustedProxies), 0},
		{"log.format", s.logFormat, "json"},
		{"log.level", s.logLevel, "info"},
		{"log.requests", s.proxy.LogRequests, true},
		{"upstream", s.proxy.Upstream.String(), "http://127.0.0.1:8111"},
		{"redirect_url", s.proxy.RedirectURL.String(), "https://dash.example.com/oauth2/callback"},
		{"auth.redirect_url", s.auth.RedirectURL, "https://dash.example.com/oauth2/callback"},
		{"auth.issuer_url", s.auth.IssuerURL, "https://twc.example.com:8443/authentication"},
		{"auth.client_id", s.auth.ClientID, "dashboard"},
		{"auth.client_secret", s.auth.ClientSecret, testClientSecret},
		{"session.secret", keyStrings(s.session.Secrets), []string{testKeyOne}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

func keyStrings(keys [][]byte) []string {
	var l []string
	for _, k := range keys {
		l = append(l, string(k))
	}
	return l
}

func TestParseConfigFull(t *testing.T) {
	dir := t.TempDir()
	caFile := writeFile(t, dir, "ca.pem", testCAPEM(t))
	raw := `
listen: 0.0.0.0:8080
metrics_listen: 0.0.0.0:9090
upstream: https://twc.internal:8111/osmc
redirect_url: https://dash.example.com/auth/cb
upstream_timeout: 2m
upstream_ca_file: ` + caFile + `
shutdown_timeout: 7s
skip_auth:
  - GET=^/static/
  - ^/health$
trusted_proxies:
  - 10.0.0.0/8
  - 192.168.1.7
auth:
  issuer_url: https://twc.example.com:8443/authentication/
  discovery_url: https://twc.example.com:8443/authentication/.well-known/oidc-configuration
  client_id: webapp
  client_secret: ` + testClientSecret + `
  client_auth: client_secret_basic
  scopes: [profile, email]
  refresh_margin: 2m
  require_nonce: true
  timeout: 4s
  post_logout_redirect_url: https://dash.example.com/bye
  ca_file: ` + caFile + `
  insecure_skip_verify: true
session:
  cookie_name: twc_dash
  cookie_secure: false
  cookie_domain: example.com
  secret:
    - ` + testSessionSecret2 + `
    - ` + testSessionSecret + `
  lifetime: 72h
log:
  format: console
  level: debug
  requests: false
`
	s := mustParse(t, raw, noEnv)
	rules := make([]string, len(s.proxy.SkipAuth))
	for i, r := range s.proxy.SkipAuth {
		rules[i] = r.Method + "=" + r.Path.String()
	}
	for _, c := range []struct {
		key       string
		got, want any
	}{
		{"listen", s.listen, "0.0.0.0:8080"},
		{"metrics_listen", s.metricsListen, "0.0.0.0:9090"},
		{"upstream", s.proxy.Upstream.String(), "https://twc.internal:8111/osmc"},
		{"redirect_url", s.proxy.RedirectURL.String(), "https://dash.example.com/auth/cb"},
		{"redirect_url (auth)", s.auth.RedirectURL, "https://dash.example.com/auth/cb"},
		{"upstream_timeout", s.proxy.UpstreamTimeout, 2 * time.Minute},
		{"upstream_ca_file", s.upstreamTLS.caFile, caFile},
		{"upstream_insecure_skip_verify", s.upstreamTLS.insecureSkipVerify, false},
		{"shutdown_timeout", s.shutdownTimeout, 7 * time.Second},
		{"skip_auth", rules, []string{"GET=^/static/", "=^/health$"}},
		{"trusted_proxies", s.proxy.TrustedProxies, []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}},
		{"auth.issuer_url", s.auth.IssuerURL, "https://twc.example.com:8443/authentication"},
		{"auth.discovery_url", s.auth.DiscoveryURL, "https://twc.example.com:8443/authentication/.well-known/oidc-configuration"},
		{"auth.client_id", s.auth.ClientID, "webapp"},
		{"auth.client_secret", s.auth.ClientSecret, testClientSecret},
		{"auth.client_auth", s.auth.ClientAuth, proxy.ClientAuthBasic},
		{"auth.scopes", s.auth.Scopes, []string{"profile", "email"}},
		{"auth.refresh_margin", s.proxy.RefreshMargin, 2 * time.Minute},
		{"auth.require_nonce", s.auth.RequireNonce, true},
		{"auth.timeout", s.auth.Timeout, 4 * time.Second},
		{"auth.post_logout_redirect_url", s.proxy.PostLogoutRedirectURL, "https://dash.example.com/bye"},
		{"auth.ca_file", s.authTLS.caFile, caFile},
		{"auth.insecure_skip_verify", s.authTLS.insecureSkipVerify, true},
		{"session.cookie_name", s.session.CookieName, "twc_dash"},
		{"session.cookie_secure", s.session.Secure, false},
		{"session.cookie_domain", s.session.Domain, "example.com"},
		{"session.secret", keyStrings(s.session.Secrets), []string{testKeyTwo, testKeyOne}},
		{"session.lifetime", s.session.MaxAge, 72 * time.Hour},
		{"log.format", s.logFormat, "console"},
		{"log.level", s.logLevel, "debug"},
		{"log.requests", s.proxy.LogRequests, false},
	} {
		t.Run(c.key, func(t *testing.T) {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
}

// TestParseConfigZeroRefreshMargin checks that an explicit 0 is kept rather
// than replaced by the default: refresh only once the token has expired.
func TestParseConfigZeroRefreshMargin(t *testing.T) {
	s := mustParse(t, conf("auth.refresh_margin: 0s"), noEnv)
	if got := s.proxy.RefreshMargin; got != 0 {
		t.Errorf("got %v, want 0s", got)
	}
}

func TestParseConfigErrors(t *testing.T) {
	dir := t.TempDir()
	secretFile := writeFile(t, dir, "client_secret", "from-file-secret\n")
	missing := filepath.Join(dir, "missing")
	short := base64.StdEncoding.EncodeToString([]byte("only-16-bytes-xx"))
	caFile := writeFile(t, dir, "ca.pem", testCAPEM(t))
	for _, c := range []struct {
		name string
		raw  string   // the config
		keys []string // each must be named as "key:" in the error
		text string   // and this must appear too, when set
		hide []string // values that must not appear, besides the test secrets
		not  []string // keys that must not be named: one line per bad input
	}{
		{name: "missing upstream", raw: conf("-upstream"), keys: []string{"upstream"}, text: "required"},
		{name: "missing redirect_url", raw: conf("-redirect_url"), keys: []string{"redirect_url"}, text: "required"},
		{name: "missing issuer_url", raw: conf("-auth.issuer_url"), keys: []string{"auth.issuer_url"}, text: "required"},
		{name: "missing client_id", raw: conf("-auth.client_id"), keys: []string{"auth.client_id"}, text: "required"},
		{name: "missing client_secret", raw: conf("-auth.client_secret"), keys: []string{"auth.client_secret"}, text: "required"},
		{name: "missing session.secret", raw: conf("-session.secret"), keys: []string{"session.secret"}, text: "required"},
		{name: "empty session.secret", raw: conf(`session.secret: ""`), keys: []string{"session.secret"}},
		{name: "empty session.secret list", raw: conf(`session.secret: []`), keys: []string{"session.secret"}},
		{name: "empty config", raw: "", keys: []string{"upstream", "redirect_url", "auth.issuer_url", "auth.client_id", "auth.client_secret", "session.secret"}},

		{name: "url without scheme", raw: conf("upstream: twc.internal/osmc"), keys: []string{"upstream"}, text: "http"},
		{name: "host:port without scheme", raw: conf("upstream: twc.internal:8111"), keys: []string{"upstream"}},
		{name: "ftp url", raw: conf("auth.issuer_url: ftp://twc.example.com/authentication"), keys: []string{"auth.issuer_url"}},
		{name: "relative url", raw: conf("redirect_url: /oauth2/callback"), keys: []string{"redirect_url"}},
		{name: "url without host", raw: conf("upstream: http:///osmc"), keys: []string{"upstream"}},
		{name: "url with user info", raw: conf("auth.issuer_url: https://admin:hunter2@twc.example.com/authentication"),
			keys: []string{"auth.issuer_url"}, hide: []string{"hunter2"}},
		{name: "unparsable url", raw: conf("upstream: 'http://[::1'"), keys: []string{"upstream"}},
		{name: "bad discovery_url", raw: conf("auth.discovery_url: /well-known"), keys: []string{"auth.discovery_url"}},
		{name: "bad post_logout_redirect_url", raw: conf("auth.post_logout_redirect_url: javascript:alert(1)"), keys: []string{"auth.post_logout_redirect_url"}},
		{name: "redirect_url without path", raw: conf("redirect_url: https://dash.example.com"), keys: []string{"redirect_url"}, text: "path"},
		{name: "redirect_url with root path", raw: conf("redirect_url: https://dash.example.com/"), keys: []string{"redirect_url"}, text: "path"},
		{name: "redirect_url with query", raw: conf("redirect_url: https://dash.example.com/cb?a=1"), keys: []string{"redirect_url"}},
		{name: "redirect_url on /oauth2/start", raw: conf("redirect_url: https://dash.example.com/oauth2/start"), keys: []string{"redirect_url"}, text: "own routes"},
		{name: "redirect_url on /oauth2/sign_out", raw: conf("redirect_url: https://dash.example.com/oauth2/sign_out"), keys: []string{"redirect_url"}},
		{name: "redirect_url on /oauth2/userinfo", raw: conf("redirect_url: https://dash.example.com/oauth2/userinfo"), keys: []string{"redirect_url"}},
		{name: "redirect_url on /oauth2/auth", raw: conf("redirect_url: https://dash.example.com/oauth2/auth"), keys: []string{"redirect_url"}},

		{name: "short session secret", raw: conf("session.secret: " + short), keys: []string{"session.secret"}, text: "16 bytes", hide: []string{short}},
		{name: "non-base64 session secret", raw: conf("session.secret: 'not base64 at all!!'"), keys: []string{"session.secret"}, text: "base64", hide: []string{"not base64 at all"}},
		{name: "short second secret", raw: conf("session.secret: [" + testSessionSecret + ", " + short + "]"), keys: []string{"session.secret"}, hide: []string{short}},
		{name: "session secret of wrong type", raw: conf("session.secret: {a: b}"), keys: []string{"session.secret"}},

		{name: "unknown top-level key", raw: conf("bogus: 1"), keys: []string{"bogus"}, text: "unknown key"},
		{name: "unknown auth key", raw: conf("auth.bogus: 1"), keys: []string{"auth.bogus"}, text: "unknown key"},
		{name: "misspelt secret key", raw: conf("session.secrets: hidden-value-1"), keys: []string{"session.secrets"}, hide: []string{"hidden-value-1"}},
		{name: "unknown log key", raw: conf("log.colour: red"), keys: []string{"log.colour"}},
		{name: "duplicate top-level key", raw: conf("+upstream: http://127.0.0.1:9999"), keys: []string{"upstream"}, text: "twice"},
		{name: "duplicate nested key", raw: conf("+auth.client_secret: other-secret-xyz"), keys: []string{"auth.client_secret"}, text: "twice", hide: []string{"other-secret-xyz"}},
		{name: "duplicate section", raw: conf() + "auth:\n  client_id: x\n", keys: []string{"auth"}, text: "twice"},

		{name: "duration with bad unit", raw: conf(`auth.refresh_margin: "30 parsecs"`), keys: []string{"auth.refresh_margin"}, text: "duration", hide: []string{"parsecs"}},
		{name: "duration as bare number", raw: conf("auth.refresh_margin: 30"), keys: []string{"auth.refresh_margin"}},
		{name: "bool that is not", raw: conf(`session.cookie_secure: "maybe"`), keys: []string{"session.cookie_secure"}, text: "true or false"},
		{name: "list given a string", raw: conf(`auth.scopes: "a string"`), keys: []string{"auth.scopes"}, text: "list"},
		{name: "section given a string", raw: conf("-auth", "auth: x"), keys: []string{"auth"}, text: "mapping"},
		{name: "string given a list", raw: conf("listen: [a, b]"), keys: []string{"listen"}},
		{name: "secret given a list", raw: conf("auth.client_secret: [listed-secret-1]"), keys: []string{"auth.client_secret"}, hide: []string{"listed-secret-1"}},
		{name: "top level not a mapping", raw: "- a\n- b\n", keys: []string{"top level"}},

		{name: "client_secret and client_secret_file", raw: conf("auth.client_secret_file: " + secretFile), keys: []string{"auth.client_secret"}, text: "not both", hide: []string{"from-file-secret"}},
		{name: "session.secret and session.secret_file", raw: conf("session.secret_file: " + secretFile), keys: []string{"session.secret"}, text: "not both"},
		{name: "missing client_secret_file", raw: conf("-auth.client_secret", "auth.client_secret_file: "+missing), keys: []string{"auth.client_secret_file"}},
		{name: "client_secret_file is a directory", raw: conf("-auth.client_secret", "auth.client_secret_file: "+dir), keys: []string{"auth.client_secret_file"}},
		{name: "empty client_secret_file", raw: conf("-auth.client_secret", "auth.client_secret_file: "+writeFile(t, dir, "empty", " \n")), keys: []string{"auth.client_secret_file"}},
		{name: "missing client_secret_file, named once", raw: conf("-auth.client_secret", "auth.client_secret_file: "+missing),
			keys: []string{"auth.client_secret_file"}, text: "no such file", not: []string{"auth.client_secret"}},
		{name: "missing service_account.password_file, named once", raw: conf("service_account.enabled: true", "service_account.username: svc", "service_account.password_file: "+missing),
			keys: []string{"service_account.password_file"}, not: []string{"service_account.password"}},
		{name: "missing session.secret_file", raw: conf("-session.secret", "session.secret_file: "+missing), keys: []string{"session.secret_file"}, not: []string{"session.secret"}},
		{name: "empty session.secret_file", raw: conf("-session.secret", "session.secret_file: "+writeFile(t, dir, "empty-keys", "\n , \n")),
			keys: []string{"session.secret_file"}, text: "holds no key", not: []string{"session.secret"}},
		{name: "bad key in session.secret_file", raw: conf("-session.secret", "session.secret_file: "+writeFile(t, dir, "bad-keys", testSessionSecret+"\n"+short+"\n")),
			keys: []string{"session.secret_file"}, text: "key 2 of 2: too short", hide: []string{short}, not: []string{"session.secret"}},
		{name: "missing ca_file", raw: conf("auth.ca_file: " + missing), keys: []string{"auth.ca_file"}},
		{name: "ca_file is a directory", raw: conf("auth.ca_file: " + dir), keys: []string{"auth.ca_file"}, text: "directory"},
		{name: "ca_file without PEM", raw: conf("auth.ca_file: " + secretFile), keys: []string{"auth.ca_file"}, text: "no PEM", hide: []string{"from-file-secret"}},
		{name: "ca_file with a key, not a certificate", raw: conf("auth.ca_file: " + writeFile(t, dir, "key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")),
			keys: []string{"auth.ca_file"}, text: "no PEM"},
		{name: "missing upstream_ca_file", raw: conf("upstream: https://127.0.0.1:8111", "upstream_ca_file: "+missing),
			keys: []string{"upstream_ca_file"}, text: "no such file", not: []string{"auth.ca_file"}},
		{name: "upstream_ca_file without PEM", raw: conf("upstream: https://127.0.0.1:8111", "upstream_ca_file: "+secretFile),
			keys: []string{"upstream_ca_file"}, text: "no PEM", hide: []string{"from-file-secret"}},
		{name: "upstream_ca_file and upstream_insecure_skip_verify", raw: conf("upstream: https://127.0.0.1:8111", "upstream_ca_file: "+caFile, "upstream_insecure_skip_verify: true"),
			keys: []string{"upstream_insecure_skip_verify"}, text: "not both", not: []string{"upstream_ca_file"}},
		{name: "upstream_ca_file with an http upstream", raw: conf("upstream_ca_file: " + caFile),
			keys: []string{"upstream_ca_file"}, text: "https:// upstream", not: []string{"upstream_insecure_skip_verify"}},
		{name: "upstream_insecure_skip_verify with an http upstream", raw: conf("upstream_insecure_skip_verify: true"),
			keys: []string{"upstream_insecure_skip_verify"}, text: "https:// upstream", not: []string{"upstream_ca_file"}},
		{name: "upstream_insecure_skip_verify not a bool", raw: conf("upstream: https://127.0.0.1:8111", "upstream_insecure_skip_verify: yes please"),
			keys: []string{"upstream_insecure_skip_verify"}, text: "true or false"},
		{name: "cookie_domain with separators", raw: conf(`session.cookie_domain: "bad domain;x=y"`), keys: []string{"session.cookie_domain"}},
		{name: "cookie_domain with a port", raw: conf("session.cookie_domain: example.com:443"), keys: []string{"session.cookie_domain"}},
		{name: "cookie_domain as a URL", raw: conf("session.cookie_domain: https://example.com"), keys: []string{"session.cookie_domain"}},
		{name: "session.lifetime under a second", raw: conf("session.lifetime: 500ms"), keys: []string{"session.lifetime"}, text: "at least 1s"},

		{name: "bad client_auth", raw: conf("auth.client_auth: private_key_jwt"), keys: []string{"auth.client_auth"}},
		{name: "bad skip_auth regex", raw: conf("skip_auth: ['^/ok/', 'GET=^/static/(']"), keys: []string{"skip_auth[1]"}},
		{name: "empty skip_auth pattern", raw: conf("skip_auth: ['GET=']"), keys: []string{"skip_auth[0]"}},
		{name: "bad trusted_proxies prefix", raw: conf("trusted_proxies: [10.0.0.0/33]"), keys: []string{"trusted_proxies[0]"}},
		{name: "bad trusted_proxies host", raw: conf("trusted_proxies: [10.0.0.1, ingress.local]"), keys: []string{"trusted_proxies[1]"}},
		{name: "bad scope", raw: conf("auth.scopes: ['openid profile']"), keys: []string{"auth.scopes[0]"}},
		{name: "bad cookie name", raw: conf("session.cookie_name: 'my session'"), keys: []string{"session.cookie_name"}, text: "letters, digits and any of"},
		{name: "__Host- cookie name, not Secure", raw: conf("session.cookie_name: __Host-twc", "session.cookie_secure: false"), keys: []string{"session.cookie_name"}, text: "only when it is Secure"},
		{name: "__Host- cookie name with a domain", raw: conf("session.cookie_name: __Host-twc", "session.cookie_domain: example.com"), keys: []string{"session.cookie_name"}, text: "no domain"},
		{name: "__Secure- cookie name, not Secure", raw: conf("session.cookie_name: __Secure-twc", "session.cookie_secure: false"), keys: []string{"session.cookie_name"}},
		{name: "listen without port", raw: conf("listen: 127.0.0.1"), keys: []string{"listen"}},
		{name: "listen with a named port", raw: conf(`listen: ":abc"`), keys: []string{"listen"}, text: "1 to 65535"},
		{name: "listen on port 0", raw: conf(`listen: ":0"`), keys: []string{"listen"}},
		{name: "metrics_listen port out of range", raw: conf("metrics_listen: 127.0.0.1:99999"), keys: []string{"metrics_listen"}, text: "1 to 65535"},
		{name: "bad metrics_listen", raw: conf("metrics_listen: 9100"), keys: []string{"metrics_listen"}},
		{name: "listen equals default metrics_listen", raw: conf("listen: 127.0.0.1:9100"), keys: []string{"metrics_listen"}},
		{name: "listen equals metrics_listen", raw: conf(`listen: ":8080"`, `metrics_listen: ":8080"`), keys: []string{"metrics_listen"}},
		{name: "bad log.format", raw: conf("log.format: xml"), keys: []string{"log.format"}},
		{name: "bad log.level", raw: conf("log.level: verbose"), keys: []string{"log.level"}},

		{name: "negative refresh_margin", raw: conf("auth.refresh_margin: -5s"), keys: []string{"auth.refresh_margin"}, text: "negative"},
		{name: "negative upstream_timeout", raw: conf("upstream_timeout: -1s"), keys: []string{"upstream_timeout"}},
		{name: "negative shutdown_timeout", raw: conf("shutdown_timeout: -1s"), keys: []string{"shutdown_timeout"}},
		{name: "negative auth.timeout", raw: conf("auth.timeout: -1s"), keys: []string{"auth.timeout"}},
		{name: "negative session.lifetime", raw: conf("session.lifetime: -1h"), keys: []string{"session.lifetime"}},

		{name: "invalid YAML", raw: "upstream: [unclosed\nauth:\n  client_secret: " + testClientSecret + "\n", text: "not valid YAML"},
		{name: "tab indentation", raw: "auth:\n\tclient_id: x\n", text: "not valid YAML"},
		{name: "key with a line break", raw: conf(`"bad\nkey": 1`), keys: []string{`bad\nkey`}, text: "unknown key"},
		{name: "regex with a line break", raw: conf(`skip_auth: ["^/a\n("]`), keys: []string{"skip_auth[0]"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := parseConfig([]byte(c.raw), noEnv)
			if err == nil {
				t.Fatalf("got settings %+v, want an error; config:\n%s", s, c.raw)
			}
			msg := err.Error()
			checkErrorLine(t, msg)
			for _, k := range c.keys {
				if !strings.Contains(msg, k+":") {
					t.Errorf("got %q, want it to name %q", msg, k)
				}
			}
			if c.text != "" && !strings.Contains(msg, c.text) {
				t.Errorf("got %q, want it to contain %q", msg, c.text)
			}
			for _, k := range c.not {
				if strings.Contains(msg, k+":") {
					t.Errorf("got %q, which names %q too", msg, k)
				}
			}
			for _, v := range append(c.hide, testClientSecret, testSessionSecret) {
				if strings.Contains(msg, v) {
					t.Errorf("got %q, which reveals %q", msg, v)
				}
			}
		})
	}
}

// checkErrorLine fails unless msg is a single line starting with "config: ".
func checkErrorLine(t *testing.T, msg string) {
	t.Helper()
	if strings.ContainsAny(msg, "\n\r\v\f\u0085\u2028\u2029") {
		t.Errorf("got %q, want a single line", msg)
	}
	if !strings.HasPrefix(msg, "config: ") {
		t.Errorf("got %q, want it to start with %q", msg, "config: ")
	}
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	for _, c := range []struct {
		name string
		raw  string
		keys []string
	}{
		{"decoding", conf("bogus: 1", "auth.bogus: 2", `session.cookie_secure: "maybe"`, "+auth.client_id: x"),
			[]string{"bogus", "auth.bogus", "session.cookie_secure", "auth.client_id"}},
		{"validation", conf("-upstream", "-auth.client_id", "redirect_url: https://dash.example.com", "log.format: xml", "session.secret: c2hvcnQ="),
			[]string{"upstream", "auth.client_id", "redirect_url", "log.format", "session.secret"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseConfig([]byte(c.raw), noEnv)
			if err == nil {
				t.Fatalf("got no error, want one naming %v", c.keys)
			}
			msg := err.Error()
			checkErrorLine(t, msg)
			for _, k := range c.keys {
				if !strings.Contains(msg, k+":") {
					t.Errorf("got %q, want it to name %q", msg, k)
				}
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	t.Run("valid file", func(t *testing.T) {
		s, err := loadConfig(writeFile(t, dir, "ok.yaml", conf()), noEnv)
		if err != nil {
			t.Fatalf("loadConfig: %v", err)
		}
		if got, want := s.auth.ClientID, "dashboard"; got != want {
			t.Errorf("got client_id %q, want %q", got, want)
		}
	})
	for _, c := range []struct {
		name, path, want string
	}{
		{"no path", "", "--config"},
		{"missing file", filepath.Join(dir, "nope.yaml"), "no such file"},
		{"invalid file", writeFile(t, dir, "bad.yaml", conf("-auth.client_id")), "auth.client_id:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := loadConfig(c.path, noEnv)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", c.want)
			}
			checkErrorLine(t, err.Error())
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestClientSecretSources(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "client_secret", "  from-file\n\n")
	for _, c := range []struct {
		name   string
		raw    string
		getenv func(string) string
		want   string
	}{
		{"inline", conf(), noEnv, testClientSecret},
		{"file, trimmed", conf("-auth.client_secret", "auth.client_secret_file: "+file), noEnv, "from-file"},
		{"env over inline", conf(), env(envClientSecret, "from-env"), "from-env"},
		{"env over file", conf("-auth.client_secret", "auth.client_secret_file: "+file), env(envClientSecret, "from-env"), "from-env"},
		{"env trimmed", conf(), env(envClientSecret, " from-env\n"), "from-env"},
		{"env only", conf("-auth.client_secret"), env(envClientSecret, "from-env"), "from-env"},
		{"blank env ignored", conf(), env(envClientSecret, "  "), testClientSecret},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := mustParse(t, c.raw, c.getenv)
			if got := s.auth.ClientSecret; got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestSessionSecretSources(t *testing.T) {
	dir := t.TempDir()
	twoLines := writeFile(t, dir, "two", testSessionSecret2+"\r\n"+testSessionSecret+"\n")
	oneLine := writeFile(t, dir, "one", "\n  "+testSessionSecret2+"  \n")
	envKey := base64.RawURLEncoding.EncodeToString([]byte("session-key-env-0123456789abcdef"))
	for _, c := range []struct {
		name   string
		raw    string
		getenv func(string) string
		want   []string
	}{
		{"inline string", conf(), noEnv, []string{testKeyOne}},
		{"inline list keeps order", conf("session.secret: [" + testSessionSecret2 + ", " + testSessionSecret + "]"), noEnv, []string{testKeyTwo, testKeyOne}},
		{"file, trimmed", conf("-session.secret", "session.secret_file: "+oneLine), noEnv, []string{testKeyTwo}},
		{"file with two lines", conf("-session.secret", "session.secret_file: "+twoLines), noEnv, []string{testKeyTwo, testKeyOne}},
		{"env over inline", conf(), env(envSessionSecret, envKey), []string{"session-key-env-0123456789abcdef"}},
		{"env over file", conf("-session.secret", "session.secret_file: "+twoLines), env(envSessionSecret, envKey), []string{"session-key-env-0123456789abcdef"}},
		{"env list keeps order", conf(), env(envSessionSecret, testSessionSecret2+", "+testSessionSecret), []string{testKeyTwo, testKeyOne}},
		{"env only", conf("-session.secret"), env(envSessionSecret, envKey), []string{"session-key-env-0123456789abcdef"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := mustParse(t, c.raw, c.getenv)
			if got := keyStrings(s.session.Secrets); !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestSessionSecretFromEnvIsValidated checks that a bad environment secret
// fails start even when the file's secret is good, and is not echoed.
func TestSessionSecretFromEnvIsValidated(t *testing.T) {
	bad := base64.StdEncoding.EncodeToString([]byte("sixteen-bytes-xx"))
	_, err := parseConfig([]byte(conf()), env(envSessionSecret, testSessionSecret+","+bad))
	if err == nil {
		t.Fatal("got no error, want one for the short second key")
	}
	checkErrorLine(t, err.Error())
	if want := envSessionSecret + ": key 2 of 2: too short"; !strings.Contains(err.Error(), want) {
		t.Errorf("got %q, want it to contain %q", err, want)
	}
	if strings.Contains(err.Error(), "session.secret:") {
		t.Errorf("got %q, which blames session.secret for the environment's value", err)
	}
	if strings.Contains(err.Error(), bad) {
		t.Errorf("got %q, which reveals the secret", err)
	}

	_, err = parseConfig([]byte(conf()), env(envSessionSecret, "not base64 at all!!"))
	if err == nil || !strings.Contains(err.Error(), envSessionSecret+": not valid base64") || strings.Contains(err.Error(), "at all") {
		t.Errorf("got %v, want %s named, the value not echoed", err, envSessionSecret)
	}
	_, err = parseConfig([]byte(conf()), env(envSessionSecret, " , "))
	if err == nil || !strings.Contains(err.Error(), envSessionSecret+": holds no key") {
		t.Errorf("got %v, want %s: holds no key", err, envSessionSecret)
	}
}

// TestSecretFileAndInlineRefusedEvenWithEnv: a config that gives a secret
// both inline and as a file is refused whether or not the environment
// variable (which would win) is set, so --check-config in CI without the
// variable and a start with it agree.
func TestSecretFileAndInlineRefusedEvenWithEnv(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "secret", testSessionSecret+"\n")
	service := []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password: pw-secret"}
	for _, c := range []struct {
		name, key, env string
		edits          []string
	}{
		{"client secret", "auth.client_secret", envClientSecret, []string{"auth.client_secret_file: " + file}},
		{"session secret", "session.secret", envSessionSecret, []string{"session.secret_file: " + file}},
		{"service password", "service_account.password", envServicePassword, append(service, "service_account.password_file: "+file)},
	} {
		for _, getenv := range []func(string) string{noEnv, env(c.env, testSessionSecret2)} {
			_, err := parseConfig([]byte(conf(c.edits...)), getenv)
			if err == nil || !strings.Contains(err.Error(), c.key+": set either") {
				t.Errorf("%s (%s set: %v): got %v, want %s: set either ..., not both", c.name, c.env, getenv(c.env) != "", err, c.key)
			}
		}
	}
}

// TestEmptyInlineSecretWithFile: an inline secret left empty (`""`, as
// config.yaml.example shows service_account.password) is no secret, so the
// file beside it is used rather than refused as "not both", for all three
// secrets alike.
func TestEmptyInlineSecretWithFile(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "secret", testSessionSecret2+"\n")
	service := []string{"service_account.enabled: true", "service_account.username: svc"}
	for _, c := range []struct {
		name  string
		edits []string
		check func(*settings) bool
	}{
		{"client secret", []string{`auth.client_secret: ""`, "auth.client_secret_file: " + file},
			func(s *settings) bool { return s.auth.ClientSecret == testSessionSecret2 }},
		{"session secret", []string{`session.secret: ""`, "session.secret_file: " + file},
			func(s *settings) bool { return reflect.DeepEqual(keyStrings(s.session.Secrets), []string{testKeyTwo}) }},
		{"session secret, empty list item", []string{`session.secret: [""]`, "session.secret_file: " + file},
			func(s *settings) bool { return reflect.DeepEqual(keyStrings(s.session.Secrets), []string{testKeyTwo}) }},
		{"service password", append(service, `service_account.password: ""`, "service_account.password_file: "+file),
			func(s *settings) bool { return s.service != nil && s.service.Password == testSessionSecret2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := parseConfig([]byte(conf(c.edits...)), noEnv)
			if err != nil {
				t.Fatalf("got %v, want the secret from the file", err)
			}
			if !c.check(s) {
				t.Error("the secret is not the file's")
			}
		})
	}
}

// TestConfigExample checks config.yaml.example at the repository root, the
// file operators copy: it must load once the secrets come from the
// environment.
func TestConfigExample(t *testing.T) {
	path := filepath.Join("..", "..", "config.yaml.example")
	getenv := env(envClientSecret, testClientSecret, envSessionSecret, testSessionSecret)
	s, err := loadConfig(path, getenv)
	if err != nil {
		t.Fatalf("config.yaml.example does not load with the secrets from %s and %s: %v",
			envClientSecret, envSessionSecret, err)
	}
	if got := s.auth.ClientSecret; got != testClientSecret {
		t.Errorf("got client secret %q, want %q from %s", got, testClientSecret, envClientSecret)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, seed := range []string{
		conf(),
		conf("-upstream", "auth.bogus: 1"),
		conf("+auth.client_id: twice"),
		conf(`auth.refresh_margin: "30 parsecs"`, "session.cookie_secure: maybe"),
		conf("skip_auth: ['GET=^/static/(']", "trusted_proxies: [10.0.0.0/33]"),
		conf("session.secret: [" + testSessionSecret + ", c2hvcnQ=]"),
		conf("-auth", "auth: x"),
		"a: &x {b: *x}\n",
		"upstream: [unclosed\n",
		"- 1\n- 2\n",
		"? [a, b]\n: c\n",
		"<<: {listen: ':1'}\n",
		"auth: &a\n  client_id: x\nsession: *a\n",
		"",
		"---\n...\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := parseConfig(raw, noEnv)
		if err != nil {
			if s != nil {
				t.Errorf("got settings and error %q, want nil settings", err)
			}
			checkErrorLine(t, err.Error())
			return
		}
		if s == nil {
			t.Fatal("got nil settings and no error")
		}
	})
}
