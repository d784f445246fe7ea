package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// TestMain runs the program instead of the tests when runMainEnv is set
// (see TestMainSetsGCPercent).
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is an io.Writer that run may write to while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback address that nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrs(t, 1)[0]
}

// freeAddrs returns n distinct free loopback addresses. The listeners are
// held until all n are chosen: closing each at once lets the kernel hand
// the same port out twice.
//
// Once they are closed, until run listens, the ports are anyone's: the
// test packages that run at the same time open servers on port 0 all the
// time, and every outgoing connection takes a local port. So the ports
// come from below the kernel's ephemeral range (Linux's
// ip_local_port_range), which neither hands out.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	low, high := freePortRange()
	addrs := make([]string, 0, n)
	for tries := 0; len(addrs) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no free port in [%d, %d) after 1000 tries", low, high)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(low+rand.IntN(high-low))))
		if err != nil {
			continue // taken
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// freePortRange is where freeAddrs picks ports: from 20000 up to the
// first port of the ephemeral range; up to 32768 where that range cannot
// be read (systems other than Linux start theirs there or higher) or
// leaves no room below it.
func freePortRange() (low, high int) {
	low, high = 20000, 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return low, high
	}
	if f := strings.Fields(string(b)); len(f) == 2 {
		if first, err := strconv.Atoi(f[0]); err == nil && first > low+1000 {
			high = first
		}
	}
	return low, high
}

// running is run started in the background.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // run's result, once done is closed
	stdout *syncBuffer
	stderr *syncBuffer
}

// startRun runs run with --config path until the test ends or stop is
// called.
func startRun(t *testing.T, path string, getenv func(string) string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{}), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() {
		defer close(r.done)
		r.err = run(ctx, []string{"--config", path}, getenv, r.stdout, r.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("run did not return within 10s of the end of the test")
		}
	})
	return r
}

// runConfig writes the config of a proxy for startRun: listening on
// listen and metrics, in front of upstream, signing in at issuer, with
// cookies not marked Secure (plain http on loopback); edits change it as
// conf's do.
func runConfig(t *testing.T, listen, metrics, upstream, issuer string, edits ...string) string {
	t.Helper()
	base := []string{
		"listen: " + listen,
		"metrics_listen: " + metrics,
		"upstream: " + upstream,
		"redirect_url: http://" + listen + "/oauth2/callback",
		"auth.issuer_url: " + issuer,
		"session.cookie_secure: false",
	}
	return writeFile(t, t.TempDir(), "config.yaml", conf(append(base, edits...)...))
}

// Credentials of the test service account, and the config edits that
// enable it.
const (
	testServiceUser     = "svc-reports"
	testServicePassword = "svc-password-9c2b"
)

var serviceAccountEdits = []string{
	"service_account.enabled: true",
	"service_account.username: " + testServiceUser,
	"service_account.password: " + testServicePassword,
}

// stop cancels run's context and returns its result, failing the test if
// run takes more than a few seconds.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return within 5s of cancellation")
		return nil
	}
}

// checkRunning fails the test if run has returned.
func (r *running) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		t.Fatalf("run returned early: %v; stderr:\n%s", r.err, r.stderr)
	default:
	}
}

// waitStatus polls url until it answers want, failing after a deadline or
// if run exits meanwhile.
func waitStatus(t *testing.T, r *running, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := "no answer"
	for time.Now().Before(deadline) {
		r.checkRunning(t)
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GET %s: got %s, want status %d within 10s; stderr:\n%s", url, last, want, r.stderr)
}

// fetch GETs url with c and returns the status and body.
func fetch(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestRunArgs(t *testing.T) {
	dir := t.TempDir()
	valid := writeFile(t, dir, "valid.yaml", conf())
	invalid := writeFile(t, dir, "invalid.yaml", conf("-auth.client_id", "auth.bogus: 1"))
	for _, c := range []struct {
		name string
		args []string
		want string // in the error
	}{
		{"no --config", nil, "--config"},
		{"empty --config", []string{"--config", ""}, "--config"},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, "no such file"},
		{"invalid config", []string{"--config", invalid}, "auth.bogus:"},
		{"invalid config with --check-config", []string{"--config", invalid, "--check-config"}, "auth.bogus:"},
		{"stray argument", []string{"--config", valid, "extra"}, `"extra"`},
		{"unknown flag", []string{"--config", valid, "--verbose"}, "verbose"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var stdout, stderr syncBuffer
			err := run(ctx, c.args, noEnv, &stdout, &stderr)
			if err == nil {
				t.Fatalf("got no error, want one containing %q", c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("got %q, want a single line", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %q, want it to contain %q", err, c.want)
			}
			if got := stdout.String(); got != "" {
				t.Errorf("got stdout %q, want nothing", got)
			}
		})
	}
}

// TestRunCheckConfig holds both ports while checking: a run that went on to
// listen would fail with "address already in use" (or block).
func TestRunCheckConfig(t *testing.T) {
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxyLn.Close()
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer metricsLn.Close()
	path := writeFile(t, t.TempDir(), "c.yaml",
		conf("listen: "+proxyLn.Addr().String(), "metrics_listen: "+metricsLn.Addr().String()))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr syncBuffer
	if err := run(ctx, []string{"--config", path, "--check-config"}, noEnv, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := stdout.String(), "config OK\n"; got != want {
		t.Errorf("got stdout %q, want %q", got, want)
	}
	if got := stderr.String(); got != "" {
		t.Errorf("got stderr %q, want nothing", got)
	}
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// upstreamRecorder is the upstream: it answers every request and keeps what
// it saw.
type upstreamRecorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (u *upstreamRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.reqs = append(u.reqs, r.Clone(context.Background()))
	u.mu.Unlock()
	fmt.Fprintf(w, "upstream saw %s", r.URL.RequestURI())
}

func (u *upstreamRecorder) requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.reqs...)
}

func TestRunEndToEnd(t *testing.T) {
	const clientSecret = "s3cret"
	auth, err := authtest.Start(authtest.Options{
		ClientIDs:         []string{"dashboard"},
		Secret:            clientSecret,
		RedirectWhitelist: []string{"http://127.0.0.1"},
		Users:             map[string]string{"alice": "pw"},
	})
	if err != nil {
		t.Fatalf("authtest.Start: %v", err)
	}
	defer auth.Close()
	up := &upstreamRecorder{}
	upstream := httptest.NewServer(up)
	defer upstream.Close()

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: %s
redirect_url: http://%s/oauth2/callback
shutdown_timeout: 3s
auth:
  issuer_url: %s
  client_id: dashboard
session:
  cookie_secure: false
  secret: %s
`, listen, metrics, upstream.URL, listen, auth.Issuer(), testSessionSecret))
	r := startRun(t, path, env(envClientSecret, clientSecret))
	waitStatus(t, r, "http://"+metrics+"/readyz", http.StatusOK)

	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	defer browser.CloseIdleConnections()

	// The proxy sends the browser to the auth server's login form.
	req, err := http.NewRequest(http.MethodGet, "http://"+listen+"/dash?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatalf("GET /dash: %v", err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /dash: got status %d, want %d (the login form); body:\n%s", resp.StatusCode, http.StatusOK, page)
	}
	if got, want := resp.Request.URL.String(), auth.Issuer()+"/authorize"; !strings.HasPrefix(got, want+"?") {
		t.Fatalf("GET /dash ended at %q, want the login form %q", got, want)
	}

	// The user signs in; the auth server sends the browser to the callback,
	// which sends it back to /dash?x=1.
	form := url.Values{"username": {"alice"}, "password": {"pw"}}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	for _, k := range []string{"client_id", "redirect_uri", "state"} {
		if form.Get(k) == "" {
			t.Fatalf("login form has no hidden %s; page:\n%s", k, page)
		}
	}
	resp, err = browser.PostForm(auth.Issuer()+"/authorize", form)
	if err != nil {
		t.Fatalf("POST login: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST login: got status %d, want %d; body:\n%s\nstderr:\n%s", resp.StatusCode, http.StatusOK, body, r.stderr)
	}
	if got, want := resp.Request.URL.String(), "http://"+listen+"/dash?x=1"; got != want {
		t.Errorf("login ended at %q, want %q", got, want)
	}
	if got, want := string(body), "upstream saw /dash?x=1"; got != want {
		t.Errorf("got body %q, want %q", got, want)
	}

	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	authz := reqs[0].Header.Get("Authorization")
	idToken, ok := strings.CutPrefix(authz, "Token ")
	if !ok || len(strings.Split(idToken, ".")) != 3 {
		t.Fatalf("upstream got Authorization %q, want \"Token <jwt>\"", authz)
	}
	for _, c := range reqs[0].Cookies() {
		if strings.HasPrefix(c.Name, "_twc_session") {
			t.Errorf("upstream got cookie %q, want none of the proxy's", c.Name)
		}
	}

	status, text := fetch(t, http.DefaultClient, "http://"+metrics+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: got status %d, want %d", status, http.StatusOK)
	}
	for _, want := range []string{
		`twc_auth_proxy_logins_total{result="success"} 1` + "\n",
		`twc_auth_proxy_requests_total{code="200"}`,
		`twc_auth_proxy_requests_total{code="302"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	browser.CloseIdleConnections()
	if err := r.stop(t); err != nil {
		t.Errorf("run: got %v, want nil after cancellation", err)
	}
	for _, addr := range []string{listen, metrics} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after run returned", addr)
		}
	}

	logs := r.stderr.String()
	checkLogin(t, logs, "alice")
	if got, want := lastMessage(t, logs), "stopped"; got != want {
		t.Errorf("got last log message %q, want %q", got, want)
	}
	for name, secret := range map[string]string{
		"client secret":           clientSecret,
		"session secret":          testSessionSecret,
		"ID token":                idToken,
		"ID token signature":      idToken[strings.LastIndex(idToken, ".")+1:],
		"authorization code":      "code=",
		"password form parameter": "password",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log reveals the %s %q:\n%s", name, secret, logs)
		}
	}
}

// checkLogin fails unless logs are JSON lines, one of them the login of
// user.
func checkLogin(t *testing.T, logs, user string) {
	t.Helper()
	found := false
	for line := range strings.Lines(logs) {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("log line is not JSON: %v: %q", err, line)
			continue
		}
		if entry["msg"] == "login" && entry["user"] == user {
			found = true
		}
	}
	if !found {
		t.Errorf("got no log line with \"msg\":\"login\" and \"user\":%q; log:\n%s", user, logs)
	}
}

// TestRunAuthServerDown checks that a sidecar whose auth server is out of
// reach keeps running, healthy but not ready, instead of crash-looping.
func TestRunAuthServerDown(t *testing.T) {
	up := httptest.NewServer(&upstreamRecorder{})
	defer up.Close()
	a := freeAddrs(t, 3)
	listen, metrics, closed := a[0], a[1], a[2]
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: %s
redirect_url: http://%s/oauth2/callback
auth:
  issuer_url: http://%s/authentication
  client_id: dashboard
  timeout: 1s
session:
  cookie_secure: false
`, listen, metrics, up.URL, listen, closed))
	r := startRun(t, path, env(envClientSecret, "s3cret", envSessionSecret, testSessionSecret))
	waitStatus(t, r, "http://"+metrics+"/healthz", http.StatusOK)

	// Discovery retries start at 0.5s; watch across several of them.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		r.checkRunning(t)
		for _, c := range []struct {
			url  string
			want int
		}{
			{"http://" + metrics + "/readyz", http.StatusServiceUnavailable},
			{"http://" + metrics + "/healthz", http.StatusOK},
			{"http://" + listen + "/dash", http.StatusServiceUnavailable},
		} {
			if got, _ := fetch(t, http.DefaultClient, c.url); got != c.want {
				t.Fatalf("GET %s: got status %d, want %d", c.url, got, c.want)
			}
		}
	}
	if _, text := fetch(t, http.DefaultClient, "http://"+metrics+"/metrics"); !strings.Contains(text, "twc_auth_proxy_discovery_failures_total") {
		t.Errorf("/metrics lacks twc_auth_proxy_discovery_failures_total")
	}
	if err := r.stop(t); err != nil {
		t.Errorf("run: got %v, want nil after cancellation", err)
	}
	logs := r.stderr.String()
	if !strings.Contains(logs, "discovery failed") {
		t.Errorf("got no log line about the failed discovery; log:\n%s", logs)
	}
	// Nothing, not even the discovery retry loop, may log after run returns.
	if got, want := lastMessage(t, logs), "stopped"; got != want {
		t.Errorf("got last log message %q, want %q; log:\n%s", got, want, logs)
	}
}

// lastMessage returns the msg of the last JSON log line.
func lastMessage(t *testing.T, logs string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	var entry struct{ Msg string }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &entry); err != nil {
		t.Fatalf("last log line is not JSON: %v: %q", err, lines[len(lines)-1])
	}
	return entry.Msg
}

// TestRunWaitsForDiscovery stops run while a discovery request hangs: run
// must cancel it and return only once the retry loop has ended, so that
// nothing logs after run returned.
func TestRunWaitsForDiscovery(t *testing.T) {
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // read nothing, answer nothing
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: http://127.0.0.1:9
redirect_url: http://%s/oauth2/callback
auth:
  issuer_url: http://%s/authentication
  client_id: dashboard
  timeout: 1m
`, listen, metrics, listen, hang.Addr()))
	r := startRun(t, path, env(envClientSecret, "s3cret", envSessionSecret, testSessionSecret))
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatalf("discovery never reached the auth server; stderr:\n%s", r.stderr)
	}
	waitStatus(t, r, "http://"+metrics+"/healthz", http.StatusOK)

	if err := r.stop(t); err != nil {
		t.Errorf("run: got %v, want nil after cancellation", err)
	}
	atReturn := r.stderr.String()
	time.Sleep(200 * time.Millisecond)
	if after := r.stderr.String(); after != atReturn {
		t.Errorf("got log lines after run returned:\n%s", strings.TrimPrefix(after, atReturn))
	}
	if got, want := lastMessage(t, atReturn), "stopped"; got != want {
		t.Errorf("got last log message %q, want %q; log:\n%s", got, want, atReturn)
	}
}

// TestRunWarnsAboutSecureCookiesOverHTTP: a config whose cookies browsers
// would drop gets a warning at start, not a silent login loop.
func TestRunWarnsAboutSecureCookiesOverHTTP(t *testing.T) {
	for _, tt := range []struct {
		redirect string
		secure   bool
		warn     bool
	}{
		{"http://dash.example.com/oauth2/callback", true, true},
		{"https://dash.example.com/oauth2/callback", true, false},
		{"http://127.0.0.1:4180/oauth2/callback", true, false},
		{"http://dash.example.com/oauth2/callback", false, false},
	} {
		t.Run(fmt.Sprintf("%s secure=%v", tt.redirect, tt.secure), func(t *testing.T) {
			a := freeAddrs(t, 3)
			listen, metrics, idp := a[0], a[1], a[2]
			path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: http://127.0.0.1:8111
redirect_url: %s
auth:
  issuer_url: http://%s/authentication
  client_id: dashboard
  client_secret: s3cret
session:
  cookie_secure: %v
  secret: %s
`, listen, metrics, tt.redirect, idp, tt.secure, testSessionSecret))
			r := startRun(t, path, noEnv)
			waitStatus(t, r, "http://"+metrics+"/healthz", http.StatusOK)
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(r.stderr.String(), "cookie_secure is true but redirect_url is plain http"); got != tt.warn {
				t.Errorf("warning logged = %v, want %v", got, tt.warn)
			}
		})
	}
}
