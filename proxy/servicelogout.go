package proxy

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"
)

// serviceLogoutTimeout bounds the logout at shutdown, within what is left
// of the shutdown grace.
const serviceLogoutTimeout = 5 * time.Second

// ReleaseServiceSession ends the service account's TWC REST session with
// GET /osmc/logout, so that a restart does not leave its license seat held
// for TWC's idle timeout (15 min). Call it once no service request is in
// flight (after http.Server.Shutdown returned): a request still going
// would find the session gone and open another.
//
// The request goes only when the jar would send a twc-rest-session-id
// to the logout URL: without one TWC would open a session (and take a
// seat) for the logout itself. It carries the jar's cookies for that URL
// and, while the service account holds an unexpired token, that token; a
// token is never fetched for it. It goes through the upstream transport
// (same TLS settings) and never follows a redirect. Afterwards the jar is
// emptied whatever the answer.
//
// It logs the outcome (info on 2xx, warn otherwise) and returns an error
// when the session may still be open; nil when there was none.
func (s *Server) ReleaseServiceSession(ctx context.Context) error {
	sa := s.cfg.ServiceAccount
	if sa == nil {
		return nil
	}
	// JoinPath puts /osmc/logout under the upstream's path, as the proxy
	// forwards a caller's GET /osmc/logout (ProxyRequest.SetURL); with no
	// path (what the README asks for TWC REST) it is just /osmc/logout.
	// ResolveReference would drop a prefix: "/osmc/logout" replaces the
	// whole path, "osmc/logout" its last segment. From an empty path
	// JoinPath makes a relative one, which the jar matches against no
	// cookie path: the slash is put back.
	u := s.cfg.Upstream.JoinPath("osmc", "logout")
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
	}
	// Unexpired cookies only, matched by path as for any request.
	if !hasCookie(sa.session.jar.Load().Cookies(u), twcSessionCookie) {
		sa.log.Debug("no TWC session to release", zap.String("username", sa.cfg.Username))
		return nil
	}
	defer sa.session.drop()

	ctx, cancel := context.WithTimeout(ctx, serviceLogoutTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return sa.releaseFailed(0, fmt.Errorf("service account: logout: %w", err))
	}
	sa.session.addCookies(req.Header, u)
	if tok := sa.heldToken(); tok != "" {
		req.Header.Set("Authorization", "Token "+tok)
	}
	// RoundTrip, not a Client: one request, no redirect followed, no jar.
	res, err := s.rp.Transport.RoundTrip(req)
	if err != nil {
		return sa.releaseFailed(0, fmt.Errorf("service account: logout: %w", err))
	}
	res.Body.Close() // TWC answers 204; nothing is read from a body
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return sa.releaseFailed(res.StatusCode, fmt.Errorf("service account: logout: upstream answered %s", res.Status))
	}
	sa.log.Info("released the service account's TWC session",
		zap.String("username", sa.cfg.Username), zap.Int("status", res.StatusCode))
	return nil
}

// releaseFailed logs a logout that did not succeed (status 0: no answer)
// and returns err.
func (sa *ServiceAccount) releaseFailed(status int, err error) error {
	sa.log.Warn("could not release the service account's TWC session; its license seat stays held until TWC's idle timeout",
		zap.String("username", sa.cfg.Username), zap.Int("status", status), zap.Error(err))
	return err
}

// isTWCLogout reports whether a request for p would reach TWC REST's
// logout, /osmc/logout, however it is spelled: servlet containers drop a
// segment's ;parameters and resolve dot segments, and the match ignores
// case and a trailing slash. Erring towards a match costs a caller only a
// 204 that did not go upstream.
func isTWCLogout(p string) bool {
	if !strings.Contains(strings.ToLower(p), "logout") {
		return false // the usual case, without building anything
	}
	segs := strings.Split(p, "/")
	for i, seg := range segs {
		segs[i], _, _ = strings.Cut(seg, ";")
	}
	return strings.EqualFold(path.Clean("/"+strings.Join(segs, "/")), "/osmc/logout")
}

func hasCookie(cookies []*http.Cookie, name string) bool {
	for _, c := range cookies {
		if c.Name == name {
			return true
		}
	}
	return false
}
