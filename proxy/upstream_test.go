package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestUpstreamSeesOnlyWhatProxySets(t *testing.T) {
	h, c := signedIn(t)
	hostile := http.Header{
		"Authorization":          {"Token forged"},
		"authorization":          {"bearer forged2"},
		"X-Auth-Secret":          {"guess"},
		"X-Forwarded-User":       {"admin"},
		"X_Forwarded_Email":      {"admin@example.com"},
		"X-Forwarded_User":       {"admin"},
		"X-Auth-Request-User":    {"admin"},
		"Remote-User":            {"admin"},
		"X-Remote-User":          {"admin"},
		"X_User":                 {"admin"},
		"X-Email":                {"admin@example.com"},
		"X-Real-Ip":              {"6.6.6.6"},
		"X-Forwarded-For":        {"6.6.6.6"},
		"X-Forwarded-Host":       {"evil.example"},
		"X-Forwarded-Proto":      {"https"},
		"Forwarded":              {"for=6.6.6.6"},
		"Connection":             {"Authorization, X-Request-Id"},
		"X-Original-Url":         {"/admin"},
		"X-Rewrite-Url":          {"/admin"},
		"X_HTTP_Method_Override": {"DELETE"},
		"X-Http-Method":          {"DELETE"},
		"X-Method-Override":      {"DELETE"},
		"X-Dashboard-Preference": {"dark"},
	}
	resp, _ := h.do(c, http.MethodGet, "/api/data", hostile)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d", resp.StatusCode)
	}
	got := h.lastUpstream().Header
	tokenOf(t, h.lastUpstream()) // exactly one Token header, ours
	for name := range got {
		switch n := strings.ToLower(strings.ReplaceAll(name, "_", "-")); {
		case n == "x-auth-secret", n == "remote-user", n == "forwarded", strings.HasPrefix(n, "x-auth-request"),
			n == "x-forwarded-user", n == "x-forwarded-email", n == "x-original-url", n == "x-rewrite-url",
			n == "x-remote-user", n == "x-user", n == "x-email", n == "x-real-ip",
			strings.Contains(n, "method"):
			t.Errorf("identity header %s reached the upstream", name)
		}
	}
	if v := got.Get("X-Forwarded-For"); v != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want only the peer 127.0.0.1", v)
	}
	if v := got.Get("X-Forwarded-Host"); v != strings.TrimPrefix(h.proxy.URL, "http://") {
		t.Errorf("X-Forwarded-Host = %q, want the Host the proxy saw", v)
	}
	if v := got.Get("X-Forwarded-Proto"); v != "http" {
		t.Errorf("X-Forwarded-Proto = %q, want http", v)
	}
	if v := got.Get("X-Dashboard-Preference"); v != "dark" {
		t.Errorf("ordinary header lost: %q", v)
	}
	if id := got.Get("X-Request-Id"); id == "" || id != resp.Header.Get("X-Request-Id") {
		t.Errorf("X-Request-Id upstream %q, to the client %q: want the same, set", id, resp.Header.Get("X-Request-Id"))
	}
}

// The proxy passes the client's Accept-Encoding on as it is: it neither asks
// for gzip on a client's behalf nor inflates what the upstream sends.
func TestAcceptEncodingPassesUnchanged(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Accept-Encoding") == "gzip" {
				w.Header().Set("Content-Encoding", "gzip")
			}
			w.Write([]byte("body"))
		}
	})
	raw := &http.Client{Jar: c.Jar, Transport: &http.Transport{DisableCompression: true}}
	defer raw.CloseIdleConnections()
	h.do(raw, http.MethodGet, "/x", nil)
	if v, ok := h.lastUpstream().Header["Accept-Encoding"]; ok {
		t.Errorf("client sent no Accept-Encoding, upstream saw %q", v)
	}
	h.do(raw, http.MethodGet, "/x", http.Header{"Accept-Encoding": {"br"}})
	if v := h.lastUpstream().Header.Get("Accept-Encoding"); v != "br" {
		t.Errorf("upstream saw Accept-Encoding %q, want the client's br", v)
	}
	resp, body := h.do(raw, http.MethodGet, "/x", http.Header{"Accept-Encoding": {"gzip"}})
	if resp.Header.Get("Content-Encoding") != "gzip" || body != "body" {
		t.Errorf("gzip answer reached the client as %q %q, want it untouched", resp.Header.Get("Content-Encoding"), body)
	}
}

// The headers the proxy sets share one array of values (recorder.value);
// a later Add to one of them must not write into another.
func TestRecorderValuesDoNotAlias(t *testing.T) {
	w := &recorder{}
	var vals [][]string
	for i := range len(w.vals) + 2 { // past the array too
		vals = append(vals, w.value(strconv.Itoa(i)))
	}
	for i := range vals {
		vals[i] = append(vals[i], "added")
	}
	for i, v := range vals {
		if len(v) != 2 || v[0] != strconv.Itoa(i) || v[1] != "added" {
			t.Errorf("value %d = %q after appending to each, want [%d added]", i, v, i)
		}
	}
}

func TestTrustedProxyForwardedHeaders(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }
	})
	h.do(c, http.MethodGet, "/x", http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-User": {"admin"}})
	got := h.lastUpstream().Header
	if v := got.Get("X-Forwarded-For"); v != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the trusted chain extended", v)
	}
	if v := got.Get("X-Forwarded-Proto"); v != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want the trusted proxy's https", v)
	}
	if v := got.Get("X-Forwarded-User"); v != "" {
		t.Errorf("X-Forwarded-User = %q passed even from a trusted proxy", v)
	}
}

func TestCookiesPassExceptOurs(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: "seat-1", Path: "/osmc"})
			http.SetCookie(w, &http.Cookie{Name: "_twc_session", Value: "planted", Path: "/"})
			w.WriteHeader(http.StatusNoContent)
		}
	})
	u := mustURL(h.proxy.URL)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: "twc-rest-current-user", Value: "alice"}, {Name: "pref", Value: "a=b"}})
	resp, _ := h.fetch(c, "/osmc/login")
	cookie := h.lastUpstream().Header.Get("Cookie")
	if strings.Contains(cookie, "_twc_session") {
		t.Errorf("upstream saw the session cookie: %q", cookie)
	}
	for _, want := range []string{"twc-rest-current-user=alice", "pref=a=b"} {
		if !strings.Contains(cookie, want) {
			t.Errorf("upstream Cookie %q lacks %q", cookie, want)
		}
	}
	var names []string
	for _, ck := range resp.Cookies() {
		names = append(names, ck.Name)
	}
	if len(names) != 1 || names[0] != "twc-rest-session-id" {
		t.Errorf("cookies set on the client = %v, want only the upstream's twc-rest-session-id", names)
	}
}

// The upstream cannot plant or clear the proxy's cookies with lines that
// browsers parse differently from a naive "name before the first '='":
// a nameless cookie is sent back as its bare value, so "=_twc_session=x"
// would come back as the session cookie.
func TestUpstreamCannotSetOwnCookiesSideways(t *testing.T) {
	lines := []string{
		"=_twc_session=planted; Path=/x",
		"_twc_session; Path=/y",
		" _twc_session =planted",
		"= _twc_session=planted",
		"_twc_session_1=chunk; Path=/",
		"twc-rest-session-id=seat-1; Path=/osmc",
		"pref=_twc_session=x",
	}
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Set-Cookie"] = lines
			w.WriteHeader(http.StatusNoContent)
		}
	})
	resp, _ := h.fetch(c, "/osmc/login")
	got := resp.Header["Set-Cookie"]
	want := []string{"twc-rest-session-id=seat-1; Path=/osmc", "pref=_twc_session=x"}
	if !slices.Equal(got, want) {
		t.Errorf("Set-Cookie lines reaching the client:\n%q\nwant only\n%q", got, want)
	}
}

func TestFilterCookieLine(t *testing.T) {
	own := func(n string) bool { return n == "_twc_session" || n == "_twc_session_1" }
	tests := []struct{ in, want string }{
		{"a=1; b=2", "a=1; b=2"},
		{"_twc_session=x", ""},
		{"a=1; _twc_session=x; b=2", "a=1; b=2"},
		{"_twc_session=x;_twc_session_1=y;c=3", "c=3"},
		{"a=1;;_twc_session=x; b", "a=1; b"},
	}
	for _, tt := range tests {
		if got, _ := filterCookieLine(tt.in, own); got != tt.want {
			t.Errorf("filterCookieLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSkipAuth(t *testing.T) {
	rules := []Rule{}
	for _, r := range []string{"GET=^/static/", "^/healthz$"} {
		rule, err := ParseRule(r)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, rule)
	}
	h := newHarness(t, func(o *harnessOpts) { o.cfg = func(c *Config) { c.SkipAuth = rules } })
	tests := []struct {
		method, target string
		pass           bool
	}{
		{"GET", "/static/app.js", true},
		{"GET", "/healthz", true},
		{"POST", "/healthz", true},
		{"POST", "/static/app.js", false},
		{"get", "/static/app.js", false},
		{"GET", "/private?x=/static/", false},
		{"GET", "//static/../private", false},
		{"GET", "/static/../private", false},
		{"GET", "/static/./x", false},
		{"GET", "/static%2F..%2Fprivate", false},
		{"GET", "/private/..%2Fstatic/x", false},
		{"GET", "/static%5c..%5cprivate", false},
		{"GET", "/healthz/", false},
		// Servlet containers drop ";params" before resolving "..": to
		// Tomcat these are /private and /admin.
		{"GET", "/static/..;/private", false},
		{"GET", "/static/%2e%2e;/private", false},
		{"GET", "/static/..;x=1/admin", false},
		{"GET", "/static/app.js;jsessionid=abc", false},
		{"GET", "/static/..%3b/private", false},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			before := len(h.upstreamSeen())
			resp := rawRequest(t, h.proxy.URL, tt.method, tt.target, "Accept: application/json")
			reached := len(h.upstreamSeen()) > before
			if reached != tt.pass {
				t.Fatalf("reached upstream = %v (status %d), want %v", reached, resp.StatusCode, tt.pass)
			}
			if reached && h.lastUpstream().Header.Get("Authorization") != "" {
				t.Error("skip_auth request carried an Authorization header")
			}
		})
	}
}

// rawRequest sends target exactly as written (no client-side cleaning),
// with headers given as "Name: value" lines; "Host: x" replaces the Host.
func rawRequest(t *testing.T, base, method, target string, headers ...string) *http.Response {
	t.Helper()
	u := mustURL(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	host, extra := u.Host, ""
	for _, h := range headers {
		if v, ok := strings.CutPrefix(h, "Host: "); ok {
			host = v
			continue
		}
		extra += h + "\r\n"
	}
	io.WriteString(conn, method+" "+target+" HTTP/1.1\r\nHost: "+host+"\r\n"+extra+"Connection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func TestParseRule(t *testing.T) {
	for _, tt := range []struct{ in, method, expr string }{
		{"^/static/", "", "^/static/"},
		{"GET=^/static/", "GET", "^/static/"},
		{"^/a=b", "", "^/a=b"},
		{"PROPFIND=^/dav", "PROPFIND", "^/dav"},
	} {
		r, err := ParseRule(tt.in)
		if err != nil || r.Method != tt.method || r.Path.String() != tt.expr {
			t.Errorf("ParseRule(%q) = %q %v, %v", tt.in, r.Method, r.Path, err)
		}
	}
	for _, in := range []string{"GET=", "(", ""} {
		if _, err := ParseRule(in); err == nil {
			t.Errorf("ParseRule(%q) accepted", in)
		}
	}
}

// testUpstreamTimeout is upstream_timeout for the tests that run into it.
// Every answer that must not be cut (the login's landing page, a prompt
// answer) has to come within it, so it leaves a loaded machine running
// -race a second; the slow parts take 1.5 of it, well past the timeout
// and its 100 ms tick.
const testUpstreamTimeout = time.Second

func TestUpstreamFailures(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		noLeaks(t)
		h, c := signedIn(t)
		h.upstream.Close()
		resp, body := h.fetch(c, "/x")
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "could not be reached") {
			t.Fatalf("got %d %s, want 502", resp.StatusCode, body)
		}
		if got := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "unreachable"}); got != 1 {
			t.Errorf("upstream_errors_total{unreachable} = %v", got)
		}
	})
	t.Run("slow", func(t *testing.T) {
		noLeaks(t)
		release := make(chan struct{})
		h, c := signedIn(t, func(o *harnessOpts) {
			o.cfg = func(c *Config) { c.UpstreamTimeout = testUpstreamTimeout }
			o.upstream = func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					select {
					case <-release:
					case <-r.Context().Done():
					}
				}
			}
		})
		defer close(release)
		start := time.Now()
		resp, body := h.navigate(c, "/slow")
		if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "did not answer in time") {
			t.Fatalf("got %d %s, want 504 page", resp.StatusCode, body)
		}
		// The watchdog ticks every 100 ms for a 1 s timeout; the upper
		// bound leaves a loaded machine 4 s.
		if took := time.Since(start); took < testUpstreamTimeout || took > 5*testUpstreamTimeout {
			t.Errorf("504 after %v, want just after the %v timeout", took, testUpstreamTimeout)
		}
		if got := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "timeout"}); got != 1 {
			t.Errorf("upstream_errors_total{timeout} = %v, want 1", got)
		}
		logged := h.logs.FilterMessage("upstream request failed").All()
		if len(logged) != 1 || !strings.Contains(fmt.Sprint(logged[0].ContextMap()["error"]), "within upstream_timeout") {
			t.Errorf("log lines for the timeout: %v", logged)
		}
	})
}

// TestUpstreamFailureLineNamesTheUpstream: the warning for a request the
// upstream did not answer says which request (the id in its request line)
// and which upstream, so that the operator paged for it knows where to
// look without the config at hand; the error alone does not always say
// (a timeout's does not).
func TestUpstreamFailureLineNamesTheUpstream(t *testing.T) {
	noLeaks(t)
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.UpstreamTimeout = 100 * time.Millisecond }
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				<-r.Context().Done()
			}
		}
	})
	if resp, _ := h.fetch(c, "/slow"); resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("slow: got %d, want 504", resp.StatusCode)
	}
	upstream := h.upstream.URL
	h.upstream.Close()
	if resp, _ := h.fetch(c, "/down"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("down: got %d, want 502", resp.StatusCode)
	}
	for _, path := range []string{"/slow", "/down"} {
		id := h.requestLine(path)["request_id"]
		lines := h.logs.FilterMessage("upstream request failed").FilterField(zap.Any("request_id", id)).All()
		if len(lines) != 1 || lines[0].Level != zap.WarnLevel || lines[0].ContextMap()["upstream"] != upstream {
			t.Errorf("%s: upstream failure lines %v, want one warning naming upstream %s", path, lines, upstream)
		}
	}
}

// TestUpstreamTimeoutCountsOnlyTheWaitForHeaders: upstream_timeout bounds
// the wait for the response headers, as Transport's ResponseHeaderTimeout
// did: neither a slow upload before it nor a slow body after it is cut.
func TestUpstreamTimeoutCountsOnlyTheWaitForHeaders(t *testing.T) {
	noLeaks(t)
	const timeout = testUpstreamTimeout
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.UpstreamTimeout = timeout }
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/upload":
				b, err := io.ReadAll(r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				fmt.Fprintf(w, "got %d bytes", len(b))
			case "/download":
				io.WriteString(w, "first,")
				http.NewResponseController(w).Flush()
				time.Sleep(3 * timeout / 2)
				io.WriteString(w, "last")
			}
		}
	})
	cookies := c.Jar.Cookies(mustURL(h.proxy.URL))

	// The body trickles in over 1.5 timeouts; the answer comes at once.
	pr, pw := io.Pipe()
	go func() {
		for range 6 {
			time.Sleep(timeout / 4)
			pw.Write([]byte("0123456789"))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/upload", pr)
	req.Header.Set("Accept", "application/json")
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "got 60 bytes" {
		t.Errorf("slow upload: got %d %q, want 200 \"got 60 bytes\"", resp.StatusCode, body)
	}

	// The headers come at once; the body takes 1.5 timeouts.
	resp, body2 := h.fetch(c, "/download")
	if resp.StatusCode != http.StatusOK || body2 != "first,last" {
		t.Errorf("slow body: got %d %q, want 200 \"first,last\"", resp.StatusCode, body2)
	}
	if got := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "timeout"}); got != 0 {
		t.Errorf("upstream_errors_total{timeout} = %v, want 0", got)
	}
}

// TestUpstreamAnswerBeforeBodyIsNotCut: an upstream that answers, and
// streams, before it has read the whole request body. The proxy's write of
// the body ends after the headers came; that must not start a new wait
// for headers, which would cut the stream one timeout later.
func TestUpstreamAnswerBeforeBodyIsNotCut(t *testing.T) {
	const timeout = testUpstreamTimeout
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.UpstreamTimeout = timeout }
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			rc.EnableFullDuplex()
			io.WriteString(w, "first,")
			rc.Flush()
			time.Sleep(timeout / 2)
			io.Copy(io.Discard, r.Body) // the upload, after the headers
			for range 6 {               // then 1.5 timeouts of streaming
				time.Sleep(timeout / 4)
				io.WriteString(w, ".")
				rc.Flush()
			}
			io.WriteString(w, "last")
		}
	})
	// 16 MiB: more than loopback's socket buffers hold, so the write of the
	// body ends only once the upstream reads it, after its headers.
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/duplex", bytes.NewReader(make([]byte, 16<<20)))
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "first,......last" {
		t.Errorf("stream of an early answer: %d %q, %v; want it whole", resp.StatusCode, body, err)
	}
}

// TestUpstreamTimeoutWithBody: a request with a body whose answer never
// comes gets the 504 too, its wait counted from when the body was sent.
func TestUpstreamTimeoutWithBody(t *testing.T) {
	noLeaks(t)
	release := make(chan struct{})
	h, c := signedIn(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.UpstreamTimeout = testUpstreamTimeout }
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if r.URL.Path != "/x" {
				return
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	defer close(release)
	req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/x", strings.NewReader("hello"))
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("got %d, want 504", resp.StatusCode)
	}
}

// TestUpstreamLateAnswerIsTheTimeout: headers that arrive just after the
// watchdog expired the request are not passed on: the timeout won, and the
// answer is its 504.
func TestUpstreamLateAnswerIsTheTimeout(t *testing.T) {
	h := newHarness(t)
	st := &recorder{}
	h.server.watchdog.start(&st.wait, time.Now().Add(-time.Hour), func() {})
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.server.watchdog.mu.Lock()
		expired := st.wait.expired
		h.server.watchdog.mu.Unlock()
		if expired || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	res := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Request: req.WithContext(context.WithValue(req.Context(), proxyStateKey{}, st))}
	if err := h.server.modifyResponse(res); !errors.Is(err, errHeadersTimeout) {
		t.Fatalf("modifyResponse after the deadline: got %v, want errHeadersTimeout", err)
	}
}

func TestStreamingAndWebsocket(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/events":
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: one\n\n")
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
			case "/ws":
				if r.Header.Get("Upgrade") != "websocket" || !strings.HasPrefix(r.Header.Get("Authorization"), "Token ") {
					http.Error(w, "no", http.StatusBadRequest)
					return
				}
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				brw.Flush()
				line, _ := brw.ReadString('\n')
				brw.WriteString("echo:" + line)
				brw.Flush()
			}
		}
	})
	// Streamed responses arrive before the upstream finishes.
	req, _ := http.NewRequest("GET", h.proxy.URL+"/events", nil)
	for _, ck := range c.Jar.Cookies(mustURL(h.proxy.URL)) {
		req.AddCookie(ck)
	}
	ctx, cancel := contextWithTimeout(t, 5*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("streamed event = %q, %v", line, err)
	}
	resp.Body.Close()

	// A websocket upgrade passes through with the Token header.
	u := mustURL(h.proxy.URL)
	conn := h.dialProxy()
	cookies := h.cookieHeader(c)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+u.Host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: "+cookies+"\r\n\r\n")
	br := bufio.NewReader(conn)
	wsResp, err := http.ReadResponse(br, nil)
	if err != nil || wsResp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", wsResp, err)
	}
	io.WriteString(conn, "hello\n")
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _ := br.ReadString('\n'); got != "echo:hello\n" {
		t.Fatalf("websocket echo = %q", got)
	}
}

func TestTokenRequestClientAuth(t *testing.T) {
	tests := []struct {
		mode  ClientAuth
		check func(t *testing.T, r *http.Request, form url.Values)
	}{
		{ClientAuthXAuthSecret, func(t *testing.T, r *http.Request, form url.Values) {
			if r.Header.Get("X-Auth-Secret") != "p@ss word" || form.Get("client_id") != "my client" || r.Header.Get("Authorization") != "" {
				t.Errorf("x-auth-secret: header %q, client_id %q", r.Header.Get("X-Auth-Secret"), form.Get("client_id"))
			}
		}},
		{ClientAuthBasic, func(t *testing.T, r *http.Request, form url.Values) {
			id, secret, ok := r.BasicAuth()
			// RFC 6749 §2.3.1: form-urlencoded before Basic.
			if !ok || id != "my+client" || secret != "p%40ss+word" || r.Header.Get("X-Auth-Secret") != "" || form.Has("client_secret") {
				t.Errorf("basic: %q %q %v", id, secret, ok)
			}
		}},
		{ClientAuthPost, func(t *testing.T, r *http.Request, form url.Values) {
			if form.Get("client_id") != "my client" || form.Get("client_secret") != "p@ss word" || r.Header.Get("X-Auth-Secret") != "" {
				t.Errorf("post: form %v", form)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			var checked bool
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				r.ParseForm()
				tt.check(t, r, r.PostForm)
				checked = true
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"id_token":"x.y.z","expires_in":"300"}`)
			}))
			defer srv.Close()
			a := NewAuthServer(AuthConfig{ClientID: "my client", ClientSecret: "p@ss word", ClientAuth: tt.mode},
				srv.Client(), nopLogger(), NewMetrics(newRegistry()))
			tr, err := a.postToken(t.Context(), &endpoints{tokenURL: srv.URL}, url.Values{"grant_type": {"refresh_token"}}, nil)
			if err != nil || tr.IDToken != "x.y.z" || !checked {
				t.Fatalf("postToken: %v %v", tr, err)
			}
		})
	}
}

func TestStoreIsShared(t *testing.T) {
	// The proxy strips exactly the store's cookies.
	st, err := session.NewStore(session.Options{CookieName: "sid", Secrets: [][]byte{make([]byte, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Cookie": {"sid=1; sid_1=2; other=3"}}
	stripOwnCookies(h, st.IsOwnCookie)
	if got := h.Get("Cookie"); got != "other=3" {
		t.Errorf("Cookie = %q, want other=3", got)
	}
}

// An upstream's 1xx (103 Early Hints; 100 Continue to a client that sent
// Expect) reaches the client, and the final answer still carries what the
// proxy set: the refreshed session cookie and X-Request-Id. The 1xx is not
// the request's status in the metrics.
func TestInformationalAnswerKeepsOwnHeaders(t *testing.T) {
	for _, tt := range []struct {
		name   string
		method string
		code   int
	}{
		{"early hints", http.MethodGet, http.StatusEarlyHints},
		{"continue", http.MethodPost, http.StatusContinue},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, c := signedIn(t, func(o *harnessOpts) {
				o.upstream = func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodGet {
						w.Header().Set("Link", "</app.css>; rel=preload")
						w.WriteHeader(http.StatusEarlyHints)
						w.Header().Del("Link")
					}
					io.Copy(w, r.Body) // with Expect: 100-continue, Go's server sends the 100 here
				}
			})
			h.clock.Advance(4*time.Minute + 45*time.Second) // inside the refresh margin
			var got []int
			var setCookieIn1xx bool
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
				got = append(got, code)
				setCookieIn1xx = setCookieIn1xx || len(hdr["Set-Cookie"]) > 0
				return nil
			}}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, err := http.NewRequestWithContext(ctx, tt.method, h.proxy.URL+"/page", strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", "application/json")
			if tt.method == http.MethodPost {
				req.Header.Set("Expect", "100-continue")
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !slices.Contains(got, tt.code) {
				t.Errorf("1xx answers seen by the client: %v, want %d among them", got, tt.code)
			}
			if setCookieIn1xx {
				t.Error("a 1xx carried Set-Cookie")
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("final status %d", resp.StatusCode)
			}
			if h.idp.TokenCalls("refresh_token") != 1 {
				t.Fatalf("refresh calls = %d, want 1", h.idp.TokenCalls("refresh_token"))
			}
			if !setsCookie(resp, "_twc_session") {
				t.Error("the final answer lacks the refreshed session cookie")
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("the final answer lacks X-Request-Id")
			}
			if n := h.metric("twc_auth_proxy_requests_total", map[string]string{"code": strconv.Itoa(tt.code)}); n != 0 {
				t.Errorf("requests_total{code=%d} = %v, want 0", tt.code, n)
			}
		})
	}
}

// requestLine waits up to 5 s for the request line of path and returns it.
func (h *harness) requestLine(path string) map[string]any {
	h.t.Helper()
	lines := func() []observer.LoggedEntry {
		return h.logs.FilterMessage("request").FilterField(zap.String("path", path)).All()
	}
	if !waitFor(5*time.Second, func() bool { return len(lines()) > 0 }) {
		h.t.Fatalf("no request line for %s", path)
	}
	return lines()[0].ContextMap()
}

// TestClientAbortedUploadIsNotAnUpstreamError: a client that goes away
// halfway through its request body (a cancelled upload, a closed tab) is
// the client's failure, logged and counted like one that goes away while
// the upstream works (499, canceled), never as an unreachable upstream,
// which operators alert on. Whether the transport reports the failed body
// read or the cancelled context is a race; five uploads see both.
func TestClientAbortedUploadIsNotAnUpstreamError(t *testing.T) {
	noLeaks(t)
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }
	})
	u := mustURL(h.proxy.URL)
	cookies := h.cookieHeader(c)
	const uploads = 5
	for i := range uploads {
		conn, err := net.Dial("tcp", u.Host)
		if err != nil {
			t.Fatal(err)
		}
		path := "/upload/" + strconv.Itoa(i)
		io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\nContent-Length: 100000\r\n"+
			"Cookie: "+cookies+"\r\n\r\n"+strings.Repeat("x", 1000))
		h.waitUpstream(path) // the upstream reads the body
		conn.Close()
		line := h.requestLine(path)
		if line["status"] != int64(499) || line["outcome"] != "upstream_canceled" {
			t.Errorf("%s: request line status %v, outcome %v; want 499, upstream_canceled", path, line["status"], line["outcome"])
		}
	}
	if n := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "unreachable"}); n != 0 {
		t.Errorf("upstream_errors_total{unreachable} = %v, want 0", n)
	}
	if n := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "canceled"}); n != uploads {
		t.Errorf("upstream_errors_total{canceled} = %v, want %d", n, uploads)
	}
}

// TestClientGoneIsNotAWarning: a client that hangs up before the upstream
// answers (a closed tab, a script's own timeout, or one doing it on
// purpose in a loop) is its own doing: its request line says 499,
// upstream_canceled, and upstream_errors_total{kind="canceled"} counts it,
// but no warning is logged for it, or any signed-in user could fill the
// log with them.
func TestClientGoneIsNotAWarning(t *testing.T) {
	noLeaks(t)
	arrived := make(chan struct{})
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/hang/") {
				arrived <- struct{}{}
				<-r.Context().Done()
			}
		}
	})
	u := mustURL(h.proxy.URL)
	cookies := h.cookieHeader(c)
	const gone = 5
	for i := range gone {
		conn := h.dialProxy()
		path := "/hang/" + strconv.Itoa(i)
		io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\nCookie: "+cookies+"\r\n\r\n")
		<-arrived
		conn.Close()
		if line := h.requestLine(path); line["status"] != int64(499) || line["outcome"] != "upstream_canceled" {
			t.Errorf("%s: request line status %v, outcome %v; want 499, upstream_canceled", path, line["status"], line["outcome"])
		}
	}
	if n := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "canceled"}); n != gone {
		t.Errorf("upstream_errors_total{canceled} = %v, want %d", n, gone)
	}
	for _, e := range h.logs.FilterLevelExact(zap.WarnLevel).All() {
		t.Errorf("warning for a client that went away: %s %v", e.Message, e.ContextMap())
	}
}

// TestUpstreamRedirectToItselfStaysOnTheProxy: the upstream gets its own
// host in Host, so a redirect it builds from Host (servlet containers'
// sendRedirect, many frameworks) names the upstream's address, which the
// browser cannot reach. Such a Location comes back as the same path on the
// proxy, the upstream's base path taken off; one that would not be a plain
// local path (//host) and every other Location pass as they are.
func TestUpstreamRedirectToItselfStaysOnTheProxy(t *testing.T) {
	for _, base := range []string{"", "/app"} {
		t.Run("base "+base, func(t *testing.T) {
			var upstreamHost string
			h, c := signedIn(t, func(o *harnessOpts) {
				o.cfg = func(c *Config) {
					u := *c.Upstream
					u.Path = base
					c.Upstream = &u
				}
				o.upstream = func(w http.ResponseWriter, r *http.Request) {
					if loc := r.URL.Query().Get("to"); loc != "" {
						w.Header().Set("Location", strings.ReplaceAll(loc, "UPSTREAM", r.Host))
						w.WriteHeader(http.StatusFound)
					}
				}
			})
			upstreamHost = mustURL(h.upstream.URL).Host
			for _, tt := range []struct{ location, want string }{
				{"http://UPSTREAM" + base + "/next?x=1#top", "/next?x=1#top"},
				{"http://UPSTREAM" + base, "/"},
				{"HTTP://UPSTREAM" + base + "/next", "/next"},
				{"http://UPSTREAM" + base + "//evil.example/", ""},
				{"http://UPSTREAM" + base + "/\\evil.example/", ""},
				{"http://UPSTREAM0" + base + "/next", ""}, // another port
				{"https://UPSTREAM" + base + "/next", ""},
				{"https://twc.example.com/next", ""},
				{"http://UPSTREAM@evil.example/next", ""},
				{"/relative", ""},
			} {
				resp, _ := h.fetch(c, "/go?to="+url.QueryEscape(tt.location))
				want := tt.want
				if want == "" {
					want = strings.ReplaceAll(tt.location, "UPSTREAM", upstreamHost)
				}
				if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || got != want {
					t.Errorf("upstream's Location %q reached the client as %d %q, want %q", tt.location, resp.StatusCode, got, want)
				}
			}
			if base == "" {
				return
			}
			resp, _ := h.fetch(c, "/go?to="+url.QueryEscape("http://UPSTREAM/outside"))
			if got, want := resp.Header.Get("Location"), "http://"+upstreamHost+"/outside"; got != want {
				t.Errorf("a Location outside the base path reached the client as %q, want it as it was, %q", got, want)
			}
		})
	}
}

// TestWebsocketIsLoggedAs101: a websocket the upstream accepted is
// answered 101 (written by ReverseProxy on the hijacked connection, not
// through WriteHeader); the request line and requests_total say 101, not
// the 200 of a page.
func TestWebsocketIsLoggedAs101(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/ws" {
				writeRaw(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			}
		}
	})
	u := mustURL(h.proxy.URL)
	conn := h.dialProxy()
	cookies := h.cookieHeader(c)
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+u.Host+"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nCookie: "+cookies+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.Copy(io.Discard, conn) // until the upstream's end closes the tunnel
	conn.Close()              // and ours
	if line := h.requestLine("/ws"); line["status"] != int64(http.StatusSwitchingProtocols) {
		t.Errorf("request line status %v, want 101", line["status"])
	}
	if n := h.metric("twc_auth_proxy_requests_total", map[string]string{"code": "101"}); n != 1 {
		t.Errorf("requests_total{code=101} = %v, want 1", n)
	}
}

// TestAbortedResponseIsLoggedSo: when the upstream resets a response in the
// middle of its body, ReverseProxy aborts the client's response after it
// wrote the status; the request line keeps that status but says "aborted",
// not "proxied", so the log does not show a cut download as a success.
func TestAbortedResponseIsLoggedSo(t *testing.T) {
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" { // 10 of 100000 bytes
				writeRaw(w, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n0123456789")
			}
		}
	})
	// The cut comes before or after the buffered status reaches the client.
	resp, err := c.Get(h.proxy.URL + "/big")
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("the client read a whole answer; want it cut")
	}
	if line := h.requestLine("/big"); line["status"] != int64(http.StatusOK) || line["outcome"] != "aborted" {
		t.Errorf("request line status %v, outcome %v; want 200, aborted", line["status"], line["outcome"])
	}
	if resp, _ := h.fetch(c, "/after"); resp.StatusCode != http.StatusOK {
		t.Errorf("next request: got %d, want 200", resp.StatusCode)
	}
}

// TestUpstreamCutMidBodyIsCounted: an upstream that breaks off its answer
// after the headers (it crashed, was killed, reset the connection) leaves
// the client with a truncated download under a 200. The operator sees it:
// upstream_errors_total{kind="aborted"} and a warning with the request's
// id and the upstream. A client that hangs up in the middle of an answer
// is the client's doing: its request line says aborted too, but nothing is
// counted or warned.
func TestUpstreamCutMidBodyIsCounted(t *testing.T) {
	noLeaks(t)
	streaming := make(chan struct{})
	h, c := signedIn(t, func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/cut": // 10 of 100000 bytes, then the connection closes
				writeRaw(w, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n0123456789")
			case "/stream":
				io.WriteString(w, "first part")
				w.(http.Flusher).Flush()
				close(streaming)
				<-r.Context().Done()
			}
		}
	})
	// By hand: an http.Client sends a GET again when its reused connection
	// closes before the status line arrives.
	u := mustURL(h.proxy.URL)
	conn := h.dialProxy()
	io.WriteString(conn, "GET /cut HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\nCookie: "+h.cookieHeader(c)+"\r\n\r\n")
	if b, _ := io.ReadAll(conn); len(b) >= 100000 {
		t.Fatal("the client read a whole answer; want it cut")
	}
	line := h.requestLine("/cut")
	if line["outcome"] != "aborted" {
		t.Errorf("request line outcome %v, want aborted", line["outcome"])
	}
	if n := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "aborted"}); n != 1 {
		t.Errorf("upstream_errors_total{aborted} = %v, want 1", n)
	}
	warned := h.logs.FilterLevelExact(zap.WarnLevel).All()
	if len(warned) != 1 {
		t.Fatalf("got %d warnings for the cut answer, want 1: %v", len(warned), warned)
	}
	if f := warned[0].ContextMap(); f["request_id"] != line["request_id"] || f["upstream"] != h.upstream.URL || f["error"] == nil {
		t.Errorf("warning %q %v: want the request_id %v, the upstream %s and the error", warned[0].Message, f, line["request_id"], h.upstream.URL)
	}

	// The client hangs up in the middle of a streamed answer.
	conn = h.dialProxy()
	io.WriteString(conn, "GET /stream HTTP/1.1\r\nHost: "+u.Host+"\r\nAccept: application/json\r\nCookie: "+h.cookieHeader(c)+"\r\n\r\n")
	<-streaming
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	conn.Close()
	if line := h.requestLine("/stream"); line["outcome"] != "aborted" {
		t.Errorf("stream the client left: request line outcome %v, want aborted", line["outcome"])
	}
	if n := h.metric("twc_auth_proxy_upstream_errors_total", map[string]string{"kind": "aborted"}); n != 1 {
		t.Errorf("after a client left a stream: upstream_errors_total{aborted} = %v, want still 1", n)
	}
	if n := h.logs.FilterLevelExact(zap.WarnLevel).Len(); n != 1 {
		t.Errorf("after a client left a stream: %d warnings, want still 1", n)
	}
}

// writeRaw takes over an upstream handler's connection, writes raw on it
// and closes it: an answer net/http would not write.
func writeRaw(w http.ResponseWriter, raw string) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	brw.WriteString(raw)
	brw.Flush()
}
