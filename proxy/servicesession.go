package proxy

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// twcSessionCookie is the cookie of a TWC REST session, which holds a
// license seat for its idle timeout (15 min by default).
const twcSessionCookie = "twc-rest-session-id"

// twcCookiePrefix names TWC REST's cookies: the session and the signed-in
// user (twc-rest-current-user).
const twcCookiePrefix = "twc-rest-"

// errSessionWait: the request that opens the TWC session did not get its
// answer within the upstream timeout.
var errSessionWait = errors.New("service account: no TWC session within the upstream timeout")

// serviceSession keeps the service identity's TWC REST session: the cookies
// the upstream sets on service responses, and a gate so that while there is
// no session one request opens it and the others wait for it. TWC REST
// opens a session for every token it sees without a session cookie, so
// without the gate each request in flight before the first answer would
// take a seat of its own.
//
// Cookie expiry is judged by the wall clock, as the jar judges it.
type serviceSession struct {
	log *zap.Logger
	jar atomic.Pointer[cookiejar.Jar] // replaced whole when the session is dropped

	// until is when the session cookie in the jar expires, in Unix ns: 0
	// while there is none, math.MaxInt64 for one without an expiry.
	until atomic.Int64
	// seen: an upstream answer has set a session cookie since start, so the
	// upstream is TWC REST (or passes its cookies on).
	seen atomic.Bool
	// sessionless: before any session was seen, the request opening one
	// got a successful answer that set none. The upstream serves such
	// requests without a TWC session (a dashboard, say): holding requests
	// back would only add latency, so the gate stays open until a session
	// cookie turns up after all.
	sessionless atomic.Bool

	mu      sync.Mutex // guards opening and kept, and keeps a drop out of keepCookies
	opening *turn      // nil when no one is opening
	// kept are the cookies (name, domain, path) the jar holds, bounded by
	// maxServiceCookies; full is set once one was refused for want of
	// room (logged once per jar).
	kept map[cookieKey]time.Time // when each expires; zero: with the jar
	full bool
}

// maxServiceCookies bounds the cookies the service identity's jar takes
// (RFC 6265 asks browsers to keep at least 50 per domain). TWC REST sets
// two; an upstream that sets a new cookie name or path on every answer
// (a dashboard behind service_account routes) would otherwise grow the jar,
// which lives as long as the process, without end.
const maxServiceCookies = 50

// cookieKey is what a cookie jar stores a cookie under.
type cookieKey struct{ name, domain, path string }

func newServiceSession(log *zap.Logger) *serviceSession {
	s := &serviceSession{log: log}
	s.drop()
	return s
}

// active reports whether the jar holds an unexpired TWC session cookie.
func (s *serviceSession) active() bool {
	u := s.until.Load()
	return u == math.MaxInt64 || u != 0 && time.Now().UnixNano() < u
}

// turn is one opener's attempt to open the TWC session.
type turn struct {
	done     chan struct{} // closed when the turn ends
	answered bool          // the upstream answered (written before done is closed)
}

// wait returns at once while there is a TWC session (one atomic load, and
// the clock when the cookie expires). Without one, the first caller that
// may open it becomes the opener: it goes upstream alone and must call
// opened once its answer, or its failure, is in. The others wait for that,
// then go with whatever session it opened; they give up when ctx ends or
// limit passes.
//
// canOpen is false for a request with a body: the upstream timeout starts
// only once the body is sent (see forward), so a caller trickling a body
// would hold the others back for as long as it liked. Such a request waits
// for an opener that is under way, but when there is none it goes on
// without waiting and without holding anyone.
//
// A turn that ended without an answer (the opener's caller went away, the
// upstream was unreachable) opened nothing and says nothing about the
// upstream: the waiters then wait for a new turn, one of them opening it,
// rather than all going on and each opening a session of its own.
func (s *serviceSession) wait(ctx context.Context, limit time.Duration, canOpen bool) (opener bool, err error) {
	if s.active() || s.sessionless.Load() {
		return false, nil
	}
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if s.active() || s.sessionless.Load() {
			s.mu.Unlock()
			return false, nil
		}
		t := s.opening
		if t == nil {
			if canOpen {
				s.opening = &turn{done: make(chan struct{})}
			}
			s.mu.Unlock()
			return canOpen, nil
		}
		s.mu.Unlock()
		if timeout == nil {
			timer := time.NewTimer(limit)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-t.done:
			if t.answered {
				return false, nil
			}
		case <-ctx.Done():
			return false, context.Cause(ctx)
		case <-timeout:
			return false, errSessionWait
		}
	}
}

// opened ends the opener's turn; status is its answer's, 0 when none came
// (or when the answer made the proxy drop the token, see endTurn).
// After an answer every waiting request goes on: an answer without a
// session (an error, a 401) must not hold them any longer, nor make them
// open sessions one after another. The next request that finds no session
// becomes the next opener. Without an answer, one of the waiters does.
func (s *serviceSession) opened(status int) {
	if status >= 200 && status < 400 && !s.active() && !s.seen.Load() && !s.sessionless.Swap(true) {
		s.log.Info("the upstream answered a service-account request without opening a TWC session (no " +
			twcSessionCookie + " cookie); service-account requests are no longer held back waiting for one")
	}
	s.mu.Lock()
	s.opening.answered = status != 0
	close(s.opening.done)
	s.opening = nil
	s.mu.Unlock()
}

// drop forgets the session and every other cookie of the service identity.
// TWC keeps the dropped session (and its seat) until its idle timeout.
func (s *serviceSession) drop() {
	jar, _ := cookiejar.New(nil) // cannot fail without options
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jar.Store(jar)
	s.until.Store(0)
	s.kept, s.full = nil, false
}

// addCookies puts the jar's cookies for u into h, replacing any the caller
// sent under the same names. The caller's own TWC REST cookies
// (twc-rest-session-id, twc-rest-current-user) never go with the service
// token, jar or no jar: TWC could run the request in the caller's session
// and the jar would then keep that session as the service identity's.
//
// It returns the jar it used, for keepCookies to recognise an answer that
// comes back after that jar was dropped.
func (s *serviceSession) addCookies(h http.Header, u *url.URL) *cookiejar.Jar {
	jar := s.jar.Load()
	cookies := jar.Cookies(u)
	names := make(map[string]bool, len(cookies))
	parts := make([]string, 0, len(cookies))
	for _, c := range cookies {
		names[c.Name] = true
		parts = append(parts, c.Name+"="+c.Value)
	}
	stripOwnCookies(h, func(name string) bool { return names[name] || strings.HasPrefix(name, twcCookiePrefix) })
	if len(parts) == 0 {
		return jar
	}
	// The caller's cookies first, every line of them: an HTTP/1.1 client
	// may send several Cookie headers, and one line goes upstream.
	lines := make([]string, 0, len(h["Cookie"])+len(parts))
	for _, l := range h["Cookie"] {
		if l != "" {
			lines = append(lines, l)
		}
	}
	h.Set("Cookie", strings.Join(append(lines, parts...), "; "))
	return jar
}

// keepCookies moves the upstream's Set-Cookie lines of a service response
// into the jar: they belong to the service identity, never to the caller.
// sent is the jar the request went with (addCookies): when that jar has
// been dropped since (the token was rejected), the answer's cookies belong
// to the dropped session and are not kept.
// What the gate believes is what the jar will send: a session cookie the
// jar refused (a Domain for another host) or keeps for other paths counts
// as no session, and clearing a copy for another path does not end the
// session the jar still sends.
func (s *serviceSession) keepCookies(res *http.Response, sent *cookiejar.Jar) {
	if len(res.Header["Set-Cookie"]) == 0 {
		return
	}
	cookies := res.Cookies()
	delete(res.Header, "Set-Cookie")
	var line *http.Cookie // the last session cookie line, as the jar applies them in order
	for _, c := range cookies {
		if c.Name == twcSessionCookie {
			line = c
		}
	}
	// Under mu, so that a drop cannot come between: the session noted
	// must be the one in the jar.
	s.mu.Lock()
	defer s.mu.Unlock()
	jar, u := s.jar.Load(), res.Request.URL
	if sent != nil && sent != jar {
		return
	}
	jar.SetCookies(u, s.room(cookies, u))
	if line == nil {
		return
	}
	held := ""
	for _, c := range jar.Cookies(u) {
		if c.Name == twcSessionCookie {
			held = c.Value
		}
	}
	switch {
	case held == "":
		s.until.Store(0)
	case held == line.Value:
		s.note(line, time.Now())
	}
}

// room returns the cookies the jar may take: removals, updates of cookies
// it holds, and new ones while it holds fewer than maxServiceCookies (a
// few more for TWC REST's own twc-rest-* cookies, so that other cookies
// cannot crowd them out). Cookies are counted under the key the jar
// stores them by (name, domain as the jar reads it, path); a removal or an
// expiry gives the place back, and cookies the jar would refuse are left
// out. s.mu must be held.
func (s *serviceSession) room(cookies []*http.Cookie, u *url.URL) []*http.Cookie {
	now := time.Now()
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")) // as the jar reads it
	out := cookies[:0]
	for _, c := range cookies {
		domain, ok := jarDomain(host, c.Domain)
		if !ok {
			continue // the jar refuses it: a Domain this host may not set
		}
		k := cookieKey{c.Name, domain, c.Path}
		if k.path == "" || k.path[0] != '/' {
			k.path = defaultCookiePath(u.Path)
		}
		until, removal := cookieExpiry(c, now)
		if removal {
			delete(s.kept, k)
			out = append(out, c)
			continue
		}
		limit := maxServiceCookies
		if strings.HasPrefix(c.Name, twcCookiePrefix) {
			limit += 5
		}
		if _, known := s.kept[k]; !known && len(s.kept) >= limit {
			s.forgetExpired(now)
			if len(s.kept) >= limit {
				if !s.full {
					s.full = true
					s.log.Warn("the upstream set more cookies on service-account answers than the proxy keeps for the service identity; further new ones are dropped until some expire or are removed, or its TWC session is dropped",
						zap.Int("limit", limit), zap.String("cookie", c.Name))
				}
				continue
			}
		}
		if s.kept == nil {
			s.kept = make(map[cookieKey]time.Time)
		}
		s.kept[k] = until
		out = append(out, c)
	}
	return out
}

// forgetExpired takes the cookies that have expired out of s.kept, as the
// jar no longer holds them. s.mu must be held.
func (s *serviceSession) forgetExpired(now time.Time) {
	for k, until := range s.kept {
		if !until.IsZero() && !until.After(now) {
			delete(s.kept, k)
		}
	}
}

// cookieExpiry is when the jar will drop c (zero: never, for a cookie
// without Max-Age or Expires, which lives as long as the jar), and whether
// c removes the cookie at once. Max-Age wins over Expires, as in the jar.
func cookieExpiry(c *http.Cookie, now time.Time) (until time.Time, removal bool) {
	switch {
	case c.MaxAge < 0:
		return time.Time{}, true
	case c.MaxAge > 0:
		return now.Add(time.Duration(min(int64(c.MaxAge), int64(math.MaxInt64/time.Second))) * time.Second), false
	case c.Expires.IsZero():
		return time.Time{}, false
	}
	return c.Expires, !c.Expires.After(now)
}

// jarDomain is the domain net/http/cookiejar (without a public suffix
// list) stores a cookie from host under: the host itself for a host-only
// cookie, else the Domain attribute lower-cased without its leading dot,
// which must be the host or a parent of it (and for an IP, the IP). ok is
// false for a cookie the jar refuses.
func jarDomain(host, domain string) (string, bool) {
	if domain == "" {
		return host, true
	}
	if net.ParseIP(host) != nil {
		return host, host == domain
	}
	domain = strings.ToLower(strings.TrimPrefix(domain, "."))
	if domain == "" || domain[0] == '.' || domain[len(domain)-1] == '.' {
		return "", false
	}
	return domain, host == domain || strings.HasSuffix(host, "."+domain)
}

// defaultCookiePath is the path a cookie without a Path attribute gets
// (RFC 6265 §5.1.4): the request path up to its last '/'.
func defaultCookiePath(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// maxUnixNano is the latest time an int64 of Unix nanoseconds holds (in
// 2262); a cookie that lives past it ("Expires=Fri, 31 Dec 9999") is noted
// as never expiring.
var maxUnixNano = time.Unix(0, math.MaxInt64)

// note records the expiry of a session cookie the jar now sends, read by
// cookieExpiry as the jar reads it.
func (s *serviceSession) note(c *http.Cookie, now time.Time) {
	var until int64 // 0: cleared
	switch exp, removal := cookieExpiry(c, now); {
	case removal:
	case exp.IsZero() || exp.After(maxUnixNano):
		until = math.MaxInt64
	default:
		until = exp.UnixNano()
	}
	s.until.Store(until)
	if until != 0 {
		s.seen.Store(true)
		s.sessionless.Store(false)
	}
}
