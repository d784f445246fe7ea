package proxy

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeTWCREST answers like TWC REST: a request carrying a session cookie it
// issued is served in that session; any other opens a new session (a
// license seat), which takes open to do, and sets its cookie with maxAge
// (0: no Max-Age). fail, while it returns a status, answers instead of
// opening a session. expire, while set, makes the next answer in a session
// set that session's cookie again with Max-Age=expire, so that it runs out
// a known time after that answer, not during a burst of requests.
type fakeTWCREST struct {
	open     time.Duration
	maxAge   int
	path     string       // of its cookies; "" is /osmc
	user     string       // when set, also sets twc-rest-current-user
	logout   int          // when set, the status a GET .../osmc/logout answers
	fail     atomic.Int32 // status to answer requests without a session with; 0: open one
	expire   atomic.Int32
	sessions atomic.Int32
	// opening and maxOpening count the requests opening a session (or
	// failing to) at once.
	opening, maxOpening atomic.Int32
}

func (f *fakeTWCREST) serve(w http.ResponseWriter, r *http.Request) {
	if f.logout != 0 && strings.HasSuffix(r.URL.Path, "/osmc/logout") {
		w.WriteHeader(f.logout)
		return
	}
	path := cmp.Or(f.path, "/osmc")
	if c, err := r.Cookie("twc-rest-session-id"); err == nil && strings.HasPrefix(c.Value, "seat-") {
		if age := f.expire.Swap(0); age != 0 {
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: c.Value, Path: path, MaxAge: int(age)})
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	for in := f.opening.Add(1); ; {
		if m := f.maxOpening.Load(); in <= m || f.maxOpening.CompareAndSwap(m, in) {
			break
		}
	}
	time.Sleep(f.open)
	f.opening.Add(-1)
	if st := f.fail.Load(); st != 0 {
		w.WriteHeader(int(st))
		return
	}
	n := f.sessions.Add(1)
	http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", n), Path: path, MaxAge: f.maxAge})
	if f.user != "" {
		http.SetCookie(w, &http.Cookie{Name: "twc-rest-current-user", Value: f.user, Path: path, MaxAge: f.maxAge})
	}
	w.WriteHeader(http.StatusOK)
}

// burst sends n service requests at once and returns their statuses.
func (h *harness) burst(n int, path string) []int {
	h.t.Helper()
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := h.do(&http.Client{Timeout: 10 * time.Second}, "GET", path, nil)
			codes[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	return codes
}

// TestServiceAccountConcurrentRequestsShareOneTWCSession: while the jar
// holds no TWC session, concurrent service requests must not each open one
// (one license seat each): one opens it, the others wait and use it. The
// same holds when the session cookie expires.
func TestServiceAccountConcurrentRequestsShareOneTWCSession(t *testing.T) {
	twc := &fakeTWCREST{open: 50 * time.Millisecond}
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) { o.upstream = twc.serve })
	for i, code := range h.burst(20, "/osmc/workspaces") {
		if code != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200", i, code)
		}
	}
	if n := twc.sessions.Load(); n != 1 {
		t.Fatalf("TWC sessions opened by 20 concurrent first requests = %d, want 1", n)
	}
	for i, u := range h.upstreamSeen()[1:] {
		if !strings.Contains(u.Header.Get("Cookie"), "twc-rest-session-id=seat-1") {
			t.Fatalf("upstream request %d went without the session: Cookie %q", i+1, u.Header.Get("Cookie"))
		}
	}
	expireSession(t, h, twc)
	h.burst(20, "/osmc/workspaces")
	if n := twc.sessions.Load(); n != 2 {
		t.Fatalf("TWC sessions opened = %d after the first expired and 20 more requests, want 2", n)
	}
}

// expireSession makes the service identity's TWC session cookie run out:
// TWC sets it again with Max-Age=1 on a request in the session, and the
// test waits that second (the jar keeps real time).
func expireSession(t *testing.T, h *harness, twc *fakeTWCREST) {
	t.Helper()
	twc.expire.Store(1)
	if resp, _ := h.do(&http.Client{}, "GET", "/osmc/workspaces", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("request in the session: got %d, want 200", resp.StatusCode)
	}
	if twc.expire.Load() != 0 {
		t.Fatal("the request went without the session cookie: TWC did not set it again")
	}
	time.Sleep(1100 * time.Millisecond)
}

// TestServiceAccountSessionOpenerFails: when the request opening the TWC
// session fails, the requests waiting for it go on (nobody waits forever),
// and once TWC answers again one request opens the session.
func TestServiceAccountSessionOpenerFails(t *testing.T) {
	twc := &fakeTWCREST{open: 200 * time.Millisecond}
	twc.fail.Store(http.StatusServiceUnavailable)
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) { o.upstream = twc.serve })
	for i, code := range h.burst(20, "/osmc/workspaces") {
		if code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: got %d, want TWC's 503", i, code)
		}
	}
	// Held in turn, each would have had the upstream to itself.
	if n := twc.maxOpening.Load(); n < 2 {
		t.Errorf("at most %d of 20 requests against a failing upstream were there at once: the waiting requests were held in turn", n)
	}
	twc.fail.Store(0)
	h.burst(20, "/osmc/workspaces")
	if n := twc.sessions.Load(); n != 1 {
		t.Fatalf("TWC sessions opened = %d once TWC answered again, want 1", n)
	}
}

// TestServiceAccountUpstreamWithoutSessions: an upstream that never sets
// twc-rest-session-id (a dashboard) must not have service requests held
// back: once one answer showed that, they go concurrently.
func TestServiceAccountUpstreamWithoutSessions(t *testing.T) {
	const n = 5
	var arrived sync.WaitGroup
	arrived.Add(n)
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/reports/together" {
				arrived.Done()
				done := make(chan struct{})
				go func() { arrived.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					w.WriteHeader(http.StatusGatewayTimeout)
					return
				}
			}
			w.WriteHeader(http.StatusOK)
		}
	})
	if resp, _ := h.do(&http.Client{}, "GET", "/api/reports/first", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %d", resp.StatusCode)
	}
	for i, code := range h.burst(n, "/api/reports/together") {
		if code != http.StatusOK {
			t.Fatalf("request %d: got %d: service requests were held back although the upstream opens no sessions", i, code)
		}
	}
}

// TestServiceAccountSessionWaitCanceled: a request waiting for the TWC
// session whose caller goes away is answered at once and never reaches
// the upstream (where it would open a session of its own).
func TestServiceAccountSessionWaitCanceled(t *testing.T) {
	noLeaks(t)
	release := make(chan struct{})
	var sessions atomic.Int32
	h := newHarness(t, withService(nil), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if _, err := r.Cookie("twc-rest-session-id"); err == nil {
				w.WriteHeader(http.StatusOK)
				return
			}
			<-release
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: fmt.Sprintf("seat-%d", sessions.Add(1)), Path: "/"})
			w.WriteHeader(http.StatusOK)
		}
	})
	opened := make(chan int)
	go func() {
		resp, err := http.Get(h.proxy.URL + "/api/reports/opener")
		if err != nil {
			opened <- 0
			return
		}
		resp.Body.Close()
		opened <- resp.StatusCode
	}()
	if !waitFor(10*time.Second, func() bool { return len(h.upstreamSeen()) > 0 }) {
		t.Fatal("the opener did not reach the upstream within 10s")
	}
	if _, err := (&http.Client{Timeout: 200 * time.Millisecond}).Get(h.proxy.URL + "/api/reports/impatient"); err == nil {
		t.Fatal("the waiting request was answered before the session was open")
	}
	// The proxy notices the caller left before the opener is released.
	if got := h.requestLine("/api/reports/impatient")["outcome"]; got != "service_session_canceled" {
		t.Fatalf("outcome = %v, want service_session_canceled", got)
	}
	close(release)
	if code := <-opened; code != http.StatusOK {
		t.Fatalf("opener: got %d", code)
	}
	if resp, _ := h.do(&http.Client{}, "GET", "/api/reports/after", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("after: got %d", resp.StatusCode)
	}
	for _, u := range h.upstreamSeen() {
		if u.URI == "/api/reports/impatient" {
			t.Fatal("a canceled waiting request reached the upstream")
		}
	}
	if n := sessions.Load(); n != 1 {
		t.Fatalf("TWC sessions opened = %d, want 1", n)
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestServiceSessionNote(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		cookie http.Cookie
		active bool
	}{
		{"no expiry", http.Cookie{}, true},
		{"Max-Age", http.Cookie{MaxAge: 60}, true},
		{"Expires ahead", http.Cookie{Expires: now.Add(time.Minute)}, true},
		{"Max-Age wins over a past Expires", http.Cookie{MaxAge: 60, Expires: now.Add(-time.Minute)}, true},
		{"Expires past", http.Cookie{Expires: now.Add(-time.Minute)}, false},
		{"Max-Age=0 clears", http.Cookie{MaxAge: -1}, false},
		// Past int64 nanoseconds (2262): "never expires", not a negative time.
		{"Expires in 9999", http.Cookie{Expires: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)}, true},
		{"Max-Age of 10^12 s", http.Cookie{MaxAge: 1_000_000_000_000}, true},
		{"Max-Age past 2262", http.Cookie{MaxAge: 300 * 365 * 24 * 3600}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServiceSession(nopLogger())
			s.note(&http.Cookie{MaxAge: 60}, now) // a session to replace
			s.note(&tt.cookie, now)
			if got := s.active(); got != tt.active {
				t.Errorf("active() = %v, want %v", got, tt.active)
			}
		})
	}
	// A session cookie after all reopens the gate held open for an
	// upstream that seemed to open no sessions.
	s := newServiceSession(nopLogger())
	s.sessionless.Store(true)
	s.note(&http.Cookie{MaxAge: 60}, now)
	if s.sessionless.Load() {
		t.Error("a session cookie left the gate open")
	}
}

// A request with a body never holds the others back: the upstream timeout
// starts only once the body is sent, so a caller
// trickling one would otherwise keep the gate as long as it liked.
func TestServiceAccountSlowUploadHoldsNoOne(t *testing.T) {
	twc := &fakeTWCREST{}
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) {
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			twc.serve(w, r)
		}
		// Held by the upload, the others would get the 504 of a wait
		// for the TWC session after it.
		o.cfg = func(c *Config) { c.UpstreamTimeout = testUpstreamTimeout }
	})
	pr, pw := io.Pipe()
	defer pw.Close()
	uploaded := make(chan struct{})
	go func() {
		defer close(uploaded)
		req, _ := http.NewRequest(http.MethodPost, h.proxy.URL+"/osmc/upload", pr)
		req.ContentLength = 1000 // 10 bytes come, then nothing until the test ends
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("0123456789"))
	h.waitUpstream("/osmc/upload") // the upload is under way
	for i, code := range h.burst(3, "/osmc/workspaces") {
		if code != http.StatusOK {
			t.Errorf("request %d: got %d while another caller uploads slowly, want 200", i, code)
		}
	}
	if n := twc.sessions.Load(); n != 1 {
		t.Errorf("TWC sessions opened = %d, want 1", n)
	}
	pw.CloseWithError(io.ErrUnexpectedEOF)
	<-uploaded
}

// An opener whose caller goes away got no answer: the waiters then take
// the next turn one at a time instead of all going on and each opening a
// TWC session (a license seat) of its own.
func TestServiceAccountOpenerCallerLeaves(t *testing.T) {
	twc := &fakeTWCREST{open: 300 * time.Millisecond}
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) { o.upstream = twc.serve })
	left := make(chan struct{})
	go func() {
		defer close(left)
		resp, err := (&http.Client{Timeout: 100 * time.Millisecond}).Get(h.proxy.URL + "/osmc/opener")
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(30 * time.Millisecond) // the opener is upstream
	for i, code := range h.burst(10, "/osmc/workspaces") {
		if code != http.StatusOK {
			t.Errorf("request %d: got %d, want 200", i, code)
		}
	}
	<-left
	// The upstream still opened a session for the opener that left; one
	// more for the waiters, not one each.
	if n := twc.sessions.Load(); n > 2 {
		t.Fatalf("TWC sessions opened = %d after the opener's caller left, want at most 2", n)
	}
}

// The gate believes what the jar will send. A session cookie the jar
// refuses (a Domain for another host) is no session: the gate must not
// open for it while every request, sent without it, opens a TWC session of
// its own. Clearing a copy kept for another path does not end the session
// the jar still sends.
func TestServiceSessionFollowsTheJar(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:8111/osmc/workspaces")
	answer := func(lines ...string) *http.Response {
		return &http.Response{Header: http.Header{"Set-Cookie": lines}, Request: &http.Request{URL: u}}
	}
	t.Run("refused by the jar", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		s.keepCookies(answer("twc-rest-session-id=seat-1; Path=/osmc; Domain=twc.example.com"), nil)
		if s.active() {
			t.Error("a cookie the jar refused counts as a session")
		}
	})
	t.Run("kept for another path", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		s.keepCookies(answer("twc-rest-session-id=seat-1; Path=/admin"), nil)
		if s.active() {
			t.Error("a cookie the jar keeps for /admin counts as a session for /osmc")
		}
	})
	t.Run("another path's copy cleared", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		s.keepCookies(answer("twc-rest-session-id=seat-1; Path=/osmc"), nil)
		s.keepCookies(answer("twc-rest-session-id=; Path=/osmc/admin; Max-Age=0"), nil)
		if !s.active() {
			t.Error("clearing /osmc/admin's copy ended the /osmc session the jar still sends")
		}
		s.keepCookies(answer("twc-rest-session-id=; Path=/osmc; Max-Age=0"), nil)
		if s.active() {
			t.Error("clearing the session the jar sends left the gate open")
		}
	})
}

// TestServiceJarIsBounded: an upstream that sets a new cookie on every
// service answer (a new name, or a new path) cannot grow the service
// identity's jar without end, nor crowd out the TWC session cookie; the
// cookies already kept are still updated and removed, and a drop makes
// room again.
func TestServiceJarIsBounded(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s := newServiceSession(zap.New(core))
	answer := func(path string, lines ...string) *http.Response {
		u, _ := url.Parse("http://127.0.0.1:8111" + path)
		return &http.Response{Header: http.Header{"Set-Cookie": lines}, Request: &http.Request{URL: u}}
	}
	count := func() int {
		n := 0
		for _, p := range []string{"/osmc/x", "/app/x"} {
			u, _ := url.Parse("http://127.0.0.1:8111" + p)
			n += len(s.jar.Load().Cookies(u))
		}
		return n
	}
	s.keepCookies(answer("/app/x", "pref=1; Path=/app"), nil)
	for i := range 200 {
		s.keepCookies(answer("/app/x", fmt.Sprintf("track%d=x; Path=/app", i)), nil)
		s.keepCookies(answer(fmt.Sprintf("/app/r%d/x", i), "nopath=x"), nil) // a new default path each time
	}
	if n := len(s.kept); n != maxServiceCookies {
		t.Errorf("kept %d cookies, want the bound %d", n, maxServiceCookies)
	}
	if n := count(); n > maxServiceCookies {
		t.Errorf("the jar sends %d cookies for two paths, want at most %d", n, maxServiceCookies)
	}
	if n := logs.FilterMessageSnippet("more cookies").Len(); n != 1 {
		t.Errorf("got %d warnings about the bound, want 1", n)
	}
	// The TWC session still gets in, and a kept cookie is still updated
	// and removed.
	s.keepCookies(answer("/osmc/x", "twc-rest-session-id=seat-1; Path=/osmc"), nil)
	if !s.active() {
		t.Error("a full jar refused the TWC session cookie")
	}
	s.keepCookies(answer("/app/x", "pref=2; Path=/app"), nil)
	u, _ := url.Parse("http://127.0.0.1:8111/app/x")
	if got := cookieValue(s.jar.Load().Cookies(u), "pref"); got != "2" {
		t.Errorf("kept cookie pref = %q after its update, want 2", got)
	}
	s.keepCookies(answer("/app/x", "pref=; Path=/app; Max-Age=0"), nil)
	if got := cookieValue(s.jar.Load().Cookies(u), "pref"); got != "" {
		t.Errorf("kept cookie pref = %q after its removal, want none", got)
	}
	s.drop()
	s.keepCookies(answer("/app/x", "fresh=1; Path=/app"), nil)
	if got := cookieValue(s.jar.Load().Cookies(u), "fresh"); got != "1" {
		t.Error("after a drop the jar takes no new cookie")
	}
}

// TestServiceJarBoundKeepsWhatItShould: the bound counts cookies as the
// jar stores them, so that it never refuses what the service identity
// needs: TWC REST's own cookies, updates of a cookie it holds under
// another spelling, and new cookies once others were removed or expired;
// and cookies the jar refuses anyway take no place.
func TestServiceJarBoundKeepsWhatItShould(t *testing.T) {
	answer := func(path string, lines ...string) *http.Response {
		u, _ := url.Parse("http://127.0.0.1:8111" + path)
		return &http.Response{Header: http.Header{"Set-Cookie": lines}, Request: &http.Request{URL: u}}
	}
	value := func(s *serviceSession, path, name string) string {
		u, _ := url.Parse("http://127.0.0.1:8111" + path)
		return cookieValue(s.jar.Load().Cookies(u), name)
	}
	fill := func(s *serviceSession, n int, attrs string) {
		for i := range n {
			s.keepCookies(answer("/app/x", fmt.Sprintf("d%d=x; Path=/app%s", i, attrs)), nil)
		}
	}
	t.Run("TWC's cookies are not crowded out", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		fill(s, maxServiceCookies, "")
		s.keepCookies(answer("/osmc/x", "twc-rest-session-id=seat-1; Path=/osmc", "twc-rest-current-user=svc; Path=/osmc"), nil)
		if got := value(s, "/osmc/x", "twc-rest-current-user"); got != "svc" || !s.active() {
			t.Errorf("twc-rest-current-user = %q, session active %v; want both kept", got, s.active())
		}
	})
	t.Run("removals give places back", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		for i := range 2 * maxServiceCookies {
			s.keepCookies(answer("/app/x", fmt.Sprintf("csrf%d=x; Path=/app", i)), nil)
			s.keepCookies(answer("/app/x", fmt.Sprintf("csrf%d=; Path=/app; Max-Age=0", i)), nil)
		}
		s.keepCookies(answer("/app/x", "pref=1; Path=/app"), nil)
		if value(s, "/app/x", "pref") != "1" {
			t.Error("after 100 cookies set and removed, a new one is refused")
		}
	})
	t.Run("expiry gives places back", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		fill(s, maxServiceCookies, "; Max-Age=1")
		time.Sleep(1100 * time.Millisecond)
		s.keepCookies(answer("/app/x", "pref=1; Path=/app"), nil)
		if value(s, "/app/x", "pref") != "1" {
			t.Error("after 50 cookies expired, a new one is refused")
		}
	})
	t.Run("an update spelled differently", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		s.keepCookies(answer("/app/x", "pref=1; Path=/app"), nil)
		fill(s, maxServiceCookies+10, "")
		s.keepCookies(answer("/app/x", "pref=2; Path=/app; Domain=127.0.0.1"), nil)
		if got := value(s, "/app/x", "pref"); got != "2" {
			t.Errorf("pref = %q after an update with Domain=127.0.0.1 (the same cookie to the jar), want 2", got)
		}
	})
	t.Run("refused cookies take no place", func(t *testing.T) {
		s := newServiceSession(nopLogger())
		fill(s, maxServiceCookies, "; Domain=other.example")
		s.keepCookies(answer("/app/x", "pref=1; Path=/app"), nil)
		if value(s, "/app/x", "pref") != "1" {
			t.Error("50 cookies the jar refused filled the bound")
		}
	})
}

func TestJarDomain(t *testing.T) {
	for _, tt := range []struct {
		host, domain, want string
		ok                 bool
	}{
		{"twc.example.com", "", "twc.example.com", true},
		{"twc.example.com", ".Example.COM", "example.com", true},
		{"twc.example.com", "twc.example.com", "twc.example.com", true},
		{"twc.example.com", "other.example", "", false},
		{"twc.example.com", "ample.com", "", false},
		{"twc.example.com", ".", "", false},
		{"twc.example.com", "example.com.", "", false},
		{"127.0.0.1", "127.0.0.1", "127.0.0.1", true},
		{"127.0.0.1", ".127.0.0.1", "127.0.0.1", false},
		{"127.0.0.1", "0.0.1", "127.0.0.1", false},
	} {
		got, ok := jarDomain(tt.host, tt.domain)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("jarDomain(%q, %q) = %q, %v; want %q, %v", tt.host, tt.domain, got, ok, tt.want, tt.ok)
		}
	}
}

func cookieValue(cookies []*http.Cookie, name string) string {
	for _, c := range cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// TestServiceAccountRejectedOpenerKeepsOneTWCSession: when TWC rejects the
// service token on the request that opens the TWC session (the token was
// revoked while the session cookie ran out), the proxy drops the token, and
// the requests that waited go with a new one: they must not each open a TWC
// session (a license seat) with it, but wait for one of them to open it.
func TestServiceAccountRejectedOpenerKeepsOneTWCSession(t *testing.T) {
	twc := &fakeTWCREST{open: 50 * time.Millisecond}
	var revoked atomic.Value
	revoked.Store("")
	h := newHarness(t, withService(func(c *ServiceAccountConfig) { c.Routes = nil }), func(o *harnessOpts) {
		o.idp.UnlimitedClients = []string{svcClient}
		o.upstream = func(w http.ResponseWriter, r *http.Request) {
			if strings.TrimPrefix(r.Header.Get("Authorization"), "Token ") == revoked.Load() {
				time.Sleep(twc.open)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			twc.serve(w, r)
		}
	})
	if resp, _ := h.do(&http.Client{}, "GET", "/osmc/workspaces", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %d", resp.StatusCode)
	}
	expireSession(t, h, twc)
	revoked.Store(tokenOf(t, h.lastUpstream()))
	h.clock.Advance(time.Minute) // so that the next token differs from the revoked one
	rejected := 0
	for i, code := range h.burst(20, "/osmc/workspaces") {
		switch code {
		case http.StatusOK:
		case http.StatusUnauthorized:
			rejected++
		default:
			t.Fatalf("request %d: got %d", i, code)
		}
	}
	if rejected != 1 {
		t.Errorf("%d requests got TWC's 401, want 1: the opener's", rejected)
	}
	if n := twc.sessions.Load(); n != 2 {
		t.Fatalf("TWC sessions opened = %d, want 2: the first, and one for the token that replaced the rejected one", n)
	}
}
