package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
