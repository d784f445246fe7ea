package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// proxyStateKey carries the request's *recorder from ServeHTTP to Rewrite,
// ModifyResponse and ErrorHandler, which see only the request.
type proxyStateKey struct{}

// forward sends r upstream. token, when set, becomes the only Authorization
// the upstream sees; service marks the service account's token.
func (s *Server) forward(w *recorder, r *http.Request, token string, service bool) {
	w.token, w.service, w.upstreamStart = token, service, time.Now()
	s.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), proxyStateKey{}, w)))
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
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: s.cfg.UpstreamTimeout,
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
	s.setForwarded(pr)
	stripOwnCookies(h, s.store.IsOwnCookie)
	if st == nil {
		return
	}
	h.Set("X-Request-Id", st.id)
	if st.token != "" {
		h.Set("Authorization", "Token "+st.token)
	}
	if st.service {
		s.cfg.ServiceAccount.addCookies(h, pr.Out.URL)
	}
}

// setForwarded sets X-Forwarded-For/Host/Proto from what the proxy saw.
// ReverseProxy already removed the client's copies; a trusted peer's (an
// ingress in front of the sidecar) are carried over and extended.
func (s *Server) setForwarded(pr *httputil.ProxyRequest) {
	if !s.trustedPeer(pr.In.RemoteAddr) {
		pr.SetXForwarded()
		return
	}
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

// modifyResponse observes the upstream's latency and keeps it from setting
// or clearing the proxy's own cookies.
func (s *Server) modifyResponse(res *http.Response) error {
	if st := stateOf(res.Request); st != nil {
		s.m.UpstreamDuration.Observe(time.Since(st.upstreamStart).Seconds())
		if st.service {
			s.cfg.ServiceAccount.keepCookies(res)
			return nil
		}
	}
	if sc := res.Header["Set-Cookie"]; len(sc) > 0 {
		kept := sc[:0]
		for _, line := range sc {
			name, _, _ := strings.Cut(line, "=")
			if !s.store.IsOwnCookie(strings.TrimSpace(name)) {
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

// upstreamError answers a request the upstream did not: 504 on a timeout,
// 502 otherwise, with a readable body and no internals.
func (s *Server) upstreamError(rw http.ResponseWriter, r *http.Request, err error) {
	kind, status := "unreachable", http.StatusBadGateway
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		kind = "canceled" // the client went away; nobody reads the answer
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		kind, status = "timeout", http.StatusGatewayTimeout
	}
	s.m.UpstreamErrors.WithLabelValues(kind).Inc()
	id := ""
	if st := stateOf(r); st != nil {
		id = st.id
		st.outcome = "upstream_" + kind
	}
	s.log.Warn("upstream request failed", zap.String("request_id", id), zap.String("kind", kind), zap.Error(err))
	if kind == "canceled" {
		rw.WriteHeader(499) // nginx's "client closed request", for the log line only
		return
	}
	msg := "The application behind the proxy could not be reached."
	if status == http.StatusGatewayTimeout {
		msg = "The application behind the proxy did not answer in time."
	}
	s.fail(rw, r, status, "Upstream unavailable", msg)
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers instead of
// allocating one per request.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }
