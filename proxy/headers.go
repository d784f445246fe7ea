package proxy

import (
	"net/http"
	"strings"
)

// identityHeaders are request headers an upstream might take as proof of
// who the caller is, or as the path or method the caller "really" asked
// for. Clients must never be able to send them through. Names are compared
// case-insensitively with '_' read as '-', because some upstream frameworks
// (CGI, PHP, Django) fold X_Forwarded_User and X-Forwarded-User into the
// same variable.
var identityHeaders = []string{
	"authorization",
	"x-auth-secret",
	"remote-user",
	"x-remote-user",
	"x-user",
	"x-email",
	"x-real-ip",
	"forwarded",
	// Overrides of the request target and method, honoured by Symfony,
	// Laravel, IIS and others: the proxy decides skip_auth and
	// service-account routes on the method and path it sees, so the
	// upstream must see the same.
	"x-original-url",
	"x-rewrite-url",
	"x-http-method-override",
	"x-http-method",
	"x-method-override",
}

// identityPrefixes are families of such headers: every X-Forwarded-* (the
// proxy sets its own), X-Auth-Request-* (oauth2-proxy's), X-Forwarded-User
// and friends included.
var identityPrefixes = []string{
	"x-forwarded-",
	"x-auth-request-",
	"x-twc-",
}

// stripIdentityHeaders deletes every identity header from h.
func stripIdentityHeaders(h http.Header) {
	for name := range h {
		if isIdentityHeader(name) {
			delete(h, name)
		}
	}
}

func isIdentityHeader(name string) bool {
	for _, n := range identityHeaders {
		if len(name) == len(n) && foldEqual(name, n) {
			return true
		}
	}
	for _, p := range identityPrefixes {
		if len(name) >= len(p) && foldEqual(name[:len(p)], p) {
			return true
		}
	}
	return false
}

// foldEqual compares s with the lower-case, '-'-spelled lower, treating
// upper case as lower and '_' as '-'. len(s) == len(lower) is the caller's.
func foldEqual(s, lower string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '_' {
			c = '-'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// stripOwnCookies removes the proxy's cookies (session, chunks, login flows)
// from the Cookie headers in h and leaves every other cookie byte for byte
// as it was: TWC REST's twc-rest-session-id holds a license seat.
func stripOwnCookies(h http.Header, own func(string) bool) {
	lines := h["Cookie"]
	if len(lines) == 0 {
		return
	}
	if len(lines) == 1 { // the usual case: edit in place, no new slice
		out, dropped := filterCookieLine(lines[0], own)
		switch {
		case !dropped:
		case out == "":
			delete(h, "Cookie")
		default:
			lines[0] = out
		}
		return
	}
	var kept []string
	changed := false
	for _, line := range lines {
		out, dropped := filterCookieLine(line, own)
		changed = changed || dropped
		if out != "" {
			kept = append(kept, out)
		}
	}
	if !changed {
		return
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	// HTTP/1.1 allows one Cookie header (RFC 6265 §5.4); join them.
	h["Cookie"] = []string{strings.Join(kept, "; ")}
}

// filterCookieLine drops own cookies from one Cookie header value. When a
// single cookie is left (a session cookie next to TWC REST's, say) it is
// returned as a substring of line, without building a new string.
func filterCookieLine(line string, own func(string) bool) (string, bool) {
	var b strings.Builder
	var first string // the first kept pair; b is written from the second on
	kept, dropped := 0, false
	rest := line
	for rest != "" {
		var pair string
		pair, rest, _ = strings.Cut(rest, ";")
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, _, _ := strings.Cut(pair, "=")
		if own(strings.TrimSpace(name)) {
			dropped = true
			continue
		}
		kept++
		switch kept {
		case 1:
			first = pair
		case 2:
			b.WriteString(first)
			fallthrough
		default:
			b.WriteString("; ")
			b.WriteString(pair)
		}
	}
	switch {
	case !dropped:
		return line, false
	case kept <= 1:
		return first, true
	}
	return b.String(), true
}
