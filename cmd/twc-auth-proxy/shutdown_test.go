package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// TestShutdownDrainsInFlightRequests: on SIGTERM (ctx cancelled) the proxy
// stops accepting connections, lets every in-flight request finish, and
// returns within shutdown_timeout.
func TestShutdownDrainsInFlightRequests(t *testing.T) {
	auth, err := authtest.Start(authtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	const inFlight = 50
	var arrived atomic.Int32
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		<-release
		io.WriteString(w, "done")
	}))
	defer upstream.Close()

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	path := runConfig(t, listen, metrics, upstream.URL, auth.Issuer(), "shutdown_timeout: 10s", `skip_auth: ["^/"]`)
	r := startRun(t, path, noEnv)
	waitStatus(t, r, "http://"+metrics+"/readyz", http.StatusOK)

	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxConnsPerHost: inFlight}}
	var wg sync.WaitGroup
	results := make([]string, inFlight)
	for i := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://%s/report/%d", listen, i))
			if err != nil {
				results[i] = err.Error()
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = fmt.Sprintf("%d %s %v", resp.StatusCode, b, err)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for arrived.Load() < inFlight && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := arrived.Load(); n != inFlight {
		t.Fatalf("%d of %d requests reached the upstream", n, inFlight)
	}

	r.cancel() // SIGTERM
	// New connections are refused while the in-flight ones still wait.
	waitRefused(t, listen)
	select {
	case <-r.done:
		t.Fatal("run returned while requests were in flight")
	default:
	}
	start := time.Now()
	close(release)
	wg.Wait()
	for i, res := range results {
		if res != "200 done <nil>" {
			t.Errorf("in-flight request %d was cut: %s", i, res)
		}
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("run returned %v, want nil", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within the grace period")
	}
	t.Logf("drained %d requests and stopped %v after they were released", inFlight, time.Since(start).Round(time.Millisecond))
}

// waitRefused waits up to 5 s for the proxy's listener at addr to be
// closed, as run does first on SIGTERM.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts connections after SIGTERM")
		}
	}
}

// serviceShutdown is a proxy with a service account in front of a fake TWC
// REST that opens a session (seat-1) for a request without one, answers
// /osmc/slow only once release is closed, and records the order in which
// the slow answer and the logout happened.
type serviceShutdown struct {
	r       *running
	listen  string
	arrived chan struct{} // closed when /osmc/slow reached the upstream
	release chan struct{} // close to let /osmc/slow answer

	mu      sync.Mutex
	events  []string
	logouts []http.Header
}

func startServiceShutdown(t *testing.T, shutdownTimeout string) *serviceShutdown {
	t.Helper()
	auth, err := authtest.Start(authtest.Options{Users: map[string]string{testServiceUser: testServicePassword}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	ss := &serviceShutdown{arrived: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/osmc/logout":
			ss.mu.Lock()
			ss.events = append(ss.events, "logout")
			ss.logouts = append(ss.logouts, r.Header.Clone())
			ss.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/osmc/slow":
			once.Do(func() { close(ss.arrived) })
			<-ss.release
			ss.mu.Lock()
			ss.events = append(ss.events, "slow answered")
			ss.mu.Unlock()
		case r.Header.Get("Cookie") == "":
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: "seat-1", Path: "/osmc"})
		}
	}))
	t.Cleanup(upstream.Close)
	t.Cleanup(func() {
		select {
		case <-ss.release:
		default:
			close(ss.release)
		}
	})

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	edits := append([]string{"shutdown_timeout: " + shutdownTimeout, "auth.client_secret: " + authtest.DefaultSecret}, serviceAccountEdits...)
	path := runConfig(t, listen, metrics, upstream.URL, auth.Issuer(), edits...)
	ss.r, ss.listen = startRun(t, path, noEnv), listen
	waitStatus(t, ss.r, "http://"+metrics+"/readyz", http.StatusOK)
	if code, body := fetch(t, http.DefaultClient, "http://"+listen+"/osmc/workspaces"); code != http.StatusOK {
		t.Fatalf("service request: got %d %s", code, body)
	}
	return ss
}

// slow starts a service request that the upstream answers only once
// release is closed, and waits until it got there.
func (ss *serviceShutdown) slow(t *testing.T) {
	t.Helper()
	go func() {
		if resp, err := http.Get("http://" + ss.listen + "/osmc/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-ss.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the upstream")
	}
}

// done waits for run to return and checks the one logout it sent.
func (ss *serviceShutdown) done(t *testing.T) error {
	t.Helper()
	var err error
	select {
	case <-ss.r.done:
		err = ss.r.err
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return")
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.logouts) != 1 {
		t.Fatalf("upstream saw %d logouts at shutdown, want 1; stderr:\n%s", len(ss.logouts), ss.r.stderr)
	}
	if c := ss.logouts[0].Get("Cookie"); c != "twc-rest-session-id=seat-1" {
		t.Errorf("logout Cookie = %q, want the service session", c)
	}
	if a := ss.logouts[0].Get("Authorization"); !strings.HasPrefix(a, "Token ey") {
		t.Errorf("logout Authorization = %q, want the service token", a)
	}
	if !strings.Contains(ss.r.stderr.String(), "released the service account's TWC session") {
		t.Errorf("no log line for the release; stderr:\n%s", ss.r.stderr)
	}
	return err
}

// TestShutdownReleasesServiceSession: on SIGTERM the service account's TWC
// REST session ends with GET /osmc/logout once the in-flight requests are
// done, rather than holding its license seat for TWC's idle timeout, and
// run still returns nil.
func TestShutdownReleasesServiceSession(t *testing.T) {
	ss := startServiceShutdown(t, "10s")
	ss.slow(t)
	ss.r.cancel()             // SIGTERM
	waitRefused(t, ss.listen) // the drain has begun
	close(ss.release)
	if err := ss.done(t); err != nil {
		t.Errorf("run returned %v, want nil", err)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.events) != 2 || ss.events[0] != "slow answered" || ss.events[1] != "logout" {
		t.Errorf("upstream saw %q, want the in-flight request answered before the logout", ss.events)
	}
}

// TestShutdownLogoutWhenDrainOverruns: a service request still in flight
// when the drain's share of shutdown_timeout is up does not cost the
// logout its time: the seat is released before the process gives up.
func TestShutdownLogoutWhenDrainOverruns(t *testing.T) {
	// Drain 6 s, logout 2 s: the logout's quarter of the grace is all a
	// loaded machine has for its request.
	const shutdownTimeout = 8 * time.Second
	ss := startServiceShutdown(t, shutdownTimeout.String())
	ss.slow(t)
	start := time.Now()
	ss.r.cancel()
	err := ss.done(t) // the slow request is never released in time
	if err == nil || !strings.Contains(err.Error(), "shutdown") {
		t.Errorf("run returned %v, want the drain's deadline", err)
	}
	if took := time.Since(start); took > shutdownTimeout+5*time.Second {
		t.Errorf("run took %v to return, want about shutdown_timeout (%v)", took, shutdownTimeout)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.events) != 1 || ss.events[0] != "logout" {
		t.Errorf("upstream saw %q, want the logout while the slow request still waits", ss.events)
	}
}

// TestReadyzFailsWhileDraining: once SIGTERM has closed the proxy's
// listener, /readyz must stop saying ready (anything still routing by
// readiness, such as a terminating endpoint's "serving" condition, would
// send connections to a closed port), while /healthz and /metrics keep
// answering until the drain is over.
func TestReadyzFailsWhileDraining(t *testing.T) {
	auth, err := authtest.Start(authtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(arrived) })
		<-release
	}))
	defer upstream.Close()
	defer close(release)

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	path := runConfig(t, listen, metrics, upstream.URL, auth.Issuer(), "shutdown_timeout: 10s", `skip_auth: ["^/"]`)
	r := startRun(t, path, noEnv)
	waitStatus(t, r, "http://"+metrics+"/readyz", http.StatusOK)
	go func() {
		if resp, err := http.Get("http://" + listen + "/slow"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the upstream")
	}

	r.cancel() // SIGTERM
	waitRefused(t, listen)
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/readyz", http.StatusServiceUnavailable},
		{"/healthz", http.StatusOK},
		{"/metrics", http.StatusOK},
	} {
		if code, body := fetch(t, http.DefaultClient, "http://"+metrics+tt.path); code != tt.want {
			t.Errorf("GET %s while draining: got %d %q, want %d", tt.path, code, body, tt.want)
		}
	}
	select {
	case <-r.done:
		t.Fatal("run returned while a request was in flight")
	default:
	}
}
