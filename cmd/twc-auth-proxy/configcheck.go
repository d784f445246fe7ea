package main

// This file holds the mechanics behind config.go: strict YAML decoding that
// names keys, and the per-key checks that collect problems.

import (
	"crypto/x509"
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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/proxy"
	"go.yaml.in/yaml/v3"
)

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

// problems collects "key: what is wrong" lines.
type problems []string

func (p *problems) add(key, msg string) { *p = append(*p, key+": "+msg) }

func (p *problems) check(err error, key string) {
	if err != nil {
		p.add(key, err.Error())
	}
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

// secret resolves a secret: the environment wins over the file or the
// inline value. The file and the inline value together are an error even
// when the environment wins, so that a config file checks the same
// wherever it runs. ok is false when a problem was reported, under the key
// that was given (key or key_file).
func (p *problems) secret(key, inline, file, env string, getenv func(string) string) (v string, ok bool) {
	if inline != "" && file != "" {
		p.add(key, "set either "+key+" or "+key+"_file, not both")
		return "", false
	}
	if v := strings.TrimSpace(getenv(env)); v != "" {
		return v, true
	}
	if file == "" {
		return inline, true
	}
	b, err := os.ReadFile(file)
	if err != nil {
		p.add(key+"_file", "cannot read: "+errText(err))
		return "", false
	}
	if v = strings.TrimSpace(string(b)); v == "" {
		p.add(key+"_file", "file is empty")
		return "", false
	}
	return v, true
}

// upstreamTLS checks upstream_ca_file and upstream_insecure_skip_verify:
// the bundle must hold a certificate, the two keys exclude each other (a
// bundle that is never checked against would only mislead), and both
// concern an https upstream only. upstream is nil when that key already
// has a problem.
func (p *problems) upstreamTLS(upstream *url.URL, caFile string, insecure bool) {
	if caFile != "" {
		_, err := readCAFile(caFile)
		p.check(err, "upstream_ca_file")
	}
	if caFile != "" && insecure {
		p.add("upstream_insecure_skip_verify", "set either upstream_ca_file or upstream_insecure_skip_verify, not both")
	}
	if upstream == nil || upstream.Scheme == "https" {
		return
	}
	const plain = "applies only to an https:// upstream, and upstream is http://"
	if caFile != "" {
		p.add("upstream_ca_file", plain)
	}
	if insecure {
		p.add("upstream_insecure_skip_verify", plain)
	}
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
	password, ok := p.secret("service_account.password", sc.Password, sc.PasswordFile, envServicePassword, getenv)
	if ok && password == "" {
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
// comma-separated, from the file one per line or comma-separated). A
// problem is reported under the source of the keys: session.secret,
// session.secret_file or the environment variable.
func (p *problems) sessionKeys(sc sessionConfig, getenv func(string) string) [][]byte {
	// An inline secret of only empty strings (`secret: ""`) is none, as
	// an empty auth.client_secret or service_account.password is.
	inline := slices.ContainsFunc(sc.Secret, func(s string) bool { return strings.TrimSpace(s) != "" })
	if inline && sc.SecretFile != "" {
		p.add("session.secret", "set either session.secret or session.secret_file, not both")
		return nil
	}
	source, raw := "session.secret", []string(sc.Secret)
	switch env := strings.TrimSpace(getenv(envSessionSecret)); {
	case env != "":
		source, raw = envSessionSecret, strings.Split(env, ",")
	case sc.SecretFile != "":
		b, err := os.ReadFile(sc.SecretFile)
		if err != nil {
			p.add("session.secret_file", "cannot read: "+errText(err))
			return nil
		}
		source = "session.secret_file"
		raw = strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' || r == '\r' || r == ',' })
	}
	var given []string
	for _, r := range raw {
		if r = strings.TrimSpace(r); r != "" {
			given = append(given, r)
		}
	}
	var keys [][]byte
	for i, r := range given {
		k, err := decodeKey(r)
		if err != nil {
			if len(given) > 1 {
				p.add(source, fmt.Sprintf("key %d of %d: %v", i+1, len(given), err))
			} else {
				p.add(source, err.Error())
			}
			return nil
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		const want = "base64 of 32 random bytes (openssl rand -base64 32)"
		switch source {
		case "session.secret":
			p.add(source, "required: "+want+", or session.secret_file, or "+envSessionSecret)
		default:
			p.add(source, "holds no key: want "+want+", one per line or comma-separated")
		}
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

// validAddr checks a listen address: host:port with a numeric port, which
// net.Listen would otherwise refuse only at start (or look up as a service
// name).
func validAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return errors.New("want host:port, e.g. 127.0.0.1:4180 or :4180")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port %q: want a number from 1 to 65535", port)
	}
	return nil
}

// isFixedRoute reports whether path is one of the proxy's own routes
// (proxy/server.go), which the callback path must not shadow: proxy.New
// refuses such a redirect_url.
func isFixedRoute(path string) bool {
	switch path {
	case "/oauth2/start", "/oauth2/sign_out", "/oauth2/userinfo", "/oauth2/auth":
		return true
	}
	return false
}

// readCAFile reads auth.ca_file or upstream_ca_file, a PEM bundle of at
// least one certificate. Both the config check and the clients use it.
func readCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, errors.New("cannot read: " + errText(err))
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in the file")
	}
	return pool, nil
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

// validCookieDomain accepts what net/http writes as a Domain attribute
// (it silently drops anything else, and session.NewStore refuses
// separators): a host name with an optional leading dot, or an IPv4
// address.
func validCookieDomain(d string) bool {
	if a, err := netip.ParseAddr(d); err == nil {
		return a.Is4()
	}
	d = strings.TrimPrefix(d, ".")
	if d == "" || len(d) > 253 {
		return false
	}
	letter := false
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
				letter = true
			case '0' <= c && c <= '9', c == '-':
			default:
				return false
			}
		}
	}
	return letter
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
