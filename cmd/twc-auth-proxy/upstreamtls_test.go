package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

// TestRunUpstreamTLS runs the binary in front of an https upstream whose
// certificate no public CA signed, as TWC REST's on port 8111 usually is
// (made at install time). The certificate is trusted only through
// upstream_ca_file, or not checked with upstream_insecure_skip_verify,
// which says so in the log once.
func TestRunUpstreamTLS(t *testing.T) {
	auth, err := authtest.Start(authtest.Options{ClientIDs: []string{"dashboard"}, Secret: "s3cret"})
	if err != nil {
		t.Fatalf("authtest.Start: %v", err)
	}
	defer auth.Close()
	up := &upstreamRecorder{}
	upstream := httptest.NewUnstartedServer(up)
	upstream.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	upstream.StartTLS()
	defer upstream.Close()
	dir := t.TempDir()
	upstreamCA := writeFile(t, dir, "upstream-ca.pem",
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: upstream.Certificate().Raw})))
	otherCA := writeFile(t, dir, "other-ca.pem", testCAPEM(t))

	const (
		unknownCA = "certificate signed by unknown authority"
		warning   = "upstream_insecure_skip_verify is set: the upstream's TLS certificate is not checked"
	)
	for _, c := range []struct {
		name     string
		key      string // upstream_ca_file or upstream_insecure_skip_verify, as a config line
		want     int
		wantLog  string // in the proxy's log, when set
		warnings int    // log lines at level warn saying the certificate is not checked
	}{
		{"system roots only", "", http.StatusBadGateway, unknownCA, 0},
		{"upstream_ca_file of another CA", "upstream_ca_file: " + otherCA, http.StatusBadGateway, unknownCA, 0},
		{"upstream_ca_file", "upstream_ca_file: " + upstreamCA, http.StatusOK, "", 0},
		{"upstream_insecure_skip_verify", "upstream_insecure_skip_verify: true", http.StatusOK, "", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(up.requests())
			a := freeAddrs(t, 2)
			listen, metrics := a[0], a[1]
			edits := []string{`skip_auth: ["^/osmc/version$"]`}
			if c.key != "" {
				edits = append(edits, c.key)
			}
			path := runConfig(t, listen, metrics, upstream.URL, auth.Issuer(), edits...)
			r := startRun(t, path, noEnv)
			waitStatus(t, r, "http://"+metrics+"/readyz", http.StatusOK)

			status, body := fetch(t, http.DefaultClient, "http://"+listen+"/osmc/version")
			if status != c.want {
				t.Errorf("GET /osmc/version: got status %d, want %d; body:\n%s", status, c.want, body)
			}
			reached := 0
			if c.want == http.StatusOK {
				reached = 1
				if want := "upstream saw /osmc/version"; body != want {
					t.Errorf("got body %q, want %q", body, want)
				}
			}
			if got := len(up.requests()) - before; got != reached {
				t.Errorf("upstream got %d requests, want %d", got, reached)
			}
			if err := r.stop(t); err != nil {
				t.Errorf("run: got %v, want nil after cancellation", err)
			}

			logs := r.stderr.String()
			if c.wantLog != "" && !strings.Contains(logs, c.wantLog) {
				t.Errorf("the log does not say %q:\n%s", c.wantLog, logs)
			}
			warnings := 0
			for line := range strings.Lines(logs) {
				var entry struct{ Level, Msg string }
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Errorf("log line is not JSON: %v: %q", err, line)
					continue
				}
				if entry.Msg == warning {
					if entry.Level != "warn" {
						t.Errorf("got %q at level %q, want warn", entry.Msg, entry.Level)
					}
					warnings++
				}
			}
			if warnings != c.warnings {
				t.Errorf("got %d log lines %q, want %d; log:\n%s", warnings, warning, c.warnings, logs)
			}
		})
	}
}
