package proxy

import (
	"fmt"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Rule is one skip_auth entry: requests whose path matches (and whose
// method equals Method, when set) pass without a session.
type Rule struct {
	Method string // exact, e.g. "GET"; "" matches every method
	Path   *regexp.Regexp
}

// ParseRule parses "REGEX" or "METHOD=REGEX", e.g. "GET=^/static/".
func ParseRule(s string) (Rule, error) {
	var r Rule
	expr := s
	if m, rest, ok := strings.Cut(s, "="); ok && isMethodToken(m) {
		r.Method, expr = m, rest
	}
	if expr == "" {
		return Rule{}, fmt.Errorf("skip_auth rule %q: empty path pattern", s)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return Rule{}, fmt.Errorf("skip_auth rule %q: %w", s, err)
	}
	r.Path = re
	return r, nil
}

func isMethodToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// skipAuth reports whether r may pass without a session. Rules see the
// decoded path only (never the query), and only when that path is already
// canonical: a path with //, /./, /../, a backslash, an encoded slash or a
// semicolon could mean one thing to the regex and another to the upstream,
// so it needs a session.
func (s *Server) skipAuth(r *http.Request) bool {
	if len(s.cfg.SkipAuth) == 0 {
		return false
	}
	p := r.URL.Path
	if !canonicalPath(p, r.URL.RawPath) {
		return false
	}
	for _, rule := range s.cfg.SkipAuth {
		if (rule.Method == "" || rule.Method == r.Method) && rule.Path.MatchString(p) {
			return true
		}
	}
	return false
}

// canonicalPath reports whether p (decoded) with its raw form rawPath is
// free of anything a server could resolve differently. A ';' is refused
// because servlet containers (Tomcat, Jetty) drop ";params" from each
// segment before resolving dot segments: to them /static/..;/admin is
// /admin, while path.Clean keeps "..;" as a name.
func canonicalPath(p, rawPath string) bool {
	if p == "" || p[0] != '/' || strings.ContainsAny(p, "\\\x00;") {
		return false
	}
	if rawPath != "" {
		lower := strings.ToLower(rawPath)
		if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%00") {
			return false
		}
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean == p
}

// escapeQueryBackslashes percent-encodes the backslashes in rd's query.
// Browsers send a backslash in a query as it is (it is not in the URL
// standard's query percent-encode set), and safeReturnPath refuses every
// backslash, so such a page lost its return path. In a query a backslash
// and %5C mean the same to every server; before the '?' a backslash is a
// slash to browsers, and it stays there for safeReturnPath to refuse.
func escapeQueryBackslashes(rd string) string {
	i := strings.IndexByte(rd, '?')
	if i < 0 || !strings.Contains(rd[i:], "\\") {
		return rd
	}
	return rd[:i] + strings.ReplaceAll(rd[i:], "\\", "%5C")
}

// safeReturnPath returns rd when it is a local path that every browser
// resolves on this origin, for use as a Location after login.
//
// Refused: anything that is not a single leading '/' followed by printable
// ASCII (so no //host, /\host, tabs, newlines or unicode look-alikes), any
// backslash, and paths that decode to // or /\ (for servers that decode
// before redirecting). Payloads from public open-redirect advisories against
// auth proxies are the test corpus.
func safeReturnPath(rd string) (string, bool) {
	if rd == "" || len(rd) > 2048 || rd[0] != '/' {
		return "", false
	}
	if len(rd) > 1 && (rd[1] == '/' || rd[1] == '\\') {
		return "", false
	}
	for i := 0; i < len(rd); i++ {
		if c := rd[i]; c <= 0x20 || c >= 0x7f || c == '\\' {
			return "", false
		}
	}
	u, err := url.Parse(rd)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "", false
	}
	if strings.HasPrefix(u.Path, "//") || strings.HasPrefix(u.Path, "/\\") {
		return "", false
	}
	return rd, true
}
