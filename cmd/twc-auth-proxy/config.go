package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.yaml.in/yaml/v3"
)

// fileConfig mirrors config.yaml.example key for key. Secrets carry no
// String method and are never logged.
type fileConfig struct {
	Listen                     string        `yaml:"listen"`
	MetricsListen              string        `yaml:"metrics_listen"`
	Upstream                   string        `yaml:"upstream"`
	RedirectURL                string        `yaml:"redirect_url"`
	UpstreamTimeout            time.Duration `yaml:"upstream_timeout"`
	UpstreamCAFile             string        `yaml:"upstream_ca_file"`
	UpstreamInsecureSkipVerify bool          `yaml:"upstream_insecure_skip_verify"`
	ShutdownTimeout            time.Duration `yaml:"shutdown_timeout"`
	SkipAuth                   []string      `yaml:"skip_auth"`
	TrustedProxies             []string      `yaml:"trusted_proxies"`
	Auth                       authConfig    `yaml:"auth"`
	Session                    sessionConfig `yaml:"session"`
	Log                        logConfig     `yaml:"log"`
	ServiceAccount             serviceConfig `yaml:"service_account"`
	APITokens                  apiConfig     `yaml:"api_tokens"`
}

type serviceConfig struct {
	Enabled      bool     `yaml:"enabled"`
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	ClientID     string   `yaml:"client_id"`
	Routes       []string `yaml:"routes"`
}

type apiConfig struct {
	Enabled   bool     `yaml:"enabled"`
	Audiences []string `yaml:"audiences"`
}

type authConfig struct {
	IssuerURL             string         `yaml:"issuer_url"`
	DiscoveryURL          string         `yaml:"discovery_url"`
	ClientID              string         `yaml:"client_id"`
	ClientSecret          string         `yaml:"client_secret"`
	ClientSecretFile      string         `yaml:"client_secret_file"`
	ClientAuth            string         `yaml:"client_auth"`
	Scopes                []string       `yaml:"scopes"`
	RefreshMargin         *time.Duration `yaml:"refresh_margin"`
	RequireNonce          bool           `yaml:"require_nonce"`
	Timeout               time.Duration  `yaml:"timeout"`
	PostLogoutRedirectURL string         `yaml:"post_logout_redirect_url"`
	CAFile                string         `yaml:"ca_file"`
	InsecureSkipVerify    bool           `yaml:"insecure_skip_verify"`
}

type sessionConfig struct {
	CookieName   string        `yaml:"cookie_name"`
	CookieSecure *bool         `yaml:"cookie_secure"`
	CookieDomain string        `yaml:"cookie_domain"`
	Secret       secretList    `yaml:"secret"`
	SecretFile   string        `yaml:"secret_file"`
	Lifetime     time.Duration `yaml:"lifetime"`
}

type logConfig struct {
	Format   string `yaml:"format"`
	Level    string `yaml:"level"`
	Requests *bool  `yaml:"requests"`
}

// secretList is session.secret: one secret or a list (key rotation).
type secretList []string

func (s *secretList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*s = secretList{n.Value}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*s = l
		return nil
	}
	return errors.New("want a string or a list of strings")
}

// settings is the validated configuration, split per component.
type settings struct {
	listen          string
	metricsListen   string
	shutdownTimeout time.Duration
	// idleTimeout closes keep-alive connections of both listeners that
	// carry no request for this long; not a config key (tests shorten it).
	idleTimeout time.Duration
	proxy       proxy.Config
	auth        proxy.AuthConfig
	session     session.Options
	authTLS     tlsTrust
	upstreamTLS tlsTrust
	logFormat   string
	logLevel    string
	// service is the service account, when service_account.enabled.
	service *proxy.ServiceAccountConfig
}

// tlsTrust is how a client checks a server's certificate: auth.ca_file
// and auth.insecure_skip_verify, or upstream_ca_file and
// upstream_insecure_skip_verify. The bundle is read at start
// (tlsTrust.clientConfig).
type tlsTrust struct {
	caFile             string
	insecureSkipVerify bool
}

// Defaults for keys a config may leave out.
const (
	defaultListen          = "127.0.0.1:4180"
	defaultMetricsListen   = "127.0.0.1:9100"
	defaultRefreshMargin   = 30 * time.Second
	defaultAuthTimeout     = 10 * time.Second
	defaultUpstreamTimeout = 60 * time.Second
	defaultShutdownTimeout = 20 * time.Second
	defaultIdleTimeout     = 120 * time.Second
	defaultSessionLifetime = 14 * 24 * time.Hour // TWC's refresh-token lifetime
	defaultCookieName      = "_twc_session"
)

// Environment variables that override secrets in the file.
const (
	envClientSecret    = "TWC_AUTH_PROXY_CLIENT_SECRET"
	envSessionSecret   = "TWC_AUTH_PROXY_SESSION_SECRET"
	envServicePassword = "TWC_AUTH_PROXY_SERVICE_PASSWORD"
)

// loadConfig reads, decodes strictly and validates the config at path.
// Every problem is reported, on one line, each naming its key.
func loadConfig(path string, getenv func(string) string) (*settings, error) {
	if path == "" {
		return nil, errors.New("config: no config file given (use --config FILE)")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(raw, getenv)
}

func parseConfig(raw []byte, getenv func(string) string) (*settings, error) {
	var fc fileConfig
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("config: not valid YAML: %s", oneLine(err.Error()))
	}
	var problems []string
	if len(doc.Content) > 0 {
		decodeStrict(doc.Content[0], reflect.ValueOf(&fc).Elem(), "", &problems)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("config: %s", singleLine(strings.Join(problems, "; ")))
	}
	s, problems := fc.validate(getenv)
	if len(problems) > 0 {
		return nil, fmt.Errorf("config: %s", singleLine(strings.Join(problems, "; ")))
	}
	return s, nil
}

// validate checks every key and builds the settings.
func (fc *fileConfig) validate(getenv func(string) string) (*settings, []string) {
	var p problems
	s := &settings{
		listen:          orDefault(fc.Listen, defaultListen),
		metricsListen:   orDefault(fc.MetricsListen, defaultMetricsListen),
		shutdownTimeout: durationOr(fc.ShutdownTimeout, defaultShutdownTimeout),
		idleTimeout:     defaultIdleTimeout,
		logFormat:       orDefault(fc.Log.Format, "json"),
		logLevel:        orDefault(fc.Log.Level, "info"),
	}
	p.check(validAddr(s.listen), "listen")
	p.check(validAddr(s.metricsListen), "metrics_listen")
	if s.listen == s.metricsListen {
		p.add("metrics_listen", "must differ from listen")
	}
	p.nonNegative("shutdown_timeout", fc.ShutdownTimeout)
	p.nonNegative("upstream_timeout", fc.UpstreamTimeout)
	p.nonNegative("auth.timeout", fc.Auth.Timeout)
	p.nonNegative("session.lifetime", fc.Session.Lifetime)
	if l := fc.Session.Lifetime; l > 0 && l < time.Second {
		// Cookies live whole seconds: session.NewStore refuses less.
		p.add("session.lifetime", "must be at least 1s (leave it out for the default, 336h)")
	}

	upstream := p.url("upstream", fc.Upstream, true)
	p.upstreamTLS(upstream, fc.UpstreamCAFile, fc.UpstreamInsecureSkipVerify)
	redirect := p.url("redirect_url", fc.RedirectURL, true)
	if redirect != nil && (redirect.Path == "" || redirect.Path == "/") {
		p.add("redirect_url", "needs a callback path, e.g. /oauth2/callback")
	}
	if redirect != nil && (redirect.RawQuery != "" || redirect.Fragment != "") {
		p.add("redirect_url", "must not have a query or fragment")
	}
	if redirect != nil && isFixedRoute(redirect.Path) {
		p.add("redirect_url", "path "+redirect.Path+" is one of the proxy's own routes; use another, e.g. /oauth2/callback")
	}
	p.url("auth.issuer_url", fc.Auth.IssuerURL, true)
	p.url("auth.discovery_url", fc.Auth.DiscoveryURL, false)
	p.url("auth.post_logout_redirect_url", fc.Auth.PostLogoutRedirectURL, false)
	if fc.Auth.ClientID == "" {
		p.add("auth.client_id", "required")
	}
	clientAuth := proxy.ClientAuth(orDefault(fc.Auth.ClientAuth, string(proxy.ClientAuthXAuthSecret)))
	switch clientAuth {
	case proxy.ClientAuthXAuthSecret, proxy.ClientAuthBasic, proxy.ClientAuthPost:
	default:
		p.add("auth.client_auth", "must be x-auth-secret, client_secret_basic or client_secret_post")
	}
	clientSecret, ok := p.secret("auth.client_secret", fc.Auth.ClientSecret, fc.Auth.ClientSecretFile, envClientSecret, getenv)
	if ok && clientSecret == "" {
		p.add("auth.client_secret", "required (or auth.client_secret_file, or "+envClientSecret+")")
	}
	margin := defaultRefreshMargin
	if fc.Auth.RefreshMargin != nil {
		margin = *fc.Auth.RefreshMargin
		p.nonNegative("auth.refresh_margin", margin)
	}
	for i, sc := range fc.Auth.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\"\\") {
			p.add(fmt.Sprintf("auth.scopes[%d]", i), "must be a single scope token")
		}
	}
	if fc.Auth.CAFile != "" {
		_, err := readCAFile(fc.Auth.CAFile)
		p.check(err, "auth.ca_file")
	}

	var rules []proxy.Rule
	for i, raw := range fc.SkipAuth {
		r, err := proxy.ParseRule(raw)
		if err != nil {
			p.add(fmt.Sprintf("skip_auth[%d]", i), err.Error())
			continue
		}
		rules = append(rules, r)
	}
	var trusted []netip.Prefix
	for i, raw := range fc.TrustedProxies {
		pfx, err := parsePrefix(raw)
		if err != nil {
			p.add(fmt.Sprintf("trusted_proxies[%d]", i), "want an IP address or CIDR such as 10.0.0.0/8")
			continue
		}
		trusted = append(trusted, pfx)
	}

	keys := p.sessionKeys(fc.Session, getenv)
	cookieName := orDefault(fc.Session.CookieName, defaultCookieName)
	if !validCookieName(cookieName) {
		p.add("session.cookie_name", "must be a cookie name: letters, digits and any of !#$%&'*+-^_`|~ (no dot, space, quote, comma, = or ;)")
	}
	if d := fc.Session.CookieDomain; d != "" && !validCookieDomain(d) {
		p.add("session.cookie_domain", "must be a domain name such as example.com (or .example.com)")
	}
	secure := true
	if fc.Session.CookieSecure != nil {
		secure = *fc.Session.CookieSecure
	}
	if err := session.CheckNamePrefix(cookieName, secure, "/", fc.Session.CookieDomain); err != nil {
		p.add("session.cookie_name", err.Error()+" (session.cookie_secure, session.cookie_domain)")
	}
	service := p.serviceAccount(fc.ServiceAccount, clientAuth, margin, getenv)
	audiences := fc.APITokens.Audiences
	if len(audiences) == 0 {
		audiences = []string{fc.Auth.ClientID}
	}
	for i, a := range fc.APITokens.Audiences {
		if a == "" {
			p.add(fmt.Sprintf("api_tokens.audiences[%d]", i), "must not be empty")
		}
	}
	switch s.logFormat {
	case "json", "console":
	default:
		p.add("log.format", "must be json or console")
	}
	switch s.logLevel {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "must be debug, info, warn or error")
	}
	if len(p) > 0 {
		return nil, p
	}

	logRequests := fc.Log.Requests == nil || *fc.Log.Requests
	s.proxy = proxy.Config{
		Upstream:              upstream,
		RedirectURL:           redirect,
		RefreshMargin:         margin,
		SkipAuth:              rules,
		TrustedProxies:        trusted,
		UpstreamTimeout:       durationOr(fc.UpstreamTimeout, defaultUpstreamTimeout),
		PostLogoutRedirectURL: fc.Auth.PostLogoutRedirectURL,
		LogRequests:           logRequests,
		APITokens:             proxy.APITokens{Enabled: fc.APITokens.Enabled, Audiences: audiences},
	}
	s.service = service
	s.auth = proxy.AuthConfig{
		IssuerURL:    strings.TrimSuffix(fc.Auth.IssuerURL, "/"),
		DiscoveryURL: fc.Auth.DiscoveryURL,
		ClientID:     fc.Auth.ClientID,
		ClientSecret: clientSecret,
		ClientAuth:   clientAuth,
		Scopes:       fc.Auth.Scopes,
		RedirectURL:  fc.RedirectURL,
		RequireNonce: fc.Auth.RequireNonce,
		Timeout:      durationOr(fc.Auth.Timeout, defaultAuthTimeout),
	}
	s.authTLS = tlsTrust{caFile: fc.Auth.CAFile, insecureSkipVerify: fc.Auth.InsecureSkipVerify}
	s.upstreamTLS = tlsTrust{caFile: fc.UpstreamCAFile, insecureSkipVerify: fc.UpstreamInsecureSkipVerify}
	s.session = session.Options{
		CookieName: cookieName,
		Secrets:    keys,
		Secure:     secure,
		Domain:     fc.Session.CookieDomain,
		Path:       "/",
		MaxAge:     durationOr(fc.Session.Lifetime, defaultSessionLifetime),
	}
	return s, nil
}
