package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// Demo credentials, printed at start. The dev auth server only listens on
// loopback.
const (
	demoUser     = "demo"
	demoPassword = "demo"
	demoClientID = "twc-auth-proxy-demo"
)

// runDemo is `twc-auth-proxy demo`: a TWC-compatible development auth
// server, a sample dashboard and the proxy in front of it, all on loopback,
// in one process. It is the only path that starts the fake auth server.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("twc-auth-proxy demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:4180", "proxy listen address (loopback)")
	tokenTTL := fs.Duration("token-ttl", 2*time.Minute, "ID-token lifetime of the dev auth server, short so refreshes show")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireLoopback(*listen); err != nil {
		return fmt.Errorf("demo: -listen: %w", err)
	}
	proxyLn, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("demo: listen: %w", err)
	}
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proxyLn.Close()
		return fmt.Errorf("demo: metrics listen: %w", err)
	}
	base := "http://" + proxyLn.Addr().String()

	// The whitelist is the callback as the proxy sends it, built from the
	// address it listens on: any loopback address (127.0.0.2, [::1]), not
	// only 127.0.0.1.
	secret := make([]byte, 24)
	rand.Read(secret)
	idp, err := authtest.Start(authtest.Options{
		ClientIDs:           []string{demoClientID},
		Secret:              base64.RawURLEncoding.EncodeToString(secret),
		RedirectWhitelist:   []string{base + "/oauth2/callback"},
		Users:               map[string]string{demoUser: demoPassword, "Administrator": "Administrator"},
		TokenTTL:            *tokenTTL,
		RotateRefreshTokens: true,
	})
	if err != nil {
		proxyLn.Close()
		metricsLn.Close()
		return fmt.Errorf("demo: auth server: %w", err)
	}
	defer idp.Close()

	dash := newDemoDashboard()
	dashLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		proxyLn.Close()
		metricsLn.Close()
		return fmt.Errorf("demo: dashboard: %w", err)
	}
	dashSrv := &http.Server{Handler: dash, ReadHeaderTimeout: 5 * time.Second}
	go dashSrv.Serve(dashLn)
	defer dashSrv.Close()

	key := make([]byte, 32)
	rand.Read(key)
	cfg := &settings{
		listen:          proxyLn.Addr().String(),
		metricsListen:   metricsLn.Addr().String(),
		shutdownTimeout: 5 * time.Second,
		logFormat:       "console",
		logLevel:        "info",
		proxy: proxy.Config{
			Upstream:        mustParseURL("http://" + dashLn.Addr().String()),
			RedirectURL:     mustParseURL(base + "/oauth2/callback"),
			RefreshMargin:   30 * time.Second,
			UpstreamTimeout: 30 * time.Second,
			LogRequests:     true,
		},
		auth: proxy.AuthConfig{
			IssuerURL:    idp.Issuer(),
			ClientID:     demoClientID,
			ClientSecret: base64.RawURLEncoding.EncodeToString(secret),
			ClientAuth:   proxy.ClientAuthXAuthSecret,
			RedirectURL:  base + "/oauth2/callback",
			Timeout:      5 * time.Second,
		},
		session: session.Options{CookieName: defaultCookieName, Secrets: [][]byte{key}, Path: "/", MaxAge: 12 * time.Hour},
	}
	log, lines, err := newLogger(cfg.logFormat, cfg.logLevel, stderr)
	if err != nil {
		return err
	}
	cfg.proxy.RequestLog = lines
	a, err := newApp(cfg, log, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, `twc-auth-proxy demo
  open      %s/
  sign in   %s / %s
  tokens    expire every %s; the page counts the refreshes it sees
  sign out  %s/oauth2/sign_out
  metrics   http://%s/metrics
  auth      %s (TWC-compatible development server)
Ctrl-C stops it.
`, base, demoUser, demoPassword, *tokenTTL, base, metricsLn.Addr(), idp.Issuer())
	return a.serve(ctx, proxyLn, metricsLn)
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if !isLoopbackHost(host) {
		return fmt.Errorf("%s is not a loopback address; the demo's accounts are public", addr)
	}
	return nil
}

func mustParseURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err) // only called with URLs built from listener addresses
	}
	return u
}

// demoDashboard is a stand-in for a legacy dashboard behind the proxy: it
// shows what it received, decoded from the injected Token header.
type demoDashboard struct {
	mu     sync.Mutex
	tokens map[string]map[string]bool // sub -> distinct tokens seen
}

func newDemoDashboard() *demoDashboard {
	return &demoDashboard{tokens: map[string]map[string]bool{}}
}

var dashTmpl = template.Must(template.New("dash").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Legacy dashboard</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:3em auto;padding:0 1em}
pre{background:#f4f4f4;padding:1em;overflow:auto}td{padding:.2em 1em .2em 0}</style></head>
<body><h1>Legacy dashboard</h1>
{{if .Sub}}<p id="user">Signed in as <strong>{{.Sub}}</strong>.</p>
<table><tr><td>Token expires</td><td id="expiry">{{.Expiry}}</td></tr>
<tr><td>Expires in</td><td>{{.Left}}</td></tr>
<tr><td>Refreshes seen</td><td id="refreshes">{{.Refreshes}}</td></tr>
<tr><td>Requested</td><td id="path">{{.Path}}</td></tr></table>
<h2>Claims of the injected <code>Authorization: Token</code></h2><pre id="claims">{{.Claims}}</pre>
{{else}}<p id="user">No Token header arrived (a skip_auth path?).</p>{{end}}
<p><a href="/">Reload</a> · <a href="/api/whoami">/api/whoami (JSON)</a> · <a href="/oauth2/userinfo">/oauth2/userinfo</a> · <a href="/oauth2/sign_out">Sign out</a></p>
</body></html>
`))

func (d *demoDashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Token ")
	var claims struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	var pretty string
	if parts := strings.Split(tok, "."); len(parts) == 3 {
		if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil && json.Unmarshal(b, &claims) == nil {
			var v any
			json.Unmarshal(b, &v)
			pb, _ := json.MarshalIndent(v, "", "  ")
			pretty = string(pb)
		}
	}
	refreshes := d.seen(claims.Sub, tok)
	exp := time.Unix(claims.Exp, 0)
	if r.URL.Path == "/api/whoami" {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"sub": claims.Sub, "exp": claims.Exp, "refreshes": refreshes})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	dashTmpl.Execute(w, map[string]any{
		"Sub": claims.Sub, "Expiry": exp.Format(time.TimeOnly), "Left": time.Until(exp).Round(time.Second),
		"Refreshes": refreshes, "Path": r.URL.RequestURI(), "Claims": pretty,
	})
}

// seen records tok for sub and returns how many refreshes that implies.
func (d *demoDashboard) seen(sub, tok string) int {
	if sub == "" {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tokens[sub] == nil {
		d.tokens[sub] = map[string]bool{}
	}
	d.tokens[sub][tok] = true
	return len(d.tokens[sub]) - 1
}
