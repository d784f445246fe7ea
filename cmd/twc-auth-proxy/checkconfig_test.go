package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
)

// startApp is the part of a start after the config: newApp with s.
func startApp(s *settings) error {
	_, err := newApp(s, zap.NewNop(), prometheus.NewRegistry())
	return err
}

// listenOnce is the other part: the listener for addr.
func listenOnce(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
	}
	return err
}

// TestCheckConfigAgreesWithStart: for each value that the wiring after the
// config (session.NewStore, proxy.New, the auth server's client,
// net.Listen) refuses, --check-config refuses the config too, naming the
// key, and a real start stops at the same line. It once said "config OK"
// for all of them.
func TestCheckConfigAgreesWithStart(t *testing.T) {
	dir := t.TempDir()
	notPEM := writeFile(t, dir, "not.pem", "not a certificate\n")
	type agreeCase struct {
		name  string
		edit  string
		key   string
		start func(*settings) error // the runtime, given the value unchecked
	}
	var cases []agreeCase
	for _, route := range []string{"/oauth2/start", "/oauth2/sign_out", "/oauth2/userinfo", "/oauth2/auth"} {
		u := "https://dash.example.com" + route
		cases = append(cases, agreeCase{"redirect_url on " + route, "redirect_url: " + u, "redirect_url",
			func(s *settings) error {
				s.proxy.RedirectURL = mustParseURL(u)
				return startApp(s)
			}})
	}
	for _, ca := range []struct {
		key   string
		trust func(*settings) *tlsTrust
	}{
		{"auth.ca_file", func(s *settings) *tlsTrust { return &s.authTLS }},
		{"upstream_ca_file", func(s *settings) *tlsTrust { return &s.upstreamTLS }},
	} {
		for _, f := range []struct{ what, path string }{{"not PEM", notPEM}, {"a directory", dir}} {
			cases = append(cases, agreeCase{ca.key + " " + f.what, ca.key + ": " + f.path, ca.key,
				func(s *settings) error {
					ca.trust(s).caFile = f.path
					return startApp(s)
				}})
		}
	}
	for _, c := range append(cases, []agreeCase{
		{"session.lifetime under a second", "session.lifetime: 500ms", "session.lifetime",
			func(s *settings) error {
				s.session.MaxAge = 500 * time.Millisecond
				return startApp(s)
			}},
		{"session.cookie_domain with separators", `session.cookie_domain: "bad domain;x=y"`, "session.cookie_domain",
			func(s *settings) error {
				s.session.Domain = "bad domain;x=y"
				return startApp(s)
			}},
		{"session.cookie_name __Host- without Secure", "session.cookie_name: __Host-twc\nsession.cookie_secure: false", "session.cookie_name",
			func(s *settings) error {
				s.session.CookieName, s.session.Secure = "__Host-twc", false
				return startApp(s)
			}},
		{"listen with a named port", `listen: ":abc"`, "listen",
			func(*settings) error { return listenOnce(":abc") }},
		{"metrics_listen port out of range", "metrics_listen: 127.0.0.1:99999", "metrics_listen",
			func(*settings) error { return listenOnce("127.0.0.1:99999") }},
	}...) {
		t.Run(c.name, func(t *testing.T) {
			if err := c.start(mustParse(t, conf(), noEnv)); err == nil {
				t.Fatal("the runtime accepts the value: nothing to check")
			}
			// Free ports, so that a start that wrongly got past the config
			// fails where the value bites, not on a busy port; an https
			// upstream, so that upstream_ca_file is judged by its file alone.
			addrs := freeAddrs(t, 2)
			edits := append([]string{"listen: " + addrs[0], "metrics_listen: " + addrs[1], "upstream: https://127.0.0.1:8111"},
				strings.Split(c.edit, "\n")...) // a line an edit
			path := writeFile(t, t.TempDir(), "c.yaml", conf(edits...))
			for _, args := range [][]string{{"--config", path, "--check-config"}, {"--config", path}} {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var stdout, stderr syncBuffer
				err := run(ctx, args, noEnv, &stdout, &stderr)
				cancel()
				if err == nil || !strings.HasPrefix(err.Error(), "config: ") || !strings.Contains(err.Error(), c.key+":") {
					t.Errorf("%v: got %v (stdout %q), want a config error naming %s", args, err, stdout.String(), c.key)
				}
			}
		})
	}
}

// TestConfigRulesMatchRuntime checks the config layer's copies of runtime
// rules value by value: what the config accepts, the runtime accepts.
func TestConfigRulesMatchRuntime(t *testing.T) {
	base := func(t *testing.T) *settings { return mustParse(t, conf(), noEnv) }
	t.Run("redirect path", func(t *testing.T) {
		for _, p := range []string{"/oauth2/start", "/oauth2/sign_out", "/oauth2/userinfo", "/oauth2/auth",
			"/oauth2/callback", "/oauth2/start/", "/auth/cb", "/oauth2/Start"} {
			u := "https://dash.example.com" + p
			_, cfgErr := parseConfig([]byte(conf("redirect_url: "+u)), noEnv)
			s := base(t)
			s.proxy.RedirectURL = mustParseURL(u)
			if runErr := startApp(s); (cfgErr == nil) != (runErr == nil) {
				t.Errorf("%s: config says %v, proxy.New says %v", p, cfgErr, runErr)
			}
		}
	})
	t.Run("session.lifetime", func(t *testing.T) {
		for _, l := range []string{"1ms", "999ms", "1s", "1500ms", "1h"} {
			_, cfgErr := parseConfig([]byte(conf("session.lifetime: "+l)), noEnv)
			d, err := time.ParseDuration(l)
			if err != nil {
				t.Fatal(err)
			}
			s := base(t)
			s.session.MaxAge = d
			if runErr := startApp(s); (cfgErr == nil) != (runErr == nil) {
				t.Errorf("%s: config says %v, session.NewStore says %v", l, cfgErr, runErr)
			}
		}
	})
	// net/http drops a Domain attribute it finds invalid (and logs it),
	// leaving a host-only cookie, and session.NewStore refuses separators:
	// the config accepts only what both keep.
	t.Run("session.cookie_domain", func(t *testing.T) {
		for _, d := range []string{
			"example.com", ".example.com", "dash.example.com", "localhost", "xn--bcher-kva.example", "10.0.0.1",
			"bad domain;x=y", "example.com:443", "https://example.com", "exa_mple.com", "-bad.com", "bad-.com",
			"a..b", "::1", "[::1]", "1.2.3", "ex\tample.com", "bücher.example", "example.com;", strings.Repeat("a", 64) + ".com",
		} {
			cfgOK := validCookieDomain(d)
			_, storeErr := session.NewStore(session.Options{Secrets: [][]byte{[]byte(testKeyOne)}, Domain: d})
			kept := strings.Contains((&http.Cookie{Name: "n", Value: "v", Domain: d}).String(), "; Domain=")
			if cfgOK && (storeErr != nil || !kept) {
				t.Errorf("%q: config accepts it, session.NewStore says %v, net/http keeps it: %v", d, storeErr, kept)
			}
			if !cfgOK && storeErr == nil && kept {
				t.Errorf("%q: config refuses what the runtime keeps", d)
			}
		}
	})
	t.Run("auth.ca_file", func(t *testing.T) {
		dir := t.TempDir()
		for name, content := range map[string]string{"good.pem": testCAPEM(t), "bad.pem": "junk", "empty.pem": ""} {
			file := writeFile(t, dir, name, content)
			_, cfgErr := parseConfig([]byte(conf("auth.ca_file: "+file)), noEnv)
			s := base(t)
			s.authTLS.caFile = file
			if runErr := startApp(s); (cfgErr == nil) != (runErr == nil) {
				t.Errorf("%s: config says %v, the auth server's client says %v", name, cfgErr, runErr)
			}
		}
	})
	t.Run("upstream_ca_file", func(t *testing.T) {
		dir := t.TempDir()
		for name, content := range map[string]string{"good.pem": testCAPEM(t), "bad.pem": "junk", "empty.pem": ""} {
			file := writeFile(t, dir, name, content)
			_, cfgErr := parseConfig([]byte(conf("upstream: https://127.0.0.1:8111", "upstream_ca_file: "+file)), noEnv)
			s := base(t)
			s.upstreamTLS.caFile = file
			if runErr := startApp(s); (cfgErr == nil) != (runErr == nil) {
				t.Errorf("%s: config says %v, the upstream's transport says %v", name, cfgErr, runErr)
			}
		}
	})
}

// TestNewAppErrorNamesSessionOnce: session.NewStore's errors already start
// with "session: "; newApp must not add another.
func TestNewAppErrorNamesSessionOnce(t *testing.T) {
	s := mustParse(t, conf(), noEnv)
	s.session.MaxAge = time.Millisecond
	err := startApp(s)
	if err == nil {
		t.Fatal("newApp accepted a 1ms session lifetime")
	}
	if !strings.HasPrefix(err.Error(), "session: ") || strings.Contains(err.Error(), "session: session:") {
		t.Errorf("got %q, want one %q prefix", err, "session: ")
	}
}
