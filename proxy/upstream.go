package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// errHeadersTimeout: the upstream sent no response headers within
// UpstreamTimeout.
var errHeadersTimeout = errors.New("no response headers from the upstream within upstream_timeout")

// proxyStateKey carries the request's *recorder from ServeHTTP to Rewrite,
// ModifyResponse and ErrorHandler, which see only the request.
type proxyStateKey struct{}

// forward sends r upstream. authorization ("Token <id_token>"), when set,
// becomes the only Authorization header the upstream sees; service marks
// the service account's token.
//
// The wait for the upstream's response headers is bounded by
// UpstreamTimeout through the watchdog, which cancels the request's
// context: from now for a request without a body (connecting to the
// upstream included), and for one with a body from when the body has been
// sent, as Transport's ResponseHeaderTimeout counts it (a slow upload is
// not a slow upstream).
func (s *Server) forward(w *recorder, r *http.Request, authorization string, service bool) {
	w.authorization, w.service, w.upstreamStart = authorization, service, time.Now()
	w.ownCookies = w.Header()["Set-Cookie"] // a refreshed session's, kept across a 1xx
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer s.watchdog.end(&w.wait)
	hasBody := r.Body != nil && r.Body != http.NoBody
	if !hasBody {
		s.watchdog.start(&w.wait, w.upstreamStart, cancel)
	} else {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { s.watchdog.start(&w.wait, time.Now(), cancel) },
		})
	}
	out := r.WithContext(context.WithValue(ctx, proxyStateKey{}, w))
	if hasBody {
		w.body.ReadCloser = r.Body
		out.Body = &w.body
	}
	s.rp.ServeHTTP(w, out)
}

// bodyReader is the client's request body on its way upstream. It notes
// that reading it failed (a malformed chunked encoding: a chunk size that
// overflows or is not hex, an extension too long), so that upstreamError
// can tell the client's fault from the upstream's: the transport reports
// both the same way. The transport reads it on a goroutine of its own.
type bodyReader struct {
	io.ReadCloser
	failed atomic.Bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.failed.Store(true)
	}
	return n, err
}

// answerReader is the upstream's answer body on its way to the client. It
// keeps the first error reading it failed with (the upstream reset the
// connection or closed it short of its Content-Length), so that
// upstreamAborted can tell an answer the upstream broke off from one the
// client left: ReverseProxy aborts both the same way. ReverseProxy reads
// it on the request's goroutine.
type answerReader struct {
	io.ReadCloser
	err error
}

func (a *answerReader) Read(p []byte) (int, error) {
	n, err := a.ReadCloser.Read(p)
	if err != nil && err != io.EOF && a.err == nil {
		a.err = err
	}
	return n, err
}

func stateOf(r *http.Request) *recorder {
	st, _ := r.Context().Value(proxyStateKey{}).(*recorder)
	return st
}

func (s *Server) newReverseProxy() *httputil.ReverseProxy {
	// The defaults keep 2 idle connections per host, which a sidecar
	// talking to one upstream outgrows at once.
	transport := &http.Transport{
		Proxy:                 nil, // the upstream is a neighbour in the pod; never via HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          512,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		TLSClientConfig:       s.cfg.UpstreamTLS,
		ExpectContinueTimeout: time.Second,
		// No ResponseHeaderTimeout: its timer per round trip costs more
		// than the watchdog that enforces UpstreamTimeout instead (see
		// watchdog.go).
		// Forward the client's Accept-Encoding as it is: without this the
		// transport asks for gzip on its own when the client did not, and
		// then spends our CPU inflating the answer.
		DisableCompression: true,
	}
	return &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      transport,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.upstreamError,
		BufferPool:     newBufferPool(),
		ErrorLog:       zap.NewStdLog(s.log.Named("reverseproxy")),
	}
}

// rewrite is the trust boundary: everything the upstream may believe about
// the caller is set here, after ReverseProxy removed hop-by-hop headers
// (so a client's "Connection: Authorization" cannot strip what we add).
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In)
	pr.SetURL(s.cfg.Upstream)
	h := pr.Out.Header
	stripIdentityHeaders(h)
	stripOwnCookies(h, s.store.IsOwnCookie)
	s.setForwarded(pr, st)
	if st == nil {
		return
	}
	h["X-Request-Id"] = st.value(st.id)
	if st.authorization != "" {
		h["Authorization"] = st.value(st.authorization)
	}
	if st.service {
		st.serviceJar = s.cfg.ServiceAccount.session.addCookies(h, pr.Out.URL)
	}
}

// setForwarded sets X-Forwarded-For/Host/Proto from what the proxy saw.
// ReverseProxy already removed the client's copies; a trusted peer's (an
// ingress in front of the sidecar) are carried over and extended. The
// usual case, an untrusted peer, writes the three headers by hand, as
// ProxyRequest.SetXForwarded would, into values held by st (when there is
// one) instead of a new slice each.
func (s *Server) setForwarded(pr *httputil.ProxyRequest, st *recorder) {
	if s.trustedPeer(pr.In.RemoteAddr) {
		s.setForwardedTrusted(pr)
		return
	}
	if st == nil {
		pr.SetXForwarded()
		return
	}
	h := pr.Out.Header
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = st.value(ip)
	}
	h["X-Forwarded-Host"] = st.value(pr.In.Host)
	if pr.In.TLS != nil {
		h["X-Forwarded-Proto"] = st.value("https")
	} else {
		h["X-Forwarded-Proto"] = st.value("http")
	}
}

// setForwardedTrusted extends a trusted peer's X-Forwarded-For and keeps
// its X-Forwarded-Host and -Proto.
func (s *Server) setForwardedTrusted(pr *httputil.ProxyRequest) {
	in := pr.In.Header
	if v := in["X-Forwarded-For"]; len(v) > 0 {
		pr.Out.Header["X-Forwarded-For"] = []string{strings.Join(v, ", ")}
	}
	pr.SetXForwarded() // appends the peer to X-Forwarded-For
	if v := in.Get("X-Forwarded-Host"); v != "" {
		pr.Out.Header.Set("X-Forwarded-Host", v)
	}
	if v := in.Get("X-Forwarded-Proto"); v != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", v)
	}
}

func (s *Server) trustedPeer(remoteAddr string) bool {
	if len(s.cfg.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// modifyResponse observes the upstream's latency, keeps it from setting
// or clearing the proxy's own cookies and turns a Location on its own
// origin into one on the proxy's.
func (s *Server) modifyResponse(res *http.Response) error {
	if loc := res.Header["Location"]; len(loc) == 1 {
		if local, ok := s.localLocation(loc[0]); ok {
			loc[0] = local
		}
	}
	if st := stateOf(res.Request); st != nil {
		// Done: the headers are in, and a body write that ends later (an
		// upstream that answers before reading the whole body, an
		// Expect: 100-continue answered at once) must not put the request
		// back in the list, where it would be cut mid-stream.
		if s.watchdog.stop(&st.wait, true) {
			return errHeadersTimeout // came just after the deadline: the timeout won
		}
		s.m.UpstreamDuration.Observe(time.Since(st.upstreamStart).Seconds())
		// Not a 101's: ReverseProxy needs its body as the connection.
		if res.StatusCode != http.StatusSwitchingProtocols && res.Body != nil && res.Body != http.NoBody {
			st.answer.ReadCloser = res.Body
			res.Body = &st.answer
		}
		if st.service {
			sa := s.cfg.ServiceAccount
			status := res.StatusCode
			if sa.answered(res, strings.TrimPrefix(st.authorization, "Token "), st.serviceJar, st.id) {
				// The token was dropped: the waiting requests will go with
				// a new one, about which this answer says nothing. As
				// after no answer, one of them opens the TWC session and
				// the others wait for it, rather than each opening one.
				status = 0
			}
			sa.endTurn(st, status) // after the cookies: the waiters go with them
			return nil
		}
	}
	if sc := res.Header["Set-Cookie"]; len(sc) > 0 {
		kept := sc[:0]
		for _, line := range sc {
			if !s.setsOwnCookie(line) {
				kept = append(kept, line)
			}
		}
		if len(kept) == 0 {
			delete(res.Header, "Set-Cookie")
		} else {
			res.Header["Set-Cookie"] = kept
		}
	}
	return nil
}

// localLocation returns the path on the proxy for loc, a Location that
// points at the upstream itself. The upstream gets its own host in Host
// (SetURL), so a redirect it builds from Host, as servlet containers and
// many frameworks do, names an address the browser cannot reach, or should
// not learn. The upstream's base path is taken off, as SetURL put it on.
// loc is left alone (false) when it is on another origin, outside the base
// path, or when the path would not be a plain local one (safeReturnPath:
// "http://upstream//evil.example/" must not become "//evil.example/").
func (s *Server) localLocation(loc string) (string, bool) {
	o := s.upstreamOrigin
	if len(loc) < len(o) || !strings.EqualFold(loc[:len(o)], o) {
		return "", false
	}
	rest, ok := cutPathPrefix(loc[len(o):], "")
	if ok && s.upstreamBase != "" {
		rest, ok = cutPathPrefix(rest, s.upstreamBase)
	}
	if !ok {
		return "", false
	}
	if rest == "" || rest[0] != '/' {
		rest = "/" + rest
	}
	return safeReturnPath(rest)
}

// cutPathPrefix returns ref (a path, query and fragment) without prefix,
// when prefix is a whole leading path of it: "/app" of "/app", "/app/x"
// or "/app?q", not of "/apps".
func cutPathPrefix(ref, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(ref, prefix)
	if !ok || rest != "" && rest[0] != '/' && rest[0] != '?' && rest[0] != '#' {
		return "", false
	}
	return rest, true
}

// setsOwnCookie reports whether a browser would take the Set-Cookie line
// as one of the proxy's cookies. Browsers (RFC 6265bis §5.6) cut the line
// at the first ';' and the pair at the first '='; a pair without '=' is a
// cookie with an empty name, and such a cookie is sent back as its bare
// value, which servers read as NAME=VALUE: "=_twc_session=x" comes back as
// the session cookie. So for an empty name the value's own name counts.
func (s *Server) setsOwnCookie(line string) bool {
	pair, _, _ := strings.Cut(line, ";")
	name, value, ok := strings.Cut(pair, "=")
	if !ok {
		name, value = "", pair
	}
	if name = strings.TrimSpace(name); name == "" {
		name, _, _ = strings.Cut(value, "=")
		name = strings.TrimSpace(name)
	}
	return s.store.IsOwnCookie(name)
}

// upstreamError answers a request the upstream did not: 504 on a timeout,
// 502 otherwise, with a readable body and no internals.
func (s *Server) upstreamError(rw http.ResponseWriter, r *http.Request, err error) {
	kind, status := "unreachable", http.StatusBadGateway
	st := stateOf(r)
	if st != nil && st.service {
		s.cfg.ServiceAccount.endTurn(st, 0) // no answer: a waiting request opens the session
	}
	var ne net.Error
	switch {
	case st != nil && s.watchdog.stop(&st.wait, false):
		kind, status = "timeout", http.StatusGatewayTimeout
		if !errors.Is(err, errHeadersTimeout) {
			err = fmt.Errorf("%w: %w", errHeadersTimeout, err)
		}
	case errors.Is(err, context.Canceled) || r.Context().Err() != nil:
		// The client went away; nobody reads the answer. Gone in the
		// middle of its request body, the error can be the failed read of
		// that body instead, but the server has cancelled the context
		// before that read returned.
		kind = "canceled"
	case st != nil && st.body.failed.Load():
		// The client is still there but its body could not be read: a
		// bad request, not an upstream failure (nor one to alert on).
		st.outcome = "bad_request_body"
		s.log.Debug("request body unreadable", zap.String("request_id", st.id), zap.Error(err))
		s.fail(rw, r, http.StatusBadRequest, "Bad request", "The request body could not be read: it is not valid HTTP.")
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		kind, status = "timeout", http.StatusGatewayTimeout
	}
	s.m.UpstreamErrors.WithLabelValues(kind).Inc()
	id := ""
	if st != nil {
		id = st.id
		st.outcome = "upstream_" + kind
	}
	if kind == "canceled" {
		// The client's doing, which the request line (499,
		// upstream_canceled) and the metric already say: a warning per
		// hang-up would let any caller fill the log with them.
		s.log.Debug("client went away before the upstream answered", zap.String("request_id", id), zap.Error(err))
		rw.WriteHeader(499) // nginx's "client closed request", for the log line only
		return
	}
	fields := []zap.Field{zap.String("request_id", id), zap.String("upstream", s.upstreamURL), zap.String("kind", kind), zap.Error(err)}
	if kind == "timeout" {
		fields = append(fields, zap.Duration("upstream_timeout", s.cfg.UpstreamTimeout))
	}
	s.log.Warn("upstream request failed", fields...)
	msg := "The application behind the proxy could not be reached."
	if status == http.StatusGatewayTimeout {
		msg = "The application behind the proxy did not answer in time."
	}
	s.fail(rw, r, status, "Upstream unavailable", msg)
}

// upstreamAborted counts and logs an answer that ReverseProxy aborted in
// the middle of its body, when the upstream broke it off: reading it
// failed while the client was still there. When the client went away
// (the write to it failed, or its leaving cancelled the read) its request
// line says "aborted" and nothing more is to be done.
func (s *Server) upstreamAborted(w *recorder, r *http.Request) {
	err := w.answer.err
	if err == nil || r.Context().Err() != nil {
		return
	}
	s.m.UpstreamErrors.WithLabelValues("aborted").Inc()
	s.log.Warn("upstream broke off its answer after the headers; the client got a truncated body",
		zap.String("request_id", w.id), zap.String("upstream", s.upstreamURL), zap.Int("status", w.status()), zap.Error(err))
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers instead of
// allocating one per request. It is a bounded free list rather than a
// sync.Pool: Put takes a slice, and a sync.Pool of slices costs an
// allocation per Put (the slice header boxed in an interface), while a
// channel copies the header; and the bound caps what a burst leaves held
// (maxFreeBuffers x 32 KiB), where a sync.Pool keeps whatever survived
// the last two GCs.
type bufferPool struct{ free chan []byte }

const (
	copyBufferSize = 32 << 10
	maxFreeBuffers = 128 // 4 MiB at most, once that many requests copied at the same moment
)

func newBufferPool() *bufferPool {
	return &bufferPool{free: make(chan []byte, maxFreeBuffers)}
}

func (b *bufferPool) Get() []byte {
	select {
	case buf := <-b.free:
		return buf
	default:
		return make([]byte, copyBufferSize)
	}
}

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) != copyBufferSize {
		return
	}
	select {
	case b.free <- buf[:copyBufferSize]:
	default: // full: let the GC have it
	}
}
