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
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: %s
redirect_url: http://%s/oauth2/callback
shutdown_timeout: 10s
skip_auth: ["^/"]
auth:
  issuer_url: %s
  client_id: dashboard
  client_secret: CHANGE_ME
session:
  secret: %s
`, listen, metrics, upstream.URL, listen, auth.Issuer(), testSessionSecret))
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
	refused := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", listen, time.Second)
		if err != nil {
			refused = true
			break
		}
		conn.Close()
	}
	if !refused {
		t.Fatal("the listener still accepts connections after SIGTERM")
	}
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

// TestShutdownReleasesServiceSession: on SIGTERM the service account's TWC
// REST session ends with GET /osmc/logout once the in-flight requests are
// done, rather than holding its license seat for TWC's idle timeout, and
// run still returns nil.
func TestShutdownReleasesServiceSession(t *testing.T) {
	auth, err := authtest.Start(authtest.Options{Users: map[string]string{"svc-reports": "svc-password-9c2b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer auth.Close()
	var mu sync.Mutex
	var logouts []http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/osmc/logout":
			mu.Lock()
			logouts = append(logouts, r.Header.Clone())
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		case r.Header.Get("Cookie") == "":
			http.SetCookie(w, &http.Cookie{Name: "twc-rest-session-id", Value: "seat-1", Path: "/osmc"})
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer upstream.Close()

	a := freeAddrs(t, 2)
	listen, metrics := a[0], a[1]
	path := writeFile(t, t.TempDir(), "config.yaml", fmt.Sprintf(`
listen: %s
metrics_listen: %s
upstream: %s
redirect_url: http://%s/oauth2/callback
shutdown_timeout: 10s
auth:
  issuer_url: %s
  client_id: dashboard
  client_secret: CHANGE_ME
session:
  secret: %s
service_account:
  enabled: true
  username: svc-reports
  password: svc-password-9c2b
`, listen, metrics, upstream.URL, listen, auth.Issuer(), testSessionSecret))
	r := startRun(t, path, noEnv)
	waitStatus(t, r, "http://"+metrics+"/readyz", http.StatusOK)
	if code, body := fetch(t, http.DefaultClient, "http://"+listen+"/osmc/workspaces"); code != http.StatusOK {
		t.Fatalf("service request: got %d %s", code, body)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("run returned %v, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logouts) != 1 {
		t.Fatalf("upstream saw %d logouts at shutdown, want 1; stderr:\n%s", len(logouts), r.stderr)
	}
	if c := logouts[0].Get("Cookie"); c != "twc-rest-session-id=seat-1" {
		t.Errorf("logout Cookie = %q, want the service session", c)
	}
	if a := logouts[0].Get("Authorization"); !strings.HasPrefix(a, "Token ey") {
		t.Errorf("logout Authorization = %q, want the service token", a)
	}
	if !strings.Contains(r.stderr.String(), "released the service account's TWC session") {
		t.Errorf("no log line for the release; stderr:\n%s", r.stderr)
	}
}
