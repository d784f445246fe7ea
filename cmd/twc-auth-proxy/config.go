package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.yaml.in/yaml/v3"
)

// fileConfig mirrors config.yaml.example key for key. Secrets carry no
// String method and are never logged.
type fileConfig struct {
	Listen          string        `yaml:"listen"`
	MetricsListen   string        `yaml:"metrics_listen"`
	Upstream        string        `yaml:"upstream"`
	RedirectURL     string        `yaml:"redirect_url"`
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	SkipAuth        []string      `yaml:"skip_auth"`
	TrustedProxies  []string      `yaml:"trusted_proxies"`
	Auth            authConfig    `yaml:"auth"`
	Session         sessionConfig `yaml:"session"`
	Log             logConfig     `yaml:"log"`
	ServiceAccount  serviceConfig `yaml:"service_account"`
	APITokens       apiConfig     `yaml:"api_tokens"`
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
	proxy           proxy.Config
	auth            proxy.AuthConfig
	session         session.Options
	authTLS         authTLS
	logFormat       string
	logLevel        string
	// service is the service account, when service_account.enabled.
	service *proxy.ServiceAccountConfig
}

type authTLS struct {
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

var durationType = reflect.TypeFor[time.Duration]()

// decodeStrict decodes n into v, reporting unknown keys, duplicate keys and
// ill-typed values with their dotted key path and line. yaml's own strict
// mode names the Go type instead of the key, which helps nobody at 3 a.m.
func decodeStrict(n *yaml.Node, v reflect.Value, path string, problems *[]string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if v.Kind() == reflect.Struct {
		if n.Kind != yaml.MappingNode {
			*problems = append(*problems, fmt.Sprintf("%s: want a mapping of keys (line %d)", nameOr(path, "top level"), n.Line))
			return
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			child := key
			if path != "" {
				child = path + "." + key
			}
			idx := fieldIndex(v.Type(), key)
			switch {
			case idx < 0:
				*problems = append(*problems, fmt.Sprintf("%s: unknown key (line %d)", child, n.Content[i].Line))
			case seen[key]:
				*problems = append(*problems, fmt.Sprintf("%s: key given twice (line %d)", child, n.Content[i].Line))
			default:
				seen[key] = true
				decodeStrict(n.Content[i+1], v.Field(idx), child, problems)
			}
		}
		return
	}
	target := v
	if v.Kind() == reflect.Pointer {
		target = reflect.New(v.Type().Elem())
	} else {
		target = v.Addr()
	}
	if err := n.Decode(target.Interface()); err != nil {
		*problems = append(*problems, fmt.Sprintf("%s: %s (line %d)", path, describeWant(v.Type(), n), n.Line))
		return
	}
	if v.Kind() == reflect.Pointer {
		v.Set(target)
	}
}

func fieldIndex(t reflect.Type, key string) int {
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name == key {
			return i
		}
	}
	return -1
}

// describeWant explains what a key expects, without echoing its value
// (it may be a secret).
func describeWant(t reflect.Type, n *yaml.Node) string {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return "want a duration such as 30s, 5m or 1h"
	case t.Kind() == reflect.Bool:
		return "want true or false"
	case t.Kind() == reflect.String:
		return "want a single string"
	case t == reflect.TypeFor[secretList]():
		return "want a string or a list of strings"
	case t.Kind() == reflect.Slice:
		return "want a list of strings"
	}
	return "invalid value"
}

func nameOr(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// lineBreaks escapes what would split the error over several lines: a key
// or a skip_auth pattern from the file may contain any of these.
var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\v", `\v`, "\f", `\f`,
	"\u0085", `\u0085`, "\u2028", `\u2028`, "\u2029", `\u2029`)

func singleLine(s string) string { return lineBreaks.Replace(s) }

// validate checks every key and builds the settings.
func (fc *fileConfig) validate(getenv func(string) string) (*settings, []string) {
	var p problems
	s := &settings{
		listen:          orDefault(fc.Listen, defaultListen),
		metricsListen:   orDefault(fc.MetricsListen, defaultMetricsListen),
		shutdownTimeout: durationOr(fc.ShutdownTimeout, defaultShutdownTimeout),
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

	upstream := p.url("upstream", fc.Upstream, true)
	redirect := p.url("redirect_url", fc.RedirectURL, true)
	if redirect != nil && (redirect.Path == "" || redirect.Path == "/") {
		p.add("redirect_url", "needs a callback path, e.g. /oauth2/callback")
	}
	if redirect != nil && (redirect.RawQuery != "" || redirect.Fragment != "") {
		p.add("redirect_url", "must not have a query or fragment")
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
	clientSecret := p.secret("auth.client_secret", fc.Auth.ClientSecret, fc.Auth.ClientSecretFile, envClientSecret, getenv)
	if clientSecret == "" && !p.has("auth.client_secret") {
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
		if _, err := os.Stat(fc.Auth.CAFile); err != nil {
			p.add("auth.ca_file", "cannot read: "+errText(err))
		}
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
		p.add("session.cookie_name", "must be a cookie token (letters, digits, _ or -)")
	}
	secure := true
	if fc.Session.CookieSecure != nil {
		secure = *fc.Session.CookieSecure
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
	s.authTLS = authTLS{caFile: fc.Auth.CAFile, insecureSkipVerify: fc.Auth.InsecureSkipVerify}
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

// problems collects "key: what is wrong" lines.
type problems []string

func (p *problems) add(key, msg string) { *p = append(*p, key+": "+msg) }

func (p *problems) check(err error, key string) {
	if err != nil {
		p.add(key, err.Error())
	}
}

func (p *problems) has(key string) bool {
	for _, l := range *p {
		if strings.HasPrefix(l, key+":") {
			return true
		}
	}
	return false
}

func (p *problems) nonNegative(key string, d time.Duration) {
	if d < 0 {
		p.add(key, "must not be negative")
	}
}

// url parses an absolute http(s) URL; required says whether it may be empty.
func (p *problems) url(key, raw string, required bool) *url.URL {
	if raw == "" {
		if required {
			p.add(key, "required")
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		p.add(key, "want an absolute http:// or https:// URL")
		return nil
	}
	return u
}

// secret resolves a secret: the environment wins over the file, and the
// file or the inline value may be given, not both.
func (p *problems) secret(key, inline, file, env string, getenv func(string) string) string {
	if v := strings.TrimSpace(getenv(env)); v != "" {
		return v
	}
	if inline != "" && file != "" {
		p.add(key, "set either "+key+" or "+key+"_file, not both")
		return ""
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			p.add(key+"_file", "cannot read: "+errText(err))
			return ""
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			p.add(key+"_file", "file is empty")
		}
		return v
	}
	return inline
}

// serviceAccount validates the service_account block; nil when disabled.
func (p *problems) serviceAccount(sc serviceConfig, clientAuth proxy.ClientAuth, margin time.Duration, getenv func(string) string) *proxy.ServiceAccountConfig {
	if !sc.Enabled {
		return nil
	}
	if sc.Username == "" {
		p.add("service_account.username", "required when service_account.enabled")
	}
	if clientAuth == proxy.ClientAuthBasic {
		// TWC's client_credentials grant carries the user's credentials in
		// the Basic header, so the client cannot authenticate there too.
		p.add("service_account.enabled", "needs auth.client_auth x-auth-secret or client_secret_post (Basic carries the user's credentials)")
	}
	password := p.secret("service_account.password", sc.Password, sc.PasswordFile, envServicePassword, getenv)
	if password == "" && !p.has("service_account.password") {
		p.add("service_account.password", "required (or service_account.password_file, or "+envServicePassword+")")
	}
	cfg := &proxy.ServiceAccountConfig{Username: sc.Username, Password: password, ClientID: sc.ClientID, RefreshMargin: margin}
	for i, raw := range sc.Routes {
		re, err := regexp.Compile(raw)
		if err != nil {
			p.add(fmt.Sprintf("service_account.routes[%d]", i), err.Error())
			continue
		}
		cfg.Routes = append(cfg.Routes, re)
	}
	return cfg
}

// sessionKeys decodes session.secret (one or a list; from the environment
// comma-separated, from the file one per line or comma-separated).
func (p *problems) sessionKeys(sc sessionConfig, getenv func(string) string) [][]byte {
	var raw []string
	switch env := strings.TrimSpace(getenv(envSessionSecret)); {
	case env != "":
		raw = strings.Split(env, ",")
	case len(sc.Secret) > 0 && sc.SecretFile != "":
		p.add("session.secret", "set either session.secret or session.secret_file, not both")
		return nil
	case sc.SecretFile != "":
		b, err := os.ReadFile(sc.SecretFile)
		if err != nil {
			p.add("session.secret_file", "cannot read: "+errText(err))
			return nil
		}
		raw = strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' || r == '\r' || r == ',' })
	default:
		raw = sc.Secret
	}
	var keys [][]byte
	for _, r := range raw {
		if r = strings.TrimSpace(r); r != "" {
			k, err := decodeKey(r)
			if err != nil {
				p.add("session.secret", err.Error())
				return nil
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		p.add("session.secret", "required: base64 of 32 random bytes (openssl rand -base64 32), or session.secret_file, or "+envSessionSecret)
	}
	return keys
}

// decodeKey accepts standard or URL base64, padded or not, of >= 32 bytes.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) < 32 {
				return nil, fmt.Errorf("too short: %d bytes after base64 decoding, need at least 32 (openssl rand -base64 32)", len(k))
			}
			return k, nil
		}
	}
	return nil, errors.New("not valid base64 (generate one with: openssl rand -base64 32)")
}

func validAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return errors.New("want host:port, e.g. 127.0.0.1:4180 or :4180")
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func validCookieName(name string) bool {
	c := &http.Cookie{Name: name, Value: "x"}
	return name != "" && c.Valid() == nil && !strings.ContainsAny(name, ".")
}

// errText is err's message without the path prefix os errors repeat.
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
