package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
