package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// serveApp runs the real wiring (newApp, app.serve) for cfg on the given
// listeners until the test ends, logging to the returned buffer, and waits
// until /readyz says discovery succeeded. The log is printed if the test
// fails; serve must return nil within 10 s of the end.
func serveApp(t *testing.T, cfg *settings, proxyLn, metricsLn net.Listener, format, level string) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	log, lines, err := newLogger(format, level, logs)
	if err != nil {
		t.Fatal(err)
	}
	cfg.proxy.RequestLog = lines
	a, err := newApp(cfg, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("newApp: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, proxyLn, metricsLn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return within 10s of cancellation")
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", logs)
		}
	})
	ready := "http://" + metricsLn.Addr().String() + "/readyz"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get(ready)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return logs
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not ready (auth-server discovery) within 10s (last: %v); log:\n%s", err, logs)
		}
	}
}

// servedConfig starts an auth server and an upstream for the test, and
// returns the config of a proxy in front of them that lets /open through
// without a session, with listeners for the proxy and its metrics.
func servedConfig(t *testing.T) (cfg *settings, proxyLn, metricsLn net.Listener) {
	t.Helper()
	auth, err := authtest.Start(authtest.Options{ClientIDs: []string{"dashboard"}, Secret: testClientSecret})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auth.Close() })
	upstream := httptest.NewServer(&upstreamRecorder{})
	t.Cleanup(upstream.Close)
	if proxyLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if metricsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	cfg = mustParse(t, conf("upstream: "+upstream.URL, "auth.issuer_url: "+auth.Issuer(),
		"redirect_url: http://"+proxyLn.Addr().String()+"/oauth2/callback", `skip_auth: ["^/open$"]`), noEnv)
	return cfg, proxyLn, metricsLn
}

// exhaustedListener fails its first Accepts as a process out of file
// descriptors does (EMFILE, a temporary error: http.Server logs it and
// retries).
type exhaustedListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *exhaustedListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestServerTroubleIsAnError: what http.Server reports on its error log
// about the proxy listener is never one client's doing (the listener is
// plain http: no TLS handshakes to fail): the process cannot accept
// connections (out of file descriptors under a connection flood), or a
// handler misbehaved. The operator must act on it, so it is logged at
// error, not at info with the request lines.
func TestServerTroubleIsAnError(t *testing.T) {
	cfg, proxyLn, metricsLn := servedConfig(t)
	exhausted := &exhaustedListener{Listener: proxyLn}
	exhausted.failures.Store(3)
	logs := serveApp(t, cfg, exhausted, metricsLn, "json", "info")
	// Accepted once the three failures are behind it.
	if status, _ := fetch(t, http.DefaultClient, "http://"+proxyLn.Addr().String()+"/open"); status != http.StatusOK {
		t.Fatalf("GET /open: got %d, want 200", status)
	}
	var seen int
	for line := range strings.Lines(logs.String()) {
		var e struct{ Level, Msg string }
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if strings.Contains(e.Msg, "Accept error") {
			seen++
			if e.Level != "error" {
				t.Errorf("logged at %s, want error: %s", e.Level, e.Msg)
			}
		}
	}
	if seen != 3 {
		t.Errorf("got %d accept error lines, want 3; log:\n%s", seen, logs)
	}
}

// TestIdleConnectionsAreClosed: a keep-alive connection that carries no
// further request is closed after the idle timeout, on the proxy's
// listener and on the metrics listener, whose scrapers keep theirs open.
func TestIdleConnectionsAreClosed(t *testing.T) {
	cfg, proxyLn, metricsLn := servedConfig(t)
	if cfg.idleTimeout != defaultIdleTimeout {
		t.Fatalf("idle timeout %v, want the default %v", cfg.idleTimeout, defaultIdleTimeout)
	}
	const idle = 300 * time.Millisecond
	cfg.idleTimeout = idle
	serveApp(t, cfg, proxyLn, metricsLn, "json", "info")

	for _, c := range []struct{ name, addr, path string }{
		{"proxy", proxyLn.Addr().String(), "/open"},
		{"metrics", metricsLn.Addr().String(), "/metrics"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", c.path, c.addr)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Close {
				t.Fatalf("got %d (close %v), want a 200 on a kept-alive connection", resp.StatusCode, resp.Close)
			}
			// The server closes it: EOF, well before our own deadline.
			start := time.Now()
			conn.SetReadDeadline(start.Add(30 * idle)) // 9 s
			if n, err := br.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after %v idle: read %d bytes, %v; want the server to close the connection (EOF)", time.Since(start).Round(time.Millisecond), n, err)
			}
			if waited := time.Since(start); waited < idle/2 {
				t.Errorf("closed after %v, before the idle timeout of %v", waited, idle)
			}
		})
	}
}
