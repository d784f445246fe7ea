package main

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The proxy writes its request lines itself when the log format is JSON
// (proxy/requestlog.go), in the shape of this binary's zap logger. The
// line must be the one the logger would write: same keys, same order,
// same encodings. Only the time and the duration differ between two
// requests.
func TestRequestLineMatchesLogger(t *testing.T) {
	varying := regexp.MustCompile(`"time":"[^"]*"|"duration":[-0-9.e]+`)
	line := func(direct bool) string {
		t.Helper()
		logs := &syncBuffer{}
		log, lines, err := newLogger("json", "info", logs)
		if err != nil {
			t.Fatal(err)
		}
		if lines == nil {
			t.Fatal("newLogger gave no request-line writer for JSON")
		}
		cfg := mustParse(t, conf(), noEnv)
		if direct {
			cfg.proxy.RequestLog = lines
		}
		a, err := newApp(cfg, log, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		// Not discovered: the proxy answers 503 without the network.
		r := httptest.NewRequest("GET", "/osmc/a%22b%0Ac?code=secret", nil)
		r.Header.Set("X-Request-Id", "req-1")
		w := httptest.NewRecorder()
		a.proxy.ServeHTTP(w, r)
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("got status %d, want 503", w.Code)
		}
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, `"msg":"request"`) {
				return varying.ReplaceAllString(l, "<varying>")
			}
		}
		t.Fatalf("no request line in:\n%s", logs)
		return ""
	}
	viaLogger, direct := line(false), line(true)
	if direct != viaLogger {
		t.Errorf("request lines differ:\n direct %q\n logger %q", direct, viaLogger)
	}
	if !strings.Contains(direct, `"path":"/osmc/a\"b\nc"`) || strings.Contains(direct, "secret") {
		t.Errorf("got %q, want the escaped path and no query", direct)
	}

	_, lines, err := newLogger("console", "info", &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	if lines != nil {
		t.Error("newLogger gave a request-line writer for the console format, whose lines only zap can write")
	}
}
